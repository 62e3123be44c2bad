"""Downloads against a local http.server (127.0.0.1, ephemeral port): sha256 verified, atomic
writes, no bad file left on a mismatch. Nothing here contacts the internet."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest

from nasforge.data import load_task
from nasforge.data.download import SHA256, extract_members, fetch
from nasforge.data.formats import write_idx
from nasforge.errors import ConfigError, DataError

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A static file server over ``tmp_path/served``: (folder, base URL, list of request paths)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _serve_mnist(folder, n_train=50, n_test=20):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              (np.arange(n_train) % 10).astype(np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              (np.arange(n_test) % 10).astype(np.uint8)]
    table = {}
    for name, arr in zip(IDX, arrays):
        path = write_idx(folder / f"{name}.gz", arr)
        table[path.name] = _sha(path)
    return table


def test_mnist_download_verified_then_reused(tmp_path, server):
    served, url, requests = server
    table = _serve_mnist(served)
    root = tmp_path / "data"
    task = load_task("mnist", root=str(root), download=True, mirror=url, checksums=table)
    assert task.sizes() == {"train": 45, "val": 5, "test": 20}
    assert sorted(p.name for p in root.iterdir()) == sorted(table)  # no temp files left
    assert all(_sha(root / name) == sha for name, sha in table.items())
    assert len(requests) == 4
    again = load_task("fashion-mnist", root=str(root), download=True, mirror=url, checksums=table)
    assert len(requests) == 4 and again.sizes() == task.sizes()  # files present: no new request


def test_checksum_mismatch_leaves_no_file(tmp_path, server):
    served, url, _ = server
    table = _serve_mnist(served)
    table["t10k-images-idx3-ubyte.gz"] = "0" * 64
    root = tmp_path / "data"
    with pytest.raises(DataError, match="expected " + "0" * 64) as err:
        load_task("mnist", root=str(root), download=True, mirror=url, checksums=table)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value)
    names = {p.name for p in root.iterdir()}
    assert "t10k-images-idx3-ubyte.gz" not in names
    assert not [n for n in names if n.endswith(".part")]


def test_builtin_table_is_applied_by_default(tmp_path, server):
    served, url, _ = server
    _serve_mnist(served)  # generated files cannot match the published MNIST hashes
    with pytest.raises(DataError) as err:
        load_task("mnist", root=str(tmp_path / "d"), download=True, mirror=url)
    assert SHA256["mnist"]["train-images-idx3-ubyte.gz"] in str(err.value)
    assert not (tmp_path / "d" / "train-images-idx3-ubyte.gz").exists()


def test_missing_remote_file_and_bad_scheme(tmp_path, server):
    _, url, _ = server
    with pytest.raises(DataError, match="404") as err:
        fetch(url + "absent.gz", tmp_path / "out" / "absent.gz", "0" * 64)
    assert "absent.gz" in str(err.value) and not list((tmp_path / "out").iterdir())
    with pytest.raises(ConfigError, match="scheme 'ftp'"):
        fetch("ftp://example.org/x", tmp_path / "x", "0" * 64)
    with pytest.raises(ConfigError, match="no sha256 known"):
        load_task("mnist", root=str(tmp_path), download=True, mirror=url, checksums={"a": "b"})


def _cifar10_archive(path, evil=False):
    rng = np.random.default_rng(1)
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                 b"labels": list(range(10))}
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
    names = {b"label_names": [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog",
                              b"horse", b"ship", b"truck"]}
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(names, protocol=2)
    if evil:
        members["../escaped"] = b"outside"
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cifar10_archive_download_and_safe_extraction(tmp_path, server):
    served, url, _ = server
    archive = served / "cifar-10-python.tar.gz"
    _cifar10_archive(archive, evil=True)
    root = tmp_path / "data"
    task = load_task("cifar10", root=str(root), download=True, mirror=url,
                     checksums={archive.name: _sha(archive)})
    assert task.sizes() == {"train": 45, "val": 5, "test": 10}
    assert task.class_names[0] == "plane" and task.input_shape == (3, 32, 32)
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert not (tmp_path / "escaped").exists() and not (root.parent / "escaped").exists()


def test_extract_members_refuses_links_and_missing(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("d/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="lacks"):
        extract_members(archive, ["d/link"], tmp_path / "out")
    assert not (tmp_path / "out" / "d" / "link").exists()
    (tmp_path / "b.tar").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="cannot extract"):
        extract_members(tmp_path / "b.tar", ["x"], tmp_path / "out")
