"""UCR / UEA time-series classification archives: the ``ucr`` task.

    nasforge search --task ucr -o task.name=GunPoint -o task.root=~/data/UCRArchive_2018

Reads a dataset's ``<Name>_TRAIN`` and ``<Name>_TEST`` files from ``<root>/<Name>/`` (the
archives' layout) or ``<root>/`` itself, in either format:

- ``.tsv`` (the UCR 2018 archive): one series a line, the class label in the first column, then
  the values, tab-separated. Variable-length series are padded with ``NaN`` at the end.
- ``.ts`` (sktime / aeon, also the UEA multivariate archive): ``#`` comments, header lines
  (``@problemName``, ``@timeStamps``, ``@missing``, ``@univariate``, ``@dimensions``,
  ``@equalLength``, ``@seriesLength``, ``@classLabel true <labels>``), then after ``@data`` one
  case a line: each dimension's values comma-separated, ``:`` between dimensions, the label last;
  ``?`` is a missing value.

Labels are mapped to 0..K-1 in sorted order (numerically when every label is a number, so ``2``
comes before ``10``), the same way for both formats and for train and test; the classes are the
``@classLabel`` list of a ``.ts`` file, else the labels in the training file. ``class_names``
keeps the original labels. Series come out as ``(N, channels, length)`` float32 tensors, kind
``series`` (what the 1-D spaces take, like ``mnist1d``): the archive's TEST file is the test
split, ``val_fraction`` of TRAIN (stratified, from ``split_seed``) the validation split.

Values: trailing ``NaN`` is length padding; a ``NaN`` or ``?`` elsewhere is a missing value,
refused unless ``missing="interpolate"`` (linear, the ends take the nearest value). With
``znorm`` each series is z-normalised per channel (mean 0, std 1 over its own values; most UCR
datasets already are); every task is then normalised per channel with training-split statistics
(``prep.make_task``), as all tasks are. Series of different lengths are refused unless
``pad="zeros"`` (zeros appended, i.e. the mean after ``znorm``) or ``pad="last"`` (the last value
repeated) brings them to the longest length.

Without ``root`` the loader looks in ``$NASFORGE_DATA/UCRArchive_2018``, ``$NASFORGE_DATA/ucr``
and, when the package aeon is installed, in aeon's bundled datasets folder (a few small sets,
e.g. ``PLAID``, ``JapaneseVowels_eq``); aeon is never imported.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ..core import Task
from ..errors import ConfigError, DataError
from ..registry import register
from .builtin import default_data_dir
from .prep import make_task

FORMATS = {"tsv": ".tsv", "ts": ".ts"}
TS_TAGS = ("problemname", "timestamps", "missing", "univariate", "dimensions", "equallength",
           "serieslength", "classlabel", "targetlabel", "data")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class SeriesFile:
    """One archive file read: each case's values ``(channels, length)`` with trailing padding
    removed (per channel), its label as text, the line it came from, and the declared classes
    (``@classLabel`` of a ``.ts`` file, else None)."""

    path: Path
    series: list[list[np.ndarray]] = field(default_factory=list)  # case -> channel -> values
    labels: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    classes: list[str] | None = None

    def where(self, case: int) -> str:
        return f"{self.path}, line {self.lines[case]}"


@register("tasks", "ucr")
def ucr(seed: int = 0, split_seed: int = 0, name: str | None = None, root: str | None = None,
        format: Literal["auto", "tsv", "ts"] = "auto", znorm: bool = False,
        pad: Literal["none", "zeros", "last"] = "none",
        missing: Literal["error", "interpolate"] = "error", val_fraction: float = 0.1,
        limit: int | None = None) -> Task:
    """A UCR / UEA archive dataset by ``name`` (e.g. ``GunPoint``) from its TRAIN and TEST files;
    see the module docstring for the formats, folders and options."""
    if name is None:
        raise ConfigError("ucr: option name is required: the dataset's name as in the archive, "
                          "e.g. -o task.name=GunPoint (files <Name>_TRAIN.tsv / .ts)")
    if not _NAME.match(name):
        raise ConfigError(f"ucr: name={name!r}; expected a dataset name such as GunPoint "
                          "(letters, digits, _ . + -), not a path: give the folder as root")
    train_path, test_path = find_files(name, root, format)
    read = read_tsv if train_path.suffix == ".tsv" else read_ts
    train, test = read(train_path), read(test_path)
    classes = class_list(train)
    source = (f"classes declared by @classLabel in {train_path.name}" if train.classes is not None
              else f"classes of {train_path.name}")
    y_train, y_test = label_indices(train, classes, source), label_indices(test, classes, source)
    channels = _channels(train, test)
    for f in (train, test):
        _fill_missing(f, missing)
        if znorm:
            f.series = [[_znorm(v) for v in case] for case in f.series]
    length = _common_length(train, test, pad)
    x_train, x_test = (_stack(f, channels, length, pad) for f in (train, test))
    return make_task(f"ucr/{name}", "series", x_train, y_train, x_test, y_test,
                     split_seed=split_seed, val_fraction=val_fraction, limit=limit,
                     num_classes=len(classes), class_names=classes,
                     meta={"source": str(train_path.parent), "dataset": name,
                           "format": train_path.suffix[1:], "znorm": znorm, "pad": pad,
                           "missing": missing})


# -- finding the files ----------------------------------------------------------------------------
def aeon_data_dir() -> Path | None:
    """aeon's bundled datasets folder if aeon is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec("aeon")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return folder if folder.is_dir() else None


