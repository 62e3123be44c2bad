"""Built-in tasks: digits, MNIST-1D, MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, ``.npz`` arrays.

Every loader reads its data into numpy arrays and goes through ``prep.make_task``, so all tasks
are split (stratified, from ``split_seed``), capped (``limit``) and normalised (per channel,
train-split statistics in ``task.meta``) the same way. The split depends on ``split_seed`` only
(default 0), never on the run ``seed`` every loader also receives: runs with different seeds are
measured on the same validation and test examples. File-based loaders read the standard files from
``root`` and only touch the network with ``download=True``.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
from importlib import metadata
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

from ..core import Task, TaskKind
from ..errors import ConfigError, DataError
from ..registry import register
from .download import extract_members, fetch_files
from .formats import atomic_write, read_cifar_batch, read_cifar_names, read_idx, read_npz
from .prep import make_task

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(d) for d in range(10)]


def default_data_dir() -> Path:
    """Where datasets live when no ``root`` is given: ``$NASFORGE_DATA``, else
    ``~/.cache/nasforge/data``."""
    env = os.environ.get("NASFORGE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nasforge" / "data"


# --------------------------------------------------------------------------------------------
# digits and MNIST-1D: no files needed


@register("tasks", "digits")
def digits(seed: int = 0, split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
           limit: int | None = None) -> Task:
    """scikit-learn's 8x8 digits (1,797 images, shipped with sklearn): the embedded default task.

    There is no official test set, so val and test are stratified fractions of all images.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.images.reshape(-1, 1, 8, 8)
    return make_task("digits", "image", x, data.target, split_seed=split_seed,
                     val_fraction=val_fraction, test_fraction=test_fraction, limit=limit, scale=1 / 16,
                     num_classes=10, class_names=DIGIT_CLASSES, meta={"source": "sklearn"})


@register("tasks", "mnist1d")
def mnist1d(seed: int = 0, split_seed: int = 0, num_samples: int = 5000, data_seed: int = 42,
            val_fraction: float = 0.1, limit: int | None = None, root: str | None = None) -> Task:
    """MNIST-1D (Greydanus 2020): 40-step series of 10 digit templates, generated offline.

    ``data_seed`` fixes the generated examples (42 is the package's default); the package's
    own 80/20 split is the test split and ``split_seed`` carves val from the training part. With
    ``root``, the generated arrays are cached there as an ``.npz``; without, nothing is written.
    """
    if num_samples < 100:
        raise ConfigError(f"mnist1d: num_samples={num_samples}; expected at least 100")
    _require_mnist1d()
    cache = None
    if root is not None:
        version = metadata.version("mnist1d")
        cache = Path(root).expanduser() / f"mnist1d-{version}-n{num_samples}-s{data_seed}.npz"
    arrays = _read_mnist1d_cache(cache) if cache is not None and cache.is_file() else None
    if arrays is None:
        arrays = _generate_mnist1d(num_samples, data_seed)
        if cache is not None:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write(cache, buf.getvalue())
    return make_task("mnist1d", "series", arrays["x"][:, None, :], arrays["y"],
                     arrays["x_test"][:, None, :], arrays["y_test"], split_seed=split_seed,
                     val_fraction=val_fraction, limit=limit, num_classes=10,
                     class_names=DIGIT_CLASSES,
                     meta={"source": "mnist1d", "num_samples": num_samples,
                           "data_seed": data_seed, "cache": str(cache) if cache else None})


def _require_mnist1d() -> None:
    """Refuse with the install command when the optional package is missing."""
    try:
        import mnist1d.data  # noqa: F401
    except ImportError:
        raise DataError("task mnist1d needs the optional package mnist1d, which is not "
                        "installed; install it with: pip install 'nasforge[series]'") from None


