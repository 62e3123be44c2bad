"""Evaluator ``ghn``: score an architecture by the accuracy of parameters a graph hypernetwork
predicts for it, without training (GHN-2, Knyazev et al. 2021).

Each trial builds the space's network for the task, traces its graph, fills every parameter
with the GHN's prediction, estimates batch-norm running statistics on ``bn_batches`` batches of
training inputs (running statistics are not predicted), and measures validation and test
accuracy. It takes well under a second per network on a CPU, so any strategy can search many
architectures with it; ``method: ghn_search`` ranks candidates with it and trains only the best.

The GHN file (``nasforge ghn train`` writes one) is loaded once per process and cached; the
evaluator itself only holds options, so it travels to process-pool workers cheaply.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from ..core import Architecture, Evaluator, SearchSpace, Task, TrialResult
from ..cost import count_flops, count_params
from ..errors import ArchitectureError, ConfigError
from ..registry import register
from ..training import TrainConfig, evaluate_metrics
from .train import build_network

_CACHE: dict[tuple[str, float], Any] = {}


def load_ghn(path: str | Path) -> Any:
    """The GHN saved at ``path`` (cached per process by path and modification time)."""
    from ..ghn import load

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"ghn evaluator: GHN file {str(path)!r} does not exist (train one with "
                          "`nasforge ghn train`)")
    key = (str(p.resolve()), os.path.getmtime(p))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load(p)
    return _CACHE[key]


def bn_batches_of(task: Task, batches: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """``batches`` batches of training inputs in a seeded random order (no global RNG)."""
    x = task.train[0]
    if batches == 0 or len(x) == 0:
        return []
    gen = torch.Generator().manual_seed(int(seed) % (2 ** 63))
    idx = torch.randperm(len(x), generator=gen)[:batches * batch_size]
    return [x[idx[i:i + batch_size]] for i in range(0, len(idx), batch_size)]


def fill_with_ghn(ghn: Any, model: torch.nn.Module, task: Task, *, bn_batches: int = 4,
                  batch_size: int = 64, seed: int = 0, graph: Any = None) -> float:
    """Fill ``model`` with ``ghn``'s predicted parameters and batch-norm statistics from
    ``task``'s training inputs; returns the seconds spent (graph, prediction, statistics)."""
    started = time.perf_counter()
    example = torch.zeros(1, *task.input_shape)
    ghn(model, example_input=example, bn_data=bn_batches_of(task, bn_batches, batch_size, seed),
        bn_batches=bn_batches, batch_size=batch_size, graph=graph)
    return time.perf_counter() - started


