"""Training a graph hypernetwork on a task, through the one training engine.

GHN-2's protocol: each step draws a **meta-batch** of architectures, the GHN predicts all their
parameters in one pass (their graphs merged into one), every network classifies the same image
batch with those parameters (``torch.func.functional_call``: the parameters are tensors computed
by the GHN, so the loss backpropagates into it), and the loss is the cross-entropy averaged over
the networks. Adam (lr 1e-3, weight decay 1e-5), gradients clipped at norm 5, MultiStepLR x0.1 at
2/3 and 5/6 of the epochs (GHN-2: 200 and 250 of 300), image batches of 64; an epoch is one pass
over the task's training images. Networks run in training mode (batch statistics, as GHN-2).

Deviations for CPU scale (documented in docs/ghn.md): a fixed pool of ``train_archs``
architectures (default 256; DeepNets-1M has 10^6) whose modules and graphs are built once and
reused, and far fewer epochs (``epochs``, default 40; GHN-2: 300, or 150 with meta-batch 8).

The engine checkpoints after every epoch (GHN weights, optimizer, scheduler, shuffling and the
validation curve); the meta-batch of step ``s`` is drawn from a generator seeded by
``(seed, s)``, so a resumed training is the same as an uninterrupted one.

Architectures come from ``arch_source``: ``"generator"`` (nasforge.ghn.generator's ``train``
split, the DeepNets-1M-like generator) or ``"space:NAME[,NAME...]"`` (samples of nasforge
search spaces built for the task, e.g. ``space:chain,darts``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..core import Task, derive_seed
from ..errors import ConfigError
from ..training import Callback, Engine, TrainConfig, seeded_module
from .model import GHN, GHNConfig, GraphTensors, default_meta_batch, variant_config

ArchEntry = tuple[str, Callable[[], nn.Module]]  # (text naming it, builder)


# ------------------------------------------------------------------------------------------------
# architectures


def _space_entries(spaces: Sequence[tuple[str, Any]], task: Task, n: int, seed: int
                   ) -> list[ArchEntry]:
    rng = np.random.default_rng(seed)
    out: list[ArchEntry] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        name, space = spaces[int(rng.integers(len(spaces)))]
        arch = space.sample(rng)
        text = f"{name}:{arch}" if name else str(arch)
        if text in seen:
            continue
        seen.add(text)
        build_seed = derive_seed(seed, len(out))
        out.append((text, (lambda s=space, a=arch, b=build_seed:
                           seeded_module(lambda: s.build(a, task), b))))
    return out


def architectures(source: str, task: Task, n: int, *, seed: int, split: str = "train",
                  space: Any = None) -> list[ArchEntry]:
    """``n`` architectures (text, builder) of ``split`` from ``source``: ``"generator"``
    (``nasforge.ghn.generator.ArchGenerator`` for the task, seeded ``seed``), ``"space"`` (the
    search space ``space``) or ``"space:NAME[,NAME]"`` (registered spaces, default options)."""
    if n == 0:
        return []
    if source == "generator":
        from .generator import ArchGenerator, description_key

        gen = ArchGenerator(task, seed=seed)
        return [(description_key(d), (lambda d=d: gen.build(d)))
                for d in gen.descriptions(split, n)]
    # the split picks disjoint seeds, so train / val / test samples differ
    sub = derive_seed(seed, 7919, {"train": 0, "val": 1, "test": 2}.get(split, 3))
    if source == "space":
        if space is None:
            raise ConfigError("arch source 'space' needs a search space")
        return _space_entries([("", space)], task, n, sub)
    if source.startswith("space:"):
        from .. import registry

        names = [s for s in source[len("space:"):].split(",") if s]
        if not names:
            raise ConfigError(f"arch source {source!r}: name at least one space after 'space:'")
        return _space_entries([(nm, registry.create("spaces", nm)) for nm in names], task, n, sub)
    raise ConfigError(f"arch source {source!r}; expected 'generator', 'space' or "
                      "'space:NAME[,NAME]'")


def _quiet_dropout(model: nn.Module) -> nn.Module:
    """Dropout would draw from torch's global generator: GHN training runs without it."""
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
    return model