def _generate_mnist1d(num_samples: int, data_seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, data_seed
    with _global_rngs_restored():  # mnist1d seeds and draws from the global RNGs
        data = make_dataset(args)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _read_mnist1d_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None (and the file is regenerated) if it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def _global_rngs_restored() -> Iterator[None]:
    """Run code that reseeds ``random`` / ``np.random`` and put their states back afterwards."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX files)


@register("tasks", "mnist")
def mnist(seed: int = 0, split_seed: int = 0, root: str | None = None, val_fraction: float = 0.1,
          limit: int | None = None, download: bool = False, mirror: str | None = None,
          checksums: dict[str, str] | None = None) -> Task:
    """MNIST from the four IDX files (raw or ``.gz``) in ``root`` or ``root/MNIST/raw``.

    The official test set is the test split; ``val_fraction`` of the training set is carved out
    as val. ``download=True`` fetches missing files into ``root`` (from ``mirror`` if given),
    each verified against its published sha256 (or ``checksums``: file name -> sha256).
    """
    return _idx_task("mnist", "MNIST", DIGIT_CLASSES, split_seed=split_seed, root=root,
                     val_fraction=val_fraction, limit=limit, download=download, mirror=mirror,
                     checksums=checksums)


@register("tasks", "fashion-mnist")
def fashion_mnist(seed: int = 0, split_seed: int = 0, root: str | None = None,
                  val_fraction: float = 0.1, limit: int | None = None, download: bool = False, mirror: str | None = None,
                  checksums: dict[str, str] | None = None) -> Task:
    """Fashion-MNIST from the IDX files in ``root`` or ``root/FashionMNIST/raw``; as ``mnist``."""
    return _idx_task("fashion-mnist", "FashionMNIST", FASHION_CLASSES, split_seed=split_seed,
                     root=root, val_fraction=val_fraction, limit=limit, download=download, mirror=mirror,
                     checksums=checksums)


def _idx_task(name: str, subdir: str, class_names: list[str], *, split_seed: int, root: str | None,
              val_fraction: float, limit: int | None, download: bool, mirror: str | None,
              checksums: dict[str, str] | None) -> Task:
    home = Path(root).expanduser() if root is not None else default_data_dir() / subdir / "raw"
    dirs = [home, home / subdir / "raw"] if root is not None else [home]
    expected = f"{', '.join(IDX_FILES)} (each raw or .gz)"
    files = _find_files(dirs, IDX_FILES, ("", ".gz"))
    if files is None and download:
        fetch_files(name, home, [f + ".gz" for f in IDX_FILES], mirror=mirror, checksums=checksums)
        files = _find_files([home], IDX_FILES, (".gz",))
    if files is None:
        raise _missing(name, dirs, IDX_FILES, ("", ".gz"), expected, can_download=True)
    with _hint(f"{name} expects {expected} in {' or '.join(map(str, dirs))}"):
        splits = []
        for images, labels in (IDX_FILES[:2], IDX_FILES[2:]):
            x, y = read_idx(files[images]), read_idx(files[labels])
            if x.ndim != 3 or x.dtype != np.uint8:
                raise DataError(f"{files[images]} holds a {x.dtype} array {x.shape}; expected "
                                "uint8 images (N, H, W)")
            if y.ndim != 1 or y.dtype != np.uint8 or len(y) != len(x):
                raise DataError(f"{files[labels]} holds a {y.dtype} array {y.shape}; expected "
                                f"uint8 labels ({len(x)},), one per image in {files[images]}")
            splits += [x[:, None], y]
        return make_task(name, "image", *splits, split_seed=split_seed, val_fraction=val_fraction,
                         limit=limit, scale=1 / 255, num_classes=len(class_names),
                         class_names=class_names,
                         meta={"source": str(files[IDX_FILES[0]].parent)})


# --------------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100 (python pickle batches)


@register("tasks", "cifar10")
def cifar10(seed: int = 0, split_seed: int = 0, root: str | None = None, val_fraction: float = 0.1,
            limit: int | None = None, download: bool = False, mirror: str | None = None,
            checksums: dict[str, str] | None = None) -> Task:
    """CIFAR-10 from the python batches (data_batch_1..5, test_batch) in ``root`` or
    ``root/cifar-10-batches-py``; ``download=True`` fetches and verifies the official archive."""
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar_task("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz", train,
                       "test_batch", b"labels", ("batches.meta", b"label_names"), 10,
                       split_seed=split_seed, root=root, val_fraction=val_fraction, limit=limit,
                       download=download, mirror=mirror, checksums=checksums)


@register("tasks", "cifar100")
def cifar100(seed: int = 0, split_seed: int = 0, root: str | None = None,
             label_kind: Literal["fine", "coarse"] = "fine", val_fraction: float = 0.1, limit: int | None = None, download: bool = False,
             mirror: str | None = None, checksums: dict[str, str] | None = None) -> Task:
    """CIFAR-100 from the python files (train, test) in ``root`` or ``root/cifar-100-python``;
    ``label_kind`` picks the 100 fine or the 20 coarse classes."""
    if label_kind not in ("fine", "coarse"):
        raise ConfigError(f"cifar100: label_kind={label_kind!r}; expected 'fine' or 'coarse'")
    key = f"{label_kind}_labels".encode()
    return _cifar_task("cifar100", "cifar-100-python", "cifar-100-python.tar.gz", ["train"],
                       "test", key, ("meta", f"{label_kind}_label_names".encode()),
                       100 if label_kind == "fine" else 20, split_seed=split_seed, root=root,
                       val_fraction=val_fraction, limit=limit, download=download, mirror=mirror,
                       checksums=checksums, meta={"label_kind": label_kind})


def _cifar_task(name: str, folder: str, archive: str, train: list[str], test: str,
                label_key: bytes, names: tuple[str, bytes], num_classes: int, *, split_seed: int,
                root: str | None, val_fraction: float, limit: int | None, download: bool,
                mirror: str | None, checksums: dict[str, str] | None,
                meta: dict | None = None) -> Task:
    home = Path(root).expanduser() if root is not None else default_data_dir()
    dirs = [home, home / folder]
    wanted = [*train, test]
    files = _find_files(dirs, wanted, ("",))
    if files is None and download:
        (path,) = fetch_files(name, home, [archive], mirror=mirror, checksums=checksums)
        extract_members(path, [f"{folder}/{f}" for f in [*wanted, names[0]]], home)
        files = _find_files([home / folder], wanted, ("",))
    if files is None:
        raise _missing(name, dirs, wanted, ("",), ", ".join(wanted), can_download=True)
    with _hint(f"{name} expects {', '.join(wanted)} in {' or '.join(map(str, dirs))}"):
        parts = [read_cifar_batch(files[f], label_key) for f in train]
        x_test, y_test = read_cifar_batch(files[test], label_key)
        source = files[test].parent
        return make_task(name, "image", np.concatenate([p[0] for p in parts]),
                         np.concatenate([p[1] for p in parts]), x_test, y_test,
                         split_seed=split_seed, val_fraction=val_fraction, limit=limit, scale=1 / 255,
                         num_classes=num_classes,
                         class_names=read_cifar_names(source / names[0], names[1]),
                         meta={"source": str(source), **(meta or {})})


# --------------------------------------------------------------------------------------------
# Arrays of your own


@register("tasks", "arrays")
def arrays(seed: int = 0, split_seed: int = 0, path: str | None = None,
           kind: Literal["auto", "image", "series"] = "auto", val_fraction: float = 0.1,
           limit: int | None = None) -> Task:
    """Your own data: an ``.npz`` with x_train, y_train, x_test, y_test.

    ``kind="auto"`` reads the layout from ``x``'s dimensions: ``(N, L)`` is a series, ``(N, H, W)``
    a one-channel image, ``(N, C, H, W)`` an image (``(N, H, W, C)`` with C of 1 or 3 is moved to
    channels first). ``kind="series"`` reads 3-D ``x`` as ``(N, C, L)`` instead. Labels of any
    kind (ints, strings) become class indices 0..K-1 in sorted order; ``class_names`` keeps them.
    """
    if path is None:
        raise ConfigError("arrays: option path is required: an .npz file with x_train, y_train, "
                          "x_test and y_test")
    file = Path(path).expanduser()
    data = read_npz(file, ("x_train", "y_train", "x_test", "y_test"))

    layout = None
    xs = {}
    for split in ("train", "test"):
        x = data[f"x_{split}"]
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) \
                or np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"{file}: x_{split} has dtype {x.dtype}; expected real numbers")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{file}: x_{split} contains NaN or infinite values")
        xs[split], task_kind, layout = _channels_first(x, kind, f"{file}: x_{split}")
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise DataError(f"{file}: x_train examples have shape {data['x_train'].shape[1:]} but "
                        f"x_test examples {data['x_test'].shape[1:]}; expected the same")
    y_train, y_test, classes = _class_indices(file, data["y_train"], data["y_test"],
                                              len(xs["train"]), len(xs["test"]))
    return make_task("arrays", task_kind, xs["train"], y_train, xs["test"], y_test,
                     split_seed=split_seed, val_fraction=val_fraction, limit=limit, num_classes=len(classes),
                     class_names=[str(c) for c in classes],
                     meta={"source": str(file), "layout": layout})


def _channels_first(x: np.ndarray, kind: str, what: str) -> tuple[np.ndarray, TaskKind, str]:
    """``x`` as (N, C, ...) with its task kind and the layout it was read as."""
    if x.ndim == 2 and kind in ("auto", "series"):
        return x[:, None, :], "series", "NL"
    if x.ndim == 3 and kind == "series":
        return x, "series", "NCL"
    if x.ndim == 3 and kind in ("auto", "image"):
        return x[:, None], "image", "NHW"
    if x.ndim == 4 and kind in ("auto", "image"):
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            return np.moveaxis(x, -1, 1), "image", "NHWC"
        return x, "image", "NCHW"
    allowed = {"auto": "(N, L), (N, H, W) or (N, C, H, W)", "series": "(N, L) or (N, C, L)",
               "image": "(N, H, W) or (N, C, H, W)"}[kind]
    raise DataError(f"{what} has shape {x.shape}; with kind={kind!r} expected {allowed}")


def _class_indices(file: Path, y_train: np.ndarray, y_test: np.ndarray, n_train: int,
                   n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels mapped to 0..K-1 (sorted order of the training labels) and the original classes."""
    ys = []
    for split, y, n in (("train", y_train, n_train), ("test", y_test, n_test)):
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim != 1 or len(y) != n:
            raise DataError(f"{file}: y_{split} has shape {y.shape}; expected ({n},), one label "
                            f"per row of x_{split}")
        if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y).all()
                                                        and (y == np.round(y)).all()):
            raise DataError(f"{file}: y_{split} holds non-integer floats; expected class labels")
        ys.append(y)
    classes = np.unique(ys[0])
    unseen = np.setdiff1d(np.unique(ys[1]), classes)
    if len(unseen):
        raise DataError(f"{file}: y_test has classes {unseen[:10].tolist()} that y_train lacks")
    return np.searchsorted(classes, ys[0]), np.searchsorted(classes, ys[1]), classes