def default_roots() -> list[Path]:
    """Folders searched when no ``root`` is given, in order."""
    base = default_data_dir()
    roots = [base / "UCRArchive_2018", base / "ucr"]
    aeon = aeon_data_dir()
    return roots + ([aeon] if aeon is not None else [])


def find_files(name: str, root: str | None, format: str = "auto") -> tuple[Path, Path]:
    """The ``<name>_TRAIN`` and ``<name>_TEST`` files: in ``<root>/<name>/`` or ``<root>/``, the
    first format (``.tsv`` before ``.ts`` for ``auto``) that has both."""
    if format not in ("auto", *FORMATS):
        raise ConfigError(f"ucr: format={format!r}; expected auto, tsv or ts")
    roots = [Path(root).expanduser()] if root is not None else default_roots()
    suffixes = list(FORMATS.values()) if format == "auto" else [FORMATS[format]]
    tried: list[str] = []
    for base in roots:
        for folder in (base / name, base):
            for suffix in suffixes:
                train, test = (folder / f"{name}_{part}{suffix}" for part in ("TRAIN", "TEST"))
                if train.is_file() and test.is_file():
                    return train, test
                if train.is_file():
                    tried.append(f"{train} (found, but {test.name} is missing)")
                elif test.is_file():
                    tried.append(f"{test} (found, but {train.name} is missing)")
                else:
                    tried.append(str(train))
    hint = ("give the folder holding the archive's dataset folders with -o task.root=DIR"
            if root is None else "check the name (case matters) and the folder")
    missing_root = [str(r) for r in roots if not r.is_dir()]
    state = f" (folder {', '.join(missing_root)} does not exist)" if missing_root else ""
    raise DataError(f"ucr: no {name}_TRAIN / {name}_TEST pair{state}; tried: "
                    f"{'; '.join(tried)}. Expected {name}_TRAIN.tsv and {name}_TEST.tsv (UCR "
                    f"2018) or {name}_TRAIN.ts and {name}_TEST.ts (sktime / aeon); {hint}")


# -- reading ----------------------------------------------------------------------------------------
def _label(token: str) -> str:
    """A label as text; numbers written differently (``1``, ``1.0``, `` 1``) read the same."""
    text = token.strip()
    try:
        value = float(text)
    except ValueError:
        return text
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(value) if math.isfinite(value) else text


