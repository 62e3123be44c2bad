"""How good are predicted parameters? Per generator split, the test accuracy of networks with
parameters predicted by one or more GHNs, against the same networks with random
initialisation and trained with SGD for 1 and for N epochs (``nasforge ghn eval``,
``benchmarks/ghn_train_eval.py``).

Every network's batch-norm running statistics are estimated on the same few training batches
before it is scored (random init and predicted alike; SGD-trained networks keep the statistics
their training accumulated). SGD: momentum 0.9, lr 0.05, weight decay 3e-4, batch 64, cosine
schedule over the epochs, through the one training engine, seeded per network.
Means come with 95% intervals over architectures (1.96 standard errors).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..core import Task, derive_seed
from ..errors import ConfigError
from ..training import TrainConfig, evaluate, fit
from .model import GHN, estimate_bn_stats, write_params


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% interval (1.96 standard errors; NaN below 2 values)."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


@dataclass
class SplitResult:
    """Per-architecture accuracies of one split (lists aligned with ``names``)."""

    split: str
    names: list[str] = field(default_factory=list)
    params: list[int] = field(default_factory=list)
    random: list[float] = field(default_factory=list)
    sgd: dict[int, list[float]] = field(default_factory=dict)  # epochs -> accuracies
    predicted: dict[str, list[float]] = field(default_factory=dict)  # GHN name -> accuracies
    predict_seconds: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split": self.split, "archs": len(self.names),
                               "random": mean_ci95(self.random)}
        for e, accs in sorted(self.sgd.items()):
            out[f"sgd_{e}ep"] = mean_ci95(accs)
        for name, accs in self.predicted.items():
            out[name] = mean_ci95(accs)
            out[f"{name}_seconds"] = float(np.mean(self.predict_seconds[name]))
        return out


def _bn_batches(task: Task, n: int = 4, batch_size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    x = task.train[0]
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return [x[perm[i:i + batch_size]] for i in range(0, min(n * batch_size, x.shape[0]), batch_size)]


def sgd_config(epochs: int) -> TrainConfig:
    """The SGD baseline's training config (see the module docstring)."""
    return TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=3e-4, batch_size=64,
                       epochs=epochs, cosine=True, amp=False)


def timed_prediction(ghn: GHN, model: nn.Module) -> float:
    """Seconds to trace ``model`` and predict and write all its parameters (no BN pass)."""
    start = time.perf_counter()
    with torch.no_grad():
        params = ghn.predict([ghn.graph_of(model)])[0]
        write_params(model, params)
    return time.perf_counter() - start


def evaluate_splits(ghns: Mapping[str, GHN], task: Task, *, splits: Sequence[str] = ("test",),
                    archs: int = 20, sgd_epochs: Sequence[int] = (1, 5), seed: int = 0,
                    generator_seed: int = 0, log: Callable[[str], None] | None = None
                    ) -> dict[str, SplitResult]:
    """Score ``archs`` networks of each generator split (see the module docstring)."""
    from .generator import SPLITS, ArchGenerator, description_key

    bad = [s for s in splits if s not in SPLITS or s == "train"]
    if bad:
        raise ConfigError(f"ghn eval: split(s) {', '.join(bad)}; expected some of "
                          f"{', '.join(s for s in SPLITS if s != 'train')}")
    if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in sgd_epochs):
        raise ConfigError(f"ghn eval: sgd_epochs = {list(sgd_epochs)}; expected integers >= 1")
    for name, ghn in ghns.items():
        if ghn.config.num_classes != task.num_classes:
            raise ConfigError(f"ghn eval: GHN {name!r} predicts {ghn.config.num_classes} classes; "
                              f"task {task.name!r} has {task.num_classes}")
    gen = ArchGenerator(task, seed=generator_seed, sizes={s: archs for s in splits})
    bn = _bn_batches(task, seed=seed)
    results: dict[str, SplitResult] = {}
    for split in splits:
        res = SplitResult(split, sgd={e: [] for e in sgd_epochs},
                          predicted={n: [] for n in ghns}, predict_seconds={n: [] for n in ghns})
        for i, d in enumerate(gen.descriptions(split, archs)):
            model = gen.build(d)
            res.names.append(description_key(d))
            res.params.append(sum(p.numel() for p in model.parameters()))
            estimate_bn_stats(model, bn)
            res.random.append(evaluate(model, task.test)[0])
            for e in sgd_epochs:
                m = gen.build(d)
                fit(m, task.train, None, sgd_config(e), seed=derive_seed(seed, i, e))
                res.sgd[e].append(evaluate(m, task.test)[0])
            for name, ghn in ghns.items():
                m = gen.build(d)
                res.predict_seconds[name].append(timed_prediction(ghn, m))
                estimate_bn_stats(m, bn)
                res.predicted[name].append(evaluate(m, task.test)[0])
            if log is not None:
                parts = [f"random {res.random[-1]:.3f}"] + \
                        [f"sgd{e} {res.sgd[e][-1]:.3f}" for e in sgd_epochs] + \
                        [f"{n} {res.predicted[n][-1]:.3f}" for n in ghns]
                log(f"{split} {i + 1}/{archs}: " + ", ".join(parts))
        results[split] = res
    return results


__all__ = ["evaluate_splits", "SplitResult", "mean_ci95", "sgd_config", "timed_prediction"]