# --------------------------------------------------------------------------------------------
# Finding files


def _find_files(dirs: Sequence[Path], names: Sequence[str], suffixes: Sequence[str],
                ) -> dict[str, Path] | None:
    """The first folder of ``dirs`` holding every name (with one of ``suffixes``), or None."""
    for d in dirs:
        found = {}
        for name in names:
            for suffix in suffixes:
                if (d / (name + suffix)).is_file():
                    found[name] = d / (name + suffix)
                    break
        if len(found) == len(names):
            return found
    return None


def _missing(task: str, dirs: Sequence[Path], names: Sequence[str], suffixes: Sequence[str],
             expected: str, *, can_download: bool) -> DataError:
    where = " or ".join(str(d) for d in dirs)
    home = dirs[0]
    if not home.is_dir():
        state = f"directory {home} does not exist"
    else:
        absent = [n for n in names if not any((home / (n + s)).is_file() for s in suffixes)]
        state = f"{home} lacks {', '.join(absent)}"
    fix = ", or pass download=True to fetch them" if can_download else ""
    return DataError(f"{task}: expected {expected} in {where}, but {state}. Put the files in "
                     f"{home} or name their folder with option root{fix}")


@contextlib.contextmanager
def _hint(text: str) -> Iterator[None]:
    """Add which files a loader expects, and where, to any DataError raised inside."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"{exc} ({text})") from None