class ArchPool:
    """Architectures with their modules and graphs, built on first use and kept."""

    def __init__(self, entries: Sequence[ArchEntry], ghn: GHN, seed: int):
        self.entries = list(entries)
        self.ghn, self.seed = ghn, seed
        self._cache: dict[int, tuple[nn.Module, GraphTensors]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, i: int) -> tuple[nn.Module, GraphTensors]:
        if i not in self._cache:
            text, build = self.entries[i]
            model = _quiet_dropout(build())
            self._cache[i] = (model, self.ghn.graph_of(model))
        return self._cache[i]


# ------------------------------------------------------------------------------------------------
# the meta-batch step


def predicted_forward(model: nn.Module, params: dict[str, torch.Tensor],
                      x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with its parameters replaced by ``params`` (differentiable in them)."""
    return functional_call(model, params, (x,), strict=False)


class MetaBatch(Callback):
    """Draws the step's architectures (from a generator seeded by (seed, step)) before each
    step; ``loss`` is the engine's loss function: mean cross-entropy over the networks."""

    def __init__(self, pool: ArchPool, meta_batch: int, seed: int):
        self.pool, self.meta_batch, self.seed = pool, meta_batch, seed
        self.current: list[tuple[nn.Module, GraphTensors]] = []

    def draw(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.seed, 104729, step])
        k = min(self.meta_batch, len(self.pool))
        return [int(i) for i in rng.choice(len(self.pool), size=k, replace=False)]

    def on_step_start(self, engine: Engine) -> None:
        self.current = [self.pool.get(i) for i in self.draw(engine.step)]
        for model, _ in self.current:
            model.train()

    def loss(self, ghn: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        params = ghn.predict([g for _, g in self.current])  # type: ignore[operator]
        losses, first = [], None
        for (model, _), p in zip(self.current, params):
            logits = predicted_forward(model, p, x)
            losses.append(F.cross_entropy(logits, y))
            first = logits if first is None else first
        # train_acc in the curves is the first network's accuracy on the batch
        return torch.stack(losses).mean(), first  # type: ignore[return-value]


@torch.no_grad()
def predicted_accuracy(ghn: GHN, model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *,
                       graph: GraphTensors | None = None, bn_data: torch.Tensor | None = None,
                       batch_size: int = 512) -> float:
    """Accuracy on ``data`` of ``model`` with parameters predicted by ``ghn`` (filled in place,
    batch-norm statistics estimated on ``bn_data``)."""
    from ..training import evaluate

    ghn.fill(model, graph=graph, bn_data=bn_data)
    acc, _ = evaluate(model, data, batch_size=batch_size)
    return acc


class Validation(Callback):
    """After each epoch: mean accuracy of predicted parameters of the validation architectures
    on the task's validation split (curve ``ghn_val_acc``)."""

    def __init__(self, pool: ArchPool, task: Task, log: Callable[[str], None] | None = None):
        self.pool, self.task, self.log = pool, task, log

    def on_epoch_end(self, engine: Engine, logs: dict[str, float]) -> None:
        ghn = engine.model
        was = ghn.training
        ghn.eval()
        accs = []
        for i in range(len(self.pool)):
            model, graph = self.pool.get(i)
            accs.append(predicted_accuracy(ghn, model, self.task.val, graph=graph,
                                           bn_data=self.task.train[0]))
        ghn.train(was)
        acc = float(np.mean(accs)) if accs else math.nan
        engine.result.curves.setdefault("ghn_val_acc", []).append(acc)
        logs["ghn_val_acc"] = acc
        if self.log is not None:
            self.log(f"epoch {engine.epoch}: train loss {logs['train_loss']:.3f}, "
                     f"val acc of predicted params {acc:.3f} ({len(accs)} nets), "
                     f"lr {logs['lr']:.2g}")


# ------------------------------------------------------------------------------------------------
# putting it together


@dataclass
class GHNTrainOptions:
    """How a GHN is trained (defaults: GHN-2's, except the CPU-scale ones marked)."""

    variant: str = "ghn2"
    epochs: int = 40  # CPU scale (GHN-2: 300; 150 with meta-batch 8)
    meta_batch: int = 0  # 0: the variant's (GHN-2: 8, GHN-1 and MLP: 1)
    hid: int = 32
    max_shape: tuple[int, int, int, int] = (64, 64, 11, 11)
    lr: float = 1e-3
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    batch_size: int = 64
    train_archs: int = 256  # CPU scale: a fixed pool (DeepNets-1M: 10^6)
    val_archs: int = 8
    arch_source: str = "generator"
    overrides: dict[str, Any] = field(default_factory=dict)  # GHNConfig fields

    def __post_init__(self) -> None:
        for key in ("epochs", "hid", "batch_size", "train_archs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ghn training: {key} = {value!r}; expected an integer >= 1")
        if self.meta_batch < 0 or self.val_archs < 0:
            raise ConfigError(f"ghn training: meta_batch = {self.meta_batch}, val_archs = "
                              f"{self.val_archs}; expected integers >= 0")
        if not self.lr > 0 or self.weight_decay < 0 or not self.grad_clip > 0:
            raise ConfigError(f"ghn training: lr = {self.lr}, weight_decay = "
                              f"{self.weight_decay}, grad_clip = {self.grad_clip}; expected "
                              "lr > 0, weight_decay >= 0, grad_clip > 0")

    @property
    def effective_meta_batch(self) -> int:
        return self.meta_batch or default_meta_batch(self.variant)


def make_ghn(task: Task, options: GHNTrainOptions, seed: int) -> GHN:
    """A freshly initialised GHN for ``task`` (deterministic in ``seed``)."""
    cfg = variant_config(options.variant, hid=options.hid, max_shape=options.max_shape,
                         num_classes=task.num_classes, input_shape=task.input_shape,
                         task=task.name, **options.overrides)
    return seeded_module(lambda: GHN(cfg), seed)


def make_engine(ghn: GHN, task: Task, options: GHNTrainOptions, seed: int, *,
                log: Callable[[str], None] | None = None, space: Any = None) -> Engine:
    """The training engine for ``ghn`` with the meta-batch and validation callbacks."""
    train_pool = ArchPool(architectures(options.arch_source, task, options.train_archs,
                                        seed=seed, split="train", space=space), ghn, seed)
    val_pool = ArchPool(architectures(options.arch_source, task, options.val_archs, seed=seed,
                                      split="val", space=space), ghn, seed)
    meta = MetaBatch(train_pool, options.effective_meta_batch, seed)
    config = TrainConfig(optimizer="adam", lr=options.lr, weight_decay=options.weight_decay,
                         batch_size=options.batch_size, epochs=options.epochs, cosine=False,
                         grad_clip=options.grad_clip, amp=False)
    opt = torch.optim.Adam(ghn.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    milestones = sorted({max(1, round(options.epochs * 2 / 3)), max(1, round(options.epochs * 5 / 6))})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    callbacks: list[Callback] = [meta]
    if options.val_archs:
        callbacks.append(Validation(val_pool, task, log))
    return Engine(ghn, config, seed=seed, optimizers={"ghn": opt}, schedulers={"ghn": sched},
                  callbacks=callbacks, loss_fn=meta.loss)


def train_ghn(task: Task, options: GHNTrainOptions | None = None, *, seed: int = 0,
              checkpoint: str | Path | None = None, resume: bool = False,
              log: Callable[[str], None] | None = None) -> tuple[GHN, Any]:
    """Train a GHN on ``task``; returns ``(ghn, FitResult)``. ``checkpoint`` (a file) is
    written after every epoch and, with ``resume``, continued from exactly."""
    options = options or GHNTrainOptions()
    ghn = make_ghn(task, options, seed)
    engine = make_engine(ghn, task, options, seed, log=log)
    started = time.perf_counter()
    result = engine.fit(task.train, None, checkpoint=checkpoint, resume=resume)
    ghn.config.meta.update(training_meta(options, seed, result, time.perf_counter() - started))
    ghn.eval()
    return ghn, result


def training_meta(options: GHNTrainOptions, seed: int, result: Any, seconds: float
                  ) -> dict[str, Any]:
    """What the saved GHN file records about its training."""
    curve = result.curves.get("ghn_val_acc", [])
    return {"epochs": options.epochs, "meta_batch": options.effective_meta_batch,
            "train_archs": options.train_archs, "arch_source": options.arch_source,
            "lr": options.lr, "seed": seed, "steps": int(result.steps),
            "final_val_acc": float(curve[-1]) if curve else None, "seconds": round(seconds, 1)}


__all__ = ["GHNTrainOptions", "train_ghn", "make_ghn", "make_engine", "architectures",
           "ArchPool", "MetaBatch", "Validation", "predicted_accuracy", "predicted_forward"]
