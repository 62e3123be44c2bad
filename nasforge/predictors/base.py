"""The predictor contract and the rank metrics predictors are judged by."""

from __future__ import annotations

import abc
import math
from typing import Any, Sequence

import numpy as np

from ..core import Architecture, SearchSpace
from ..errors import ConfigError, DataError


class Predictor(abc.ABC):
    """Predicts a score (accuracy, time, ...) of architectures of one space from a few examples.

    Contract:

    - Constructed with keyword options and ``seed`` (an int); the seed fixes every random draw
      (initialisation, shuffling, bootstraps) through local generators, never global state, so the
      same seed, data and options give the same predictions.
    - ``fit(archs, targets, space)`` learns from architectures of ``space`` and their finite
      float targets (at least ``min_fit`` of them); it may be called again, replacing what was
      learned. It returns the predictor.
    - ``predict(archs)`` returns a float64 array of predicted targets (higher is higher, in the
      targets' units); ``predict(archs, return_std=True)`` returns ``(mean, std)`` for models
      with an uncertainty (``has_std``), and refuses otherwise.
    - ``canonical`` (an option of every predictor): read each architecture as its space's
      representative (``space.canonical``), so architectures that compute the same function
      (NAS-Bench-201: isomorphic cells, branches cut off by ``none``) get equal predictions. On
      for the accuracy predictors; off for the cost baselines and ``svr`` (a dead branch's
      parameters still cost time and memory). A no-op on spaces without equivalences.
    - Bad input (lengths that differ, non-finite targets, too few examples, predicting before
      fitting, architectures the space refuses) raises a ``NasforgeError`` naming the value.

    Subclasses implement ``_fit(archs, y, space)`` and ``_predict(archs) -> (mean, std|None)``.
    """

    name = "predictor"
    has_std = False
    min_fit = 2

    def __init__(self, *, seed: int = 0, canonical: bool = False):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"predictor seed = {seed!r}; expected an integer")
        if not isinstance(canonical, bool):
            raise ConfigError(f"{self.name}: canonical = {canonical!r}; expected true or false")
        self.seed = int(seed)
        self.canonical = canonical
        self.space: SearchSpace | None = None

    def fit(self, archs: Sequence[Architecture], targets: Sequence[float],
            space: SearchSpace) -> "Predictor":
        """Learn from ``archs`` and their ``targets``; returns ``self``."""
        if not isinstance(space, SearchSpace):
            raise ConfigError(f"{self.name}: space is a {type(space).__name__}; expected a "
                              "SearchSpace")
        archs = list(archs)
        y = np.asarray(list(targets), dtype=np.float64).reshape(-1)
        if len(archs) != len(y):
            raise DataError(f"{self.name}: {len(archs)} architectures but {len(y)} targets; "
                            "expected one target per architecture")
        if len(archs) < self.min_fit:
            raise DataError(f"{self.name}: {len(archs)} architectures to fit; expected at least "
                            f"{self.min_fit}")
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            raise DataError(f"{self.name}: target {y[bad[0]]!r} at position {int(bad[0])}; "
                            "expected finite numbers")
        self.space = space
        self._fit(self._canonical(archs), y, space)
        return self

    def predict(self, archs: Sequence[Architecture], return_std: bool = False) -> Any:
        """Predicted targets of ``archs`` (and their std with ``return_std=True``)."""
        if self.space is None:
            raise DataError(f"{self.name}: predict called before fit")
        if return_std and not self.has_std:
            raise ConfigError(f"predictor {self.name!r} has no uncertainty; call predict with "
                              "return_std=False")
        archs = list(archs)
        if not archs:
            empty = np.zeros(0)
            return (empty, empty) if return_std else empty
        mean, std = self._predict(self._canonical(archs))
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        if return_std:
            return mean, np.asarray(std, dtype=np.float64).reshape(-1)
        return mean

    @abc.abstractmethod
    def _fit(self, archs: list[Architecture], y: np.ndarray, space: SearchSpace) -> None: ...

    @abc.abstractmethod
    def _predict(self, archs: list[Architecture]) -> tuple[np.ndarray, np.ndarray | None]: ...

    # helpers shared by the models
    def _canonical(self, archs: list[Architecture]) -> list[Architecture]:
        """``archs`` as their space's representatives when ``canonical`` is on."""
        if not self.canonical or self.space is None:
            return archs
        return [self.space.canonical(a) for a in archs]

    def _encodings(self, archs: Sequence[Architecture]) -> np.ndarray:
        assert self.space is not None
        return np.stack([np.asarray(self.space.encode(a), dtype=np.float32) for a in archs])


class Standardizer:
    """Targets to zero mean and unit variance and back (a constant target keeps std 1)."""

    def __init__(self, y: np.ndarray):
        self.mean = float(np.mean(y))
        sd = float(np.std(y))
        self.std = sd if sd > 1e-12 else 1.0

    def forward(self, y: np.ndarray) -> np.ndarray:
        return (y - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties handled; NaN when either side is constant)."""
    from scipy.stats import kendalltau

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(kendalltau(a, b).statistic)
