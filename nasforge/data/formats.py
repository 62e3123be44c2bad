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
import zipfile
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


#: The largest IDX payload read (bytes): far above MNIST's 47 MB, far below a machine's memory.
MAX_IDX_BYTES = 2 << 30
#: deflate cannot compress better than about 1032:1; a .gz whose header promises more is lying
_GZIP_MAX_RATIO = 1100
_CHUNK_BYTES = 1 << 20


def _read_exact(f: Any, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(f"{path} is truncated: it ends inside the {what} ({len(data)} of {n} bytes)")
    return data


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Parse an IDX file (raw or ``.gz``) into an array, checking magic number and size.

    The sizes the header claims are checked before any allocation: against ``max_bytes``,
    against the file's size on disk (raw files exactly; ``.gz`` files by the best ratio deflate
    can reach), and the decompressed stream is read in chunks and never past what the header
    claims, so a hostile file is refused with memory bounded by the real data.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        disk = path.stat().st_size
        f = gzip.open(path, "rb") if gz else open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    try:
        with f:
            return _read_idx_stream(f, path, disk, gz, max_bytes)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {exc}") from None


def _read_idx_stream(f: Any, path: Path, disk: int, gz: bool, max_bytes: int) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4:
        raise DataError(f"{path} is not an IDX file: {len(magic)} bytes, shorter than the header")
    zero, code, ndim = int.from_bytes(magic[:2], "big"), magic[2], magic[3]
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DataError(f"{path} is not an IDX file: magic number 0x{magic.hex()}, expected "
                        f"0x0000TTDD with type TT in {sorted(hex(c) for c in IDX_DTYPES)} and "
                        f"DD >= 1 dimensions")
    header = 4 + 4 * ndim
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path} is truncated: {4 + len(raw_dims)} bytes, the header alone "
                        f"needs {header}")
    dims = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    payload = math.prod(dims) * dtype.itemsize
    expected = header + payload
    if payload > max_bytes:
        raise DataError(f"{path}: its header claims dimensions {dims} of {dtype.name}, "
                        f"{payload:,} bytes, more than the limit of {max_bytes:,} bytes; "
                        "refused before reading (a damaged or hostile file?)")
    if not gz and disk != expected:
        what = "truncated" if disk < expected else "longer than its header says"
        raise DataError(f"{path} is {what}: {disk} bytes, but dimensions {dims} of "
                        f"{dtype.name} need {expected}")
    if gz and expected > _GZIP_MAX_RATIO * disk + 1024:
        raise DataError(f"cannot read {path}: its header claims dimensions {dims} of "
                        f"{dtype.name}, {expected:,} bytes, but a {disk:,}-byte .gz file cannot "
                        "hold that much (truncated or damaged)")
    chunks, got = [], 0
    while got <= payload:  # read one byte past the claim to notice a longer stream
        chunk = f.read(min(_CHUNK_BYTES, payload + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got != payload:
        what = "truncated" if got < payload else "longer than its header says"
        size = f"{header + got} bytes" if got < payload else f"more than {expected} bytes"
        raise DataError(f"{path} is {what}: {size}, but dimensions {dims} of "
                        f"{dtype.name} need {expected}")
    data = b"".join(chunks)
    del chunks
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------------------------
# .npz archives (numpy's zip of .npy files)

#: The largest array read from an ``.npz`` (bytes).
MAX_ARRAY_BYTES = 4 << 30


def read_npz(path: str | os.PathLike[str], keys: tuple[str, ...], *,
             max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz``, each checked before it is allocated.

    Every member's ``.npy`` header is read first: object arrays (pickles) are refused, and the
    size its shape claims must match the member's size in the zip directory, stay under
    ``max_bytes`` and be reachable from the compressed size. Data is then read in chunks, so a
    lying header or a damaged archive is refused as ``DataError`` with bounded memory.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        disk = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; expected an .npz file with "
                        f"{', '.join(keys)}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; expected an .npz file with "
                        f"{', '.join(keys)}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if head == b"\x93NUMPY":
        raise DataError(f"{path} holds a single array (.npy); expected an .npz archive with "
                        f"{', '.join(keys)}")
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n[:-4] if n.endswith(".npy") else n: zf.getinfo(n) for n in zf.namelist()}
            missing = [k for k in keys if k not in members]
            if missing:
                raise DataError(f"{path} lacks {missing}; expected arrays {', '.join(keys)} "
                                f"(found {', '.join(members) or 'none'})")
            return {k: _read_npz_member(zf, members[k], path, k, disk, max_bytes) for k in keys}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError,
            NotImplementedError) as exc:
        raise DataError(f"{path} is not a readable .npz archive (a zip of .npy arrays; truncated "
                        f"or damaged?): {exc}") from None


def _read_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, key: str,
                     disk: int, max_bytes: int) -> np.ndarray:
    where = f"{path}: array {key!r}"
    if info.compress_size > disk or info.file_size > _GZIP_MAX_RATIO * info.compress_size + 1024:
        raise DataError(f"{where}: the zip directory claims {info.file_size:,} bytes from "
                        f"{info.compress_size:,} compressed in a {disk:,}-byte file; the archive "
                        "is damaged")
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not supported")
        except ValueError as exc:
            raise DataError(f"{where} has no valid .npy header: {exc}") from None
        if dtype.hasobject:
            raise DataError(f"{where} holds Python objects (dtype {dtype}); expected numbers "
                            "(object arrays are pickles and are never loaded)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > max_bytes:
            raise DataError(f"{where}: its header claims shape {shape} of {dtype}, {nbytes:,} "
                            f"bytes, more than the limit of {max_bytes:,} bytes; refused before "
                            "reading (a damaged or hostile file?)")
        header = f.tell()
        if header + nbytes != info.file_size:
            raise DataError(f"{where}: its header claims shape {shape} of {dtype}, {nbytes:,} "
                            f"bytes, but the archive holds {max(0, info.file_size - header):,}; "
                            "the file is damaged")
        chunks, got = [], 0
        while got < nbytes:
            chunk = f.read(min(_CHUNK_BYTES, nbytes - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    if got != nbytes:
        raise DataError(f"{where} is truncated: {got:,} of {nbytes:,} bytes")
    data = b"".join(chunks)
    del chunks
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


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
    except (TypeError, ValueError, OverflowError) as exc:
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
