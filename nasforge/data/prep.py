"""What every loader shares: the stratified split (from ``split_seed``), the cap and normalisation.

A loader reads its files into numpy arrays (``x`` channel-first, ``y`` integer labels) and hands
them to ``make_task``, so every task is split, capped and normalised the same way.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..core import Task, TaskKind, derive_seed
from ..errors import ConfigError, DataError

_SPLIT_SALT = 0x5B117  # keeps the split stream apart from other uses of the same seed
_CHUNK = 1024


def stratified_split(y: np.ndarray, sizes: Sequence[int], rng: np.random.Generator,
                     ) -> list[np.ndarray]:
    """Disjoint sorted index arrays: one per requested size, each with the class mix of ``y``,
    then one with all remaining indices. Deterministic given the generator's state."""
    y = np.asarray(y)
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes) or sum(sizes) > len(y):
        raise ValueError(f"split sizes {sizes} do not fit {len(y)} examples")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    left = counts.copy()
    per_part = []
    for size in sizes:
        take = _allocate(size, counts, left)
        left -= take
        per_part.append(take)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(sizes) + 1)]
    for k in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == k))
        start = 0
        for p, take in enumerate(per_part):
            parts[p].append(members[start:start + take[k]])
            start += take[k]
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def _allocate(total: int, weights: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Non-negative integers summing to ``total``, proportional to ``weights``, each <= ``cap``
    (largest-remainder rounding, ties to the lower class index)."""
    quota = total * weights / max(int(weights.sum()), 1)
    take = np.minimum(np.floor(quota).astype(np.int64), cap)
    order = np.argsort(-(quota - take), kind="stable")
    short = total - int(take.sum())
    while short > 0:
        room = [k for k in order if take[k] < cap[k]]
        if not room:
            raise ValueError(f"cannot take {total} examples from classes of sizes {cap.tolist()}")
        for k in room[:short]:
            take[k] += 1
        short -= min(short, len(room))
    return take


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``x`` (N, C, ...), in float64, chunk by chunk."""
    axes = (0, *range(2, x.ndim))
    count = x.shape[0] * math.prod(x.shape[2:])
    if count == 0:
        raise DataError("cannot normalise an empty training split")
    total = sum((c.sum(axis=axes, dtype=np.float64) for c in _chunks(x)), np.zeros(x.shape[1]))
    mean = total / count
    shape = (1, -1) + (1,) * (x.ndim - 2)
    sq = sum((np.square(c - mean.reshape(shape)).sum(axis=axes) for c in _chunks(x)),
             np.zeros(x.shape[1]))
    std = np.sqrt(sq / count)
    return mean, np.where(std > 1e-12, std, 1.0)  # a constant channel is only centred


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per channel, as float32, in place when ``x`` is already float32."""
    x = np.asarray(x, dtype=np.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m, s = mean.astype(np.float32).reshape(shape), std.astype(np.float32).reshape(shape)
    for c in _chunks(x):
        c -= m
        c /= s
    return x


def _chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, x.shape[0], _CHUNK):
        yield x[start:start + _CHUNK]


def check_fraction(loader: str, option: str, value: float) -> None:
    """Refuse a split fraction outside the open interval (0, 1)."""
    if not 0 < value < 1:  # also refuses NaN
        raise ConfigError(f"{loader}: {option}={value!r}; expected a fraction with 0 < value < 1")


def make_task(name: str, kind: TaskKind, x_train: np.ndarray, y_train: np.ndarray,
              x_test: np.ndarray | None = None, y_test: np.ndarray | None = None, *,
              split_seed: int = 0, val_fraction: float, test_fraction: float | None = None,
              limit: int | None = None, scale: float = 1.0, num_classes: int | None = None,
              class_names: list[str] | None = None, meta: dict[str, Any] | None = None) -> Task:
    """Split, cap, scale and normalise arrays into a ``Task``.

    ``x`` is channel-first (``(N, C, H, W)`` or ``(N, C, L)``), any numeric dtype; ``y`` integer
    labels in ``[0, num_classes)``. Without a test set, ``val_fraction`` and ``test_fraction``
    are fractions of all examples; with one, ``val_fraction`` is carved from the training set.
    ``limit`` then caps the training split (stratified); val and test are not capped. Inputs are
    multiplied by ``scale`` (e.g. 1/255 for bytes) and normalised per channel with statistics of
    the final training split, which ``meta`` records as ``mean`` and ``std``. The split and the
    cap are drawn from ``split_seed`` alone (recorded in ``meta``), so a run's seed never
    changes which examples are tested.
    """
    check_fraction(name, "val_fraction", val_fraction)
    if limit is not None and limit < 1:
        raise ConfigError(f"{name}: limit={limit!r}; expected a positive number of training "
                          "examples or None for all")
    y_train = _labels(name, "training", y_train, len(x_train))
    where = f"{name} ({meta['source']})" if meta and meta.get("source") else name
    if len(y_train) == 0:
        raise DataError(f"{where}: the training set is empty; expected examples to train on")
    if x_test is not None and y_test is not None and len(y_test) == 0:
        raise DataError(f"{where}: the test split is empty; expected at least one test example")
    rng = np.random.default_rng(derive_seed(split_seed, _SPLIT_SALT))
    n = len(y_train)
    if x_test is None or y_test is None:
        if test_fraction is None:
            raise ValueError("make_task: give x_test and y_test, or test_fraction")
        check_fraction(name, "test_fraction", test_fraction)
        if val_fraction + test_fraction >= 1:
            raise ConfigError(f"{name}: val_fraction={val_fraction} + test_fraction="
                              f"{test_fraction} leave no training examples; expected a sum < 1")
        n_val, n_test = round(val_fraction * n), round(test_fraction * n)
        _check_nonempty(name, n, {"val_fraction": (val_fraction, n_val),
                                  "test_fraction": (test_fraction, n_test)})
        val_idx, test_idx, train_idx = stratified_split(y_train, [n_val, n_test], rng)
        x_test, y_test = x_train[test_idx], y_train[test_idx]
    else:
        y_test = _labels(name, "test", y_test, len(x_test))
        if tuple(x_test.shape[1:]) != tuple(x_train.shape[1:]):
            raise DataError(f"{name}: test examples have shape {tuple(x_test.shape[1:])}, training "
                            f"examples {tuple(x_train.shape[1:])}; expected the same")
        n_val = round(val_fraction * n)
        _check_nonempty(name, n, {"val_fraction": (val_fraction, n_val)})
        val_idx, train_idx = stratified_split(y_train, [n_val], rng)
    if limit is not None and limit < len(train_idx):
        keep, _ = stratified_split(y_train[train_idx], [limit], rng)
        train_idx = train_idx[keep]

    splits = {"train": (x_train[train_idx], y_train[train_idx]),
              "val": (x_train[val_idx], y_train[val_idx]), "test": (x_test, y_test)}
    k = num_classes if num_classes is not None else 1 + max(int(y.max(initial=0))
                                                            for _, y in splits.values())
    for split, (_, y) in splits.items():
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DataError(f"{name}: {split} labels span {int(y.min())}..{int(y.max())}; "
                            f"expected 0..{k - 1}")
    present = np.unique(y_train)
    if len(present) < 2:
        raise DataError(f"{where}: every training label is {int(present[0])}, a single class; "
                        "expected at least two classes to tell apart")
    scaled = {s: (_as_float(x, scale), y) for s, (x, y) in splits.items()}
    mean, std = channel_stats(scaled["train"][0])
    tensors = {s: (torch.from_numpy(normalise(x, mean, std)), torch.from_numpy(y.astype(np.int64)))
               for s, (x, y) in scaled.items()}
    info = dict(meta or {})
    info.update(split_seed=split_seed, val_fraction=val_fraction, limit=limit,
                mean=[float(v) for v in mean], std=[float(v) for v in std])
    if test_fraction is not None:
        info["test_fraction"] = test_fraction
    return Task(name=name, kind=kind, input_shape=tuple(int(d) for d in x_train.shape[1:]),
                num_classes=k, train=tensors["train"], val=tensors["val"], test=tensors["test"],
                class_names=class_names, meta=info)


def _labels(name: str, split: str, y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{name}: {split} labels have shape {y.shape}; expected ({n},), one per "
                        "example")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: {split} labels have dtype {y.dtype}; expected integers")
    return y.astype(np.int64, copy=False)


def _check_nonempty(name: str, n: int, parts: dict[str, tuple[float, int]]) -> None:
    for option, (fraction, size) in parts.items():
        if size < 1:
            raise ConfigError(f"{name}: {option}={fraction} of {n} examples selects none; "
                              "expected a larger fraction")
    if n - sum(size for _, size in parts.values()) < 1:
        raise ConfigError(f"{name}: {', '.join(parts)} leave no training examples out of {n}")


def _as_float(x: np.ndarray, scale: float) -> np.ndarray:
    """A fresh float32 copy of ``x`` times ``scale`` (it is normalised in place later)."""
    if scale == 1.0:
        return np.asarray(x).astype(np.float32)
    return np.multiply(x, np.float32(scale), dtype=np.float32)
