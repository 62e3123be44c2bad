"""``best/`` of a run directory: the chosen trial and, with several objectives, the Pareto front.

Layout::

    best/arch.txt  metrics.json  model.pt      the chosen trial (``Objectives.best``'s rule)
    best/front.json                            every front member (several objectives only)
    best/front/<trial>/arch.txt  model.pt      each front member's architecture and model

``model.pt`` is copied from the trial's work directory when the evaluator saved one, at the
moment the trial finishes (the work directory is removed afterwards). A member that a later
trial dominates leaves the front and its directory is removed; ``best/model.pt`` never belongs to
another trial than ``best/arch.txt``. Files are written atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from ..core import CHOICE_RULE as RULE
from ..core import Objectives, Trial, reused_from
from ..pareto import dominates


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _copy_model(trial: Trial, dest: Path) -> bool:
    model = trial.result.artifacts.get("model")
    if model and Path(model).is_file():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(model, tmp)
        os.replace(tmp, dest)
        return True
    return False


class BestKeeper:
    """Keeps ``best/`` up to date as trials finish; start it with the trials already stored."""

    def __init__(self, directory: Path, objectives: Objectives, stored: Iterable[dict[str, Any]] = ()):
        self.dir = Path(directory)
        self.objectives = objectives
        self.chosen_key: tuple[float, ...] | None = None
        self.chosen_id: int | None = None
        self.front: list[dict[str, Any]] = []  # members: trial, arch, scores, metrics, cost
        for row in stored:
            if reused_from(row) is None:
                self._consider(row["id"], row["arch"], row, load=True)

    def add(self, trial: Trial) -> None:
        """Take a finished trial into account (writes files when it changes the choice or front).
        A trial that reuses an earlier trial's result is not: that trial stands for both."""
        if reused_from(trial) is not None:
            return
        row = {"id": trial.id, "arch": str(trial.arch), "status": trial.status,
               "metrics": trial.metrics, "cost": trial.result.cost}
        self._consider(trial.id, str(trial.arch), row, trial=trial)

    def _consider(self, tid: int, arch: str, row: dict[str, Any], *, trial: Trial | None = None,
                  load: bool = False) -> None:
        key = self.objectives.choice_key(row)
        if key is None:
            return
        if self.chosen_key is None or key > self.chosen_key:
            self.chosen_key, self.chosen_id = key, tid
            if not load and trial is not None:
                self._save_chosen(trial)
        if not self.objectives.multi:
            return
        scores = self.objectives.scores(row)
        if any(dominates(m["scores"], scores) for m in self.front):
            return
        dropped = [m for m in self.front if dominates(scores, m["scores"])]
        self.front = [m for m in self.front if m not in dropped]
        self.front.append({"trial": tid, "arch": arch, "scores": scores,
                           "metrics": row["metrics"], "cost": row["cost"]})
        if load:
            return
        for m in dropped:
            shutil.rmtree(self.dir / "front" / str(m["trial"]), ignore_errors=True)
        member_dir = self.dir / "front" / str(tid)
        member_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(member_dir / "arch.txt", arch + "\n")
        if trial is not None:
            _copy_model(trial, member_dir / "model.pt")
        self._write_front()

    def _save_chosen(self, trial: Trial) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.dir / "arch.txt", str(trial.arch) + "\n")
        _write_atomic(self.dir / "metrics.json", json.dumps(
            {"trial": trial.id, "metrics": trial.metrics, "cost": trial.result.cost,
             "objectives": [str(o) for o in self.objectives], "rule": RULE}, indent=2))
        if not _copy_model(trial, self.dir / "model.pt") and (self.dir / "model.pt").exists():
            (self.dir / "model.pt").unlink()  # never leave a model that belongs to another trial
        if self.objectives.multi:
            self._write_front()

    def _write_front(self) -> None:
        members = sorted(self.front, key=lambda m: m["trial"])
        doc = {"objectives": [str(o) for o in self.objectives],
               "constraints": [str(c) for c in self.objectives.constraints],
               "rule": RULE, "chosen": self.chosen_id,
               "members": [{"trial": m["trial"], "arch": m["arch"], "dir": f"front/{m['trial']}",
                            "objectives": {o.metric: (s if o.mode == "max" else -s)
                                           for o, s in zip(self.objectives, m["scores"])},
                            "metrics": m["metrics"], "cost": m["cost"]} for m in members]}
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.dir / "front.json", json.dumps(doc, indent=2, default=float))


__all__ = ["BestKeeper", "RULE"]
