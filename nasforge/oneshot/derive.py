"""Derive a discrete DARTS genotype from architecture parameters α.

Two protocols:

- ``"top2"`` (DARTS, Liu et al. 2019): per edge the weights are ``softmax(α)``; an edge's strength
  is its strongest operation other than ``none``; each node keeps its two strongest incoming edges
  (ties: the earlier input), each with its strongest non-``none`` operation (ties: the earlier
  operation). Edges are listed strongest first, as the DARTS code prints them.
- ``"argmax"`` (DARTS-CC's small-data protocol): every edge takes its argmax operation, ``none``
  included, and edges whose argmax is ``none`` are dropped; so a node may keep any number of
  edges (the genotype is then printed in the nested form). A node whose every edge is ``none``
  is a zero node; a genotype node needs at least one edge, so it keeps one ``('none', input)``
  edge (from its strongest edge), which builds exactly that: zeros, no parameters.

Both concatenate every intermediate node, as the searched space does.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

import torch

from ..errors import ConfigError
from ..spaces.darts import Genotype
from .supernet import CELL_TYPES

MODES = ("top2", "argmax")


def nodes_for_edges(n_edges: int) -> int:
    """The number of intermediate nodes of a cell with ``n_edges`` mixed edges (14 -> 4)."""
    n = int(round((-3 + math.sqrt(9 + 8 * n_edges)) / 2))
    if n < 1 or n * (n + 3) // 2 != n_edges:
        raise ConfigError(f"derive: {n_edges} edges is not the edge count of a DARTS cell "
                          "(2 + 3 + ... incoming edges per node: 2, 5, 9, 14, 20, ...)")
    return n


def _softmax_rows(alpha: Any, n_ops: int, name: str) -> list[list[float]]:
    a = torch.as_tensor(alpha, dtype=torch.float64).detach().cpu()
    if a.dim() != 2 or a.shape[1] != n_ops:
        raise ConfigError(f"derive: alphas[{name!r}] has shape {tuple(a.shape)}; expected "
                          f"[edges, {n_ops}] (one column per operation)")
    return torch.softmax(a, dim=-1).tolist()


def _top2(w: list[list[float]], n_nodes: int, ops: Sequence[str]) -> tuple:
    none = ops.index("none") if "none" in ops else None
    candidates = [k for k in range(len(ops)) if k != none]
    if not candidates:
        raise ConfigError("derive: mode 'top2' needs an operation other than 'none'")
    nodes, start = [], 0
    for j in range(n_nodes):
        rows = w[start:start + j + 2]
        strength = [max(row[k] for k in candidates) for row in rows]
        chosen = sorted(range(j + 2), key=lambda src: -strength[src])[:2]
        node = []
        for src in chosen:
            best = candidates[0]
            for k in candidates:
                if rows[src][k] > rows[src][best]:
                    best = k
            node.append((ops[best], src))
        nodes.append(tuple(node))
        start += j + 2
    return tuple(nodes)


def _argmax(w: list[list[float]], n_nodes: int, ops: Sequence[str]) -> tuple:
    nodes, start = [], 0
    for j in range(n_nodes):
        rows = w[start:start + j + 2]
        node = []
        for src, row in enumerate(rows):
            best = max(range(len(ops)), key=lambda k: (row[k], -k))
            if ops[best] != "none":
                node.append((ops[best], src))
        if not node:  # every edge chose none: a zero node (one 'none' edge, no parameters)
            strongest = max(range(j + 2), key=lambda src: (max(rows[src]), -src))
            node.append(("none", strongest))
        nodes.append(tuple(node))
        start += j + 2
    return tuple(nodes)


def derive(alphas: Mapping[str, Any], op_names: Sequence[str],
           mode: Literal["top2", "argmax"] = "top2") -> Genotype:
    """The genotype of ``alphas`` (``{"normal": [E, K], "reduce": [E, K]}``, raw α or any
    logits; softmax is taken per edge) over operations ``op_names``, by ``mode`` (see above)."""
    if mode not in MODES:
        raise ConfigError(f"derive: mode {mode!r}; expected one of {', '.join(MODES)}")
    ops = list(op_names)
    if len(set(ops)) != len(ops) or not ops:
        raise ConfigError(f"derive: op_names {ops!r}; expected distinct operation names")
    missing = [t for t in CELL_TYPES if t not in alphas]
    if missing:
        raise ConfigError(f"derive: alphas lack {missing}; expected keys {list(CELL_TYPES)}")
    cells = {}
    n_nodes = None
    for t in CELL_TYPES:
        w = _softmax_rows(alphas[t], len(ops), t)
        n = nodes_for_edges(len(w))
        if n_nodes is not None and n != n_nodes:
            raise ConfigError(f"derive: the normal cell has {n_nodes} nodes, the reduction cell {n}")
        n_nodes = n
        cells[t] = (_top2 if mode == "top2" else _argmax)(w, n, ops)
    concat = tuple(range(2, (n_nodes or 0) + 2))
    return Genotype(cells["normal"], concat, cells["reduce"], concat)


__all__ = ["derive", "nodes_for_edges", "MODES"]