@register("evaluators", "ghn")
class GhnEvaluator(Evaluator):
    """Accuracy of GHN-predicted parameters (no training); see the module docstring.

    Options: ``ghn`` (path of a GHN file, required), ``bn_batches`` / ``batch_size`` (batches of
    training inputs for the batch-norm statistics; 4 x 64 by default, as GHN-2's evaluation
    batch), ``test`` (also measure test accuracy), ``metric_prefix`` (``"ghn_"`` names the
    metrics ``ghn_val_acc`` ..., so they do not compete with trained accuracy in one run; used
    by ``method: ghn_search``), ``bn_draws`` / ``train_images`` (a steadier ranking score, see
    below). Metrics: ``val_acc`` (also ``reward``),
    ``val_loss``, ``test_acc`` / ``test_loss``; cost: ``params``, ``flops``, ``predict_seconds``
    (graph, prediction and batch-norm statistics). A network the GHN cannot represent (see
    ``nasforge.ghn.graph``), or one for another class count than the GHN's, gives a failed trial.
    With ``bn_draws`` > 1 or ``train_images`` > 0 also ``score`` and ``score_loss``: accuracy and
    loss on the validation split plus the first ``train_images`` training inputs, averaged over
    ``bn_draws`` draws of the batch-norm batches (the prediction is the same; only the
    statistics change). On digits (180 validation images) ``bn_draws=2, train_images=540`` ranked
    unseen networks better than validation accuracy alone (``docs/ghn.md``).
    """

    name = "ghn"

    def __init__(self, *, ghn: str = "", bn_batches: int = 4, batch_size: int = 64,
                 test: bool = True, metric_prefix: str = "", bn_draws: int = 1,
                 train_images: int = 0):
        if not isinstance(ghn, (str, os.PathLike)) or not str(ghn):
            raise ConfigError("ghn evaluator: option ghn (the path of a GHN file) is required, "
                              "e.g. -o evaluator.ghn=runs/ghn/ghn.pt")
        if isinstance(bn_batches, bool) or not isinstance(bn_batches, int) or bn_batches < 0:
            raise ConfigError(f"ghn evaluator: bn_batches = {bn_batches!r}; expected an integer >= 0")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"ghn evaluator: batch_size = {batch_size!r}; expected an integer >= 1")
        for key, value, low in (("bn_draws", bn_draws, 1), ("train_images", train_images, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"ghn evaluator: {key} = {value!r}; expected an integer >= {low}")
        self.bn_draws, self.train_images = bn_draws, train_images
        self.ghn = str(ghn)
        self.bn_batches, self.batch_size, self.test = bn_batches, batch_size, bool(test)
        if metric_prefix not in ("", "ghn_"):
            raise ConfigError(f"ghn evaluator: metric_prefix = {metric_prefix!r}; expected '' or 'ghn_'")
        self.metric_prefix = metric_prefix

    def metrics(self) -> frozenset[str]:
        names = {"val_acc", "reward", "val_loss"} | ({"test_acc", "test_loss"} if self.test else set())
        if self._scored():
            names |= {"score", "score_loss"}
        return frozenset({self.metric_prefix + m for m in names}
                         | {"params", "flops", "predict_seconds"})

    def validate(self, space: SearchSpace) -> None:
        load_ghn(self.ghn)  # a missing or unreadable file stops the run before any work

    def evaluate(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
                 workdir: Path | None = None) -> TrialResult:
        try:
            ghn = load_ghn(self.ghn)
        except Exception as exc:
            return TrialResult.failed(f"loading the GHN failed: {exc}")
        classes = int(getattr(ghn.config, "num_classes", task.num_classes))
        if classes != task.num_classes:
            return TrialResult.failed(f"the GHN predicts {classes}-class classifiers; task "
                                      f"{task.name!r} has {task.num_classes} classes")
        try:
            net = build_network(space, arch, task, seed=seed)
        except ArchitectureError as exc:
            return TrialResult.failed(f"architecture does not fit task {task.name!r}: {exc}")
        except Exception as exc:
            return TrialResult.failed(f"building the network failed: {type(exc).__name__}: {exc}")
        cost: dict[str, float] = {}
        stage = "predicting parameters"
        try:
            cost["params"] = float(count_params(net))
            cost["flops"] = float(count_flops(net, task.input_shape))
            cost["predict_seconds"] = fill_with_ghn(ghn, net, task, bn_batches=self.bn_batches,
                                                    batch_size=self.batch_size, seed=seed)
            net.eval()
            stage = "evaluating"
            config = TrainConfig().for_task(task.kind)
            val = evaluate_metrics(net, task.val, config)
            metrics = {"val_acc": val["acc"], "reward": val["acc"], "val_loss": val["loss"]}
            if self.test:
                test = evaluate_metrics(net, task.test, config)
                metrics.update(test_acc=test["acc"], test_loss=test["loss"])
            if self._scored():
                metrics.update(self._score(net, task, config, val, seed))
            metrics = {self.metric_prefix + k: v for k, v in metrics.items()}
            return TrialResult(metrics=metrics, cost=cost)
        except ArchitectureError as exc:
            return TrialResult.failed(f"the GHN cannot represent this network: {exc}", cost=cost)
        except Exception as exc:
            return TrialResult.failed(f"{stage} failed: {type(exc).__name__}: {exc}", cost=cost)

    def _scored(self) -> bool:
        return self.bn_draws > 1 or self.train_images > 0

    def _score(self, net: torch.nn.Module, task: Task, config: TrainConfig, val: dict, seed: int
               ) -> dict[str, float]:
        """``score`` / ``score_loss`` (class docstring); ``val``: draw 0's validation metrics."""
        from ..core import derive_seed
        from ..ghn.model import estimate_bn_stats

        part = (task.train[0][:self.train_images], task.train[1][:self.train_images])
        n_val, n_tr = len(task.val[0]), len(part[0])
        acc, loss = [], []
        for k in range(self.bn_draws):
            if k > 0:
                estimate_bn_stats(net, bn_batches_of(task, self.bn_batches, self.batch_size,
                                                     derive_seed(seed, 0xB5, k)))
                net.eval()
                val = evaluate_metrics(net, task.val, config)
            tr = evaluate_metrics(net, part, config) if n_tr else {"acc": 0.0, "loss": 0.0}
            acc.append((n_val * val["acc"] + n_tr * tr["acc"]) / (n_val + n_tr))
            loss.append((n_val * val["loss"] + n_tr * tr["loss"]) / (n_val + n_tr))
        return {"score": sum(acc) / len(acc), "score_loss": sum(loss) / len(loss)}


__all__ = ["GhnEvaluator", "load_ghn", "fill_with_ghn", "bn_batches_of"]
