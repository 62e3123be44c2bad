"""Tabular benchmark evaluation: look an architecture's metrics up in a table (e.g. NAS-Bench-201).

The table is a CSV (or parquet, read with pandas) with an ``arch`` column holding canonical
architecture texts and numeric metric columns. It is read and checked once, then kept as a dict
from arch text to a tuple of floats, so one lookup costs a few microseconds. Empty cells (NaN)
are allowed and make the trials of that architecture fail with a reason; anything else that is
not a number is refused up front.
"""

from __future__ import annotations

import csv
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..core import Architecture, Evaluator, SearchSpace, Task, TrialResult
from ..errors import ArchitectureError, ConfigError, DataError
from ..registry import register

#: loaded tables shared by all evaluators of a process: (path, size, mtime, columns) -> index
_CACHE: dict[tuple[Any, ...], dict[str, tuple[float, ...]]] = {}


def _read_columns(path: Path) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of a CSV or parquet file, values as read (strings for CSV)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pandas as pd
        except ImportError:
            raise DataError(f"table {str(path)!r} is parquet; reading it needs pandas "
                            "(pip install pandas) or convert it to CSV") from None
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(f"cannot read parquet table {str(path)!r}: {exc}") from None
        return [str(c) for c in frame.columns], frame.astype(object).values.tolist()
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(f"table {str(path)!r} is empty; expected a header line with an "
                                "'arch' column")
            return [h.strip() for h in header], list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"table {str(path)!r} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}"
                        f"); expected a CSV file (or parquet, named .parquet)") from None
    except csv.Error as exc:
        line = f", line {reader.line_num}" if reader is not None else ""
        raise DataError(f"table {str(path)!r}{line} is not a readable CSV: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read table {str(path)!r}: {exc.strerror or exc}") from None


