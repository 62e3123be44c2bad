"""One-shot methods ``darts`` and ``gdas``: train the supernet and α, derive, train from scratch.

Both split the task's training set into two halves with a seeded permutation: the weights train
on one, α on the other (DARTS's ``train_portion = 0.5``). Each step: one architecture step on a
batch of the α half (``Bilevel``), then one weight step on a batch of the weight half, both
through the one training engine (``ctx.train``: the engine's whole state is checkpointed in the
run's store after every epoch, so a run killed with ``kill -9`` resumes to the same α and the
same genotype). ``warmup_epochs`` (default 0, DARTS's and GDAS's schedule) lets the first epochs
train the weights only. After the search the genotype is derived (``derive`` mode ``top2`` as DARTS, or
``argmax`` as DARTS-CC's small-data protocol) and recorded as a trial trained from scratch by the
run's evaluator (``train``), so ``trials``, the report and ``best/`` show it.

- ``darts`` (Liu et al., ICLR 2019): weights ``softmax(α)`` on every edge; ``order`` 1 (the α
  gradient at the current weights) or 2 (at the unrolled weights, see ``architect.py``).
- ``gdas`` (Dong & Yang, CVPR 2019): each step samples one operation per edge with hard
  Gumbel-softmax (straight-through), so only the sampled operation is computed; the temperature
  falls linearly from ``tau_max`` to ``tau_min`` over the epochs; first-order α steps.

History: after every epoch, ``softmax(α)`` of both cells and the genotype derived from them go to
``engine.state["alpha_history"]`` (in the checkpoints) and to ``RUN_DIR/method/<name>_alphas.json``;
the plots (α per edge over the epochs, the derived cells) go to ``RUN_DIR/plots/``. The store's
metadata ``<name>`` holds the search's wall time, epochs and derived genotypes.
See ``docs/darts.md`` for options, defaults and deviations.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Trial
from ..errors import ConfigError, RunError
from ..methods.base import Method, MethodContext
from ..registry import register
from ..spaces.darts import DartsSpace
from ..training import Callback, Engine, TrainConfig, resolve_device, seeded_module
from .architect import Architect, Bilevel
from .derive import MODES, derive
from .supernet import Alphas, SuperNet


class OneShotModel(nn.Module):
    """A supernet with its α: ``forward(x)`` mixes with ``softmax(α)`` (``sampling="softmax"``)
    or with hard Gumbel samples at temperature ``tau`` drawn from ``generator``
    (``sampling="gumbel"``, training mode). In eval mode Gumbel models use the one-hot argmax of
    α (the architecture GDAS derives), softmax models ``softmax(α)``."""

    def __init__(self, supernet: SuperNet, alphas: Alphas, sampling: str = "softmax",
                 tau: float = 1.0):
        super().__init__()
        if sampling not in ("softmax", "gumbel"):
            raise ConfigError(f"sampling {sampling!r}; expected 'softmax' or 'gumbel'")
        self.supernet, self.alphas = supernet, alphas
        self.sampling, self.tau = sampling, float(tau)
        self.generator: torch.Generator | None = None

    def arch_weights(self) -> dict[str, Tensor]:
        if self.sampling == "softmax":
            return self.alphas.softmax()
        if not self.training:
            return {t: F.one_hot(a.argmax(-1), a.shape[-1]).to(a.dtype)
                    for t, a in self.alphas.as_dict().items()}
        return self.alphas.gumbel(self.tau, hard=True, generator=self.generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x, self.arch_weights())


class GumbelSchedule(Callback):
    """GDAS's temperature: ``tau_max - (tau_max - tau_min) * (epoch - 1) / (epochs - 1)``; the
    Gumbel noise is drawn from the engine's checkpointed generator ``engine.rng``."""

    def __init__(self, tau_max: float, tau_min: float):
        self.tau_max, self.tau_min = tau_max, tau_min

    def on_fit_start(self, engine: Any) -> None:
        engine.model.generator = engine.rng

    def on_epoch_start(self, engine: Any) -> None:
        epochs = engine.config.epochs
        frac = (engine.epoch - 1) / (epochs - 1) if epochs > 1 else 0.0
        engine.model.tau = self.tau_max - (self.tau_max - self.tau_min) * frac


