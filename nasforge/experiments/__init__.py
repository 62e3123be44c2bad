"""Experiments on finished runs and single architectures (DP-NAS's hypotheses, continual learning).

Shared here: opening a run for reading (its task, space and trials), picking an architecture by
trial index or from text, choosing low / medium / top architectures by the run's objective, and
a fresh output folder that never overwrites anything.

- ``hypotheses``: the weight lottery (H2), deep prior against full training (H3), one-off
  evaluation of an architecture.
- ``continual``: class-incremental learning on a deep prior's fixed embedding against
  end-to-end fine-tuning.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .. import registry
from ..core import (Architecture, Evaluator, Objective, Objectives, SearchSpace, Task,
                    check_arch_text)
from ..data import load_task
from ..errors import ConfigError, RunError


@dataclass
class RunContext:
    """A finished (or running) run opened read-only: config, trials, and its task and space."""

    dir: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    task: Task
    space: SearchSpace
    objective: Objective

    def row(self, index: int) -> dict[str, Any]:
        """The trial with id ``index``; ``RunError`` naming the valid range if there is none."""
        by_id = {int(r["id"]): r for r in self.rows}
        if not by_id:
            raise RunError(f"run {self.dir} has no trials yet; nothing to pick with --trial")
        if isinstance(index, bool) or not isinstance(index, int) or index not in by_id:
            low, high = min(by_id), max(by_id)
            raise RunError(f"trial {index!r} does not exist in run {self.dir}; valid trial "
                           f"indices are {low}..{high}")
        return by_id[index]

    def evaluator_options(self, name: str) -> dict[str, Any]:
        """The run's evaluator options when it used evaluator ``name``, else none."""
        run_name, _, _ = str(self.config.get("evaluator", "")).partition(":")
        return dict(self.config.get("evaluator_options") or {}) if run_name == name else {}


def open_run(run_dir: str | Path) -> RunContext:
    """Read a run directory's config and trials (no lock) and rebuild its task and space."""
    from ..run.rundir import build_space, open_rows

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    rows, cfg = open_rows(run_dir)
    if not cfg or "task" not in cfg or "space" not in cfg:
        raise RunError(f"{run_dir} holds a store without a saved config; it is not a usable run")
    task = load_task(cfg["task"], seed=int(cfg.get("seed", 0)), **(cfg.get("task_options") or {}))
    space = build_space(cfg["space"], cfg.get("space_options") or {}, task)
    objective = Objectives.from_config(cfg).primary  # experiments read the first objective
    return RunContext(run_dir, cfg, rows, task, space, objective)


@dataclass
class Target:
    """One architecture to study, with where it came from."""

    arch: Architecture
    group: str = "given"
    value: float | None = None  # the run's objective value, when it came from a run
    trial: int | None = None
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def standalone(task: str = "digits", space: str = "chain", *, seed: int = 0,
               task_options: dict[str, Any] | None = None,
               space_options: dict[str, Any] | None = None) -> tuple[Task, SearchSpace]:
    """Task and space for architectures given as text (no run)."""
    from ..run.rundir import build_space

    t = load_task(task, seed=seed, **(task_options or {}))
    return t, build_space(space, space_options or {}, t)


def parse_archs(space: SearchSpace, texts: Iterable[str]) -> list[Architecture]:
    """Each text parsed by ``space``; ``ArchitectureError`` names the text that does not parse."""
    return [check_arch_text(space, text) for text in texts]


