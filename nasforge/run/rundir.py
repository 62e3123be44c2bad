"""A run on disk: directory, config, store, lock, live CSV/plots, best model and report.

Layout (DESIGN.md)::

    runs/<name>/config.yaml  run.db  trials.csv  plots/  report.html  best/  trials/<id>/

A new run locks its directory before any slow work and refuses one that already holds a run
(use ``resume``) or anything else (see ``ownership``); resuming takes the saved config, so a
run continues exactly as it started. Only the budget, time budget, the number of workers and
whether best/model.onnx is written may change on resume (to extend a run or use another machine).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import yaml

from .. import registry
from ..config import RunConfig, make_config
from ..core import Objective, Objectives, SearchSpace, Task, Trial, check_metrics
from ..data import load_task
from ..errors import RunError
from ..report import leaderboard, write_html, write_plots, write_trials_csv
from .best import BestKeeper
from .executors import Executor
from .loop import Budget, Search
from .ownership import NewRunDir, repair_run, warn_config_edits  # noqa: F401 (repair_run: API)
from .store import RunLock, Store, open_store, warn_if_damaged

log = logging.getLogger(__name__)

RESUMABLE_CHANGES = {"budget", "time_budget", "cost_budget", "workers", "executor",
                     "executor_options", "export"}


def build_space(name: str, options: dict[str, Any], task: Task | None) -> SearchSpace:
    """Create a space; options the space takes from the task (``input_size``, ``num_classes``,
    ``input_shape``, ``kind``) are filled from it unless given."""
    cls = registry.get("spaces", name)
    opts = dict(options)
    if task is not None and inspect.isclass(cls):
        params = inspect.signature(cls.__init__).parameters
        derived = {"input_size": task.input_shape[-1], "num_classes": task.num_classes,
                   "input_shape": tuple(task.input_shape), "kind": task.kind}
        for key, value in derived.items():
            if key in params and key not in opts:
                opts[key] = value
    return registry.create("spaces", name, **opts)


def build_components(cfg: RunConfig) -> dict[str, Any]:
    """Task, space, strategy, evaluator and objective of a config (validated, before any work)."""
    task = load_task(cfg.task, seed=cfg.seed, **cfg.task_options)
    space = build_space(cfg.space, cfg.resolved_space_options(), task)
    strategy_opts = {"seed": cfg.seed, **cfg.strategy_options}
    strategy = registry.create("strategies", cfg.strategy, **strategy_opts)
    ev_name, ev_opts = cfg.evaluator_name_and_options()
    evaluator = registry.create("evaluators", ev_name, **ev_opts)
    evaluator.validate(space)
    method = registry.create("methods", cfg.method, **cfg.method_options)
    objectives = cfg.objectives()
    check_metrics(objectives, evaluator)
    return {"task": task, "space": space, "strategy": strategy, "evaluator": evaluator,
            "objective": objectives.primary, "objectives": objectives, "method": method}


def connected_executor(cfg: RunConfig) -> Executor:
    """The config's executor, connected to the cluster its options name (``Executor.connect``):
    one that cannot be reached is refused before a run writes anything."""
    executor = registry.create("executors", cfg.executor_name, workers=cfg.workers,
                               **cfg.executor_options)
    try:
        executor.connect()
    except BaseException:
        executor.close()
        raise
    return executor


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = cfg.name or f"{cfg.strategy}-{cfg.space}-{cfg.task}-{stamp}"
    return Path("runs") / name


class Run:
    """A search bound to a run directory. Use ``Run.create`` or ``Run.resume``, then ``search()``."""

    def __init__(self, run_dir: Path, cfg: RunConfig, store: Store, lock: "Any",
                 components: dict[str, Any] | None = None, executor: Executor | None = None):
        self.dir = run_dir
        self._executor = executor  # connected by create / resume; search() uses it
        self.config = cfg
        self.store = store
        self._lock = lock
        self.components = components if components is not None else build_components(cfg)
        self.objectives: Objectives = self.components.get("objectives") or Objectives.of(
            self.components["objective"])
        self.objective: Objective = self.objectives.primary  # the first objective
        self._last_refresh = 0.0
        self.refresh_seconds = 5.0
        self.listeners: list[Callable[[Search, Trial], None]] = []

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: RunConfig, out: str | Path | None = None) -> "Run":
        run_dir = Path(out) if out is not None else default_run_dir(cfg)
        claim = NewRunDir(run_dir)  # lock first, then check the directory, then the slow work
        executor: Executor | None = None
        try:
            executor = connected_executor(cfg)  # an unreachable cluster: nothing is left behind
            components = build_components(cfg)
            store = open_store(run_dir / "run.db", "create")
            store.set_meta("config", cfg.resolved())
            store.set_meta("created", time.time())
            _write_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.resolved(), sort_keys=False))
        except BaseException:
            if executor is not None:
                executor.close()
            claim.undo()
            raise
        return cls(run_dir, cfg, store, claim.lock, components, executor)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: dict[str, Any] | None = None) -> "Run":
        run_dir = Path(run_dir)
        if not (run_dir / "run.db").is_file():
            raise RunError(f"{run_dir} holds no run to resume (no run.db there)")
        lock = _lock(run_dir)
        executor: Executor | None = None
        store: Store | None = None
        try:
            store = open_store(run_dir / "run.db", "write")  # a damaged store is refused here
            saved = store.get_meta("config")
            if saved is None:
                raise RunError(f"{run_dir / 'run.db'} has no saved config; cannot resume")
            warn_config_edits(run_dir / "config.yaml", saved, RESUMABLE_CHANGES)
            overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
            changed = {k: (saved.get(k, _default(k)), v) for k, v in overrides.items()
                       if saved.get(k, _default(k)) != v}
            refused = {k: c for k, c in changed.items() if k not in RESUMABLE_CHANGES}
            if refused:
                what = "; ".join(f"{k}: run has {a!r}, flag says {b!r}" for k, (a, b) in refused.items())
                raise RunError(f"cannot resume {run_dir} with a different config ({what}). Only "
                               f"{', '.join(sorted(RESUMABLE_CHANGES))} may change on resume.")
            cfg = make_config({**saved, **overrides}, source=str(run_dir / "config.yaml"))
            executor = connected_executor(cfg)  # before the saved config changes
            if changed:
                store.set_meta("config", cfg.resolved())
                _write_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.resolved(), sort_keys=False))
            return cls(run_dir, cfg, store, lock, executor=executor)
        except BaseException:
            if executor is not None:
                executor.close()
            if store is not None:
                store.close()
            lock.release(remove=True)  # a refused resume leaves no lock file it made
            raise

    # -- running ----------------------------------------------------------------------------------
    def search(self) -> list[Trial]:
        """Run the config's method (``multitrial`` by default) until its budget is spent."""
        from ..methods import MethodContext, run_method

        cfg, c = self.config, self.components
        executor, self._executor = self._executor or connected_executor(cfg), None
        self._best = BestKeeper(self.dir / "best", self.objectives, self.store.rows())
        budget = Budget(trials=cfg.budget,
                        seconds=None if cfg.time_budget is None else cfg.time_budget * 60,
                        cost=cfg.cost_budget)
        ev_name, ev_opts = cfg.evaluator_name_and_options()
        ctx = MethodContext(task=c["task"], space=c["space"], evaluator=c["evaluator"],
                            objective=self.objectives, seed=cfg.seed, store=self.store,
                            budget=budget, executor=executor, strategy=c["strategy"],
                            batch=cfg.batch, evaluator_name=ev_name, evaluator_options=ev_opts,
                            trial_dir=self.dir / "trials", work_dir=self.dir / "method",
                            keep_trial_dirs=cfg.keep_trials, repeats=cfg.repeats,
                            on_trial=[self._on_trial, *self.listeners], on_step=[self._on_batch])
        try:
            trials = run_method(c["method"], ctx)
        finally:
            executor.close()  # also one a method never started (it may hold a connection)
            self.refresh(force=True)
        if cfg.export:
            from ..export.onnx import export_best  # best/model.onnx (skipped, with a log line, without the onnx extra)
            export_best(self.dir, c["space"], c["task"], evaluator=c["evaluator"])
        else:
            stale = self.dir / "best" / "model.onnx"
            if stale.exists():  # never left describing an earlier best
                stale.unlink()
            log.info("best/model.onnx not written (export: false); `nasforge export %s` writes "
                     "the best trial's network later", self.dir)
        return trials

    def _on_trial(self, search: Search, trial: Trial) -> None:
        self._best.add(trial)

    def _on_batch(self, search: Search) -> None:
        search.strategy.write_csv(self.dir)
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        """Rewrite trials.csv, plots and report (unless forced, at most every ``refresh_seconds``
        and no more often than every 4 times the last refresh took, so that writing plots never
        takes more than a fifth of a search with fast trials)."""
        now = time.monotonic()
        wait = max(self.refresh_seconds, 4 * getattr(self, "_refresh_took", 0.0))
        if not force and now - self._last_refresh < wait:
            return
        self._last_refresh = now
        rows = list(self.store.rows())
        write_trials_csv(rows, self.objectives, self.dir / "trials.csv")
        if rows:
            write_plots(rows, self.objectives, self.dir / "plots")
            self.components["strategy"].write_plots(rows, self.dir / "plots")
        write_html(self.dir, rows, self.objectives, self.config.resolved())
        self._refresh_took = time.monotonic() - now

    def leaderboard(self, top: int = 10) -> list[dict[str, Any]]:
        return leaderboard(self.store.rows(), self.objectives, top)

    def close(self) -> None:
        if self._executor is not None:  # connected, never searched with
            self._executor.close()
            self._executor = None
        self.store.close()
        self._lock.release()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _default(key: str) -> Any:
    """A config key's default (what a run saved before the key existed ran with)."""
    f = RunConfig.model_fields.get(key)
    return None if f is None else f.get_default(call_default_factory=True)


def _lock(run_dir: Path) -> RunLock:
    lock = RunLock(run_dir)
    lock.acquire()
    return lock


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def open_rows(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read a run directory's trials and config, read-only and without locking (trials, report).

    The store file is never changed. A damaged store gives every trial that can still be read,
    with one warning saying what is wrong and what was lost.
    """
    store = open_store(Path(run_dir) / "run.db", "read")
    try:
        rows = list(store.rows())
        warn_if_damaged(store, len(rows))
        return rows, store.get_meta("config") or {}
    finally:
        store.close()

