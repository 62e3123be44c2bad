"""Optional downloads of the standard dataset files, each checked against a known sha256.

Nothing is fetched unless a loader is called with ``download=True``. A file is streamed to a temp
file next to its destination, hashed, and moved into place with ``os.replace`` only when the hash
matches; a mismatch removes the temp file and raises ``DataError``, so no bad file is left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Mapping

from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Published sha256 of the distributed files (the same files torchvision, Keras and TFDS verify).
SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz":
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz":
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz":
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz":
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz":
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz":
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz":
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz":
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "cifar10": {
        "cifar-10-python.tar.gz":
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    },
    "cifar100": {
        "cifar-100-python.tar.gz":
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    },
}

MIRRORS: dict[str, str] = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
}

_SCHEMES = ("http", "https", "file")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: str | os.PathLike[str], sha256: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` if its bytes hash to ``sha256``, else raise ``DataError``."""
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(f"download URL {url!r} has scheme {scheme!r}; expected one of {_SCHEMES}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        log.info("downloading %s to %s", url, dest)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != sha256.lower():
            raise DataError(f"download of {url} has sha256 {digest.hexdigest()}, expected "
                            f"{sha256}; nothing was written to {dest}")
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise DataError(f"cannot download {url} to {dest}: {exc}. Place the file there yourself "
                        "or pass mirror=BASE_URL") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch_files(dataset: str, root: Path, names: list[str], *, mirror: str | None = None,
                checksums: Mapping[str, str] | None = None) -> list[Path]:
    """Download the named files of ``dataset`` into ``root``; files already there and matching
    their sha256 are kept. ``checksums`` replaces the built-in table (for other mirrors)."""
    table = dict(checksums) if checksums is not None else SHA256.get(dataset, {})
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError(f"{dataset}: no sha256 known for {unknown}; pass checksums="
                          "{file name: sha256} to download them")
    base = mirror if mirror is not None else MIRRORS[dataset]
    out = []
    for name in names:
        dest = root / name
        if dest.is_file() and sha256_file(dest) == table[name].lower():
            out.append(dest)
            continue
        out.append(fetch(base.rstrip("/") + "/" + urllib.parse.quote(name), dest, table[name]))
    return out


def extract_members(archive: Path, members: list[str], dest: Path) -> list[Path]:
    """Extract only the named regular files of a tar archive under ``dest`` (no links, no paths
    outside ``dest``), each written atomically."""
    out = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            found = {PurePosixPath(m.name).as_posix(): m for m in tar.getmembers() if m.isfile()}
            missing = [m for m in members if m not in found]
            if missing:
                raise DataError(f"{archive} lacks {missing}; is it the right archive?")
            for name in members:
                parts = PurePosixPath(name).parts
                if PurePosixPath(name).is_absolute() or ".." in parts:
                    raise DataError(f"{archive}: refusing member path {name!r}")
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(found[name])
                assert src is not None  # regular files always have a stream
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                           suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as f:
                        shutil.copyfileobj(src, f)
                    os.replace(tmp, target)
                finally:
                    Path(tmp).unlink(missing_ok=True)
                out.append(target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from None
    return out
