"""Tests of the built-in tasks: loaders on generated files and real small data, splits,
normalisation, and a DataError naming the file for every kind of bad input."""

from __future__ import annotations

import gzip
import os
import pickle
import random
import struct

import numpy as np
import pytest
import torch

from nasforge import registry
from nasforge.data import load_task
from nasforge.data.formats import read_idx, write_idx
from nasforge.data.prep import make_task, stratified_split
from nasforge.errors import ConfigError, DataError

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_mnist(folder, n_train=100, n_test=30, gz=False, seed=0):
    """Random 28x28 byte images with balanced labels, as the four IDX files."""
    rng = np.random.default_rng(seed)
    arrays = {
        IDX[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr)
    return arrays


def write_cifar(folder, files, label_key, n=20, classes=10, meta=None, seed=0):
    """CIFAR-style python batches (protocol 2, like the originals) of random images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in files:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.permutation(np.arange(n) % classes)]
        batch = {b"batch_label": name.encode(), b"data": data, b"filenames": [b"x.png"] * n}
        for key in ([label_key] if isinstance(label_key, bytes) else label_key):
            batch[key] = labels
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        out[name] = (data, labels)
    if meta is not None:
        (folder / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    return out


def unnormalise(task, split):
    x, _ = task.split(split)
    mean = torch.tensor(task.meta["mean"]).view(1, -1, *[1] * (x.ndim - 2))
    std = torch.tensor(task.meta["std"]).view(1, -1, *[1] * (x.ndim - 2))
    return (x.double() * std + mean).numpy()


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


# --------------------------------------------------------------------------------------------
# registry and shared preparation


def test_every_builtin_task_is_registered():
    import nasforge.data.builtin  # noqa: F401

    for name in ("digits", "mnist1d", "mnist", "fashion-mnist", "cifar10", "cifar100", "arrays"):
        assert callable(registry.get("tasks", name))


def test_stratified_split_sizes_disjoint_and_proportional():
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    parts = stratified_split(y, [20, 10], np.random.default_rng(3))
    assert [len(p) for p in parts] == [20, 10, 70]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(y) == len(joined)
    assert np.bincount(y[parts[0]], minlength=4).tolist() == [10, 6, 3, 1]
    assert np.bincount(y[parts[1]], minlength=4).tolist() == [5, 3, 2, 0]  # ties: lower class
    again = stratified_split(y, [20, 10], np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    with pytest.raises(ValueError):
        stratified_split(y, [90, 20], np.random.default_rng(0))


def test_digits_task_shape_split_and_normalisation():
    task = load_task("digits")
    assert task.kind == "image" and task.input_shape == (1, 8, 8) and task.num_classes == 10
    sizes = task.sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == round(0.2 * 1797) and sizes["val"] == round(0.1 * 1797)
    x, y = task.train
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 8, 8)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-3
    assert abs(float(task.val[0].mean())) > 1e-5  # val is scaled with the train statistics
    # stored statistics are those of the raw train split (pixels / 16)
    assert np.allclose(unnormalise(task, "train").mean(), task.meta["mean"][0])
    assert torch.bincount(task.test[1]).min() >= 34  # stratified: every class ~20%


def test_split_depends_on_split_seed_not_run_seed():
    # two run seeds: the same train / val / test examples (results of seeds are comparable)
    a, b = load_task("digits", seed=5), load_task("digits", seed=6)
    for split in ("train", "val", "test"):
        assert torch.equal(a.split(split)[0], b.split(split)[0])
        assert torch.equal(a.split(split)[1], b.split(split)[1])
    # another split_seed: another split, as deterministic as the first
    c, d = load_task("digits", split_seed=1), load_task("digits", seed=9, split_seed=1)
    assert not torch.equal(a.test[0], c.test[0])
    assert torch.equal(c.test[0], d.test[0]) and c.meta["split_seed"] == 1
    # the cap on the training split follows split_seed too
    assert torch.equal(load_task("digits", seed=1, limit=50).train[0],
                       load_task("digits", seed=2, limit=50).train[0])


def test_splits_are_disjoint_and_cover_the_data(tmp_path):
    n = 300
    ids = np.arange(n, dtype=np.float64)
    path = save_npz(tmp_path / "ids.npz", x_train=np.repeat(ids[:, None], 5, axis=1),
                    y_train=np.arange(n) % 3, x_test=np.zeros((7, 5)), y_test=np.arange(7) % 3)
    task = load_task("arrays", path=path, seed=2, val_fraction=0.2)
    got = {s: np.rint(unnormalise(task, s)[:, 0, 0]).astype(int) for s in ("train", "val")}
    assert len(got["val"]) == 60 and len(got["train"]) == 240
    assert not set(got["train"]) & set(got["val"])
    assert sorted([*got["train"], *got["val"]]) == list(range(n))
    assert task.sizes()["test"] == 7


def test_limit_caps_training_split_stratified():
    full, capped = load_task("digits", seed=1), load_task("digits", seed=1, limit=50)
    assert capped.sizes() == {**full.sizes(), "train": 50}
    assert torch.bincount(capped.train[1]).tolist() == [5] * 10
    assert torch.equal(full.test[1], capped.test[1])
    assert load_task("digits", limit=100000).sizes() == full.sizes()
    with pytest.raises(ConfigError, match="limit"):
        load_task("digits", limit=0)


def test_normalisation_is_per_channel_with_train_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2, 16)) * np.array([2.0, 0.5])[None, :, None] \
        + np.array([10.0, -5.0])[None, :, None]
    y = np.arange(200) % 4
    task = make_task("t", "series", x, y, x[:20] + 100, y[:20], split_seed=0, val_fraction=0.25)
    assert np.allclose(task.meta["mean"], [10, -5], atol=0.4)
    assert np.allclose(task.meta["std"], [2, 0.5], atol=0.15)
    xt = task.train[0]
    assert torch.allclose(xt.mean(dim=(0, 2)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(xt.std(dim=(0, 2), unbiased=False), torch.ones(2), atol=1e-4)
    assert float(task.test[0][:, 0].mean()) > 40  # test is shifted by +100, not re-centred


def test_bad_fractions_are_config_errors():
    with pytest.raises(ConfigError, match="val_fraction"):
        load_task("digits", val_fraction=1.5)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_task("digits", val_fraction=0.5, test_fraction=0.6)
    with pytest.raises(ConfigError, match="unknown option"):
        load_task("digits", bogus=1)


# --------------------------------------------------------------------------------------------
# MNIST-1D


def test_mnist1d_real_generation_deterministic_and_rng_safe():
    np.random.seed(123)
    random.seed(7)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    task = load_task("mnist1d", seed=0)
    assert np.array_equal(np.random.get_state()[1], np_before) and random.getstate() == py_before
    assert task.kind == "series" and task.input_shape == (1, 40) and task.num_classes == 10
    assert task.sizes() == {"train": 3600, "val": 400, "test": 1000}
    small_a = load_task("mnist1d", num_samples=500, data_seed=3)
    small_b = load_task("mnist1d", num_samples=500, data_seed=3)
    small_c = load_task("mnist1d", num_samples=500, data_seed=4)
    assert torch.equal(small_a.train[0], small_b.train[0])
    assert not torch.equal(small_a.test[0], small_c.test[0])


def test_mnist1d_cache_only_in_root(tmp_path):
    first = load_task("mnist1d", num_samples=300, root=str(tmp_path))
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1 and "n300" in cached[0].name
    second = load_task("mnist1d", num_samples=300, root=str(tmp_path))
    assert torch.equal(first.train[0], second.train[0])
    assert torch.equal(first.test[1], second.test[1])
    cached[0].write_bytes(b"garbage")  # an unreadable cache is regenerated, not trusted
    third = load_task("mnist1d", num_samples=300, root=str(tmp_path))
    assert torch.equal(first.train[0], third.train[0])


# --------------------------------------------------------------------------------------------
# IDX files: MNIST and Fashion-MNIST


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, dtype):
    arr = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, arr)
        back = read_idx(tmp_path / name)
        assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def test_idx_header_is_big_endian_standard(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:16] == bytes.fromhex("00000803" "00000003" "0000001c" "0000001c")
    write_idx(tmp_path / "y", np.array([258], np.int32))
    assert (tmp_path / "y").read_bytes() == bytes.fromhex("00000c01" "00000001" "00000102")


def test_mnist_loads_raw_files_with_official_test_split(tmp_path):
    arrays = write_mnist(tmp_path, n_train=200, n_test=50)
    task = load_task("mnist", root=str(tmp_path), val_fraction=0.1, seed=3)
    assert task.kind == "image" and task.input_shape == (1, 28, 28) and task.num_classes == 10
    assert task.sizes() == {"train": 180, "val": 20, "test": 50}
    assert task.class_names == [str(d) for d in range(10)]
    test_pixels = unnormalise(task, "test")[:, 0]
    assert np.allclose(test_pixels, arrays[IDX[2]] / 255, atol=1e-5)
    assert np.array_equal(task.test[1].numpy(), arrays[IDX[3]])
    assert np.allclose(task.meta["mean"], unnormalise(task, "train").mean(), atol=1e-6)


@pytest.mark.parametrize("name,subdir", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_gz_in_torchvision_layout(tmp_path, name, subdir):
    folder = tmp_path / subdir / "raw"
    folder.mkdir(parents=True)
    write_mnist(folder, n_train=60, n_test=20, gz=True)
    task = load_task(name, root=str(tmp_path), limit=30)
    assert task.sizes() == {"train": 30, "val": 6, "test": 20}
    assert task.meta["source"] == str(folder)
    if name == "fashion-mnist":
        assert task.class_names[9] == "Ankle boot"


def test_mnist_missing_directory_and_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_task("mnist", root=str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert "nowhere" in msg and "does not exist" in msg and all(f in msg for f in IDX)
    write_mnist(tmp_path)
    (tmp_path / IDX[3]).unlink()
    with pytest.raises(DataError, match=f"lacks {IDX[3]}") as err:
        load_task("mnist", root=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "download=True" in str(err.value)


@pytest.mark.parametrize("damage,expect", [
    ("truncate", "truncated"),
    ("magic", "magic number"),
    ("extra", "longer than its header"),
    ("gzip", "cannot read"),
    ("short", "shorter than the header"),
])
def test_malformed_idx_files_name_the_file(tmp_path, damage, expect):
    write_mnist(tmp_path, gz=damage == "gzip")
    target = tmp_path / (IDX[0] + (".gz" if damage == "gzip" else ""))
    raw = target.read_bytes()
    broken = {"truncate": raw[:-100], "magic": b"\x12\x34" + raw[2:], "extra": raw + b"\0",
              "gzip": raw[:40], "short": raw[:3]}[damage]
    target.write_bytes(broken)
    with pytest.raises(DataError, match=expect) as err:
        load_task("mnist", root=str(tmp_path))
    assert str(target) in str(err.value) and "t10k-labels-idx1-ubyte" in str(err.value)


def test_idx_files_with_wrong_content_are_refused(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / IDX[1], np.zeros(99, np.uint8))  # one label short
    with pytest.raises(DataError, match="one per image"):
        load_task("mnist", root=str(tmp_path))
    write_idx(tmp_path / IDX[1], np.zeros(100, np.uint8))
    write_idx(tmp_path / IDX[0], np.zeros(100, np.uint8))  # labels where images belong
    with pytest.raises(DataError, match=r"expected uint8 images \(N, H, W\)") as err:
        load_task("mnist", root=str(tmp_path))
    assert IDX[0] in str(err.value)
    write_idx(tmp_path / IDX[0], np.zeros((100, 28, 28), np.uint8))
    write_idx(tmp_path / IDX[1], np.full(100, 12, np.uint8))  # labels out of range
    with pytest.raises(DataError, match="labels span 12..12"):
        load_task("mnist", root=str(tmp_path))


# --------------------------------------------------------------------------------------------
# CIFAR


def test_cifar10_batches_with_class_names(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)]
    meta = ("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    batches = write_cifar(folder, names + ["test_batch"], b"labels", meta=meta)
    task = load_task("cifar10", root=str(tmp_path))
    assert task.input_shape == (3, 32, 32) and task.num_classes == 10 and task.kind == "image"
    assert task.sizes() == {"train": 90, "val": 10, "test": 20}
    assert task.class_names == [f"c{i}" for i in range(10)]
    assert len(task.meta["mean"]) == 3
    data, labels = batches["test_batch"]
    assert np.allclose(unnormalise(task, "test"), data.reshape(-1, 3, 32, 32) / 255, atol=1e-5)
    assert task.test[1].tolist() == labels


@pytest.mark.parametrize("label_kind,classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_fine_and_coarse(tmp_path, label_kind, classes):
    write_cifar(tmp_path, ["train", "test"], [b"fine_labels", b"coarse_labels"], n=40,
                classes=20)
    task = load_task("cifar100", root=str(tmp_path), label_kind=label_kind, val_fraction=0.25)
    assert task.num_classes == classes and task.sizes() == {"train": 30, "val": 10, "test": 40}
    assert task.class_names is None  # no meta file: names unknown
    with pytest.raises(ConfigError, match="label_kind"):
        load_task("cifar100", root=str(tmp_path), label_kind="medium")


def test_cifar_missing_and_malformed(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_task("cifar10", root=str(tmp_path / "none"))
    assert "data_batch_1" in str(err.value) and "test_batch" in str(err.value)
    write_cifar(tmp_path, ["train"], b"fine_labels")
    with pytest.raises(DataError, match="lacks test"):
        load_task("cifar100", root=str(tmp_path))
    write_cifar(tmp_path, ["test"], b"coarse_labels")  # the fine labels are missing
    with pytest.raises(DataError, match="missing key") as err:
        load_task("cifar100", root=str(tmp_path))
    assert str(tmp_path / "test") in str(err.value)
    (tmp_path / "test").write_bytes(pickle.dumps({b"data": [1, 2], b"fine_labels": [0]}))
    with pytest.raises(DataError, match="uint8 array"):
        load_task("cifar100", root=str(tmp_path))
    (tmp_path / "test").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(DataError, match="not a valid CIFAR python batch") as err:
        load_task("cifar100", root=str(tmp_path))
    assert str(tmp_path / "test") in str(err.value)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_cifar_unpickler_refuses_code(tmp_path):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    write_cifar(tmp_path, names, b"labels")
    marker = tmp_path / "pwned"
    evil = {b"data": _Payload(str(marker)), b"labels": [0]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match="is not allowed") as err:
        load_task("cifar10", root=str(tmp_path))
    assert "data_batch_3" in str(err.value)
    assert not marker.exists()


def py2_cifar_pickle(data, labels):
    """A batch pickled the way Python 2's cPickle wrote the real CIFAR files: str opcodes and
    the ``numpy.core`` module names, built opcode by opcode since Python 3 cannot write it."""
    def s(b):
        return b"T" + struct.pack("<i", len(b)) + b

    def i(v):
        return b"J" + struct.pack("<i", v)

    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85"
             + s(b"b") + b"\x87R(" + i(1) + i(data.shape[0]) + i(data.shape[1]) + b"\x86"
             + b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
             + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb"
             + b"\x89" + s(data.tobytes()) + b"tb")
    return (b"\x80\x02}(" + s(b"data") + array + s(b"labels") + b"](" + b"".join(map(i, labels))
            + b"eu.")


def test_cifar_batch_as_python2_wrote_it(tmp_path):
    from nasforge.data.formats import read_cifar_batch

    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    (tmp_path / "b").write_bytes(py2_cifar_pickle(data, [4, 0, 9]))
    x, y = read_cifar_batch(tmp_path / "b", b"labels")
    assert np.array_equal(x.reshape(3, -1), data) and y.tolist() == [4, 0, 9]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_of_any_pickle_protocol(tmp_path, protocol):
    from nasforge.data.formats import read_cifar_batch

    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    (tmp_path / "b").write_bytes(pickle.dumps({"data": data, "labels": [1, 0]}, protocol=protocol))
    x, y = read_cifar_batch(tmp_path / "b", b"labels")
    assert x.shape == (2, 3, 32, 32) and np.array_equal(x.reshape(2, -1), data)
    assert y.tolist() == [1, 0]


# --------------------------------------------------------------------------------------------
# arrays


@pytest.mark.parametrize("shape,kind,expect_kind,expect_shape", [
    ((60, 12), "auto", "series", (1, 12)),
    ((60, 3, 12), "series", "series", (3, 12)),
    ((60, 6, 7), "auto", "image", (1, 6, 7)),
    ((60, 2, 6, 7), "auto", "image", (2, 6, 7)),
    ((60, 6, 7, 3), "auto", "image", (3, 6, 7)),
    ((60, 6, 7), "image", "image", (1, 6, 7)),
])
def test_arrays_layouts(tmp_path, shape, kind, expect_kind, expect_shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    path = save_npz(tmp_path / "d.npz", x_train=x, y_train=np.arange(60) % 3,
                    x_test=x[:10], y_test=np.arange(10) % 3)
    task = load_task("arrays", path=path, kind=kind)
    assert task.kind == expect_kind and task.input_shape == expect_shape
    assert task.train[0].shape[1:] == expect_shape and task.num_classes == 3


def test_arrays_remaps_labels(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 8))
    y = np.array(["dog", "cat", "emu", "cat"] * 10)
    path = save_npz(tmp_path / "s.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    task = load_task("arrays", path=path)
    assert task.class_names == ["cat", "dog", "emu"] and task.num_classes == 3
    assert task.test[1].tolist() == [1, 0, 2, 0] * 2
    path = save_npz(tmp_path / "i.npz", x_train=x, y_train=(np.arange(40) % 2) * 7 + 3,
                    x_test=x[:4], y_test=np.array([[3], [10], [3], [10]]))
    task = load_task("arrays", path=path)
    assert task.class_names == ["3", "10"] and task.test[1].tolist() == [0, 1, 0, 1]


def test_arrays_bad_inputs(tmp_path):
    x = np.zeros((20, 5))
    y = np.arange(20) % 2
    with pytest.raises(ConfigError, match="path is required"):
        load_task("arrays")
    with pytest.raises(DataError, match="does not exist"):
        load_task("arrays", path=str(tmp_path / "nope.npz"))
    path = save_npz(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x)
    with pytest.raises(DataError, match=r"lacks \['y_test'\]") as err:
        load_task("arrays", path=path)
    assert "a.npz" in str(err.value)
    path = save_npz(tmp_path / "b.npz", x_train=x, y_train=y[:-1], x_test=x, y_test=y)
    with pytest.raises(DataError, match="y_train has shape"):
        load_task("arrays", path=path)
    path = save_npz(tmp_path / "c.npz", x_train=x, y_train=y, x_test=np.zeros((3, 6)),
                    y_test=y[:3])
    with pytest.raises(DataError, match="expected the same"):
        load_task("arrays", path=path)
    path = save_npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2], y_test=np.array([0, 5]))
    with pytest.raises(DataError, match="y_train lacks"):
        load_task("arrays", path=path)
    path = save_npz(tmp_path / "e.npz", x_train=np.zeros((20, 2, 3, 4, 5)), y_train=y,
                    x_test=np.zeros((2, 2, 3, 4, 5)), y_test=y[:2])
    with pytest.raises(DataError, match="with kind='auto' expected"):
        load_task("arrays", path=path)
    bad = x.copy()
    bad[0, 0] = np.nan
    path = save_npz(tmp_path / "f.npz", x_train=bad, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match="NaN"):
        load_task("arrays", path=path)
    (tmp_path / "g.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="g.npz"):
        load_task("arrays", path=str(tmp_path / "g.npz"))
    with gzip.open(tmp_path / "h.npz", "wb") as f:  # wrong container
        f.write(b"x")
    with pytest.raises(DataError, match="h.npz"):
        load_task("arrays", path=str(tmp_path / "h.npz"))
