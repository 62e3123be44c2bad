"""Uses of a trained GHN beyond filling one model: k-shot fine-tuning from predicted parameters,
and property prediction from graph embeddings (GHN-2, Knyazev et al. 2021, Sec. 5).

- :func:`kshot_compare`: for each architecture, fine-tune from the GHN's predicted parameters
  and from random initialisation on ``k`` training samples per class, with the same optimizer,
  steps, batches and seed (through the one training engine), and compare test accuracy.
- :func:`graph_embeddings` / :func:`property_prediction`: GHN-2's property prediction: the mean
  node state of a network's graph after message passing is a fixed-length feature; a
  scikit-learn regressor (GHN-2: RBF-SVR) fitted on some architectures predicts a property
  (trained accuracy, inference time, convergence speed) of others, scored by Kendall's tau.
- :func:`convergence_epoch`: the convergence target: the first epoch whose validation accuracy
  is within ``tolerance`` of the run's best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core import Task
from ..errors import ConfigError


def kshot_subset(task: Task, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` training samples of every class (fewer where a class has fewer), seeded."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k-shot: k = {k!r}; expected an integer >= 1")
    x, y = task.train
    gen = torch.Generator().manual_seed(int(seed))
    keep = []
    for c in range(task.num_classes):
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:k]])
    sel = torch.cat(keep)
    sel = sel[torch.randperm(len(sel), generator=gen)]
    return x[sel], y[sel]


def _ci95(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()) if len(v) else math.nan, math.nan
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


@dataclass
class KShotResult:
    """Per-architecture test accuracies after fine-tuning, from predicted and from random init
    (and before fine-tuning: ``*_start``), with means and 95% intervals over architectures."""

    k: int
    steps: int
    predicted: list[float] = field(default_factory=list)
    random: list[float] = field(default_factory=list)
    predicted_start: list[float] = field(default_factory=list)
    random_start: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        wins = sum(p > r for p, r in zip(self.predicted, self.random))
        out: dict[str, Any] = {"k": self.k, "steps": self.steps, "archs": len(self.predicted),
                               "wins": wins}
        for name in ("predicted", "random", "predicted_start", "random_start"):
            out[name], out[name + "_ci95"] = _ci95(getattr(self, name))
        return out


def kshot_compare(ghn: Any, models: Sequence[tuple[str, Callable[[], nn.Module]]], task: Task, *,
                  k: int = 10, steps: int = 100, lr: float = 1e-3, optimizer: str = "adam",
                  batch_size: int = 32, seed: int = 0, bn_batches: int = 4) -> KShotResult:
    """Fine-tune each ``(name, build)`` model from GHN-predicted and from random parameters on
    ``k`` samples per class for ``steps`` optimizer steps each (same batches, same seed) and
    report test accuracy. ``build()`` returns a fresh, randomly initialised module (the random
    baseline trains that one; the GHN overwrites a second copy). Batch-norm statistics of the
    predicted model come from the k-shot samples only."""
    from ..training import TrainConfig, evaluate_metrics, fit

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"k-shot: steps = {steps!r}; expected an integer >= 1")
    data = kshot_subset(task, k, seed)
    n = len(data[0])
    batch = min(batch_size, n)
    per_epoch = math.ceil(n / batch)
    epochs = max(1, math.ceil(steps / per_epoch))
    config = TrainConfig(optimizer=optimizer, lr=lr, batch_size=batch, epochs=epochs,  # type: ignore[arg-type]
                         cosine=False, restore_best=False)
    result = KShotResult(k=k, steps=epochs * per_epoch)
    example = torch.zeros(1, *task.input_shape)
    bn = [data[0][i:i + batch] for i in range(0, n, batch)][:bn_batches]
    for name, build in models:
        scratch = build()
        guided = build()
        ghn(guided, example_input=example, bn_data=bn, bn_batches=bn_batches, batch_size=batch)
        for model, start, end in ((guided, result.predicted_start, result.predicted),
                                  (scratch, result.random_start, result.random)):
            model.eval()
            start.append(evaluate_metrics(model, task.test, config)["acc"])
            fit(model, data, None, config, seed=seed)
            model.eval()
            end.append(evaluate_metrics(model, task.test, config)["acc"])
        result.names.append(name)
    return result


# ------------------------------------------------------------------------------------------------
# property prediction


@torch.no_grad()
def graph_embeddings(ghn: Any, models: Sequence[nn.Module], input_shape: Sequence[int]) -> np.ndarray:
    """``[len(models), hid]``: each model's mean node state under ``ghn`` (GHN-2's features)."""
    example = torch.zeros(1, *input_shape)
    rows = [ghn.graph_embedding(ghn.graph_of(m, example)).detach().cpu().numpy() for m in models]
    return np.stack(rows) if rows else np.zeros((0, int(getattr(ghn.config, "hid", 0))))


def convergence_epoch(val_curve: Sequence[float], tolerance: float = 0.01) -> int:
    """The first (1-based) epoch whose validation accuracy is within ``tolerance`` of the best."""
    curve = [v for v in val_curve if v == v]
    if not curve:
        return 0
    best = max(curve)
    return next(i + 1 for i, v in enumerate(curve) if v >= best - tolerance)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(np.asarray(a, dtype=float), np.asarray(b, dtype=float)).statistic
    return float(tau) if tau == tau else 0.0


def property_prediction(train_x: np.ndarray, train_y: Sequence[float], test_x: np.ndarray,
                        test_y: Sequence[float], *, regressor: str = "svr") -> dict[str, Any]:
    """Fit ``regressor`` (``svr``: RBF-SVR as GHN-2, ``ridge``, ``forest``) on standardised
    features and targets; Kendall's tau of its predictions on the test architectures."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    models = {"svr": lambda: SVR(kernel="rbf"), "ridge": lambda: Ridge(alpha=1.0),
              "forest": lambda: RandomForestRegressor(n_estimators=200, random_state=0)}
    if regressor not in models:
        raise ConfigError(f"property prediction: regressor {regressor!r}; expected one of "
                          f"{', '.join(models)}")
    ty = np.asarray(train_y, dtype=float)
    mu, sd = ty.mean(), ty.std() or 1.0
    model = make_pipeline(StandardScaler(), models[regressor]())
    model.fit(np.asarray(train_x), (ty - mu) / sd)
    pred = model.predict(np.asarray(test_x)) * sd + mu
    return {"tau": kendall_tau(pred, test_y), "pred": pred.tolist(), "regressor": regressor,
            "train": len(ty), "test": len(pred)}


__all__ = ["kshot_subset", "kshot_compare", "KShotResult", "graph_embeddings", "convergence_epoch",
           "kendall_tau", "property_prediction"]
