"""Method ``enas``: efficient NAS by weight sharing (Pham et al., ICML 2018), and random search
with the same shared weights (``controller: random``; Li & Talwalkar 2019, Sciuto et al. 2020).

Each epoch alternates

(a) one pass over the training split training the shared weights (SGD, cosine schedule,
    gradient clipping) with, for every minibatch, an architecture sampled from the controller;
(b) ``controller_steps`` controller updates: sample ``controller_batch`` architectures, reward
    each with its accuracy on the next validation minibatch under the shared weights, and take
    one REINFORCE step (the ``reinforce`` strategy's LSTM controller: moving-average baseline,
    entropy bonus, ENAS's sampling temperature and tanh logit clipping, and optionally the
    memorisation term that makes its hidden state an architecture embedding).

With ``controller: random`` the shared weights train on uniformly sampled architectures and (b)
is skipped. After the last epoch ``samples`` architectures are sampled (controller or uniform),
the distinct ones are ranked by their shared-weight accuracy on the whole validation split and
recorded as trials (metric ``shared_val_acc``, info ``shared_weights: true``; they carry no
``val_acc`` so they never compete with trained networks for the best trial), and the best
``retrain`` are trained from scratch by the run's evaluator (normally ``train``) as further
trials. The run's strategy is not used.

Checkpoints: after every epoch the whole engine (shared weights, SGD state, shuffling and
validation-stream generators, the controller's weights, Adam state, baseline, memory and
generator) goes into the store through ``ctx.train``; then one checkpoint with the ranked
architectures and their trial ids before any is recorded. A run killed at any point resumes to
the same trials as an uninterrupted one. ``restore(run_dir)`` gives back the trained shared
model and controller of a finished search (for the controller studies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn

from ..core import Architecture, Objective, SearchSpace, Task, Trial, TrialResult, rng_state, \
    set_rng_state
from ..errors import ConfigError, RunError
from ..oneshot.enas import batch_statistics, shared_accuracy, shared_model
from ..registry import register
from ..strategies.reinforce import ReinforceSearch
from ..training import Callback, Engine, TrainConfig, seeded_module
from .base import Method, MethodContext


DEFAULT_LR = 0.05  # the shared weights' SGD learning rate unless the shared model names its own


class Sampler(Callback):
    """The architecture source of an ENAS search, as an engine callback: it sets the
    architecture of every training minibatch and trains the controller after every epoch."""

    def __init__(self, method: "Enas", space: SearchSpace, val: tuple[torch.Tensor, torch.Tensor],
                 seed: int):
        self.method, self.space, self.val = method, space, val
        self.controller: ReinforceSearch | None = None
        if method.controller == "lstm":
            self.controller = method.make_controller(space, seed)
        self.rng = np.random.default_rng(seed)
        self.history: list[dict[str, float]] = []

    def sample(self, n: int) -> list[Architecture]:
        if self.controller is None:
            return [self.space.sample(self.rng) for _ in range(n)]
        return self.controller.ask(n)

    def on_step_start(self, engine: Engine) -> None:
        engine.model.use(self.sample(1)[0])

    def on_epoch_end(self, engine: Engine, logs: dict[str, float]) -> None:
        if self.controller is None:
            return
        m = self.method
        stream = engine.stream("controller_val", self.val, m.val_batch)
        rewards: list[float] = []
        for _ in range(m.controller_steps):
            archs = self.controller.ask(m.controller_batch)
            scores = []
            for arch in archs:
                x, y = (t.to(engine.device) for t in stream.next())
                engine.model.use(arch)
                with batch_statistics(engine.model):
                    scores.append(float((engine.model(x).argmax(-1) == y).float().mean()))
            self.controller.learn(archs, scores)
            rewards += scores
        self.history.append({"epoch": float(engine.epoch),
                             "reward": float(np.mean(rewards)) if rewards else float("nan"),
                             "baseline": float(self.controller.baseline or 0.0)})

    def state_dict(self) -> dict[str, Any]:
        return {"controller": None if self.controller is None else self.controller.state_dict(),
                "rng": rng_state(self.rng), "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.controller is not None:
            self.controller.load_state_dict(state["controller"])
        set_rng_state(self.rng, state["rng"])
        self.history = [dict(h) for h in state["history"]]


@register("methods", "enas")
class Enas(Method):
    """ENAS and random search with weight sharing (see the module docstring).

    Options: ``epochs`` of (a)+(b); ``batch_size``, ``lr``, ``momentum``, ``weight_decay``,
    ``grad_clip`` of the shared weights' SGD (``lr`` default: the shared model's ``shared_lr``,
    0.2 for the recurrent cell supernet, else 0.05); ``controller`` (``lstm`` or ``random``);
    ``controller_steps`` per epoch, ``controller_batch`` architectures per step, ``val_batch``
    rows per reward; the controller's ``controller_lr`` (Adam), ``hidden_size``,
    ``temperature`` and ``tanh_constant`` (ENAS: 5 and 2.5; 0 turns clipping off),
    ``entropy_weight``, ``baseline_decay``, ``normalize`` (divide advantages by a running
    std), ``memorization`` (weight of the memorisation term, 0: off); ``samples`` sampled at the
    end and ranked by shared-weight accuracy; ``retrain`` best trained from scratch.
    """

    name = "enas"

    def __init__(self, epochs: int = 10, controller: Literal["lstm", "random"] = "lstm",
                 batch_size: int = 64, lr: float | None = None, momentum: float = 0.9,
                 weight_decay: float = 1e-4, grad_clip: float = 5.0, controller_steps: int = 20,
                 controller_batch: int = 1, val_batch: int = 64, controller_lr: float = 0.0035,
                 hidden_size: int = 64, temperature: float = 5.0, tanh_constant: float = 2.5,
                 entropy_weight: float = 1e-4, baseline_decay: float = 0.95,
                 normalize: bool = True, memorization: float = 0.0, samples: int = 20,
                 retrain: int = 1):
        for key, value in (("epochs", epochs), ("batch_size", batch_size),
                           ("controller_batch", controller_batch), ("val_batch", val_batch),
                           ("hidden_size", hidden_size), ("samples", samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"enas: {key}={value!r}; expected an integer >= 1")
        for key, value in (("controller_steps", controller_steps), ("retrain", retrain)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"enas: {key}={value!r}; expected an integer >= 0")
        if controller not in ("lstm", "random"):
            raise ConfigError(f"enas: controller={controller!r}; expected 'lstm' or 'random'")
        if retrain > samples:
            raise ConfigError(f"enas: retrain={retrain} is more than samples={samples}")
        for key, value, ok, expected in (
                ("lr", lr, lr is None or lr > 0, "> 0 (or unset)"),
                ("momentum", momentum, 0 <= momentum < 1, "in [0, 1)"),
                ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"),
                ("grad_clip", grad_clip, grad_clip > 0, "> 0")):
            if not ok:
                raise ConfigError(f"enas: {key}={value!r}; expected {expected}")
        self.epochs, self.controller, self.batch_size, self.lr = epochs, controller, batch_size, lr
        self.momentum, self.weight_decay, self.grad_clip = momentum, weight_decay, grad_clip
        self.controller_steps, self.controller_batch = controller_steps, controller_batch
        self.val_batch, self.controller_lr, self.hidden_size = val_batch, controller_lr, hidden_size
        self.temperature, self.tanh_constant = temperature, tanh_constant
        self.entropy_weight, self.baseline_decay = entropy_weight, baseline_decay
        self.normalize, self.memorization = normalize, memorization
        self.samples, self.retrain = samples, retrain
        # the controller's own checks (ranges of its options) run now, before any work
        ReinforceSearch(**self._controller_options(0))

    # -- pieces -------------------------------------------------------------------------------------
    def _controller_options(self, seed: int) -> dict[str, Any]:
        return {"seed": seed, "hidden_size": self.hidden_size, "lr": self.controller_lr,
                "entropy_weight": self.entropy_weight, "baseline_decay": self.baseline_decay,
                "normalize": self.normalize, "memorization": self.memorization,
                "temperature": self.temperature, "tanh_constant": self.tanh_constant}

    def make_controller(self, space: SearchSpace, seed: int) -> ReinforceSearch:
        """A fresh (untrained) controller over ``space``, as the search starts with."""
        controller = ReinforceSearch(**self._controller_options(seed))
        controller.setup(space, Objective("val_acc"))
        return controller

    def train_config(self, model: nn.Module | None = None) -> TrainConfig:
        """The shared weights' SGD; without ``lr``, ``model``'s ``shared_lr`` (or 0.05)."""
        lr = self.lr if self.lr is not None else float(getattr(model, "shared_lr", DEFAULT_LR))
        return TrainConfig(optimizer="sgd", lr=lr, momentum=self.momentum,
                           nesterov=self.momentum > 0, weight_decay=self.weight_decay,
                           batch_size=self.batch_size, epochs=self.epochs, cosine=True,
                           grad_clip=self.grad_clip, amp=False)

    def engine(self, space: SearchSpace, task: Task, seed: int) -> tuple[Engine, Sampler]:
        """The shared model (seeded), its engine and the sampler callback of a search."""
        if task is None or task.kind not in ("image", "series", "language"):
            raise ConfigError(f"enas: needs an image or series classification task or a "
                              f"language task; got {getattr(task, 'kind', None)!r}")
        model = seeded_module(lambda: shared_model(space, task), seed)
        sampler = Sampler(self, space, task.val, seed)
        # language tasks (enas_rnn on ptb): token cross-entropy; rewards are next-token accuracy
        config = self.train_config(model).for_task(task.kind)
        return Engine(model, config, seed=seed, callbacks=[sampler]), sampler

    # -- the method ---------------------------------------------------------------------------------
    def run(self, ctx: MethodContext) -> list[Trial]:
        space, task = ctx.space, ctx.task
        loaded = ctx.load_state()
        if loaded is not None and "ranked" in loaded[1]:
            state = loaded[1]  # searched and ranked: only recording and retraining are left
        else:
            engine, sampler = self.engine(space, task, ctx.seed)
            ctx.train(engine, task.train, None)
            archs = sampler.sample(self.samples)
            counts: dict[str, int] = {}
            for a in archs:
                counts[str(a)] = counts.get(str(a), 0) + 1
            distinct = [space.parse(t) for t in counts]
            scores = [shared_accuracy(engine.model, a, task.val) for a in distinct]
            order = sorted(range(len(distinct)), key=lambda i: (-scores[i], i))
            state = {"engine": engine.state_dict(), "first_id": ctx.next_id(),
                     "ranked": [str(distinct[i]) for i in order],
                     "scores": [scores[i] for i in order],
                     "counts": [counts[str(distinct[i])] for i in order],
                     "search_seconds": float(engine.result.seconds)}
            ctx.save_state(self.epochs + 1, state)
        first_id, ranked = state["first_id"], [space.parse(t) for t in state["ranked"]]
        info = {"method": self.name, "controller": self.controller}
        trials = []
        for rank, (arch, score, count) in enumerate(zip(ranked, state["scores"], state["counts"])):
            result = TrialResult(metrics={"shared_val_acc": score},
                                 cost={"search_seconds": state["search_seconds"]})
            trials.append(ctx.record(first_id + rank, arch, result, info={
                **info, "phase": "shared", "shared_weights": True, "rank": rank,
                "count": count}))
        n = len(ranked)
        proposals = [(first_id + n + j, ranked[j],
                      {**info, "phase": "retrain", "rank": j, "source_trial": first_id + j,
                       "shared_val_acc": state["scores"][j]})
                     for j in range(min(self.retrain, n))]
        return trials + (ctx.evaluate(proposals) if proposals else [])


@dataclass
class Restored:
    """A finished (or checkpointed) ENAS search brought back from its run directory."""

    method: Enas
    space: SearchSpace
    task: Task
    seed: int
    model: nn.Module  # the shared model with the trained weights; ``model.use(arch)``
    controller: ReinforceSearch | None  # the trained controller (None for controller: random)
    history: list[dict[str, float]]
    epoch: int

    def untrained_controller(self) -> ReinforceSearch:
        """The controller as the search started it (same seed, untrained)."""
        return self.method.make_controller(self.space, self.seed)

    def score(self, arch: Architecture, data: Sequence[torch.Tensor] | None = None) -> float:
        """Shared-weight accuracy of ``arch`` on ``data`` (default: the validation split)."""
        return shared_accuracy(self.model, arch, tuple(data) if data is not None else self.task.val)


def restore(run_dir: str | Path) -> Restored:
    """The shared model and controller of the ENAS run in ``run_dir`` (its newest checkpoint)."""
    from .. import registry
    from ..config import make_config
    from ..data import load_task
    from ..run.rundir import build_space
    from ..run.store import open_store

    path = Path(run_dir) / "run.db"
    if not path.is_file():
        raise RunError(f"{run_dir} holds no run (no run.db there)")
    store = open_store(path, "read")
    try:
        saved = store.get_meta("config")
        ckpt = store.latest_checkpoint(Enas.name)
    finally:
        store.close()
    if saved is None or saved.get("method") != Enas.name:
        raise RunError(f"{run_dir} is not an enas run (method {None if saved is None else saved.get('method')!r})")
    if ckpt is None or "engine" not in ckpt[1].get("state", {}):
        raise RunError(f"{run_dir}: the enas search has no checkpoint yet (no epoch finished)")
    cfg = make_config(saved, source=str(path))
    task = load_task(cfg.task, seed=cfg.seed, **cfg.task_options)
    space = build_space(cfg.space, cfg.resolved_space_options(), task)
    method: Enas = registry.create("methods", Enas.name, **cfg.method_options)
    engine, sampler = method.engine(space, task, cfg.seed)
    state = ckpt[1]["state"]["engine"]
    engine.load_state_dict(state)
    return Restored(method=method, space=space, task=task, seed=cfg.seed, model=engine.model,
                    controller=sampler.controller, history=sampler.history, epoch=engine.epoch)


__all__ = ["Enas", "Sampler", "Restored", "restore"]
