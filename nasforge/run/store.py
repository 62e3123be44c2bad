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

Every ``run.db`` on disk is opened through ``open_store``: ``create`` (a new run), ``write``
(resume: the file must be a sound nasforge store, checked before any work) or ``read`` (trials,
report, experiments: opened read-only, so the file is never changed, a read-only directory
works, and a damaged store still shows every trial that can be read). ``check_store`` says what
is wrong with a file; ``salvage`` copies what is readable into a new, sound store. A damaged
store is reported and salvaged, never silently repaired in place.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import struct
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from ..core import SearchSpace, Trial, TrialResult
from ..errors import NasforgeWarning, RunError

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
        self.created = False  # whether acquire() created the lock file

    def acquire(self) -> None:
        import fcntl

        for _ in range(10):
            self.created = not self.path.exists()
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunError(f"cannot lock run directory {self.path.parent}: {exc.strerror} "
                               "(is it read-only? read-only commands such as trials and report "
                               "work there)") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                try:
                    holder = self.path.read_text().strip() or "another process"
                except OSError:
                    holder = "another process"
                raise RunError(
                    f"run directory {self.path.parent} is in use by {holder}; wait for it to finish "
                    "or stop it, then use --resume") from None
            try:  # the holder may have removed the file before we locked it: lock the new one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise RunError(f"cannot lock run directory {self.path.parent}: run.lock keeps changing")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self, remove: bool = False) -> None:
        """Unlock; with ``remove``, also delete run.lock if this lock created it (a failed start)."""
        if self._fd is not None:
            import fcntl

            if remove and self.created:  # safe while held: acquire() re-checks the file it locked
                self.path.unlink(missing_ok=True)

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Store:
    """Trials, metadata and checkpoints of one run, in SQLite (``":memory:"`` for throw-away runs).

    ``Store(path)`` creates or opens a store for writing; runs on disk go through ``open_store``.
    A store opened with ``open_readonly`` never writes; when its file is damaged, ``problems``
    says how and ``rows()`` returns every trial that can still be read (``lost_trials`` the rest).
    """

    def __init__(self, path: str | Path = ":memory:"):
        self.path = str(path)
        self.readonly = False
        self.problems: list[str] = []  # what is wrong with a damaged store opened for reading
        self.lost_trials: list[int] = []  # ids that could not be read (after rows())
        self.maybe_more_lost = False  # damaged pages past the last readable trial (after rows())
        self._tmp: str | None = None  # a readable copy of a store whose header was damaged
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

    @classmethod
    def open_readonly(cls, path: str | Path) -> "Store":
        """Open a run store for reading only: nothing on disk changes (no WAL switch, no tables).

        A file that is not a nasforge store is refused by name; a damaged one is opened anyway
        (``problems`` says what is wrong) so every readable trial can still be shown.
        """
        health = check_store(path)
        if health.foreign:
            raise RunError(f"{path} is not a nasforge run store ({health.foreign}); it was not "
                           "read or changed")
        store = cls.__new__(cls)
        store.path = str(path)
        store.readonly = True
        store.problems = list(health.problems)
        store.lost_trials = []
        store.maybe_more_lost = False
        try:
            store.conn, store._tmp = _connect_readonly(Path(path), health.header_damaged)
        except sqlite3.DatabaseError as exc:  # damaged beyond opening: nothing can be read
            raise RunError(damaged_message(path, [*health.problems, str(exc)])) from None
        if store.problems:
            store.conn.text_factory = bytes  # garbled text must not stop the other rows
        return store

    # -- metadata ---------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                              (key, _dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return default if row is None else json.loads(_text(row[0]))
        except (sqlite3.DatabaseError, ValueError):
            if not self.problems:
                raise
            return default  # a damaged store: the value cannot be read

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
        if self.problems:  # damaged: read row by row, skipping (and counting) what cannot be read
            rows, self.lost_trials, self.maybe_more_lost = _readable_trials(self.conn)
            yield from rows
            return
        cur = self.conn.execute(f"SELECT {_TRIAL_COLUMNS} FROM trials ORDER BY id")
        for row in cur:
            yield _trial_dict(row)

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
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


