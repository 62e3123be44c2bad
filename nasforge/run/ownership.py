"""What a run owns on disk: claiming a new run directory under its lock, telling the user when
``config.yaml`` no longer matches the stored config on resume, and repairing a damaged run into
a new directory. A run never takes over, deletes or rewrites what it did not create.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import NasforgeWarning, RunError
from .store import RunLock, SalvageReport, open_store, salvage


class NewRunDir:
    """A new run's directory, locked before anything slow happens and checked under the lock.

    The directory must be new, empty, or hold only a ``run.lock`` (a run that never started);
    anything else is refused and left as it was. ``undo`` removes only what this claim (and the
    run being created under it) made.
    """

    MADE_HERE = ("config.yaml", "config.yaml.tmp", "run.db", "run.db-wal", "run.db-shm")

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        if run_dir.exists() and not run_dir.is_dir():
            raise RunError(f"--out {run_dir} exists and is not a directory (nothing was changed)")
        self.made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
        self.lock = RunLock(run_dir)
        try:
            self.lock.acquire()
        except BaseException:
            self._remove_dirs()
            raise
        entries = sorted(p.name for p in run_dir.iterdir() if p.name != "run.lock")
        if entries:
            self.lock.release(remove=True)
        if "run.db" in entries or "config.yaml" in entries:
            raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                           "or choose another --out (nothing was changed)")
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise RunError(f"--out {run_dir} is not empty ({shown}) and holds no run; choose a new "
                           "or empty directory (nothing was changed)")

    def undo(self) -> None:
        """Remove what the failed creation made (files by name, then directories if empty)."""
        for name in self.MADE_HERE:
            (self.dir / name).unlink(missing_ok=True)
        self.lock.release(remove=True)  # the lock file goes last, while it is still held
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        for path in self.made:  # deepest first; rmdir refuses a directory someone filled
            try:
                path.rmdir()
            except OSError:
                break


def warn_config_edits(path: Path, saved: dict[str, Any], resumable: Iterable[str]) -> None:
    """Warn (one line) when config.yaml no longer says what the run's stored config says."""
    try:
        edited = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        edited = None
    if not isinstance(edited, dict):
        warnings.warn(f"{path} cannot be read as a config; it is ignored, the config stored in "
                      "run.db is the run's truth", NasforgeWarning, stacklevel=3)
        return
    changed = changed_keys(json.loads(json.dumps(saved, default=str)),
                            json.loads(json.dumps(edited, default=str)))
    if changed:
        warnings.warn(
            f"{path} was edited since the run started (changed: {', '.join(changed)}); the edit "
            "is ignored: the config stored in run.db is the run's truth. Only "
            f"{', '.join(sorted(resumable))} may change on resume, as flags (e.g. --budget)",
            NasforgeWarning, stacklevel=3)


def changed_keys(saved: Any, edited: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (nested dicts compared key by key)."""
    if not (isinstance(saved, dict) and isinstance(edited, dict)):
        return [] if saved == edited else [prefix or "(whole file)"]
    out = []
    for key in sorted(set(saved) | set(edited), key=str):
        name = f"{prefix}.{key}" if prefix else str(key)
        if key not in saved or key not in edited:
            out.append(name)
        else:
            out += changed_keys(saved[key], edited[key], name)
    return out


def repair_run(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, SalvageReport]:
    """Copy everything readable of a (damaged) run into a new run directory that can be resumed.

    ``run_dir`` is only read. ``out`` (default ``<run_dir>-repaired``) must be new or empty; it
    gets the salvaged ``run.db``, ``config.yaml`` from the stored config, and a copy of ``best/``.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir.with_name(run_dir.name + "-repaired")
    if not (run_dir / "run.db").is_file():
        raise RunError(f"{run_dir} is not a run directory (no run.db there)")
    if out.resolve() == run_dir.resolve():
        raise RunError(f"--out {out} is the run being repaired; repair writes a new directory "
                       "and never changes the old one")
    claim = NewRunDir(out)
    try:
        report = salvage(run_dir / "run.db", out / "run.db")
        store = open_store(out / "run.db", "read")
        try:
            cfg = store.get_meta("config")
        finally:
            store.close()
        if cfg is not None:
            tmp = out / "config.yaml.tmp"
            tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
            os.replace(tmp, out / "config.yaml")
    except BaseException:
        claim.undo()
        raise
    if (run_dir / "best").is_dir():
        shutil.copytree(run_dir / "best", out / "best")
    claim.lock.release()
    return out, report
