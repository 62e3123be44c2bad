"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 6 edges x 5 operations = 15,625 cells.

A cell is a DAG on 4 nodes; node ``j`` sums ``op(node i)`` over the edges ``i -> j`` (``i < j``)
and node 3 is the output. The text is the benchmark's own string, node by node::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

The network is the benchmark's macro skeleton: a 3x3 conv stem with ``channels`` filters, three
stages of ``cells_per_stage`` cells separated by residual reduction blocks (channels doubled,
stride 2), then BN-ReLU, global average pooling and a linear classifier.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..core import Architecture, Decision, Network, SearchSpace, Task, TextArchitecture
from ..errors import ArchitectureError, ConfigError, quote_text
from ..registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..graph import ArchGraph

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (source, target) of each edge, in the order of the text and of the decisions
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_EDGES = len(EDGES)
#: Limits of the space's options (the benchmark uses 16 channels and 5 cells per stage).
MAX_CHANNELS = 1024
MAX_CELLS_PER_STAGE = 64


def cell_text(ops: Sequence[str]) -> str:
    """The benchmark string of a cell given its six edge operations in ``EDGES`` order."""
    nodes, k = [], 0
    for target in (1, 2, 3):
        parts = [f"{ops[k + source]}~{source}" for source in range(target)]
        k += target
        nodes.append("|" + "|".join(parts) + "|")
    return "+".join(nodes)


@dataclass(frozen=True, eq=False)
class NB201Arch(TextArchitecture):
    """A NAS-Bench-201 cell: the operation on each of the six edges, in ``EDGES`` order."""

    ops: tuple[str, ...]
    _text: str = field(init=False, repr=False, compare=False)
    _equal_by = "ops"  # equal when the ops are

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        if len(ops) != NUM_EDGES:
            raise ArchitectureError(f"nb201: a cell has {NUM_EDGES} edges, got {len(ops)} ops {ops!r}")
        for i, op in enumerate(ops):
            if op not in OPS:
                raise ArchitectureError(
                    f"nb201: edge {i} {EDGES[i][0]}->{EDGES[i][1]} has unknown op {op!r}; "
                    f"expected one of {', '.join(OPS)}")
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "_text", cell_text(ops))  # cached: table lookups hash it often

    def edge(self, source: int, target: int) -> str:
        """The operation on edge ``source -> target``."""
        return self.ops[EDGES.index((source, target))]


def parse_cell(text: str) -> NB201Arch:
    """Parse a benchmark string strictly; errors name the node, the edge and the character offset."""
    if not isinstance(text, str):
        raise ArchitectureError(f"nb201: expected a cell string, got {type(text).__name__} "
                                f"{quote_text(repr(text))}")
    groups = text.split("+")
    if len(groups) != 3:
        raise ArchitectureError(
            f"nb201: {quote_text(text)} has {len(groups)} node groups separated by '+'; expected 3 "
            f"(nodes 1, 2, 3), e.g. {cell_text(['nor_conv_3x3'] * NUM_EDGES)!r}")
    ops: list[str] = []
    offset = 0
    for target, group in enumerate(groups, start=1):
        where = f"node {target} (character {offset})"
        if len(group) < 2 or not group.startswith("|") or not group.endswith("|"):
            raise ArchitectureError(
                f"nb201: {where} of {quote_text(text)}: {quote_text(group)} must be enclosed in '|', "
                "like '|op~0|'")
        tokens = group[1:-1].split("|")
        if len(tokens) != target:
            raise ArchitectureError(
                f"nb201: {where} of {quote_text(text)}: {len(tokens)} inputs {quote_text(group)}; "
                f"node {target} "
                f"takes exactly {target} (from nodes 0..{target - 1})")
        pos = offset + 1
        for source, token in enumerate(tokens):
            op, tilde, src = token.partition("~")
            at = f"node {target}, input {source} (character {pos})"
            if not tilde:
                raise ArchitectureError(f"nb201: {at} of {quote_text(text)}: {quote_text(token)} is not "
                                        "'op~source'")
            if op not in OPS:
                raise ArchitectureError(
                    f"nb201: {at} of {quote_text(text)}: unknown op {quote_text(op)}; expected one of "
                    f"{', '.join(OPS)}")
            if src != str(source):
                raise ArchitectureError(
                    f"nb201: {at} of {quote_text(text)}: source {quote_text(src)}; expected {source} "
                    f"(inputs are listed in order 0..{target - 1})")
            ops.append(op)
            pos += len(token) + 1
        offset += len(group) + 1
    return NB201Arch(tuple(ops))


