"""Export a deep prior's embedding of a task to files other tools read.

Layout of ``OUT`` (DP-NAS's ``--store-embedding``, readable by torchvision's
``DatasetFolder(root, loader=numpy.load, extensions=('.npy',))`` on ``OUT/train`` etc.)::

    OUT/meta.json                      arch, task, seed, init, shapes, class folders
    OUT/train.npz, val.npz, test.npz   x (N, features) float32, y (N,) int64, in split order
    OUT/{train,val,test}/<class>/<index>.npy   one float32 vector per image

``<class>`` is the label, zero-padded to the same width for every class, so sorting the folder
names (as ``DatasetFolder`` does) gives back the label. Every split has a folder for every
class, even an empty one (a split without some class: pass ``allow_empty=True`` to
``DatasetFolder``), so that the folder order never shifts the labels; ``<index>`` is the row in
the split, zero-padded, so sorting a class's files keeps the split order. Everything is written
into a temporary folder beside ``OUT`` and renamed into place at the end: an interrupted export
leaves no half-written ``OUT``. An ``OUT`` that exists and is not empty is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core import Architecture, SearchSpace, Task
from ..errors import ConfigError, DataError
from ..evaluators.deep_prior import SPLITS, DeepPriorEvaluator, Embedding


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a Path if it does not exist or is an empty folder; else ``ConfigError``."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--out {path} exists and is not empty; choose a new or empty directory "
                          "(nothing was written)")
    return path


def class_folder(label: int, num_classes: int) -> str:
    """The folder name of a class: its label zero-padded to the width of the largest label."""
    return f"{int(label):0{len(str(max(num_classes - 1, 0)))}d}"


def write_embedding(emb: Embedding, task: Task, out: str | Path, *,
                    meta: dict[str, Any] | None = None, folders: bool = True) -> Path:
    """Write ``emb`` in the layout above (``folders=False``: only the .npz files and meta.json)."""
    out = check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        sizes = {}
        for split in SPLITS:
            x, y = emb.split(split)
            xs, ys = x.numpy().astype(np.float32, copy=False), y.numpy().astype(np.int64)
            sizes[split] = int(xs.shape[0])
            np.savez(tmp / f"{split}.npz", x=xs, y=ys)
            if folders:
                width = len(str(max(len(ys) - 1, 0)))
                for label in range(task.num_classes):  # every class, so folder order = label
                    (tmp / split / class_folder(label, task.num_classes)).mkdir(parents=True)
                for i, (row, label) in enumerate(zip(xs, ys)):
                    folder = tmp / split / class_folder(label, task.num_classes)
                    np.save(folder / f"{i:0{width}d}.npy", row)
        names = task.class_names or [str(c) for c in range(task.num_classes)]
        info = {
            "arch": emb.key.get("arch"), "task": task.name, "seed": emb.key.get("seed"),
            "init": emb.key.get("init"), "batch_norm": emb.key.get("batch_norm"),
            "space": emb.key.get("space"), "space_options": emb.key.get("space_options"),
            "task_fingerprint": emb.key.get("task_fingerprint"),
            "input_shape": list(task.input_shape), "feature_shape": list(emb.feature_shape),
            "features": emb.features, "num_classes": int(task.num_classes), "sizes": sizes,
            "class_folders": {class_folder(c, task.num_classes): names[c]
                              for c in range(task.num_classes)},
            "embed_seconds": emb.seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "layout": "SPLIT/<class>/<index>.npy and SPLIT.npz (x float32, y int64)",
            **(meta or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(info, indent=2, default=str))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_embedding(arch: Architecture, space: SearchSpace, task: Task, out: str | Path, *,
                     seed: int = 0, evaluator: DeepPriorEvaluator | None = None,
                     folders: bool = True) -> Path:
    """Compute ``arch``'s deep prior embedding of ``task`` (``evaluator``'s init, batch norm,
    memory cap and device; the trial seed ``seed``) and write it to ``out``."""
    check_out_dir(out)  # before the (possibly long) embedding
    evaluator = evaluator or DeepPriorEvaluator()
    space.check(arch, task)
    emb = evaluator.embedding(arch, space, task, seed=seed)
    return write_embedding(emb, task, out, meta={"memory_mb": evaluator.memory_mb},
                           folders=folders)


def load_npz(out: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split from an export's ``SPLIT.npz``."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}; expected train, val or test")
    path = Path(out) / f"{split}.npz"
    if not path.is_file():
        raise DataError(f"{path} does not exist; is {out} an embedding export?")
    with np.load(path) as data:
        return data["x"], data["y"]


__all__ = ["export_embedding", "write_embedding", "check_out_dir", "class_folder", "load_npz"]
