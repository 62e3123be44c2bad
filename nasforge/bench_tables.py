"""Synthetic NAS-Bench-201 tables for tests and benchmark figures (no download needed).

``kind="structured"`` gives accuracies that depend on the cell in a learnable way: additive
per-edge-op effects (3x3 conv best, ``none`` worst), pairwise edge interactions, a penalty for
cells whose output is not connected to their input (they score near chance, as in the real
benchmark), and measurement noise. ``kind="random"`` gives i.i.d. accuracies with the same
marginal range, a control on which no strategy should beat random search.
Values are percentages, like the benchmark's ``cifar10-valid`` accuracies.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from .errors import ConfigError
from .spaces.nb201 import EDGES, NUM_EDGES, OPS, cell_text

COLUMNS = ("arch", "cifar10-val", "cifar10-test", "train_seconds")
#: prior mean effect of each op (in OPS order) on the latent quality, before per-edge variation
_OP_EFFECT = np.array([-2.0, 0.3, 1.0, 2.0, 0.2])


def nb201_op_indices() -> np.ndarray:
    """All 15,625 cells as an (N, 6) array of op indices, in the order of ``all_cells``."""
    return np.array(list(itertools.product(range(len(OPS)), repeat=NUM_EDGES)), dtype=np.int64)


def connected(idx: np.ndarray) -> np.ndarray:
    """Whether each cell (rows of op indices) has a path of non-``none`` edges from node 0 to 3."""
    reach = np.zeros((idx.shape[0], 4), dtype=bool)
    reach[:, 0] = True
    for e, (src, dst) in enumerate(EDGES):  # EDGES is topologically ordered
        reach[:, dst] |= reach[:, src] & (idx[:, e] != 0)
    return reach[:, 3]


def nb201_params(cells: Iterable[str], *, num_classes: int = 10, channels: int = 16,
                 cells_per_stage: int = 5) -> dict[str, float]:
    """The parameter count of each cell's network in nasforge's NB201 skeleton (3x32x32 input).

    Exact and fast: a network's count is linear in its numbers of ``nor_conv_1x1`` and
    ``nor_conv_3x3`` edges (the other operations have no parameters), so three networks are built
    to find the coefficients. With the benchmark's defaults (C=16, N=5, 10 classes) the counts
    range from 73,306 (no convolution) to 1,531,546 (all 3x3), NAS-Bench-201's 0.07 to 1.53 MB.
    """
    import torch

    from .core import Task
    from .cost import count_params
    from .spaces.nb201 import NB201Space, parse_cell

    empty = torch.zeros(0)
    task = Task("nb201-params", "image", (3, 32, 32), int(num_classes), (empty, empty),
                (empty, empty), (empty, empty))
    space = NB201Space(channels=channels, cells_per_stage=cells_per_stage)

    def count(ops: list[str]) -> float:
        return float(count_params(space.build(parse_cell(cell_text(ops)), task)))

    base = count(["none"] * NUM_EDGES)
    per_1x1 = count(["nor_conv_1x1"] + ["none"] * (NUM_EDGES - 1)) - base
    per_3x3 = count(["nor_conv_3x3"] + ["none"] * (NUM_EDGES - 1)) - base
    out = {}
    for text in cells:
        ops = parse_cell(text).ops
        out[text] = base + per_1x1 * ops.count("nor_conv_1x1") + per_3x3 * ops.count("nor_conv_3x3")
    return out


def add_params_column(source: str | Path, dest: str | Path, *, num_classes: int = 10) -> Path:
    """Copy a table with an ``arch`` column of NB201 cells, adding a ``params`` column
    (``nb201_params``), so that a table search can trade accuracy against size."""
    with open(source, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    if "arch" not in header:
        raise ConfigError(f"table {str(source)!r} has no 'arch' column")
    at = header.index("arch")
    params = nb201_params((r[at] for r in body), num_classes=num_classes)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*header, "params"])
        for r in body:
            w.writerow([*r, f"{params[r[at]]:.0f}"])
    return dest


def make_nb201_table(path: str | Path, *, seed: int, noise: float = 0.5,
                     kind: Literal["structured", "random"] = "structured") -> Path:
    """Write a CSV of every NB201 cell with columns ``arch, cifar10-val, cifar10-test, train_seconds``.

    ``noise`` is the std (accuracy points) of independent noise on the val and test columns.
    Returns the path written.
    """
    if kind not in ("structured", "random"):
        raise ConfigError(f"make_nb201_table: kind={kind!r}; expected 'structured' or 'random'")
    if noise < 0:
        raise ConfigError(f"make_nb201_table: noise={noise}; expected >= 0")
    rng = np.random.default_rng(seed)
    idx = nb201_op_indices()
    n = idx.shape[0]
    edge = np.arange(NUM_EDGES)

    effects = _OP_EFFECT[None, :] + rng.normal(0.0, 0.6, size=(NUM_EDGES, len(OPS)))
    latent = effects[edge, idx].sum(axis=1)
    inter = rng.normal(0.0, 0.35, size=(NUM_EDGES, len(OPS), NUM_EDGES, len(OPS)))
    for a, b in itertools.combinations(range(NUM_EDGES), 2):
        latent += inter[a, idx[:, a], b, idx[:, b]]
    z = (latent - latent.mean()) / latent.std()
    quality = 55.0 + 39.0 / (1.0 + np.exp(-1.3 * z))  # percent, saturating near 94 like CIFAR-10
    ok = connected(idx)
    quality = np.where(ok, quality, 10.0)  # disconnected cells predict a constant: chance level
    if kind == "random":
        quality = rng.permutation(quality)

    val = np.clip(quality + rng.normal(0.0, noise, n), 0.0, 100.0)
    test = np.clip(quality + rng.normal(0.0, noise, n) - 0.3, 0.0, 100.0)
    n_conv3 = (idx == OPS.index("nor_conv_3x3")).sum(axis=1)
    n_conv1 = (idx == OPS.index("nor_conv_1x1")).sum(axis=1)
    n_pool = (idx == OPS.index("avg_pool_3x3")).sum(axis=1)
    seconds = (400.0 + 180.0 * n_conv3 + 60.0 * n_conv1 + 25.0 * n_pool) * rng.lognormal(0.0, 0.05, n)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i in range(n):
            w.writerow([cell_text([OPS[k] for k in idx[i]]), f"{val[i]:.4f}", f"{test[i]:.4f}",
                        f"{seconds[i]:.2f}"])
    return path