def _to_float(value: Any) -> float:
    """A table value as float; empty cells become NaN. Raises ValueError for non-numbers."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, float) and math.isnan(value):
        return math.nan  # a missing value of a parquet table
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)  # written-out inf or NaN: refused, an empty cell marks "missing"
    return number


def _shown(text: str, limit: int = 120, quote: bool = True) -> str:
    """``text`` (quoted unless ``quote`` is false), shortened for an error message."""
    short = text if len(text) <= limit else text[:limit] + f"...({len(text)} characters)"
    return repr(short) if quote else short


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


@register("evaluators", "table")
class TableEvaluator(Evaluator):
    """Scores architectures by looking them up in a tabular benchmark.

    ``search_metric`` is the column a search optimises (``noise`` adds Gaussian noise of that std,
    seeded by the trial seed, to mimic a noisy training run); ``report_metric`` is an extra column
    reported untouched (e.g. test accuracy, for regret curves); ``cost_column`` holds simulated
    training seconds; ``cost_columns`` are further columns returned in ``cost`` under their own
    names (e.g. ``params``, for a multi-objective search). Metrics come back under their column names and as ``search_metric`` /
    ``report_metric``. With ``space`` (a registered space name) every arch text is checked to
    parse at construction; otherwise call :meth:`validate` before a run.
    """

    name = "table"
    needs_task = False  # a lookup: called with task=None by benches

    def __init__(self, *, path: str, search_metric: str, report_metric: str | None = None,
                 noise: float = 0.0, cost_column: str | None = None, space: str | None = None,
                 cost_columns: list[str] | None = None):
        if noise < 0 or not math.isfinite(noise):
            raise ConfigError(f"table: noise={noise}; expected a finite std >= 0")
        self.path = str(path)
        self.search_metric = search_metric
        self.report_metric = report_metric
        self.noise = float(noise)
        self.cost_column = cost_column
        self.space = space
        self.cost_columns = list(cost_columns or [])
        self._columns = [c for c in (search_metric, report_metric, cost_column) if c is not None]
        self._columns += [c for c in self.cost_columns if c not in self._columns]
        self._index: dict[str, tuple[float, ...]] | None = None
        self._load()
        if space is not None:
            from .. import registry

            self.validate(registry.create("spaces", space))

    # -- loading --------------------------------------------------------------------------------
    def _key(self) -> tuple[Any, ...]:
        p = Path(self.path).expanduser()
        try:
            st = p.stat()
        except OSError:
            raise DataError(f"table: file {self.path!r} not found; expected a CSV or parquet "
                            "file with an 'arch' column") from None
        if not p.is_file():
            raise DataError(f"table: {self.path!r} is a directory, not a file; expected a CSV or "
                            "parquet file with an 'arch' column")
        return (str(p.resolve()), st.st_size, st.st_mtime_ns, tuple(self._columns))

    def _load(self) -> dict[str, tuple[float, ...]]:
        """The arch -> values index, from the process cache or read and checked from disk."""
        if self._index is not None:
            return self._index
        key = self._key()
        index = _CACHE.get(key)
        if index is None:
            index = self._read(Path(key[0]))
            _CACHE[key] = index
        self._index = index
        return index

    def _read(self, path: Path) -> dict[str, tuple[float, ...]]:
        header, rows = _read_columns(path)
        if "arch" not in header:
            raise DataError(f"table {self.path!r} has no 'arch' column; columns: {', '.join(header)}")
        for role, col in (("search_metric", self.search_metric), ("report_metric", self.report_metric),
                          ("cost_column", self.cost_column),
                          *(("cost_columns", c) for c in self.cost_columns)):
            if col is not None and col not in header:
                raise ConfigError(f"table: {role}={col!r} is not a column of {self.path!r}; "
                                  f"available columns: {', '.join(h for h in header if h != 'arch')}")
        arch_at = header.index("arch")
        at = [header.index(c) for c in self._columns]
        index: dict[str, tuple[float, ...]] = {}
        first_row: dict[str, int] = {}
        for r, row in enumerate(rows, start=1):
            if len(row) != len(header):
                raise DataError(f"table {self.path!r}, data row {r}: {len(row)} fields, "
                                f"the header has {len(header)}")
            text = str(row[arch_at]).strip()
            values = []
            for col, i in zip(self._columns, at):
                try:
                    values.append(_to_float(row[i]))
                except (TypeError, ValueError, OverflowError):
                    kind = "non-finite" if _is_number(row[i]) else "non-numeric"
                    raise DataError(f"table {self.path!r}, data row {r} (arch {_shown(text)}): "
                                    f"column {col!r} has {kind} value {str(row[i])[:40]!r}; "
                                    "expected a finite number (an empty cell marks a missing "
                                    "value)") from None
            if text in first_row:
                raise DataError(f"table {self.path!r}: arch {_shown(text)} appears in data rows "
                                f"{first_row[text]} and {r}; expected one row per architecture "
                                "(average repeated runs first)")
            first_row[text] = r
            index[text] = tuple(values)
        if not index:
            raise DataError(f"table {self.path!r} has a header but no rows")
        return index

    def validate(self, space: SearchSpace) -> None:
        """Check that every arch text parses in ``space`` as its canonical text; DataError if not."""
        index = self._load()
        for r, text in enumerate(index, start=1):  # dicts keep file order; r is the data row
            try:
                arch = space.parse(text)
            except ArchitectureError as exc:
                raise DataError(f"table {self.path!r}, data row {r}: arch {_shown(text)} is not a "
                                f"valid {space.name} architecture: "
                                f"{_shown(str(exc), 400, quote=False)}") from None
            except Exception as exc:
                raise DataError(f"table {self.path!r}, data row {r}: arch {_shown(text)} does not "
                                f"parse as a {space.name} architecture: "
                                f"{_shown(str(exc), 400, quote=False)}") from None
            if str(arch) != text:
                raise DataError(f"table {self.path!r}, data row {r}: arch {_shown(text)} is not in "
                                f"canonical form; expected {_shown(str(arch))}")

    def __len__(self) -> int:
        return len(self._load())

    def metrics(self) -> frozenset[str]:
        """Names of the metrics and cost keys an ok result carries: the search and report
        columns (also as ``search_metric`` / ``report_metric``) and, with a cost column,
        ``train_seconds`` and ``simulated_seconds``; ``cost_columns`` under their own names."""
        names = {self.search_metric, "search_metric"}
        if self.report_metric is not None:
            names |= {self.report_metric, "report_metric"}
        if self.cost_column is not None:
            names |= {"train_seconds", "simulated_seconds"}
        return frozenset(names | set(self.cost_columns))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_index"] = None  # workers reload (once per process, via _CACHE)
        return state

    def optimum(self, metric: str, mode: str = "max") -> float:
        """The best noise-free value of a loaded column over the table (for regret curves)."""
        aliases = {"search_metric": self.search_metric, "report_metric": self.report_metric}
        column = aliases.get(metric) or metric
        if column not in self._columns:
            raise ConfigError(f"table: no loaded column {metric!r}; expected one of "
                              f"{', '.join(self._columns)}")
        if mode not in ("max", "min"):
            raise ConfigError(f"table: mode {mode!r}; expected 'max' or 'min'")
        i = self._columns.index(column)
        values = [v[i] for v in self._load().values() if not math.isnan(v[i])]
        if not values:
            raise DataError(f"table {self.path!r}: column {column!r} has no values")
        return max(values) if mode == "max" else min(values)

    # -- evaluation -----------------------------------------------------------------------------
    def lookup(self, arch: Architecture | str) -> dict[str, float] | None:
        """The raw table values of an architecture by column name, or None if it is not listed."""
        values = self._load().get(str(arch))
        return None if values is None else dict(zip(self._columns, values))

    def evaluate(self, arch: Architecture, space: SearchSpace | None = None, task: Task | None = None,
                 *, seed: int = 0, workdir: Path | None = None) -> TrialResult:
        text = str(arch)
        values = self._load().get(text)
        if values is None:
            return TrialResult.failed(f"arch {text!r} is not in table {os.path.basename(self.path)!r}")
        row = dict(zip(self._columns, values))
        search = row[self.search_metric]
        if math.isnan(search):
            return TrialResult.failed(f"table {os.path.basename(self.path)!r} has no "
                                      f"{self.search_metric!r} value for arch {text!r}")
        if self.noise > 0:
            # the arch's hash joins the seed so that trials sharing a seed get independent noise
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(text.encode())])
            search += float(rng.normal(0.0, self.noise))
        metrics = {self.search_metric: search, "search_metric": search}
        if self.report_metric is not None and not math.isnan(row[self.report_metric]):
            metrics[self.report_metric] = row[self.report_metric]
            metrics["report_metric"] = row[self.report_metric]
        cost: dict[str, float] = {}
        if self.cost_column is not None and not math.isnan(row[self.cost_column]):
            cost = {"train_seconds": row[self.cost_column], "simulated_seconds": row[self.cost_column]}
        for col in self.cost_columns:
            if not math.isnan(row[col]):
                cost[col] = row[col]
        return TrialResult(metrics=metrics, cost=cost)