def all_cells() -> Iterator[NB201Arch]:
    """Every cell of the space (15,625), in lexicographic order of op indices."""
    for combo in itertools.product(OPS, repeat=NUM_EDGES):
        yield NB201Arch(combo)


def canonical_key(arch: NB201Arch) -> str:
    """A key equal for cells that compute the same function up to reordering of sums.

    Each node is written as the sorted sum of its inputs' expressions; ``none`` contributes zero,
    ``skip_connect`` passes its input through, and any op applied to a zero node is zero (so
    dead branches vanish). Isomorphic cells (e.g. nodes 1 and 2 swapped) get the same key.
    Exact but for one detail: a convolution on a zero node outputs its BatchNorm's learned shift
    (a constant per channel, which the next BatchNorm removes), and the key counts it as zero.
    """
    return _ops_key(arch.ops)


def _ops_key(ops: Sequence[str]) -> str:
    """:func:`canonical_key` of the cell with edge operations ``ops`` (``EDGES`` order)."""
    expr: list[str | None] = ["x", None, None, None]
    k = 0
    for target in (1, 2, 3):
        terms = []
        for source in range(target):
            op, inp = ops[k + source], expr[source]
            if op == "none" or inp is None:
                continue
            terms.append(inp if op == "skip_connect" else f"{op}({inp})")
        k += target
        expr[target] = "+".join(sorted(terms)) if terms else None
    return expr[3] or "zero"


@functools.lru_cache(maxsize=1)
def _representatives() -> dict[str, NB201Arch]:
    """``canonical_key`` -> the first cell of :func:`all_cells` with that key (5,273 classes)."""
    out: dict[str, tuple[str, ...]] = {}
    for ops in itertools.product(OPS, repeat=NUM_EDGES):
        out.setdefault(_ops_key(ops), ops)
    return {key: NB201Arch(ops) for key, ops in out.items()}


def canonical_cell(arch: NB201Arch) -> NB201Arch:
    """The representative of ``arch``'s class: of all cells with its ``canonical_key``, the
    first in :func:`all_cells` order (smallest op indices, edge by edge). The table of
    representatives is built once per process (about 0.1 s)."""
    return _representatives()[canonical_key(arch)]


# --------------------------------------------------------------------------------------------
# network


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias) -> BatchNorm, the benchmark's convolution op."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(op: str, channels: int) -> nn.Module:
    """One edge operation, shape-preserving on ``channels`` channels."""
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ArchitectureError(f"nb201: unknown op {op!r}; expected one of {', '.join(OPS)}")


class Cell(nn.Module):
    """One searched cell: node j = sum of op(node i) over the edges i -> j."""

    def __init__(self, arch: NB201Arch, channels: int):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, channels) for op in arch.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for target in (1, 2, 3):
            total = self.edges[k](nodes[0])
            for source in range(1, target):
                total = total + self.edges[k + source](nodes[source])
            k += target
            nodes.append(total)
        return nodes[3]