# -- opening stores on disk, checking and salvaging them ---------------------------------------------

_TRIAL_COLUMNS = ("id, arch, status, seed, metrics, curves, cost, info, artifacts, reason, started,"
                  " finished")
_MAGIC = b"SQLite format 3\x00"
_TAIL_PROBE = 1000  # trial ids probed past the last known one when a damaged store is read by id
_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _trial_dict(row: tuple) -> dict[str, Any]:
    """A trials row as a dict; ``ValueError`` if a value is garbled (damaged store)."""
    r = [_text(v) for v in row]
    d = {"id": r[0], "arch": r[1], "status": r[2], "seed": r[3], "metrics": json.loads(r[4]),
         "curves": json.loads(r[5]), "cost": json.loads(r[6]), "info": json.loads(r[7]),
         "artifacts": json.loads(r[8]), "reason": r[9], "started": r[10], "finished": r[11]}
    if not (isinstance(d["id"], int) and isinstance(d["arch"], str) and isinstance(d["seed"], int)
            and all(isinstance(d[k], dict) for k in ("metrics", "curves", "cost", "info", "artifacts"))):
        raise ValueError(f"trial row {r[0]!r} is garbled")
    return d


def _max_known_id(conn: sqlite3.Connection) -> int:
    """The highest trial id a damaged store still hints at (trial ids are 0, 1, 2, ...)."""
    hints = [-1]
    told = "SELECT max(step) - 1 FROM checkpoints" + (
        f" WHERE method = '{DEFAULT_METHOD}'" if _checkpoint_method_column(conn) else "")
    for sql in ("SELECT max(id) FROM trials", "SELECT count(*) - 1 FROM trials", told):
        try:
            value = conn.execute(sql).fetchone()[0]
        except sqlite3.DatabaseError:
            continue
        if isinstance(value, int):
            hints.append(value)
    return max(hints)


