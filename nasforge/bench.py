"""Honest comparisons: strategies x seeds on one space and evaluator, with regret curves.

Each (strategy, seed) pair is one ordinary ``Search`` (the same loop as ``nasforge search``)
with an in-memory store; pairs run in parallel over worker processes. Evaluators that train
networks (``train``, ``deep_prior``) need ``task``: it is loaded once per process and passed to
every search (its split comes from the task's ``split_seed``, so every seed is measured on the
same test set); a lookup evaluator (``table``) needs none. Outputs in ``out``:

- ``summary.csv``: strategy, seed, evaluations, best_search_metric, best_report_metric (the
  report metric of the architecture with the best search metric); with ``repeats="reuse"`` also
  reused (how many of the evaluations took an earlier trial's result instead of evaluating);
- ``curves.csv``: best-so-far search and report metric after each evaluation;
- ``regret.png``: mean regret against evaluations with 95% confidence bands;
- a printed table of mean and standard deviation per strategy.

Every row is reproducible from its seed. ``repeats`` is the run option of ``nasforge search``
(``nasforge.run.loop``): ``evaluate`` (the default) evaluates a repeated architecture again,
``reuse`` records the earlier result; every trial counts towards the budget either way.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import registry
from .core import Objective, reused_from
from .config import available_cores, check_seed
from .data import load_task
from .errors import ConfigError, RunError
from .run.loop import Budget, Search, check_repeats
from .run.rundir import build_space
from .run.store import Store


@dataclass
class BenchConfig:
    """What to compare: strategies x seeds, on one space and evaluator, with one budget."""

    space: str
    evaluator: str
    search_metric: str
    strategies: list[str]
    seeds: int = 20
    budget: int | None = 100
    cost_budget: float | None = None  # simulated seconds (the evaluator's cost)
    cost_column: str | None = None  # table column holding each architecture's simulated seconds
    report_metric: str | None = None
    space_options: dict[str, Any] = field(default_factory=dict)
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: str = "max"
    workers: int = 2
    first_seed: int = 0
    task: str | None = None  # needed by evaluators that train (Evaluator.needs_task)
    task_options: dict[str, Any] = field(default_factory=dict)
    repeats: str = "evaluate"  # or "reuse": as ``nasforge search --repeats``

    def evaluator_name_and_options(self) -> tuple[str, dict[str, Any]]:
        name, _, arg = self.evaluator.partition(":")
        opts = dict(self.evaluator_options)
        if arg:
            opts.setdefault("path", arg)
        if name == "table":
            opts.setdefault("search_metric", self.search_metric)
            if self.report_metric:
                opts.setdefault("report_metric", self.report_metric)
            if self.cost_column:
                opts.setdefault("cost_column", self.cost_column)
        return name, opts


def _components(cfg: BenchConfig) -> tuple[Any, Any, Any]:
    name, opts = cfg.evaluator_name_and_options()
    evaluator = registry.create("evaluators", name, **opts)
    if evaluator.needs_task and cfg.task is None:
        raise ConfigError(f"evaluator {name!r} trains networks and needs a task; give --task "
                          f"(e.g. --task digits)")
    task = None if cfg.task is None else load_task(cfg.task, **cfg.task_options)
    space = build_space(cfg.space, cfg.space_options, task)
    evaluator.validate(space)
    return space, evaluator, task


def validate(cfg: BenchConfig) -> tuple[Any, Any, Any]:
    """Refuse bad input before any work starts; returns the space, evaluator and task."""
    if not cfg.strategies:
        raise ConfigError("--strategies is empty; name at least one, e.g. random,evolution")
    unknown = [s for s in cfg.strategies if s not in registry.available("strategies")]
    if unknown:
        raise ConfigError(f"unknown strateg{'y' if len(unknown) == 1 else 'ies'} "
                          f"{', '.join(map(repr, unknown))}; available: "
                          f"{', '.join(registry.available('strategies'))}")
    if len(set(cfg.strategies)) != len(cfg.strategies):
        raise ConfigError(f"--strategies names a strategy twice: {','.join(cfg.strategies)}")
    if cfg.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {cfg.seeds}")
    if cfg.budget is None and cfg.cost_budget is None:
        raise ConfigError("give --budget (evaluations) or --cost-budget (simulated seconds)")
    if cfg.cost_budget is not None and cfg.cost_budget <= 0:
        raise ConfigError(f"--cost-budget must be positive, got {cfg.cost_budget}")
    if cfg.budget is not None and cfg.budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {cfg.budget}")
    if cfg.mode not in ("max", "min"):
        raise ConfigError(f"mode {cfg.mode!r}; expected max or min")
    if isinstance(cfg.workers, bool) or not isinstance(cfg.workers, int) or cfg.workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1 (parallel searches), got "
                          f"{cfg.workers!r}")
    try:
        check_repeats(cfg.repeats)
    except RunError as exc:
        raise ConfigError(str(exc)) from None
    check_seed(cfg.first_seed, "first seed")
    check_seed(cfg.first_seed + cfg.seeds - 1, "last seed (first seed + seeds - 1)")
    for name, opts in cfg.strategy_options.items():
        registry.validate_options("strategies", name, {"seed": 0, **opts})
    return _components(cfg)


_WORKER: dict[str, Any] = {}


def _init(cfg: BenchConfig, components: tuple[Any, Any, Any] | None = None) -> None:
    """Set up this process for ``run_one``: the components are built (the task loaded) once."""
    import torch

    torch.set_num_threads(1)
    _WORKER["cfg"] = cfg
    _WORKER["space"], _WORKER["evaluator"], _WORKER["task"] = components or _components(cfg)


def run_one(strategy: str, seed: int) -> dict[str, Any]:
    """One search; returns its per-evaluation search and report metric values."""
    cfg: BenchConfig = _WORKER["cfg"]
    space, evaluator, task = _WORKER["space"], _WORKER["evaluator"], _WORKER["task"]
    strat = registry.create("strategies", strategy, seed=seed, **cfg.strategy_options.get(strategy, {}))
    objective = Objective(cfg.search_metric, cfg.mode)  # type: ignore[arg-type]
    search = Search(space=space, strategy=strat, evaluator=evaluator, task=task,
                    objective=objective, seed=seed, store=Store(":memory:"),
                    repeats=cfg.repeats)
    t0 = time.perf_counter()
    trials = search.run(Budget(trials=cfg.budget, cost=cfg.cost_budget))
    report_key = cfg.report_metric or cfg.search_metric
    values = [objective.value(t.result) for t in trials]
    reports = [t.metrics.get(report_key) if t.ok else None for t in trials]
    return {"strategy": strategy, "seed": seed, "values": values, "reports": reports,
            "seconds": time.perf_counter() - t0,
            "reused": sum(reused_from(t) is not None for t in trials),
            "costs": [float(t.result.cost.get("simulated_seconds", 0.0)) for t in trials]}


def best_so_far(values: Sequence[float | None], reports: Sequence[float | None], mode: str
                ) -> tuple[list[float], list[float]]:
    """Best search value after each evaluation, and the report value of that best architecture."""
    best, best_report = math.nan, math.nan
    curve, rcurve = [], []
    for v, r in zip(values, reports):
        if v is not None and (math.isnan(best) or (v > best if mode == "max" else v < best)):
            best, best_report = v, (math.nan if r is None else float(r))
        curve.append(best)
        rcurve.append(best_report)
    return curve, rcurve


def cap(cfg: BenchConfig, evaluator: Any) -> tuple[BenchConfig, list[str]]:
    """The config with workers capped at the cores and the searches, and the trial budget at
    the table's size (a longer search over a table only repeats lookups); one note per cap.

    With a cost budget alone, the searches also stop after as many trials as the table has rows.
    """
    notes = []
    changes: dict[str, Any] = {}
    size = len(evaluator) if hasattr(evaluator, "__len__") else None
    if size is not None:
        if cfg.budget is not None and cfg.budget > size:
            changes["budget"] = size
            notes.append(f"--budget {cfg.budget} capped at {size:,}, the number of architectures "
                         f"in the table (more evaluations would only repeat lookups)")
        elif cfg.budget is None:
            changes["budget"] = size
    searches = len(cfg.strategies) * cfg.seeds
    limit = min(available_cores(), searches)
    if cfg.workers > limit:
        changes["workers"] = limit
        reason = "CPU cores available" if limit < searches else "searches to run"
        notes.append(f"--workers {cfg.workers} capped at {limit} (the {reason})")
    return (dataclasses.replace(cfg, **changes) if changes else cfg), notes


def run_bench(cfg: BenchConfig, out: str | Path, *, progress: Any = None,
              note: Any = None) -> dict[str, Any]:
    """Run every strategy x seed and write summary.csv, curves.csv and regret.png to ``out``.

    ``note(text)`` receives one line per value that was capped (see :func:`cap`).
    """
    components = validate(cfg)
    evaluator = components[1]
    cfg, notes = cap(cfg, evaluator)
    for line in notes:
        if note:
            note(line)
    out = Path(out)
    if out.exists() and any((out / f).exists() for f in ("summary.csv", "curves.csv")):
        raise ConfigError(f"{out} already holds bench results; choose another --out "
                          "(nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(s, cfg.first_seed + i) for s in cfg.strategies for i in range(cfg.seeds)]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    t0 = time.perf_counter()
    if cfg.workers <= 1:
        _init(cfg, components)
        for s, seed in jobs:
            results[(s, seed)] = run_one(s, seed)
            if progress:
                progress(len(results), len(jobs))
    else:
        with cf.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn"),
                                    initializer=_init, initargs=(cfg,)) as pool:
            futures = {pool.submit(run_one, s, seed): (s, seed) for s, seed in jobs}
            for fut in cf.as_completed(futures):
                results[futures[fut]] = fut.result()
                if progress:
                    progress(len(results), len(jobs))
    wall = time.perf_counter() - t0

    optimum = evaluator.optimum(cfg.search_metric, cfg.mode)
    summary_rows, curve_rows = [], []
    curves: dict[str, list[list[float]]] = {s: [] for s in cfg.strategies}
    for s, seed in jobs:
        r = results[(s, seed)]
        curve, rcurve = best_so_far(r["values"], r["reports"], cfg.mode)
        curves[s].append(curve)
        summary_rows.append({"strategy": s, "seed": seed, "evaluations": len(curve),
                             "best_search_metric": curve[-1] if curve else math.nan,
                             "best_report_metric": rcurve[-1] if rcurve else math.nan})
        if cfg.repeats == "reuse":  # the default's columns stay as they were
            summary_rows[-1]["reused"] = r["reused"]
        spent = 0.0
        for i, (v, rv, c) in enumerate(zip(curve, rcurve, r["costs"]), 1):
            spent += c
            curve_rows.append({"strategy": s, "seed": seed, "evaluation": i,
                               "simulated_seconds": spent, "best_search_metric": v,
                               "best_report_metric": rv})
    _write_csv(out / "summary.csv", summary_rows)
    _write_csv(out / "curves.csv", curve_rows)
    if optimum is None:  # regret against the best value any run found
        finite = [v for c in curves.values() for run in c for v in run if not math.isnan(v)]
        optimum = (max(finite) if cfg.mode == "max" else min(finite)) if finite else 0.0
    plot_regret(curves, optimum, cfg, out / "regret.png")
    table = summarise(summary_rows, cfg.strategies)
    return {"summary": summary_rows, "table": table, "seconds": wall, "optimum": optimum}


def summarise(rows: Sequence[dict[str, Any]], strategies: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and standard deviation per strategy of the best search and report metric."""
    table = []
    for s in strategies:
        sv = np.array([r["best_search_metric"] for r in rows if r["strategy"] == s], dtype=float)
        rv = np.array([r["best_report_metric"] for r in rows if r["strategy"] == s], dtype=float)
        table.append({"strategy": s, "runs": len(sv),
                      "search_mean": float(np.nanmean(sv)), "search_std": float(np.nanstd(sv, ddof=1)) if len(sv) > 1 else 0.0,
                      "report_mean": float(np.nanmean(rv)), "report_std": float(np.nanstd(rv, ddof=1)) if len(rv) > 1 else 0.0})
    return table


def confidence_band(runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% half-width (Student t) over runs (rows) per evaluation (columns)."""
    from scipy import stats

    n = np.sum(~np.isnan(runs), axis=0)
    mean = np.nanmean(runs, axis=0)
    sd = np.nanstd(runs, axis=0, ddof=1) if runs.shape[0] > 1 else np.zeros(runs.shape[1])
    half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, half


def plot_regret(curves: dict[str, list[list[float]]], optimum: float, cfg: BenchConfig, path: Path) -> None:
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (s, runs) in enumerate(curves.items()):
        length = max(len(r) for r in runs)
        arr = np.full((len(runs), length), np.nan)
        for j, r in enumerate(runs):
            arr[j, :len(r)] = r
            arr[j, len(r):] = r[-1] if r else np.nan
        regret = (optimum - arr) if cfg.mode == "max" else (arr - optimum)
        mean, half = confidence_band(regret)
        x = np.arange(1, length + 1)
        ax.plot(x, mean, color=f"C{i}", label=f"{s} (n={len(runs)})")
        ax.fill_between(x, mean - half, mean + half, color=f"C{i}", alpha=0.2)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"regret of {cfg.search_metric}")
    ax.set_title(f"{cfg.space}: mean regret, 95% confidence bands")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["strategy"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