class ResidualReduction(nn.Module):
    """The reduction block between stages: two ReLU-Conv-BN (first stride 2) plus a pooled shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        # ceil_mode keeps the shortcut the same size as the strided conv on odd inputs
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True),
                                      nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


@register("spaces", "nb201")
class NB201Space(SearchSpace):
    """NAS-Bench-201: six edge decisions, each one of ``OPS``.

    ``channels`` (C, 16 in the benchmark) is the stem width and ``cells_per_stage`` (N, 5 in the
    benchmark) the number of cells in each of the three stages; smaller values give quick
    networks for tests and proxies.
    """

    name = "nb201"
    ops = OPS
    size = len(OPS) ** NUM_EDGES

    def __init__(self, *, channels: int = 16, cells_per_stage: int = 5):
        for name, value, low, high in (("channels", channels, 1, MAX_CHANNELS),
                                       ("cells_per_stage", cells_per_stage, 0, MAX_CELLS_PER_STAGE)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"nb201: {name}={value!r}; expected an integer from {low} to "
                                  f"{high}")
        self.channels = channels
        self.cells_per_stage = cells_per_stage

    def options(self) -> dict[str, Any]:
        return {"channels": self.channels, "cells_per_stage": self.cells_per_stage}

    # -- text and sequential view -------------------------------------------------------------
    def parse(self, text: str) -> NB201Arch:
        return parse_cell(text)

    def choices(self, prefix: Sequence[Decision]) -> list[Decision]:
        if len(prefix) > NUM_EDGES:
            raise ArchitectureError(f"nb201: prefix of {len(prefix)} decisions; a cell has {NUM_EDGES}")
        return list(OPS) if len(prefix) < NUM_EDGES else []

    def to_decisions(self, arch: Architecture) -> tuple[Decision, ...]:
        return self._check(arch).ops

    def from_decisions(self, decisions: Sequence[Decision]) -> NB201Arch:
        if len(decisions) != NUM_EDGES:
            raise ArchitectureError(
                f"nb201: {len(decisions)} decisions {tuple(decisions)!r}; expected {NUM_EDGES} ops")
        return NB201Arch(tuple(str(d) for d in decisions))

    # -- sampling and neighbourhood -------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> NB201Arch:
        return NB201Arch(tuple(OPS[i] for i in rng.integers(len(OPS), size=NUM_EDGES)))

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> NB201Arch:
        """Change the op of one random edge to a different op."""
        ops = list(self._check(arch).ops)
        edge = int(rng.integers(NUM_EDGES))
        others = [op for op in OPS if op != ops[edge]]
        ops[edge] = others[int(rng.integers(len(others)))]
        return NB201Arch(tuple(ops))

    def neighbours(self, arch: Architecture) -> list[NB201Arch]:
        """All 24 cells that differ from ``arch`` on exactly one edge, in a fixed order."""
        ops = self._check(arch).ops
        return [NB201Arch(ops[:e] + (op,) + ops[e + 1:])
                for e in range(NUM_EDGES) for op in OPS if op != ops[e]]

    def canonical_key(self, arch: Architecture) -> str:
        """Same key for isomorphic cells (see :func:`canonical_key`)."""
        return canonical_key(self._check(arch))

    def canonical(self, arch: Architecture) -> NB201Arch:
        """The fixed representative of the cells equivalent to ``arch`` (:func:`canonical_cell`)."""
        return canonical_cell(self._check(arch))

    # -- building -------------------------------------------------------------------------------
    def build(self, arch: Architecture, task: Task) -> Network:
        cell = self._check(arch)
        shape = tuple(task.input_shape)
        if task.kind not in ("image", "segmentation") or len(shape) != 3:
            raise ArchitectureError(
                f"nb201: needs image input (C, H, W); task {task.name!r} has kind {task.kind!r} "
                f"and input shape {shape}")
        c = self.channels
        layers: list[nn.Module] = [nn.Conv2d(shape[0], c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers.extend(Cell(cell, c) for _ in range(self.cells_per_stage))
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return Network(nn.Sequential(*layers), nn.Linear(c, task.num_classes))

    def _check(self, arch: Architecture) -> NB201Arch:
        if not isinstance(arch, NB201Arch):
            raise ArchitectureError(f"nb201: {arch!r} is not a NAS-Bench-201 cell")
        return arch

    # -- features for learned models (see nasforge.graph) -----------------------------------------
    @property
    def encoding_size(self) -> int:
        return NUM_EDGES * len(OPS)

    def encode(self, arch: Architecture) -> np.ndarray:
        """One-hot of each edge's operation, edges in ``EDGES`` order, ops in ``OPS`` order (30)."""
        out = np.zeros((NUM_EDGES, len(OPS)), dtype=np.float32)
        out[np.arange(NUM_EDGES), [OPS.index(op) for op in self._check(arch).ops]] = 1.0
        return out.reshape(-1)

    @property
    def op_vocab(self) -> tuple[str, ...]:
        return ("input", *OPS, "output")

    def graph(self, arch: Architecture) -> "ArchGraph":
        """The cell with operations as nodes (the NAS-Bench-101 / GIN-predictor convention).

        8 nodes: 0 the cell input (cell node 0), 1-6 the operations of the six edges in
        ``EDGES`` order, 7 the output (cell node 3). Operation ``i -> j`` reads the cell's node
        ``i``: the input for ``i = 0``, otherwise every operation on an edge into ``i`` (node
        ``i`` is their sum); operations into node 3 feed the output. The topology is the same
        for every cell and ``none`` operations stay as nodes labelled ``none`` (prune them, or
        use ``canonical_key`` to merge isomorphic cells, where a predictor wants that). Node
        attributes: ``src`` and ``dst``, the cell nodes of the operation's edge.
        """
        from ..graph import ArchGraph

        cell = self._check(arch)
        op_node = {edge: 1 + k for k, edge in enumerate(EDGES)}
        output = 1 + NUM_EDGES
        edges = []
        for (i, j), node in op_node.items():
            if i == 0:
                edges.append((0, node))
            else:
                edges += [(op_node[e], node) for e in EDGES if e[1] == i]
            if j == 3:
                edges.append((node, output))
        attrs = ({}, *({"src": float(i), "dst": float(j)} for i, j in EDGES), {})
        return ArchGraph(ops=("input", *cell.ops, "output"), edges=tuple(edges), inputs=(0,),
                         outputs=(output,), attrs=attrs)
