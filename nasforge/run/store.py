"""The run store: one SQLite file (WAL mode) holding trials, run metadata and strategy checkpoints.

Every finished trial is written in its own transaction, so a crash (even ``kill -9``) loses at
most the trial being evaluated. The process that drives a run is the only writer; it holds an
exclusive ``flock`` on ``run.lock`` beside the database, which the kernel releases when the
process dies, so a second process on the same run directory is refused with a clear message
while a crashed run can always be resumed.

Checkpoints are ``torch.save`` blobs of plain values and tensors, loaded back with
``weights_only=True`` (never arbitrary pickles). Each belongs to a method (``multitrial``, a
one-shot method, ...) and a step at that method's own granularity (trials told, epochs, rungs);
a run whose methods run one after another keeps each method's checkpoints apart.

Schema versions: 1 had one checkpoint series (``checkpoints(step, ...)``); 2 keys checkpoints by
``(method, step)``. A version-1 store is migrated when opened for writing (its checkpoints
become ``multitrial``'s, which is the only method version 1 knew), in one transaction.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from ..core import SearchSpace, Trial, TrialResult
from ..errors import RunError

SCHEMA_VERSION = 2
DEFAULT_METHOD = "multitrial"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    arch TEXT NOT NULL,
    status TEXT NOT NULL,
    seed INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    curves TEXT NOT NULL,
    cost TEXT NOT NULL,
    info TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    reason TEXT,
    started REAL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    method TEXT NOT NULL DEFAULT 'multitrial',
    step INTEGER NOT NULL,
    created REAL NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (method, step)
);
"""

_MIGRATE_1_TO_2 = """
CREATE TABLE checkpoints_v2 (
    method TEXT NOT NULL DEFAULT 'multitrial',
    step INTEGER NOT NULL,
    created REAL NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (method, step)
);
INSERT INTO checkpoints_v2 (method, step, created, state)
    SELECT 'multitrial', step, created, state FROM checkpoints;
DROP TABLE checkpoints;
ALTER TABLE checkpoints_v2 RENAME TO checkpoints;
"""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True, default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in the run store")


class RunLock:
    """An exclusive lock on a run directory, released by the kernel if the process dies."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "run.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.path.read_text().strip() or "another process"
            raise RunError(
                f"run directory {self.path.parent} is in use by {holder}; wait for it to finish "
                "or stop it, then use --resume") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Store:
    """Trials, metadata and checkpoints of one run, in SQLite (``":memory:"`` for throw-away runs)."""

    def __init__(self, path: str | Path = ":memory:"):
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                    check_same_thread=False)
        if self.path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif int(version) < SCHEMA_VERSION:
            self._migrate(int(version))
        elif int(version) > SCHEMA_VERSION:
            raise RunError(f"{self.path} was written by a newer nasforge (store schema {version}; "
                           f"this one reads up to {SCHEMA_VERSION}); upgrade nasforge to open it")

    def _migrate(self, version: int) -> None:
        """Bring an older store up to ``SCHEMA_VERSION`` (one transaction per step)."""
        if version == 1:
            self.conn.executescript("BEGIN IMMEDIATE;" + _MIGRATE_1_TO_2 +
                                    "INSERT OR REPLACE INTO meta (key, value) "
                                    "VALUES ('schema_version', '2'); COMMIT;")
            version = 2
        if version != SCHEMA_VERSION:
            raise RunError(f"{self.path}: no migration from store schema {version}")

    # -- metadata ---------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                              (key, _dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- trials -----------------------------------------------------------------------------------
    def add_trial(self, trial: Trial) -> None:
        """Record a finished trial (one transaction; replaces a row with the same id)."""
        r = trial.result
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO trials (id, arch, status, seed, metrics, curves, cost, info,"
                " artifacts, reason, started, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (trial.id, str(trial.arch), r.status, trial.seed, _dumps(r.metrics),
                 _dumps(r.curves), _dumps(r.cost), _dumps(trial.info), _dumps(r.artifacts),
                 r.reason, trial.started, trial.finished))

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every trial as a plain dict (``arch`` as text), in id order."""
        cur = self.conn.execute(
            "SELECT id, arch, status, seed, metrics, curves, cost, info, artifacts, reason, started,"
            " finished FROM trials ORDER BY id")
        for row in cur:
            yield {"id": row[0], "arch": row[1], "status": row[2], "seed": row[3],
                   "metrics": json.loads(row[4]), "curves": json.loads(row[5]),
                   "cost": json.loads(row[6]), "info": json.loads(row[7]),
                   "artifacts": json.loads(row[8]), "reason": row[9], "started": row[10],
                   "finished": row[11]}

    def trials(self, space: SearchSpace) -> list[Trial]:
        """Every trial with its architecture parsed by ``space``."""
        out = []
        for d in self.rows():
            result = TrialResult(status=d["status"], metrics=d["metrics"], curves=d["curves"],
                                 cost=d["cost"], reason=d["reason"], artifacts=d["artifacts"])
            out.append(Trial(id=d["id"], arch=space.parse(d["arch"]), result=result,
                             seed=d["seed"], info=d["info"], started=d["started"],
                             finished=d["finished"]))
        return out

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int = 3, *,
                        method: str = DEFAULT_METHOD) -> None:
        """Save ``method``'s state at ``step`` (trials told, epochs...); keep its newest ``keep``."""
        buf = io.BytesIO()
        torch.save(state, buf)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("INSERT OR REPLACE INTO checkpoints (method, step, created, state) "
                              "VALUES (?,?,?,?)", (method, step, time.time(), buf.getvalue()))
            self.conn.execute("DELETE FROM checkpoints WHERE method = ? AND step NOT IN "
                              "(SELECT step FROM checkpoints WHERE method = ? "
                              "ORDER BY step DESC LIMIT ?)", (method, method, keep))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def latest_checkpoint(self, method: str = DEFAULT_METHOD) -> tuple[int, dict[str, Any]] | None:
        """``(step, state)`` of ``method``'s newest checkpoint, or None."""
        row = self.conn.execute(
            "SELECT step, state FROM checkpoints WHERE method = ? ORDER BY step DESC LIMIT 1",
            (method,)).fetchone()
        if row is None:
            return None
        state = torch.load(io.BytesIO(row[1]), weights_only=True)
        return int(row[0]), state

    def checkpoint_methods(self) -> list[str]:
        """The methods that have checkpoints in this store."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT method FROM checkpoints ORDER BY method")]

    def close(self) -> None:
        self.conn.close()
