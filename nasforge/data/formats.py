"""Readers and writers for the file formats datasets ship in: IDX (MNIST) and CIFAR pickles.

Both readers treat the file as untrusted input: an IDX file must match its header exactly, and a
CIFAR batch is unpickled with an allow-list that admits only numpy's array reconstruction, so a
crafted file cannot run code. Every problem is raised as ``DataError`` naming the file.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import pickle
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

# IDX type byte -> element type (stored big-endian), see the format description on the MNIST page.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {exc}") from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse an IDX file (raw or ``.gz``) into an array, checking magic number and size."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path} is not an IDX file: {len(data)} bytes, shorter than the header")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DataError(f"{path} is not an IDX file: magic number 0x{data[:4].hex()}, expected "
                        f"0x0000TTDD with type TT in {sorted(hex(c) for c in IDX_DTYPES)} and "
                        f"DD >= 1 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: {len(data)} bytes, the header alone needs {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(f"{path} is {what}: {len(data)} bytes, but dimensions {dims} of "
                        f"{dtype.name} need {expected}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped if the name ends in ``.gz``), atomically."""
    path = Path(path)
    arr = np.asarray(array)
    code = _IDX_CODES.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"write_idx: dtype {arr.dtype} has no IDX code; expected one of "
                        f"{', '.join(str(d) for d in _IDX_CODES)}")
    if not 1 <= arr.ndim <= 255:
        raise DataError(f"write_idx: array has {arr.ndim} dimensions; IDX allows 1 to 255")
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write(path, payload)
    return path


def atomic_write(path: Path, payload: bytes) -> None:
    """Write bytes to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# CIFAR python batches


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may name: numpy's array (re)construction, and str->bytes."""
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spell the module differently
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call to turn a str back into bytes; only latin1 is accepted."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_globals().get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        return obj


def load_pickle_restricted(path: str | os.PathLike[str]) -> Any:
    """Unpickle a data file allowing only numpy arrays and plain values (never arbitrary code)."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    with f:
        try:
            return _RestrictedUnpickler(f, encoding="bytes").load()
        except Exception as exc:  # any unpickling failure means a malformed or hostile file
            raise DataError(f"{path} is not a valid CIFAR python batch: {exc}") from None


def read_cifar_batch(path: str | os.PathLike[str], label_key: bytes,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 from one CIFAR python batch."""
    path = Path(path)
    batch = load_pickle_restricted(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    batch = {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}
    missing = [k.decode() for k in (b"data", label_key) if k not in batch]
    if missing:
        raise DataError(f"{path}: missing key(s) {missing}; found {sorted(map(repr, batch))}")
    data, labels = batch[b"data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = (f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DataError(f"{path}: b'data' is {desc}; expected a uint8 array (N, 3072)")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: {label_key!r} is not a list of integers: {exc}") from None
    if y.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {y.shape[0]} labels")
    return data.reshape(-1, 3, 32, 32), y


def read_cifar_names(path: str | os.PathLike[str], key: bytes) -> list[str] | None:
    """Class names from a CIFAR ``batches.meta`` / ``meta`` file, or None if absent or unusable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        meta = load_pickle_restricted(path)
        names = meta[key]
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except (DataError, KeyError, TypeError):
        return None