def _values(tokens: Sequence[str], path: Path, line: int) -> np.ndarray:
    try:
        return np.array([math.nan if t.strip() == "?" else float(t) for t in tokens],
                        dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise DataError(f"{path}, line {line}: value {bad.strip()[:40]!r} is not a number; "
                        "expected numbers (or ? / NaN for a missing value)") from None


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return token.strip() == "?"


def _trim(values: np.ndarray) -> np.ndarray:
    """Drop trailing NaN (length padding)."""
    valid = np.flatnonzero(~np.isnan(values))
    return values[:valid[-1] + 1] if len(valid) else values[:0]


def read_tsv(path: Path) -> SeriesFile:
    """A UCR 2018 ``.tsv`` file: label, then the values, tab-separated; one series a line."""
    out = SeriesFile(Path(path))
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 2:
                kind = " (commas: is it a .ts or .csv file?)" if "," in line else ""
                raise DataError(f"{path}, line {number}: one field{kind}; expected a label "
                                "and the values, separated by tabs")
            values = _trim(_values(fields[1:], out.path, number))
            if len(values) == 0:
                raise DataError(f"{path}, line {number}: a series with no values")
            out.series.append([values])
            out.labels.append(_label(fields[0]))
            out.lines.append(number)
    if not out.series:
        raise DataError(f"{path}: no series; expected one line per series (label, then values)")
    return out


def read_ts(path: Path) -> SeriesFile:
    """An sktime / aeon ``.ts`` file (header, ``@data``, then ``dim1:dim2:...:label`` lines)."""
    out = SeriesFile(Path(path))
    header: dict[str, str] = {}
    dims: int | None = None
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise DataError(f"{path}, line {number}: {line[:40]!r} before @data; "
                                    "expected header lines starting with @")
                tag, _, value = line[1:].partition(" ")
                tag = tag.lower()
                if tag not in TS_TAGS:
                    raise DataError(f"{path}, line {number}: unknown header tag @{tag}; "
                                    f"expected one of {', '.join('@' + t for t in TS_TAGS)}")
                header[tag] = value.strip()
                if tag == "data":
                    out.classes, dims = _check_header(path, header)
                    in_data = True
                continue
            parts = line.split(":")
            if len(parts) < 2:
                raise DataError(f"{path}, line {number}: no ':' before a class label; expected "
                                "values, ':' between dimensions, then the label")
            channels = [_trim(_values(p.split(","), out.path, number)) for p in parts[:-1]]
            if dims is not None and len(channels) != dims:
                raise DataError(f"{path}, line {number}: {len(channels)} dimensions; the header "
                                f"says {dims}")
            if any(len(c) == 0 for c in channels):
                raise DataError(f"{path}, line {number}: a dimension with no values")
            out.series.append(channels)
            out.labels.append(_label(parts[-1]))
            out.lines.append(number)
    if not in_data:
        raise DataError(f"{path}: no @data line; expected a .ts file (header lines, @data, then "
                        "one case a line)")
    if not out.series:
        raise DataError(f"{path}: no cases after @data")
    return out


def _check_header(path: Path, header: dict[str, str]) -> tuple[list[str], int | None]:
    """The declared classes and number of dimensions; refuses what the task cannot use."""
    if header.get("timestamps", "false").lower() == "true":
        raise DataError(f"{path}: @timeStamps true (values with time stamps) is not supported; "
                        "expected @timeStamps false")
    if header.get("targetlabel", "false").lower() == "true":
        raise DataError(f"{path}: @targetLabel true is a regression problem; the ucr task needs "
                        "class labels (@classLabel true ...)")
    words = header.get("classlabel", "").split()
    if not words or words[0].lower() != "true" or len(words) < 2:
        raise DataError(f"{path}: the header has no class labels (@classLabel "
                        f"{header.get('classlabel', '(missing)')!r}); expected '@classLabel true' "
                        "followed by the labels")
    dims = None
    if header.get("univariate", "").lower() == "true":
        dims = 1
    if "dimensions" in header:
        try:
            dims = int(header["dimensions"])
        except ValueError:
            raise DataError(f"{path}: @dimensions {header['dimensions']!r}; expected a whole "
                            "number") from None
    return [_label(w) for w in words[1:]], dims


# -- labels, lengths, values -----------------------------------------------------------------------
def _sort_key(label: str) -> tuple:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def class_list(train: SeriesFile) -> list[str]:
    """The classes in index order: the ``.ts`` header's list or the training labels, sorted
    (numerically when every label is a number)."""
    labels = list(dict.fromkeys(train.classes if train.classes is not None else train.labels))
    numeric = all(_sort_key(c)[0] == 0 for c in labels)
    return sorted(labels, key=_sort_key if numeric else (lambda c: (1, 0.0, c)))


def label_indices(f: SeriesFile, classes: list[str], what: str) -> np.ndarray:
    """Each case's class index; a label outside ``classes`` is refused with where it is."""
    index = {c: i for i, c in enumerate(classes)}
    for case, label in enumerate(f.labels):
        if label not in index:
            shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
            raise DataError(f"{f.where(case)}: class label {label!r} is not among the {what} "
                            f"({shown})")
    return np.array([index[label] for label in f.labels], dtype=np.int64)


def _channels(train: SeriesFile, test: SeriesFile) -> int:
    channels = len(train.series[0])
    for f in (train, test):
        for case, series in enumerate(f.series):
            if len(series) != channels:
                raise DataError(f"{f.where(case)}: {len(series)} dimensions; {train.where(0)} has "
                                f"{channels}; expected the same number in every case")
    return channels


def _fill_missing(f: SeriesFile, missing: str) -> None:
    """Interpolate missing values (``missing="interpolate"``) or refuse them."""
    if missing not in ("error", "interpolate"):
        raise ConfigError(f"ucr: missing={missing!r}; expected error or interpolate")
    for case, series in enumerate(f.series):
        for c, values in enumerate(series):
            gaps = np.isnan(values)
            if not gaps.any():
                continue
            if missing == "error":
                count = sum(int(np.isnan(v).any()) for s in f.series for v in s)
                raise DataError(f"{f.where(case)}: missing values (NaN or ?) inside a series "
                                f"({count} series of {f.path.name} have some); give "
                                "-o task.missing=interpolate to fill them linearly")
            known = np.flatnonzero(~gaps)
            if len(known) == 0:
                raise DataError(f"{f.where(case)}: dimension {c + 1} has no values at all")
            series[c] = np.interp(np.arange(len(values)), known, values[known])


def _znorm(values: np.ndarray) -> np.ndarray:
    std = values.std()
    centred = values - values.mean()
    return centred / std if std > 1e-8 else centred  # a constant series is only centred


def _common_length(train: SeriesFile, test: SeriesFile, pad: str) -> int:
    """The length every series is brought to; unequal lengths need ``pad``."""
    if pad not in ("none", "zeros", "last"):
        raise ConfigError(f"ucr: pad={pad!r}; expected none, zeros or last")
    lengths = {len(v) for f in (train, test) for case in f.series for v in case}
    if len(lengths) > 1 and pad == "none":
        short = min(((f, i) for f in (train, test) for i in range(len(f.series))),
                    key=lambda fi: min(len(v) for v in fi[0].series[fi[1]]))
        raise DataError(f"ucr: series lengths differ, from {min(lengths)} to {max(lengths)} "
                        f"(a shortest: {short[0].where(short[1])}); give -o task.pad=zeros or "
                        f"-o task.pad=last to pad every series to {max(lengths)}")
    return max(lengths)


def _stack(f: SeriesFile, channels: int, length: int, pad: str) -> np.ndarray:
    """The cases as one ``(N, channels, length)`` float32 array, padded at the end."""
    x = np.zeros((len(f.series), channels, length), dtype=np.float32)
    for i, series in enumerate(f.series):
        for c, values in enumerate(series):
            x[i, c, :len(values)] = values
            if pad == "last" and len(values) < length:
                x[i, c, len(values):] = values[-1]
    return x