def _readable_trials(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], list[int], bool]:
    """Every trial of a damaged store that can be read, the ids that cannot, and whether the
    damaged pages may have held more trials than that (past the last id that can be read)."""
    rows: dict[int, dict[str, Any]] = {}
    failed: list[int] = []
    try:
        raw = conn.execute(f"SELECT {_TRIAL_COLUMNS} FROM trials ORDER BY id").fetchall()
    except sqlite3.DatabaseError:
        raw = None
    if raw is not None:
        for r in raw:
            try:
                rows[r[0]] = _trial_dict(r)
            except (ValueError, TypeError):
                pass
    else:  # the table cannot be scanned: look each id up, so only the damaged pages are lost
        last, i = _max_known_id(conn), 0
        while i <= last + _TAIL_PROBE:
            try:
                r = conn.execute(f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE id = ?", (i,)).fetchone()
                if r is not None:
                    rows[i] = _trial_dict(r)
                    last = max(last, i)
            except (sqlite3.DatabaseError, ValueError, TypeError):
                failed.append(i)
            i += 1
    top = max([*rows, _max_known_id(conn)], default=-1)
    lost = [i for i in range(top + 1) if i not in rows]
    return [rows[i] for i in sorted(rows)], lost, any(i > top for i in failed)


@dataclass
class StoreHealth:
    """What ``check_store`` found: ``foreign`` (not a nasforge store: why) or ``problems`` (damage)."""

    path: Path
    problems: list[str] = field(default_factory=list)
    foreign: str | None = None
    header_damaged: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and self.foreign is None


def damaged_message(path: str | Path, problems: list[str]) -> str:
    """One line: what is wrong with a damaged store and what can still be done."""
    run_dir = Path(path).parent
    return (f"{path} is damaged ({'; '.join(problems)}). Nothing was changed; `nasforge trials "
            f"{run_dir}` still shows the trials that can be read, and `nasforge repair {run_dir}` "
            "copies them into a new run directory that can be resumed")


def check_store(path: str | Path) -> StoreHealth:
    """Integrity (``PRAGMA quick_check``) and identity of a store file, opened read-only."""
    path = Path(path)
    health = StoreHealth(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror}") from None
    if size == 0:
        health.foreign = "it is an empty file"
        return health
    if not head.startswith(_MAGIC):
        if b"CREATE TABLE trials" not in head and b"CREATE TABLE meta" not in head:
            health.foreign = "it is not an SQLite database"
            return health
        health.header_damaged = True
        health.problems.append("its SQLite header is overwritten")
    elif len(head) >= 100:
        page_size, = struct.unpack_from(">H", head, 16)
        counter, pages = struct.unpack_from(">II", head, 24)
        expected = (65536 if page_size == 1 else page_size) * pages
        if counter == struct.unpack_from(">I", head, 92)[0] and size < expected:
            health.problems.append(f"it is truncated ({size} of {expected} bytes)")
    try:
        conn, tmp = _connect_readonly(path, health.header_damaged)
    except (sqlite3.DatabaseError, RunError) as exc:
        health.problems.append(f"SQLite cannot read it: {exc}")
        return health
    try:
        try:
            result = [str(r[0]) for r in conn.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as exc:
            result = [str(exc)]
        if result != ["ok"]:
            text = " ".join(" ".join(result).replace("*** in database main ***", "").split())
            health.problems.append(f"integrity check: {text[:160]}")
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError:
            return health  # damaged beyond telling what it is
        missing = [t for t in ("meta", "trials") if t not in tables]
        if missing:
            health.foreign = f"it has no {' and no '.join(missing)} table"
            return health
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = None if row is None else json.loads(_text(row[0]))
        except (sqlite3.DatabaseError, ValueError):
            return health
        if not isinstance(version, int):
            health.foreign = "its meta table has no schema_version"
        elif version > SCHEMA_VERSION:
            health.foreign = (f"it was written by a newer nasforge (schema {version}; this one "
                              f"reads {SCHEMA_VERSION})")
    finally:
        conn.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return health


def _connect_readonly(path: Path, header_damaged: bool = False
                      ) -> tuple[sqlite3.Connection, str | None]:
    conn, tmp = _open_readonly(path, header_damaged)
    conn.execute("PRAGMA writable_schema=ON")  # read a truncated file too (it cannot write here)
    return conn, tmp


def _open_readonly(path: Path, header_damaged: bool) -> tuple[sqlite3.Connection, str | None]:
    """A connection that cannot change ``path`` (and a temp dir to remove on close, if any).

    Without a ``-wal`` file no process is writing and everything is in the file: it is opened
    ``immutable`` (no lock or side files, works on read-only media). With one (a run in progress
    or killed), ``mode=ro`` reads the WAL too; where that cannot work (a read-only directory
    without the WAL index), a private copy is read.
    """
    if header_damaged:
        tmp = tempfile.mkdtemp(prefix="nasforge-store-")
        try:
            return sqlite3.connect(_rebuilt_copy(path, Path(tmp)), check_same_thread=False), tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    uri = path.resolve().as_uri()
    if not Path(str(path) + "-wal").exists():
        return sqlite3.connect(uri + "?immutable=1", uri=True, check_same_thread=False), None
    try:
        conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=30.0, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn, None
    except sqlite3.OperationalError:
        tmp = tempfile.mkdtemp(prefix="nasforge-store-")
        copy = Path(tmp) / "run.db"
        for suffix in ("", "-wal"):
            shutil.copyfile(str(path) + suffix, str(copy) + suffix)
        return sqlite3.connect(copy, check_same_thread=False), tmp


def _header(page_size: int, pages: int) -> bytes:
    """A fresh 100-byte SQLite file header (rollback journal, UTF-8) for ``pages`` pages."""
    h = bytearray(100)
    h[0:16] = _MAGIC
    struct.pack_into(">HBBBBBB", h, 16, 1 if page_size == 65536 else page_size, 1, 1, 0, 64, 32, 32)
    struct.pack_into(">II", h, 24, 1, pages)  # change counter, size in pages
    struct.pack_into(">I", h, 40, 1)  # schema cookie
    struct.pack_into(">I", h, 44, 4)  # schema format
    struct.pack_into(">I", h, 56, 1)  # UTF-8
    struct.pack_into(">II", h, 92, 1, sqlite3.sqlite_version_info[0] * 1000000
                     + sqlite3.sqlite_version_info[1] * 1000 + sqlite3.sqlite_version_info[2])
    return bytes(h)


def _rebuilt_copy(path: Path, tmp: Path) -> Path:
    """A copy of a store whose header was overwritten, with a new header (page size guessed)."""
    size = path.stat().st_size
    for page_size in _PAGE_SIZES:
        if size < page_size:
            continue
        pages = -(-size // page_size)
        copy = tmp / f"run-{page_size}.db"
        shutil.copyfile(path, copy)
        with open(copy, "r+b") as f:
            f.write(_header(page_size, pages))
            f.truncate(pages * page_size)
        try:
            conn = sqlite3.connect(copy)
            try:
                names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            finally:
                conn.close()
            if {"meta", "trials"} <= names:
                return copy
        except sqlite3.DatabaseError:
            pass
        copy.unlink()
    raise RunError(f"{path}: its SQLite header is overwritten and no page size fits the rest")


def open_store(path: str | Path, mode: str = "read") -> Store:
    """The one way a ``run.db`` on disk is opened.

    ``create``: a new store (the file must not exist). ``write``: resume a run; the file must be
    a sound nasforge store (checked before any work). ``read``: read-only, never changes the file;
    a damaged store opens with ``problems`` set and ``rows()`` giving every readable trial.
    """
    path = Path(path)
    if mode == "create":
        if path.exists():
            raise RunError(f"{path} already exists; a new run needs a new store")
        return Store(path)
    if mode not in ("read", "write"):
        raise ValueError(f"open_store mode {mode!r}; expected create, write or read")
    if not path.is_file():
        raise RunError(f"{path.parent} is not a run directory (no run.db there)")
    if mode == "read":
        return Store.open_readonly(path)
    health = check_store(path)
    if health.foreign:
        raise RunError(f"{path} is not a nasforge run store ({health.foreign}); nothing was changed")
    if health.problems:
        raise RunError(damaged_message(path, health.problems))
    return Store(path)


def warn_if_damaged(store: Store, shown: int) -> None:
    """Warn (one line) that a damaged store shows only the ``shown`` trials that could be read."""
    if store.problems:
        warnings.warn(
            f"{store.path} is damaged ({'; '.join(store.problems)}); showing the {shown} trials "
            f"that could be read{lost_text(store.lost_trials, store.maybe_more_lost)}. `nasforge repair "
            f"{Path(store.path).parent}` copies them into a new run directory", NasforgeWarning,
            stacklevel=2)


def lost_text(lost: list[int], maybe_more: bool) -> str:
    """`` (3 lost: 4, 5, 9)`` / `` (more may be lost)`` for a message; empty if nothing was lost."""
    if not lost and not maybe_more:
        return ""
    ids = ", ".join(map(str, lost[:10])) + (", ..." if len(lost) > 10 else "")
    text = f"{len(lost)} lost: trials {ids}" if lost else ""
    more = "more may have been lost after the last readable trial" if maybe_more else ""
    return f" ({'; '.join(t for t in (text, more) if t)})"


@dataclass
class SalvageReport:
    """What ``salvage`` copied and what it could not."""

    trials_saved: int = 0
    trials_lost: list[int] = field(default_factory=list)
    maybe_more_lost: bool = False  # damaged pages past the last readable trial may have held more
    meta_saved: list[str] = field(default_factory=list)
    meta_lost: bool = False
    checkpoints_saved: int = 0
    checkpoints_dropped: int = 0
    problems: list[str] = field(default_factory=list)


def salvage(src: str | Path, dst: str | Path) -> SalvageReport:
    """Copy everything readable of store ``src`` (meta, trials row by row, checkpoints) into a new
    store ``dst``. ``src`` is only read. A checkpoint newer than a lost trial is dropped, so a
    resume from ``dst`` re-evaluates the lost trials and reuses all the others."""
    dst = Path(dst)
    if dst.exists():
        raise RunError(f"{dst} already exists; salvage writes a new store")
    source = Store.open_readonly(src)
    rep = SalvageReport(problems=list(source.problems))
    try:
        if source.problems:
            rows, rep.trials_lost, rep.maybe_more_lost = _readable_trials(source.conn)
        else:
            rows = list(source.rows())
        meta = _readable_meta(source.conn)
        rep.meta_lost = meta is None
        out = Store(dst)
        try:
            with out.conn:
                for key, value in (meta or {}).items():
                    if key == "schema_version":  # the new store has its own (current) schema
                        continue
                    out.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                     (key, value))
                    rep.meta_saved.append(key)
                for d in rows:
                    out.conn.execute(
                        f"INSERT INTO trials ({_TRIAL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (d["id"], d["arch"], d["status"], d["seed"], _dumps(d["metrics"]),
                         _dumps(d["curves"]), _dumps(d["cost"]), _dumps(d["info"]),
                         _dumps(d["artifacts"]), d["reason"], d["started"], d["finished"]))
            rep.trials_saved = len(rows)
            complete = 0  # trials 0 .. complete-1 are all there
            while complete < len(rows) and rows[complete]["id"] == complete:
                complete += 1
            for method, step, created, blob in _readable_checkpoints(source.conn):
                # a multitrial checkpoint counts told trials: one past a lost trial is dropped
                if step is None or (method == DEFAULT_METHOD and step > complete):
                    rep.checkpoints_dropped += 1
                    continue
                with out.conn:
                    out.conn.execute("INSERT INTO checkpoints (method, step, created, state) "
                                     "VALUES (?,?,?,?)", (method, step, created, blob))
                rep.checkpoints_saved += 1
        finally:
            out.close()
    finally:
        source.close()
    return rep


def _readable_meta(conn: sqlite3.Connection) -> dict[str, str] | None:
    """The meta table's readable (key, JSON text) pairs, or None if it cannot be read at all."""
    try:
        raw = conn.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.DatabaseError:
        raw = []
        for key in ("schema_version", "config", "created"):
            try:
                raw += conn.execute("SELECT key, value FROM meta WHERE key = ?", (key,)).fetchall()
            except sqlite3.DatabaseError:
                pass
        if not raw:
            return None
    out = {}
    for key, value in raw:
        try:
            key, value = _text(key), _text(value)
            json.loads(value)
        except ValueError:
            continue
        out[key] = value
    return out


def _checkpoint_method_column(conn: sqlite3.Connection) -> bool | None:
    """Whether the checkpoints table has a ``method`` column (schema 2); None if unreadable."""
    try:
        return "method" in {r[1] for r in conn.execute("PRAGMA table_info(checkpoints)")}
    except sqlite3.DatabaseError:
        return None


def _readable_checkpoints(conn: sqlite3.Connection
                          ) -> list[tuple[str, int | None, float, bytes]]:
    """(method, step, created, state) of checkpoints whose state loads (``weights_only``); an
    unreadable one has step None. A schema-1 store's checkpoints are ``multitrial``'s."""
    has_method = _checkpoint_method_column(conn)
    method = "method" if has_method else f"'{DEFAULT_METHOD}'"
    try:
        keys = conn.execute(f"SELECT {method}, step FROM checkpoints ORDER BY 1, 2").fetchall()
    except sqlite3.DatabaseError:
        return []
    out: list[tuple[str, int | None, float, bytes]] = []
    for name, step in keys:
        where = "method = ? AND step = ?" if has_method else "? IS NOT NULL AND step = ?"
        try:
            created, blob = conn.execute(f"SELECT created, state FROM checkpoints WHERE {where}",
                                         (name, step)).fetchone()
            torch.load(io.BytesIO(blob), weights_only=True)
            out.append((_text(name), int(step), float(created), bytes(blob)))
        except Exception:  # any damage to the blob: torch raises many kinds; the step is dropped
            out.append((_text(name), None, 0.0, b""))
    return out
