"""scikit-learn predictors and the cost baselines every learned predictor must beat.

``svr``: support-vector regression on hand features (counts of each operation from
``space.graph(arch).op_counts``, plus log parameters and log FLOPs of the built network), as
POPNASv3 predicts training time. ``gp``: a Gaussian process on ``space.encode`` (with a std).
``gbt``: gradient-boosted trees on ``space.encode``. ``params`` / ``flops``: the architecture's
parameter count / FLOPs as its score (no learning: larger networks rank higher).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch

from ..core import Architecture, SearchSpace, Task
from ..cost import count_flops, count_params
from ..errors import ArchitectureError, ConfigError
from ..registry import register
from .base import Predictor


def _shape_task(input_shape: Sequence[int], num_classes: int) -> Task:
    """A data-free task of the given shape, enough for ``space.build``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise ConfigError(f"input_shape = {list(input_shape)!r}; expected (C, H, W) or (C, L) "
                          "with positive sizes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes = {num_classes!r}; expected an integer >= 2")
    empty = (torch.zeros(0, *shape), torch.zeros(0, dtype=torch.long))
    return Task(name="shape-only", kind="image" if len(shape) == 3 else "series",
                input_shape=shape, num_classes=num_classes, train=empty, val=empty, test=empty)


_COST_CACHE: dict[tuple, tuple[float, float]] = {}  # costs are pure functions of these keys


class CostModel:
    """Parameters and FLOPs of architectures built for a task shape, cached by architecture.

    Networks are built on the meta device: no memory for weights and no random draws.
    """

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10):
        self.task = _shape_task(input_shape, num_classes)

    def costs(self, space: SearchSpace, arch: Architecture, *, flops: bool = True
              ) -> tuple[float, float]:
        key = (type(space).__name__, repr(getattr(space, "__dict__", "")), str(arch),
               self.task.input_shape, self.task.num_classes)
        hit = _COST_CACHE.get(key)
        if hit is not None and (not flops or not math.isnan(hit[1])):
            return hit
        try:
            with torch.device("meta"):
                net = space.build(arch, self.task)
        except ArchitectureError as exc:
            raise ArchitectureError(f"cannot build {arch} for input shape "
                                    f"{self.task.input_shape} to count its cost: {exc}") from None
        params = float(count_params(net))
        n_flops = float(count_flops(net, self.task.input_shape)) if flops else math.nan
        _COST_CACHE[key] = (params, n_flops)
        return params, n_flops


class _CostBaseline(Predictor):
    column = 0

    def __init__(self, *, seed: int = 0, input_shape: list[int] = [3, 32, 32],  # noqa: B006
                 num_classes: int = 10, canonical: bool = False):
        super().__init__(seed=seed, canonical=canonical)
        self.cost = CostModel(input_shape, num_classes)

    def _fit(self, archs: list[Architecture], y: np.ndarray, space: SearchSpace) -> None:
        pass  # nothing to learn: the score is the cost itself

    def _predict(self, archs: list[Architecture]) -> tuple[np.ndarray, None]:
        assert self.space is not None
        need_flops = self.column == 1
        return np.array([self.cost.costs(self.space, a, flops=need_flops)[self.column]
                         for a in archs]), None


@register("predictors", "params")
class ParamsBaseline(_CostBaseline):
    """Score = parameter count of the network built for ``input_shape`` / ``num_classes``."""

    name = "params"
    column = 0


@register("predictors", "flops")
class FlopsBaseline(_CostBaseline):
    """Score = FLOPs of one forward pass of the network built for ``input_shape``."""

    name = "flops"
    column = 1