class AlphaHistory(Callback):
    """After each epoch: softmax(α) of both cells and the derived genotype, into
    ``engine.state["alpha_history"]`` and (when ``path``) a JSON file."""

    def __init__(self, op_names: tuple[str, ...], mode: str, path: Path | None):
        self.op_names, self.mode, self.path = op_names, mode, path

    def on_epoch_end(self, engine: Any, logs: dict[str, float]) -> None:
        model: OneShotModel = engine.model
        alphas = {t: a.detach().cpu() for t, a in model.alphas.as_dict().items()}
        entry = {"epoch": engine.epoch,
                 "normal": torch.softmax(alphas["normal"], -1).tolist(),
                 "reduce": torch.softmax(alphas["reduce"], -1).tolist(),
                 "genotype": str(derive(alphas, self.op_names, self.mode)),
                 "train_loss": logs.get("train_loss"), "val_acc": logs.get("val_acc"),
                 "arch_loss": logs.get("arch_loss")}
        if model.sampling == "gumbel":
            entry["tau"] = model.tau
        history = engine.state.setdefault("alpha_history", [])
        history.append(entry)
        if self.path is not None:
            write_json(self.path, {"op_names": list(self.op_names), "history": history})


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=_plain))
    os.replace(tmp, path)


def _plain(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else str(v)


class _SupernetSearch(Method):
    """The shared DARTS / GDAS search; subclasses set ``name`` and the sampling."""

    sampling = "softmax"

    def _check_common(self) -> None:
        n = self.name
        for key in ("epochs", "batch_size", "derived"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{n}: {key} = {value!r}; expected an integer >= 1")
        for key in ("C", "layers", "train_rows"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{n}: {key} = {value!r}; expected None (the space's) or an integer >= 1")
        for key in ("lr", "arch_lr"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{n}: {key} = {value!r}; expected a number > 0")
        for key in ("lr_min", "weight_decay", "arch_weight_decay"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{n}: {key} = {value!r}; expected a number >= 0")
        if self.lr_min > self.lr:
            raise ConfigError(f"{n}: lr_min = {self.lr_min} is above lr = {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{n}: momentum = {self.momentum!r}; expected a number in [0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"{n}: grad_clip = {self.grad_clip!r}; expected None or a number > 0")
        resolve_device(self.device)
        if self.derive not in MODES:
            raise ConfigError(f"{n}: derive = {self.derive!r}; expected one of {', '.join(MODES)}")
        w = self.warmup_epochs
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < self.epochs:
            raise ConfigError(f"{n}: warmup_epochs = {w!r}; expected an integer >= 0 and below "
                              f"epochs ({self.epochs}): the epochs that train the weights only")

    # -- pieces -----------------------------------------------------------------------------------
    def order_(self) -> int:
        return 1

    def tau_range(self) -> tuple[float, float] | None:
        return None

    def split(self, ctx: MethodContext) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """The weight half and the architecture half of the task's training set (a seeded
        permutation; its first ``train_rows`` rows when that option is set)."""
        x, y = ctx.task.train  # type: ignore[union-attr]
        perm = torch.from_numpy(ctx.rng(0x0DA7).permutation(x.shape[0]))
        if self.train_rows is not None:
            perm = perm[:self.train_rows]
        n = perm.shape[0]
        if n < 4:
            raise ConfigError(f"{self.name}: the training set has {n} rows; at least 4 are needed "
                              "to split it into weight and architecture halves")
        half = n // 2
        return (x[perm[:half]], y[perm[:half]]), (x[perm[half:]], y[perm[half:]])

    def build(self, ctx: MethodContext) -> OneShotModel:
        space = ctx.space
        tau = self.tau_range()

        def factory() -> OneShotModel:
            net = SuperNet.from_space(space, ctx.task, C=self.C, layers=self.layers)  # type: ignore[arg-type]
            return OneShotModel(net, Alphas.like(net), self.sampling, tau[0] if tau else 1.0)

        return seeded_module(factory, ctx.seed)

    def engine(self, ctx: MethodContext, model: OneShotModel, arch_data: tuple[Tensor, Tensor]) -> Engine:
        config = TrainConfig(optimizer="sgd", lr=self.lr, momentum=self.momentum,
                             weight_decay=self.weight_decay, batch_size=self.batch_size,
                             epochs=self.epochs, cosine=False, grad_clip=self.grad_clip, amp=False)
        weights = torch.optim.SGD(model.supernet.parameters(), lr=self.lr, momentum=self.momentum,
                                  weight_decay=self.weight_decay,
                                  nesterov=bool(getattr(self, "nesterov", False)))
        alpha = torch.optim.Adam(model.alphas.parameters(), lr=self.arch_lr, betas=(0.5, 0.999),
                                 weight_decay=self.arch_weight_decay)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(weights, T_max=self.epochs,
                                                            eta_min=self.lr_min)

        def arch_loss(m: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
            return F.cross_entropy(m(batch[0]), batch[1])

        architect = Architect(model, list(model.supernet.parameters()), list(model.alphas.parameters()),
                              arch_loss, order=self.order_(), weight_optimizer=weights)
        callbacks: list[Callback] = []
        tau = self.tau_range()
        if tau is not None:
            callbacks.append(GumbelSchedule(*tau))
        callbacks.append(Bilevel(architect, arch_data, self.batch_size, warmup=self.warmup_epochs))
        path = ctx.work_dir / f"{self.name}_alphas.json" if ctx.work_dir is not None else None
        callbacks.append(AlphaHistory(model.supernet.op_names, self.derive, path))
        return Engine(model, config, seed=ctx.seed, device=self.device,
                      optimizers={"weights": weights, "alpha": alpha}, step_optimizers=("weights",),
                      schedulers={"weights": cosine}, callbacks=callbacks)

    def pick(self, history: list[dict[str, Any]]) -> list[tuple[str, int]]:
        """The final genotype, then distinct genotypes of earlier epochs (newest first)."""
        out: list[tuple[str, int]] = []
        for entry in reversed(history):
            if all(entry["genotype"] != text for text, _ in out):
                out.append((entry["genotype"], int(entry["epoch"])))
            if len(out) == self.derived:
                break
        return out

    def write_plots(self, ctx: MethodContext, model_ops: tuple[str, ...], edges: list, history: list,
              derived: list[tuple[str, int]]) -> None:
        if ctx.work_dir is None or not self.plots:
            return
        from .plots import plot_alpha_history, plot_genotype

        plots = ctx.work_dir.parent / "plots"
        plot_alpha_history(history, model_ops, edges, plots / f"{self.name}_alphas", self.name)
        for rank, (text, epoch) in enumerate(derived):
            plot_genotype(ctx.space.parse(text), plots / f"{self.name}_cell_{rank}.png",
                          f"{self.name}: genotype derived after epoch {epoch} ({self.derive})")

    # -- the method -------------------------------------------------------------------------------
    def run(self, ctx: MethodContext) -> list[Trial]:
        if not isinstance(ctx.space, DartsSpace):
            raise ConfigError(f"method {self.name!r} searches the darts space; the run's space is "
                              f"{getattr(ctx.space, 'name', type(ctx.space).__name__)!r} "
                              "(use --space darts)")
        if ctx.task is None:
            raise RunError(f"method {self.name!r} needs a task with data")
        model = self.build(ctx)
        loaded = ctx.load_state()
        if loaded is None or "derived" not in loaded[1]:
            weight_data, arch_data = self.split(ctx)
            engine = self.engine(ctx, model, arch_data)
            started = time.perf_counter()
            result = ctx.train(engine, weight_data, ctx.task.val if self.supernet_val else None)
            history = list(engine.state.get("alpha_history", []))
            derived = self.pick(history)
            meta = {"search_seconds": result.seconds, "epochs": result.epochs_run,
                    "this_process_seconds": time.perf_counter() - started,
                    "derived": [t for t, _ in derived], "order": self.order_(),
                    "warmup_epochs": self.warmup_epochs,
                    "supernet_params": sum(p.numel() for p in model.supernet.parameters())}
            first_id = ctx.next_id()
            ctx.save_state(self.epochs + 1, {"derived": derived, "first_id": first_id,
                                             "history": history, "meta": meta})
        else:
            state = loaded[1]
            derived = [(t, int(e)) for t, e in state["derived"]]
            first_id, history, meta = state["first_id"], state["history"], state["meta"]
        ctx.store.set_meta(self.name, meta)
        self.write_plots(ctx, model.supernet.op_names, model.supernet.edges, history, derived)
        proposals = [(first_id + i, ctx.space.parse(text),
                      {"method": self.name, "derive": self.derive, "epoch": epoch, "rank": i})
                     for i, (text, epoch) in enumerate(derived)]
        return ctx.evaluate(proposals)


@register("methods", "darts")
class Darts(_SupernetSearch):
    """DARTS: softmax-mixed supernet, α by gradient on the architecture half (order 1 or 2),
    derive (top-2 edges per node without ``none``), train the genotype from scratch."""

    name = "darts"

    def __init__(self, order: int = 1, epochs: int = 50, C: int | None = None,
                 layers: int | None = None, batch_size: int = 64, lr: float = 0.025,
                 lr_min: float = 0.001, momentum: float = 0.9, weight_decay: float = 3e-4,
                 arch_lr: float = 3e-4, arch_weight_decay: float = 1e-3,
                 grad_clip: float | None = 5.0, derive: Literal["top2", "argmax"] = "top2",
                 derived: int = 1, train_rows: int | None = None, supernet_val: bool = True,
                 plots: bool = True, device: str = "cpu", warmup_epochs: int = 0):
        if order not in (1, 2) or isinstance(order, bool):
            raise ConfigError(f"darts: order = {order!r}; expected 1 (first order) or 2 (second order)")
        self.order = order
        self.epochs, self.C, self.layers, self.batch_size = epochs, C, layers, batch_size
        self.lr, self.lr_min, self.momentum, self.weight_decay = lr, lr_min, momentum, weight_decay
        self.arch_lr, self.arch_weight_decay, self.grad_clip = arch_lr, arch_weight_decay, grad_clip
        self.derive, self.derived, self.supernet_val, self.device = derive, derived, supernet_val, device
        self.train_rows, self.plots, self.warmup_epochs = train_rows, plots, warmup_epochs
        self._check_common()

    def order_(self) -> int:
        return self.order


@register("methods", "gdas")
class Gdas(_SupernetSearch):
    """GDAS: one operation per edge sampled by hard Gumbel-softmax each step (only it is
    computed), temperature annealed linearly ``tau_max -> tau_min``; first-order α steps."""

    name = "gdas"
    sampling = "gumbel"

    def __init__(self, epochs: int = 240, C: int | None = None, layers: int | None = None,
                 batch_size: int = 64, lr: float = 0.025, lr_min: float = 0.001,
                 momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = True,
                 arch_lr: float = 3e-4,
                 arch_weight_decay: float = 1e-3, grad_clip: float | None = 5.0,
                 tau_max: float = 10.0, tau_min: float = 0.1,
                 derive: Literal["top2", "argmax"] = "top2", derived: int = 1,
                 train_rows: int | None = None, supernet_val: bool = True, plots: bool = True,
                 device: str = "cpu", warmup_epochs: int = 0):
        self.epochs, self.C, self.layers, self.batch_size = epochs, C, layers, batch_size
        self.lr, self.lr_min, self.momentum, self.weight_decay = lr, lr_min, momentum, weight_decay
        self.arch_lr, self.arch_weight_decay, self.grad_clip = arch_lr, arch_weight_decay, grad_clip
        self.tau_max, self.tau_min, self.nesterov = tau_max, tau_min, nesterov
        self.derive, self.derived, self.supernet_val, self.device = derive, derived, supernet_val, device
        self.train_rows, self.plots, self.warmup_epochs = train_rows, plots, warmup_epochs
        self._check_common()
        if not (isinstance(tau_max, (int, float)) and isinstance(tau_min, (int, float))
                and 0 < tau_min <= tau_max and math.isfinite(tau_max)):
            raise ConfigError(f"gdas: tau_max = {tau_max!r}, tau_min = {tau_min!r}; expected "
                              "0 < tau_min <= tau_max")

    def tau_range(self) -> tuple[float, float]:
        return float(self.tau_max), float(self.tau_min)


__all__ = ["Darts", "Gdas", "OneShotModel", "GumbelSchedule", "AlphaHistory"]
