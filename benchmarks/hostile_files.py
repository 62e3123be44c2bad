"""Peak memory and time to refuse hostile data files (issue 8, item 8-9).

Writes a few lying files to a temporary folder, then reads each in a fresh Python process and
prints how long the refusal took and the process's peak resident memory (baseline: the same
process reading a valid 28x28x100 IDX file). The files are generated here:

- ``claims-1e9.gz``: 13 MB of random bytes behind an IDX header claiming 10^9 28x28 images;
- ``claims-60000.gz``: 13 MB of random bytes behind a header claiming 60,000 images (47 MB);
- ``bomb.gz``: a header claiming 100 images, then 1 GB of zeros (about 1 MB compressed);
- ``huge-shape.npz``: an .npz whose x_train header claims shape (10^11, 8, 8).

Run: ``python benchmarks/hostile_files.py``
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CHILD = """
import resource, sys, time
from nasforge.data.formats import read_idx, read_npz
from nasforge.errors import DataError
path = sys.argv[1]
t0 = time.perf_counter()
try:
    if path.endswith(".npz"):
        read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    else:
        read_idx(path)
    outcome = "read"
except DataError as exc:
    outcome = "refused: " + str(exc)[:90]
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{seconds:.2f}\\t{peak:.0f}\\t{outcome}")
"""


def header(dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def write_files(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    valid = folder / "valid.gz"
    with gzip.open(valid, "wb") as f:
        f.write(header((100, 28, 28)) + rng.bytes(100 * 784))
    files.append(valid)
    for name, dims in (("claims-1e9.gz", (10**9, 28, 28)), ("claims-60000.gz", (60000, 28, 28))):
        with gzip.open(folder / name, "wb", compresslevel=1) as f:
            f.write(header(dims))
            for _ in range(13):
                f.write(rng.bytes(2**20))
        files.append(folder / name)
    with gzip.open(folder / "bomb.gz", "wb", compresslevel=9) as f:
        f.write(header((100, 28, 28)))
        zeros = bytes(2**20)
        for _ in range(1024):
            f.write(zeros)
    files.append(folder / "bomb.gz")
    npz = folder / "huge-shape.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                   "shape": (10**11, 8, 8)})
        zf.writestr("x_train.npy", buf.getvalue() + bytes(4096))
        for k in ("y_train", "x_test", "y_test"):
            b = io.BytesIO()
            np.save(b, np.zeros(4))
            zf.writestr(k + ".npy", b.getvalue())
    files.append(npz)
    return files


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        files = write_files(Path(d))
        print("file\tsize_MB\tseconds\tpeak_RSS_MB\toutcome")
        for path in files:
            out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                                 text=True, check=True).stdout.strip()
            print(f"{path.name}\t{path.stat().st_size / 2**20:.1f}\t{out}")


if __name__ == "__main__":
    main()
