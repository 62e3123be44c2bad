"""How well predictors rank architectures: Kendall tau and Spearman rho against true scores.

``learning_curve`` trains each predictor on n random architectures of a table and scores a fixed
held-out set, over seeds; ``cross_validate`` does k-fold cross-validation on a finished run's own
trials. ``summarise`` gives mean and 95% t-intervals; ``plot_tau`` draws tau against n.
``rank_scores`` judges a training-free score (a zero-cost proxy, the parameter count) as a ranker
of a run's trials, with 95% bootstrap intervals; ``proxy_scores`` computes the proxies.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import registry
from ..core import Architecture, SearchSpace
from ..errors import ConfigError, DataError
from .base import kendall_tau, spearman_rho

FIELDS = ["predictor", "n", "seed", "tau", "rho", "fit_s", "predict_s"]


def _one(name: str, options: dict[str, Any], seed: int, space: SearchSpace,
         train: list[Architecture], y_train: np.ndarray, test: list[Architecture],
         y_test: np.ndarray) -> dict[str, Any]:
    pred = registry.create("predictors", name, seed=seed, **options)
    t0 = time.perf_counter()
    pred.fit(train, y_train, space)
    t1 = time.perf_counter()
    out = pred.predict(test)
    t2 = time.perf_counter()
    return {"predictor": name, "n": len(train), "seed": seed, "tau": kendall_tau(out, y_test),
            "rho": spearman_rho(out, y_test), "fit_s": t1 - t0, "predict_s": t2 - t1}


def learning_curve(space: SearchSpace, archs: Sequence[Architecture], targets: Sequence[float],
                   predictors: Sequence[str], ns: Sequence[int], seeds: Sequence[int], *,
                   holdout: int = 1000, options: dict[str, dict[str, Any]] | None = None,
                   on_row: Any = None) -> list[dict[str, Any]]:
    """Rows of (predictor, n, seed, tau, rho, fit_s, predict_s).

    The held-out set (``holdout`` architectures) is fixed by a generator seeded 0; each seed draws
    its n training architectures from the rest (nested: the n=20 set contains the n=10 set).
    """
    archs, y = list(archs), np.asarray(targets, dtype=np.float64)
    if len(archs) != len(y):
        raise DataError(f"{len(archs)} architectures but {len(y)} targets")
    if not ns or min(ns) < 2:
        raise ConfigError(f"training sizes {list(ns)!r}; expected integers >= 2")
    if holdout < 2 or holdout + max(ns) > len(archs):
        raise ConfigError(f"holdout {holdout} + largest n {max(ns)} = {holdout + max(ns)} "
                          f"architectures needed; the table has {len(archs)}")
    for name in predictors:
        registry.get("predictors", name)  # unknown names refused before any training
    perm = np.random.default_rng(0).permutation(len(archs))
    test_idx, pool = perm[:holdout], perm[holdout:]
    test, y_test = [archs[i] for i in test_idx], y[test_idx]
    rows = []
    for seed in seeds:
        order = np.random.default_rng(1000 + seed).permutation(pool)
        for n in ns:
            idx = order[:n]
            for name in predictors:
                row = _one(name, (options or {}).get(name, {}), seed, space,
                           [archs[i] for i in idx], y[idx], test, y_test)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


def cross_validate(space: SearchSpace, archs: Sequence[Architecture], targets: Sequence[float],
                   predictors: Sequence[str], *, folds: int = 5, seeds: Sequence[int] = (0,),
                   options: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """k-fold cross-validation: one row per (predictor, seed, fold), tau on the held-out fold."""
    archs, y = list(archs), np.asarray(targets, dtype=np.float64)
    if folds < 2 or len(archs) < 2 * folds:
        raise DataError(f"{len(archs)} trials for {folds}-fold cross-validation; expected at "
                        f"least {2 * folds} (and folds >= 2)")
    rows = []
    for seed in seeds:
        parts = np.array_split(np.random.default_rng(seed).permutation(len(archs)), folds)
        for k, test_idx in enumerate(parts):
            train_idx = np.concatenate([p for j, p in enumerate(parts) if j != k])
            for name in predictors:
                row = _one(name, (options or {}).get(name, {}), seed, space,
                           [archs[i] for i in train_idx], y[train_idx],
                           [archs[i] for i in test_idx], y[test_idx])
                row["fold"] = k
                rows.append(row)
    return rows


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and the half-width of its 95% t-interval (NaN half-width for one value)."""
    from scipy.stats import t as student_t

    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    half = (student_t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
            if v.size > 1 else math.nan)
    return float(v.mean()), float(half), int(v.size)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (predictor, n): mean tau / rho with 95% half-widths, mean fit and predict seconds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["predictor"], r["n"]), []).append(r)
    out = []
    for (name, n), rs in groups.items():
        tau, tau_ci, k = _interval([r["tau"] for r in rs])
        rho, rho_ci, _ = _interval([r["rho"] for r in rs])
        out.append({"predictor": name, "n": n, "runs": k, "tau": tau, "tau_ci95": tau_ci,
                    "rho": rho, "rho_ci95": rho_ci,
                    "fit_s": float(np.mean([r["fit_s"] for r in rs])),
                    "predict_s": float(np.mean([r["predict_s"] for r in rs]))})
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write rows to a new CSV file (an existing file is never overwritten)."""
    if path.exists():
        raise ConfigError(f"{path} exists; expected a new file (results are never overwritten)")
    keys = list(rows[0]) if rows else FIELDS
    with open(path, "x", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def plot_tau(summary: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Kendall tau against training-set size, one line per predictor, 95% intervals as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.axes import log_axis

    if path.exists():
        raise ConfigError(f"{path} exists; expected a new file (results are never overwritten)")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted({s["predictor"] for s in summary}):
        ss = sorted((s for s in summary if s["predictor"] == name), key=lambda s: s["n"])
        ax.errorbar([s["n"] for s in ss], [s["tau"] for s in ss],
                    yerr=[0 if math.isnan(s["tau_ci95"]) else s["tau_ci95"] for s in ss],
                    marker="o", capsize=3, label=name)
    log_axis(ax, "x")
    ax.set_xlabel("training architectures n")
    ax.set_ylabel("Kendall tau on held-out set")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rank_scores(scores: Sequence[float], targets: Sequence[float], *, resamples: int = 1000,
                seed: int = 0) -> dict[str, float]:
    """Kendall tau and Spearman rho of ``scores`` against ``targets`` with 95% percentile
    bootstrap intervals (``resamples`` resamples of the pairs, generator seeded ``seed``;
    resamples where either side is constant are skipped)."""
    s, t = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if len(s) != len(t) or len(s) < 3:
        raise DataError(f"{len(s)} scores and {len(t)} targets; expected equal counts >= 3")
    if resamples < 1:
        raise ConfigError(f"bootstrap resamples {resamples!r}; expected an integer >= 1")
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(resamples):
        idx = rng.integers(len(s), size=len(s))
        tau = kendall_tau(s[idx], t[idx])
        if not math.isnan(tau):
            taus.append(tau)
            rhos.append(spearman_rho(s[idx], t[idx]))

    def bounds(v: list[float]) -> tuple[float, float]:
        if not v:
            return math.nan, math.nan
        lo, hi = np.percentile(v, [2.5, 97.5])
        return float(lo), float(hi)

    (tau_lo, tau_hi), (rho_lo, rho_hi) = bounds(taus), bounds(rhos)
    return {"n": len(s), "tau": kendall_tau(s, t), "tau_lo": tau_lo, "tau_hi": tau_hi,
            "rho": spearman_rho(s, t), "rho_lo": rho_lo, "rho_hi": rho_hi}


def proxy_scores(space: SearchSpace, task: Any, archs: Sequence[Architecture],
                 seeds: Sequence[int], proxies: Sequence[str], *, batch_size: int = 64,
                 on_arch: Any = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Zero-cost proxies of each architecture, from its own seed (a run's trial seed gives the
    initialisation that trial trained from): ``({proxy: scores}, {proxy: mean seconds})``."""
    from ..evaluators.zero_cost import check_proxies, score_architecture

    check_proxies(proxies)
    scores: dict[str, list[float]] = {p: [] for p in proxies}
    seconds: dict[str, list[float]] = {p: [] for p in proxies}
    for i, (arch, seed) in enumerate(zip(archs, seeds)):
        out = score_architecture(space, arch, task, seed=int(seed), proxies=proxies,
                                 batch_size=batch_size)
        for p, (value, sec) in out.items():
            scores[p].append(value)
            seconds[p].append(sec)
        if on_arch is not None:
            on_arch(i, arch, out)
    return ({p: np.asarray(v) for p, v in scores.items()},
            {p: float(np.mean(v)) if v else math.nan for p, v in seconds.items()})