def pick_target(ctx: RunContext | None, *, arch: str | None = None, trial: int | None = None,
                space: SearchSpace | None = None, seed: int = 0) -> Target:
    """The architecture of ``arch`` (text, wins when given) or of trial ``trial`` of ``ctx``."""
    if arch is not None:
        sp = space if space is not None else (ctx.space if ctx is not None else None)
        if sp is None:
            raise ConfigError("pick_target needs a space to parse the architecture text")
        return Target(check_arch_text(sp, arch), seed=seed)
    if ctx is None or trial is None:
        raise ConfigError("give an architecture (--arch NET_STRING) or a run and a trial "
                          "(--run RUN_DIR --trial INDEX)")
    row = ctx.row(trial)
    value = row["metrics"].get(ctx.objective.metric, row["cost"].get(ctx.objective.metric))
    return Target(check_arch_text(ctx.space, row["arch"]), group="trial",
                  value=None if value is None else float(value), trial=int(row["id"]),
                  seed=int(row["seed"]))


def select_groups(ctx: RunContext, per_group: int = 6) -> list[Target]:
    """Low, medium and top architectures of a run by its objective (``per_group`` each).

    Distinct architectures of ok trials are ranked by their best objective value; ``low`` are
    the worst ``per_group``, ``top`` the best, ``medium`` those around the median. With fewer
    than ``3 * per_group`` architectures the ranking is cut into three near-equal parts.
    """
    if isinstance(per_group, bool) or not isinstance(per_group, int) or per_group < 1:
        raise ConfigError(f"per_group = {per_group!r}; expected an integer >= 1")
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for r in ctx.rows:
        if r["status"] != "ok":
            continue
        v = r["metrics"].get(ctx.objective.metric, r["cost"].get(ctx.objective.metric))
        if v is None or not math.isfinite(float(v)):
            continue
        score = float(v) if ctx.objective.mode == "max" else -float(v)
        if r["arch"] not in best or score > best[r["arch"]][0]:
            best[r["arch"]] = (score, r)
    if len(best) < 3:
        raise RunError(f"run {ctx.dir} has {len(best)} distinct architecture(s) with a finite "
                       f"{ctx.objective.metric}; at least 3 are needed for low / medium / top "
                       "groups")
    ranked = sorted(best.values(), key=lambda sr: (sr[0], -int(sr[1]["id"])))  # worst first
    n = len(ranked)
    if n >= 3 * per_group:
        mid = (n - per_group) // 2
        parts = [ranked[:per_group], ranked[mid:mid + per_group], ranked[n - per_group:]]
    else:
        parts = [list(p) for p in np.array_split(np.arange(n), 3)]
        parts = [[ranked[i] for i in idx] for idx in parts]
    out = []
    for group, part in zip(("low", "medium", "top"), parts):
        for score, r in part:
            out.append(Target(check_arch_text(ctx.space, r["arch"]), group=group,
                              value=score if ctx.objective.mode == "max" else -score,
                              trial=int(r["id"]), seed=int(r["seed"])))
    return out


def make_evaluator(name: str, options: dict[str, Any] | None = None) -> Evaluator:
    """An evaluator by registry name with validated options."""
    return registry.create("evaluators", name, **(options or {}))


def output_dir(kind: str, *, out: str | Path | None = None,
               run_dir: str | Path | None = None) -> Path:
    """A new, empty folder for an experiment's files; never one that holds anything.

    ``out`` is used if it does not exist or is empty (``ConfigError`` otherwise); without it the
    folder is ``RUN_DIR/experiments/<kind>-<timestamp>`` (or ``experiments/<kind>-<timestamp>``
    here without a run), with a numeric suffix if that name is taken.
    """
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"--out {path} exists and is not empty; choose a new or empty "
                              "directory (nothing was written)")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = (Path(run_dir) if run_dir is not None else Path(".")) / "experiments"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        path = base / (f"{kind}-{stamp}" if i == 1 else f"{kind}-{stamp}-{i}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RunError(f"cannot find a free folder name for {kind} under {base}")


def write_csv(path: Path, rows: Sequence[dict[str, Any]],
              columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (columns: ``columns`` or the keys in first-seen order)."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _cell(v) for k, v in r.items()})
    return path


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


__all__ = ["RunContext", "Target", "open_run", "standalone", "parse_archs", "pick_target",
           "select_groups", "make_evaluator", "output_dir", "write_csv"]