@register("predictors", "svr")
class SVRPredictor(Predictor):
    """RBF support-vector regression on hand features (+ log params and log FLOPs when
    ``cost_features``; off by default: building every network to count
    its FLOPs costs about a second per architecture on a busy CPU), features and targets
    standardised (POPNASv3's time predictor).

    The hand features are the space's own ``time_features(arch, op_scores)`` where it has them
    (the ``cell`` space: POPNASv3's nine features, ``op_scores`` the per-operator time scores
    the ``progressive`` strategy measures), else the count of each operation in
    ``space.graph(arch)``."""

    name = "svr"

    def __init__(self, *, seed: int = 0, C: float = 1.0, epsilon: float = 0.1,
                 cost_features: bool = False, input_shape: list[int] = [3, 32, 32],  # noqa: B006
                 num_classes: int = 10, canonical: bool = False,
                 op_scores: dict[str, float] | None = None):
        super().__init__(seed=seed, canonical=canonical)
        if not (C > 0 and epsilon >= 0):
            raise ConfigError(f"svr: C = {C!r}, epsilon = {epsilon!r}; expected C > 0 and "
                              "epsilon >= 0")
        self.C, self.epsilon, self.cost_features = float(C), float(epsilon), cost_features
        self.cost = CostModel(input_shape, num_classes) if cost_features else None
        if op_scores is not None and not (
                isinstance(op_scores, dict)
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in op_scores.values())):
            raise ConfigError(f"svr: op_scores = {op_scores!r}; expected a mapping of operator "
                              "to a finite number")
        self.op_scores = None if op_scores is None else {str(k): float(v)
                                                         for k, v in op_scores.items()}

    def features(self, archs: Sequence[Architecture]) -> np.ndarray:
        assert self.space is not None
        vocab = self.space.op_vocab
        hand = getattr(self.space, "time_features", None)
        rows = []
        for a in archs:
            if callable(hand):
                row = [float(v) for v in hand(a, self.op_scores)]
            else:
                row = list(self.space.graph(a).op_counts(vocab).astype(np.float64))
            if self.cost is not None:
                params, flops = self.cost.costs(self.space, a)
                row += [math.log1p(params), math.log1p(flops)]
            rows.append(row)
        return np.asarray(rows, dtype=np.float64)

    def _fit(self, archs: list[Architecture], y: np.ndarray, space: SearchSpace) -> None:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVR

        self._y_mean, self._y_std = float(y.mean()), float(y.std()) or 1.0
        self._model = make_pipeline(StandardScaler(), SVR(C=self.C, epsilon=self.epsilon))
        self._model.fit(self.features(archs), (y - self._y_mean) / self._y_std)

    def _predict(self, archs: list[Architecture]) -> tuple[np.ndarray, None]:
        return self._model.predict(self.features(archs)) * self._y_std + self._y_mean, None


@register("predictors", "gp")
class GPPredictor(Predictor):
    """Gaussian process on ``space.encode`` (constant x RBF + white noise, hyperparameters by
    marginal likelihood, targets normalised); predicts a mean and a std."""

    name = "gp"
    has_std = True

    def __init__(self, *, seed: int = 0, restarts: int = 0, canonical: bool = True):
        super().__init__(seed=seed, canonical=canonical)
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
            raise ConfigError(f"gp: restarts = {restarts!r}; expected an integer >= 0")
        self.restarts = restarts

    def _fit(self, archs: list[Architecture], y: np.ndarray, space: SearchSpace) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(2.0, (1e-2, 1e3))
                  + WhiteKernel(0.1, (1e-6, 1e1)))
        self._model = GaussianProcessRegressor(kernel, normalize_y=True,
                                               n_restarts_optimizer=self.restarts,
                                               random_state=np.random.RandomState(self.seed))
        with warnings.catch_warnings():  # hyperparameters at a bound are expected with few points
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._model.fit(self._encodings(archs), y)

    def _predict(self, archs: list[Architecture]) -> tuple[np.ndarray, np.ndarray]:
        return self._model.predict(self._encodings(archs), return_std=True)


@register("predictors", "gbt")
class GBTPredictor(Predictor):
    """Gradient-boosted regression trees on ``space.encode`` (scikit-learn)."""

    name = "gbt"

    def __init__(self, *, seed: int = 0, n_estimators: int = 300, learning_rate: float = 0.05,
                 max_depth: int = 3, subsample: float = 0.8, canonical: bool = True):
        super().__init__(seed=seed, canonical=canonical)
        if not (n_estimators >= 1 and learning_rate > 0 and max_depth >= 1
                and 0 < subsample <= 1):
            raise ConfigError(f"gbt: n_estimators={n_estimators!r}, learning_rate="
                              f"{learning_rate!r}, max_depth={max_depth!r}, subsample="
                              f"{subsample!r}; expected >= 1, > 0, >= 1 and in (0, 1]")
        self.options = dict(n_estimators=n_estimators, learning_rate=learning_rate,
                            max_depth=max_depth, subsample=subsample)

    def _fit(self, archs: list[Architecture], y: np.ndarray, space: SearchSpace) -> None:
        from sklearn.ensemble import GradientBoostingRegressor

        self._model = GradientBoostingRegressor(random_state=self.seed, **self.options)
        self._model.fit(self._encodings(archs), y)

    def _predict(self, archs: list[Architecture]) -> tuple[np.ndarray, None]:
        return self._model.predict(self._encodings(archs)), None
