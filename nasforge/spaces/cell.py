"""The PNAS / POPNAS cell space: cells of up to B blocks, stacked into a fixed macro network.

A **block** is ``(in1, op1, in2, op2)``: two inputs, each through one operator, joined by
addition. Inputs ``-1`` and ``-2`` are the previous cell and the one before it (``lookback``
sets how many previous cells a block may read); ``0 .. b-2`` are the earlier blocks of the same
cell (block ``b``, counted from 1, reads ``-lookback .. b-2``). A **cell** is a list of blocks;
its output concatenates the blocks no other block reads, followed by a 1x1 conv-BN-act back to
the cell's filters (skipped when a single block is left). The text is POPNASv3's::

    [(-2, 3x3 conv, -1, 2x2 maxpool);(-1, 1x3-3x1 conv, 0, identity)]

and ``[]`` is the empty cell (input -> global pooling -> classifier; POPNAS trains it as its
time baseline). ``parse`` accepts free whitespace around the separators; ``str`` writes the
canonical spacing above. Operators follow the grammar of :mod:`nasforge.ops.cell_ops`; a cell
may use only the space's ``operators``.

**Macro network** (POPNASv3's ``build_model``): no stem, both lookbacks of the first cell are
the input; ``motifs`` (M) motifs of ``normal_cells`` (N) normal cells with ``filters`` (F)
filters, every motif but the last followed by a reduction cell (filters x2, size /2), so
``M(N+1)-1`` cells; then global average pooling and a linear classifier. An operator whose input
is larger than the cell's output runs at stride 2; one whose channels differ outputs the
cell's channels. ``residual`` adds the nearest lookback the cell uses to its output (through a
2x2 max-pool and / or a 1x1 conv-BN-act when the shapes differ). A cell that never reads ``-1``
lets the network skip the cells nothing reads (only the cells the output depends on are built).

**Enumeration** (:meth:`CellSpace.blocks_for`, :meth:`CellSpace.expand`): the blocks allowed at
position ``b`` are the pairs with ``in2 >= in1`` and, for ``in2 == in1``, ``op2 >= op1`` by the
operators' order: ``(L^2 O^2 + L O) / 2`` blocks for ``L`` inputs and ``O`` operators.
``expand(cell)`` lists every cell with one more block. Two cells are *equivalent*
(``canonical_key``) when their blocks, as unordered pairs of ``input+op`` with inputs expanded
recursively, are the same multiset (POPNASv3's rule).

The operator list defaults to POPNASv3's: for images ``identity``, ``3x3/5x5/7x7 dconv``,
``1x3-3x1/1x5-5x1/1x7-7x1 conv``, ``1x1/3x3/5x5 conv``, ``2x2 maxpool``, ``2x2 avgpool`` (12);
for series (``kind: series``, filled from the task by a run) ``identity``, ``7/13/21 dconv``,
``7/13/21 conv``, ``7:2dr conv``, ``7:4dr conv``, ``2 maxpool``, ``2 avgpool``, ``lstm``,
``gru`` (13). Defaults B=5, lookback 2, M=3, N=2, F=24 are the reference's too.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from ..core import Architecture, Decision, Network, SearchSpace, Task, TextArchitecture
from ..errors import ArchitectureError, ConfigError, quote_text
from ..ops.cell_ops import ConvBNAct, OpSpec, SamePool, build_op, out_sizes, parse_op
from ..registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..graph import ArchGraph

IMAGE_OPS: tuple[str, ...] = (
    "identity", "3x3 dconv", "5x5 dconv", "7x7 dconv", "1x3-3x1 conv", "1x5-5x1 conv",
    "1x7-7x1 conv", "1x1 conv", "3x3 conv", "5x5 conv", "2x2 maxpool", "2x2 avgpool")
SERIES_OPS: tuple[str, ...] = (
    "identity", "7 dconv", "13 dconv", "21 dconv", "7 conv", "13 conv", "21 conv",
    "7:2dr conv", "7:4dr conv", "2 maxpool", "2 avgpool", "lstm", "gru")
END = "end"  # the decision that closes a cell of fewer than B blocks
MAX_TEXT = 20_000
MAX_BLOCKS = 16
MAX_LOOKBACK = 8

Block = tuple[int, str, int, str]


def block_text(block: Block) -> str:
    return f"({block[0]}, {block[1]}, {block[2]}, {block[3]})"


@dataclass(frozen=True, eq=False)
class CellArch(TextArchitecture):
    """A cell: a tuple of blocks ``(in1, op1, in2, op2)`` (empty: the empty cell)."""

    blocks: tuple[Block, ...]
    _text: str = field(init=False, repr=False, compare=False)
    _equal_by = "blocks"  # equal when the blocks are

    def __post_init__(self) -> None:
        blocks = tuple((int(a), str(b), int(c), str(d)) for a, b, c, d in self.blocks)
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "_text", "[" + ";".join(block_text(b) for b in blocks) + "]")

    def __len__(self) -> int:
        return len(self.blocks)

    def used_blocks(self) -> set[int]:
        """Blocks another block reads."""
        return {i for a, _, c, _ in self.blocks for i in (a, c) if i >= 0}

    def unused_blocks(self) -> list[int]:
        """Blocks no other block reads (their concatenation is the cell's output)."""
        used = self.used_blocks()
        return [b for b in range(len(self.blocks)) if b not in used]

    def lookbacks(self) -> set[int]:
        """The lookback inputs (``-1``, ``-2``, ...) the cell reads."""
        return {i for a, _, c, _ in self.blocks for i in (a, c) if i < 0}


_BLOCK = re.compile(r"\(\s*([^,()]*?)\s*,\s*([^,()]*?)\s*,\s*([^,()]*?)\s*,\s*([^,()]*?)\s*\)")
_INT = re.compile(r"^[+-]?\d+$")


def parse_cell_text(text: str) -> CellArch:
    """The cell of a text ``[(in1, op1, in2, op2);...]``; ``ArchitectureError`` naming the block
    and the character offset when malformed (inputs and operators are checked by the space)."""
    if not isinstance(text, str):
        raise ArchitectureError(f"cell: expected a text like '[(-2, 3x3 conv, -1, 2x2 maxpool)]', "
                                f"got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ArchitectureError(f"cell: text of {len(text):,} characters; expected at most "
                                f"{MAX_TEXT:,}")
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise ArchitectureError(f"cell: {quote_text(text)} must be enclosed in '[' and ']', e.g. "
                                "'[(-2, 3x3 conv, -1, 2x2 maxpool);(-1, identity, 0, 3x3 conv)]'")
    inner = body[1:-1]
    offset = text.index("[") + 1
    if not inner.strip():
        return CellArch(())
    blocks: list[Block] = []
    for index, part in enumerate(inner.split(";")):
        m = _BLOCK.fullmatch(part.strip())
        where = f"block {index} (character {offset})"
        if m is None:
            raise ArchitectureError(
                f"cell: {where} of {quote_text(text)}: {quote_text(part.strip())} is not "
                "'(in1, op1, in2, op2)', e.g. '(-2, 3x3 conv, -1, 2x2 maxpool)'")
        in1, op1, in2, op2 = m.groups()
        for name, value in (("in1", in1), ("in2", in2)):
            if not _INT.match(value):
                raise ArchitectureError(f"cell: {where} of {quote_text(text)}: {name} {quote_text(value)} "
                                        "is not an integer input (-2, -1 or an earlier block)")
        blocks.append((int(in1), " ".join(op1.split()), int(in2), " ".join(op2.split())))
        offset += len(part) + 1
    return CellArch(tuple(blocks))


# --------------------------------------------------------------------------------------------
# network


@dataclass(frozen=True)
class _Shape:
    channels: int
    sizes: tuple[int, ...]


class CellModule(nn.Module):
    """One cell of the macro network: inputs ``-1`` and ``-2`` (and deeper lookbacks)."""

    def __init__(self, cell: CellArch, specs: dict[str, OpSpec], dims: int,
                 inputs: dict[int, _Shape], target: _Shape, *, concat_only_unused: bool,
                 residual: bool):
        super().__init__()
        self.cell = cell
        self.branches = nn.ModuleList()
        for in1, op1, in2, op2 in cell.blocks:
            for inp, op in ((in1, op1), (in2, op2)):
                src = inputs[inp] if inp < 0 else target
                stride = _stride(src.sizes, target.sizes)
                self.branches.append(build_op(specs[op], dims, src.channels, target.channels,
                                              src.sizes, stride))
        self.outputs = cell.unused_blocks() if concat_only_unused else list(range(len(cell)))
        self.project = (ConvBNAct(dims, len(self.outputs) * target.channels, target.channels,
                                  (1,) * dims, target.sizes)
                        if len(self.outputs) > 1 else None)
        self.residual_input: int | None = None
        self.shortcut: nn.Module | None = None
        if residual:
            used = cell.lookbacks()
            nearest = max(used) if used else None  # -1 before -2
            if nearest is not None:
                self.residual_input = nearest
                src = inputs[nearest]
                stride = _stride(src.sizes, target.sizes)
                layers: list[nn.Module] = []
                if stride > 1:
                    layers.append(SamePool(dims, "maxpool", (2,) * dims, src.sizes, stride))
                if src.channels != target.channels:
                    layers.append(ConvBNAct(dims, src.channels, target.channels, (1,) * dims,
                                            target.sizes))
                self.shortcut = nn.Sequential(*layers) if layers else nn.Identity()

    def forward(self, *lookbacks: torch.Tensor) -> torch.Tensor:
        """``lookbacks[0]`` is input ``-1``, ``lookbacks[1]`` input ``-2``, ..."""
        outs: list[torch.Tensor] = []
        k = 0
        for in1, _, in2, _ in self.cell.blocks:
            a = self.branches[k](lookbacks[-in1 - 1] if in1 < 0 else outs[in1])
            b = self.branches[k + 1](lookbacks[-in2 - 1] if in2 < 0 else outs[in2])
            outs.append(a + b)
            k += 2
        if self.project is not None:
            out = self.project(torch.cat([outs[i] for i in self.outputs], dim=1))
        else:
            out = outs[self.outputs[0]]
        if self.shortcut is not None and self.residual_input is not None:
            out = out + self.shortcut(lookbacks[-self.residual_input - 1])
        return out


def _stride(src: Sequence[int], dst: Sequence[int]) -> int:
    if tuple(src) == tuple(dst):
        return 1
    if out_sizes(src, 2) == tuple(dst):
        return 2
    raise ArchitectureError(f"cell: an input of spatial size {tuple(src)} cannot reach "
                            f"{tuple(dst)} with one stride-2 operator")


class CellEncoder(nn.Module):
    """The stacked cells (only those the output depends on), then global average pooling."""

    def __init__(self, cells: dict[int, CellModule], order: list[int], lookback: int, dims: int):
        super().__init__()
        self.cells = nn.ModuleDict({str(i): cells[i] for i in order})
        self.order = order
        self.lookback = lookback
        self.pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}[dims](1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: dict[int, torch.Tensor] = {}
        for i in self.order:
            lookbacks = [outs.get(i - j, x) if i - j >= 0 else x
                         for j in range(1, self.lookback + 1)]
            outs[i] = self.cells[str(i)](*lookbacks)
        last = outs[self.order[-1]] if self.order else x
        return torch.flatten(self.pool(last), 1)


# --------------------------------------------------------------------------------------------
# the space


@functools.lru_cache(maxsize=64)
def _enumerate_blocks(lookback: int, ops: tuple[str, ...], b: int) -> tuple[Block, ...]:
    """The blocks allowed at position ``b`` (see ``CellSpace.blocks_for``)."""
    inputs = range(-lookback, b)
    out = []
    for in1, in2 in itertools.product(inputs, repeat=2):
        if in2 < in1:
            continue
        for (i1, op1), (i2, op2) in itertools.product(enumerate(ops), repeat=2):
            if in2 == in1 and i2 < i1:
                continue
            out.append((in1, op1, in2, op2))
    return tuple(out)


def _int_option(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"cell space: {name} = {value!r}; expected an integer from {low} to "
                          f"{high}")
    return value


@register("spaces", "cell")
class CellSpace(SearchSpace):
    """POPNAS / PNAS cells of up to ``blocks`` blocks (see the module docstring).

    Options: ``blocks`` (B, 5), ``lookback`` (2: cells read the two previous cells),
    ``motifs`` (M, 3), ``normal_cells`` (N, 2), ``filters`` (F, 24), ``operators`` (default by
    ``kind``), ``kind`` (``image`` or ``series``, filled from the task by a run),
    ``residual`` (true) and ``concat_only_unused`` (true), as POPNASv3's defaults.
    """

    name = "cell"

    def __init__(self, *, blocks: int = 5, lookback: int = 2, motifs: int = 3,
                 normal_cells: int = 2, filters: int = 24, operators: list[str] | None = None,
                 kind: Literal["image", "series"] = "image", residual: bool = True,
                 concat_only_unused: bool = True):
        self.B = _int_option("blocks", blocks, 1, MAX_BLOCKS)
        self.lookback = _int_option("lookback", lookback, 1, MAX_LOOKBACK)
        self.motifs = _int_option("motifs", motifs, 1, 8)
        self.normal_cells = _int_option("normal_cells", normal_cells, 1, 32)
        self.filters = _int_option("filters", filters, 1, 4096)
        if kind not in ("image", "series"):
            raise ConfigError(f"cell space: kind = {kind!r}; expected 'image' or 'series'")
        self.kind = kind
        self.dims = 2 if kind == "image" else 1
        if operators is None:
            operators = list(IMAGE_OPS if kind == "image" else SERIES_OPS)
        if isinstance(operators, str) or not isinstance(operators, (list, tuple)) or not operators:
            raise ConfigError(f"cell space: operators = {operators!r}; expected a non-empty list "
                              "of operator texts such as ['3x3 conv', '2x2 maxpool']")
        specs: dict[str, OpSpec] = {}
        for op in operators:
            try:
                spec = parse_op(op)
            except ArchitectureError as exc:
                raise ConfigError(f"cell space: operators: {exc}") from None
            if spec.dims is not None and spec.dims != self.dims:
                example = "3x3 conv" if self.dims == 2 else "3 conv"
                raise ConfigError(f"cell space: operator {op!r} is {spec.dims}-D but kind is "
                                  f"{kind!r}; write kernels like {example!r}")
            if op in specs:
                raise ConfigError(f"cell space: operator {op!r} is listed twice")
            specs[op] = spec
        self.operators: tuple[str, ...] = tuple(operators)
        self.specs = specs
        self.op_index = {op: i for i, op in enumerate(self.operators)}
        self.residual = bool(residual)
        self.concat_only_unused = bool(concat_only_unused)
        self.input_values: tuple[int, ...] = tuple(range(-self.lookback, self.B - 1))

    def options(self) -> dict[str, Any]:
        return {"blocks": self.B, "lookback": self.lookback, "motifs": self.motifs,
                "normal_cells": self.normal_cells, "filters": self.filters,
                "operators": list(self.operators), "kind": self.kind,
                "residual": self.residual, "concat_only_unused": self.concat_only_unused}

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind,)

    @property
    def num_cells(self) -> int:
        """Cells in the macro network: ``M(N+1)-1``."""
        return self.motifs * (self.normal_cells + 1) - 1

    # -- text ---------------------------------------------------------------------------------
    def parse(self, text: str) -> CellArch:
        return self.validate(parse_cell_text(text))

    def validate(self, arch: Architecture) -> CellArch:
        """``arch`` if it is a cell of this space (inputs, operators, block count), else
        ``ArchitectureError`` naming the block and the value."""
        if not isinstance(arch, CellArch):
            raise ArchitectureError(f"cell: {arch!r} is not a cell architecture")
        if len(arch) > self.B:
            raise ArchitectureError(f"cell: {arch} has {len(arch)} blocks; this space allows at "
                                    f"most {self.B} (option blocks)")
        for b, (in1, op1, in2, op2) in enumerate(arch.blocks):
            allowed = self.allowed_inputs(b)
            for name, value in (("in1", in1), ("in2", in2)):
                if value not in allowed:
                    raise ArchitectureError(
                        f"cell: block {b} of {arch}: {name} = {value}; expected one of "
                        f"{', '.join(map(str, allowed))} (lookbacks -{self.lookback}..-1 and "
                        "earlier blocks)")
            for name, op in (("op1", op1), ("op2", op2)):
                if op not in self.specs:
                    try:
                        parse_op(op)
                        why = "not in this space's operators"
                    except ArchitectureError as exc:
                        why = str(exc)
                    raise ArchitectureError(
                        f"cell: block {b} of {arch}: {name} {op!r}: {why}; the space's operators "
                        f"are {', '.join(self.operators)}")
        return arch

    # -- enumeration ----------------------------------------------------------------------------
    def allowed_inputs(self, b: int) -> tuple[int, ...]:
        """Inputs block ``b`` (0-based) may read: ``-lookback .. b-1``."""
        return tuple(range(-self.lookback, b))

    def blocks_for(self, b: int) -> list[Block]:
        """Every block allowed at position ``b`` (0-based), in enumeration order:
        ``in2 >= in1`` and, for equal inputs, ``op2 >= op1`` (``(L^2 O^2 + L O) / 2`` of them)."""
        return list(_enumerate_blocks(self.lookback, self.operators, b))

    def first_cells(self, inputs: Sequence[int] | None = None) -> list[CellArch]:
        """Every 1-block cell (inputs limited to ``inputs`` if given, e.g. ``(-2, -1)``)."""
        return [CellArch((blk,)) for blk in self.blocks_for(0)
                if inputs is None or (blk[0] in inputs and blk[2] in inputs)]

    def expand(self, arch: Architecture) -> list[CellArch]:
        """Every cell with one more block than ``arch`` (empty when it has ``blocks`` already)."""
        cell = self._check(arch)
        if len(cell) >= self.B:
            return []
        return [CellArch(cell.blocks + (blk,)) for blk in self.blocks_for(len(cell))]

    def _ordered_block(self, blk: Block) -> Block:
        """The block with its two (input, op) pairs in enumeration order."""
        in1, op1, in2, op2 = blk
        if (in2, self.op_index.get(op2, -1)) < (in1, self.op_index.get(op1, -1)):
            return (in2, op2, in1, op1)
        return blk

    # -- sequential view ------------------------------------------------------------------------
    def choices(self, prefix: Sequence[Decision]) -> list[Decision]:
        prefix = list(prefix)
        if END in prefix:
            if prefix.index(END) != len(prefix) - 1 or len(prefix) % 4 != 1:
                raise ArchitectureError(f"cell: {END!r} only closes a cell after whole blocks; "
                                        f"got the prefix {prefix!r}")
            return []
        n = len(prefix)
        b, p = divmod(n, 4)
        if b >= self.B:
            return []
        inputs = list(self.allowed_inputs(b))
        if p == 0:
            return inputs + ([END] if b > 0 else [])
        if p == 1:
            return list(self.operators)
        if p == 2:
            return [i for i in inputs if i >= prefix[-2]]
        in1, op1, in2 = prefix[-3], prefix[-2], prefix[-1]
        if in2 == in1:
            return [op for op in self.operators if self.op_index[op] >= self.op_index.get(op1, -1)]
        return list(self.operators)

    def to_decisions(self, arch: Architecture) -> tuple[Decision, ...]:
        cell = self._check(arch)
        out: list[Decision] = [v for blk in cell.blocks for v in blk]
        if len(cell) < self.B:
            out.append(END)
        return tuple(out)

    def from_decisions(self, decisions: Sequence[Decision]) -> CellArch:
        values = list(decisions)
        if values and values[-1] == END:
            values = values[:-1]
        elif len(values) != 4 * self.B:
            raise ArchitectureError(f"cell: {len(values)} decisions {tuple(decisions)!r}; expected "
                                    f"whole blocks closed by {END!r}, or {4 * self.B} decisions")
        if len(values) % 4:
            raise ArchitectureError(f"cell: decisions {tuple(decisions)!r} end inside a block")
        blocks = tuple((int(values[i]), str(values[i + 1]), int(values[i + 2]), str(values[i + 3]))
                       for i in range(0, len(values), 4))
        return self.validate(CellArch(blocks))

    def state_key(self, prefix: Sequence[Decision]) -> Hashable:
        return tuple(prefix)

    # -- sampling and neighbourhood -------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> CellArch:
        """A cell of a uniform number of blocks (1..B), each uniform over the enumeration."""
        n = int(rng.integers(1, self.B + 1))
        blocks = []
        for b in range(n):
            options = self.blocks_for(b)
            blocks.append(options[int(rng.integers(len(options)))])
        return CellArch(tuple(blocks))

    def neighbours(self, arch: Architecture) -> list[CellArch]:
        """Cells one edit away: one input or operator of one block changed (the block then
        written in enumeration order), in a fixed order."""
        cell = self._check(arch)
        out: dict[str, CellArch] = {}
        for b, blk in enumerate(cell.blocks):
            for slot in range(4):
                values = self.allowed_inputs(b) if slot in (0, 2) else self.operators
                for v in values:
                    if v == blk[slot]:
                        continue
                    new = list(blk)
                    new[slot] = v
                    child = CellArch(cell.blocks[:b] + (self._ordered_block(tuple(new)),)  # type: ignore[arg-type]
                                     + cell.blocks[b + 1:])
                    if child != cell:
                        out.setdefault(str(child), child)
        return list(out.values())

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> CellArch:
        """One edit: a changed input or operator (most often), a new last block, or the last
        block removed."""
        cell = self._check(arch)
        for _ in range(100):
            r = rng.random()
            if r < 0.15 and len(cell) < self.B:
                options = self.blocks_for(len(cell))
                child = CellArch(cell.blocks + (options[int(rng.integers(len(options)))],))
            elif r < 0.3 and len(cell) > 1:
                child = CellArch(cell.blocks[:-1])
            else:
                near = self.neighbours(cell)
                if not near:
                    continue
                child = near[int(rng.integers(len(near)))]
            if child != cell:
                return child
        return self.sample(rng)

    # -- equivalence ----------------------------------------------------------------------------
    def _expressions(self, cell: CellArch) -> list[str]:
        exprs: list[str] = []
        for in1, op1, in2, op2 in cell.blocks:
            terms = sorted(f"{op}({'L' + str(i) if i < 0 else exprs[i]})"
                           for i, op in ((in1, op1), (in2, op2)))
            exprs.append("{" + "+".join(terms) + "}")
        return exprs

    def canonical_key(self, arch: Architecture) -> str:
        """Equal for cells whose blocks, as unordered pairs of input+op with inputs expanded,
        form the same multiset (POPNASv3's cell equivalence)."""
        return "|".join(sorted(self._expressions(self._check(arch))))

    def canonical(self, arch: Architecture) -> CellArch:
        """The representative of ``arch``'s class: blocks in a topological order that takes the
        smallest expression first, references to equal blocks merged onto the first, each block
        in enumeration order."""
        cell = self._check(arch)
        exprs = self._expressions(cell)
        remaining = list(range(len(cell)))
        order: list[int] = []
        placed: set[int] = set()
        while remaining:
            ready = [b for b in remaining
                     if all(i < 0 or i in placed for i in (cell.blocks[b][0], cell.blocks[b][2]))]
            pick = min(ready, key=lambda b: (exprs[b], b))
            order.append(pick)
            placed.add(pick)
            remaining.remove(pick)
        first_of: dict[str, int] = {}
        new_index: dict[int, int] = {}
        for pos, b in enumerate(order):
            new_index[b] = pos
            first_of.setdefault(exprs[b], pos)
        blocks = []
        for b in order:
            in1, op1, in2, op2 = cell.blocks[b]
            in1 = in1 if in1 < 0 else first_of[exprs[in1]]
            in2 = in2 if in2 < 0 else first_of[exprs[in2]]
            blocks.append(self._ordered_block((in1, op1, in2, op2)))
        return CellArch(tuple(blocks))

    # -- building -------------------------------------------------------------------------------
    def _dims_of(self, task: Task) -> int:
        shape = tuple(task.input_shape)
        expected = {"image": 3, "series": 2}.get(task.kind)
        if expected is None or len(shape) != expected:
            raise ArchitectureError(f"cell: needs an image (C, H, W) or series (C, L) task; task "
                                    f"{task.name!r} has kind {task.kind!r} and input shape {shape}")
        dims = len(shape) - 1
        if dims != self.dims:
            raise ArchitectureError(
                f"cell: this space has {self.dims}-D operators (kind {self.kind!r}) but task "
                f"{task.name!r} is a {task.kind} task; create the space with kind "
                f"{task.kind!r} (a run does this from the task)")
        return dims

    def cell_shapes(self, task: Task) -> list[tuple[_Shape, bool]]:
        """(output shape, is a reduction cell) of every cell position of the macro network."""
        shape = tuple(int(v) for v in task.input_shape)
        sizes = shape[1:]
        out = []
        for m in range(self.motifs):
            for _ in range(self.normal_cells):
                out.append((_Shape(self.filters * 2 ** m, sizes), False))
            if m < self.motifs - 1:
                sizes = out_sizes(sizes, 2)
                out.append((_Shape(self.filters * 2 ** (m + 1), sizes), True))
        return out

    def needed_cells(self, cell: CellArch) -> list[int]:
        """Positions of the cells the network's output depends on, in order."""
        n = self.num_cells
        if not len(cell):
            return []
        reads = sorted(-i for i in cell.lookbacks())  # 1 for -1, 2 for -2
        needed, stack = set(), [n - 1]
        while stack:
            i = stack.pop()
            if i < 0 or i in needed:
                continue
            needed.add(i)
            stack.extend(i - j for j in reads)
        return sorted(needed)

    def build(self, arch: Architecture, task: Task) -> Network:
        cell = self._check(arch)
        dims = self._dims_of(task)
        shape = tuple(int(v) for v in task.input_shape)
        x_shape = _Shape(shape[0], shape[1:])
        shapes = self.cell_shapes(task)
        order = self.needed_cells(cell)
        modules: dict[int, CellModule] = {}
        for i in order:
            inputs = {-j: (shapes[i - j][0] if i - j >= 0 else x_shape)
                      for j in range(1, self.lookback + 1)}
            modules[i] = CellModule(cell, self.specs, dims, inputs, shapes[i][0],
                                    concat_only_unused=self.concat_only_unused,
                                    residual=self.residual)
        channels = shapes[order[-1]][0].channels if order else shape[0]
        encoder = CellEncoder(modules, order, self.lookback, dims)
        return Network(encoder, nn.Linear(channels, task.num_classes))

    def _check(self, arch: Architecture) -> CellArch:
        if not isinstance(arch, CellArch):
            raise ArchitectureError(f"cell: {arch!r} is not a cell architecture")
        return arch

    # -- features for learned models ------------------------------------------------------------
    @property
    def encoding_size(self) -> int:
        return self.B * (1 + 2 * (len(self.input_values) + len(self.operators)))

    def encode(self, arch: Architecture) -> np.ndarray:
        """Per block slot: a presence flag, then one-hots of in1, op1, in2, op2 (absent blocks
        all zero)."""
        cell = self._check(arch)
        n_in, n_op = len(self.input_values), len(self.operators)
        width = 1 + 2 * (n_in + n_op)
        out = np.zeros((self.B, width), dtype=np.float32)
        for b, (in1, op1, in2, op2) in enumerate(cell.blocks):
            row = out[b]
            row[0] = 1.0
            row[1 + self.input_values.index(in1)] = 1.0
            row[1 + n_in + self.op_index[op1]] = 1.0
            row[1 + n_in + n_op + self.input_values.index(in2)] = 1.0
            row[1 + 2 * n_in + n_op + self.op_index[op2]] = 1.0
        return out.reshape(-1)

    def _lookback_label(self, lb: int) -> str:
        return "input" if lb == -1 else f"input{lb}"

    @property
    def op_vocab(self) -> tuple[str, ...]:
        return (*(self._lookback_label(-j) for j in range(1, self.lookback + 1)),
                *self.operators, "add", "concat")

    def graph(self, arch: Architecture) -> "ArchGraph":
        """POPNASv3's cell graph: one node per lookback the cell reads (``input`` for -1,
        ``input-2`` for -2, ...), three per block (op1, op2 and the ``add`` join), and a
        ``concat`` node when more than one block is unused; edges input -> op -> join ->
        (reading op | concat). The empty cell is one ``input`` node."""
        from ..graph import ArchGraph

        cell = self._check(arch)
        if not len(cell):
            return ArchGraph(ops=("input",), edges=(), inputs=(0,), outputs=(0,))
        lbs = sorted(cell.lookbacks())
        node_of = {lb: k for k, lb in enumerate(lbs)}
        labels = [self._lookback_label(lb) for lb in lbs]
        attrs: list[dict[str, float]] = [{"lookback": float(lb)} for lb in lbs]
        edges = []
        join: list[int] = []
        for b, (in1, op1, in2, op2) in enumerate(cell.blocks):
            base = len(labels)
            for slot, (inp, op) in enumerate(((in1, op1), (in2, op2))):
                labels.append(op)
                attrs.append({"block": float(b), "slot": float(slot)})
                edges.append((node_of[inp] if inp < 0 else join[inp], base + slot))
            labels.append("add")
            attrs.append({"block": float(b)})
            join.append(base + 2)
            edges += [(base, base + 2), (base + 1, base + 2)]
        unused = cell.unused_blocks() if self.concat_only_unused else list(range(len(cell)))
        if len(unused) > 1:
            labels.append("concat")
            attrs.append({})
            edges += [(join[b], len(labels) - 1) for b in unused]
            output = len(labels) - 1
        else:
            output = join[unused[0]]
        return ArchGraph(ops=tuple(labels), edges=tuple(edges), inputs=tuple(range(len(lbs))),
                         outputs=(output,), attrs=tuple(attrs))

    def time_features(self, arch: Architecture, op_scores: dict[str, float] | None = None
                      ) -> list[float]:
        """POPNASv3's nine hand features of training time: blocks, cells stacked, op score (sum
        of the operators' scores; 1 each without ``op_scores``), multiple lookbacks, the op-score
        fraction of the first DAG level, block dependencies, DAG depth, concatenated inputs, the
        op-score fraction of the heaviest path. The empty cell gives ``[0,0,0,0,1,0,0,0,1]``."""
        cell = self._check(arch)
        if not len(cell):
            return [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]

        def score(op: str) -> float:
            return float(op_scores.get(op, 1.0)) if op_scores is not None else 1.0

        total = sum(score(op1) + score(op2) for _, op1, _, op2 in cell.blocks)
        first = sum(score(op) for in1, op1, in2, op2 in cell.blocks
                    for inp, op in ((in1, op1), (in2, op2)) if inp < 0)
        depth: list[int] = []
        heavy: list[float] = []
        for in1, op1, in2, op2 in cell.blocks:
            depth.append(1 + max(depth[i] if i >= 0 else 0 for i in (in1, in2)))
            heavy.append(max(score(op) + (heavy[i] if i >= 0 else 0.0)
                             for i, op in ((in1, op1), (in2, op2))))
        unused = cell.unused_blocks()
        heaviest = max(heavy[b] for b in unused)
        concat = len(unused) if self.concat_only_unused else len(cell)
        deps = sum(1 for in1, _, in2, _ in cell.blocks for i in (in1, in2) if i >= 0)
        return [float(len(cell)), float(len(self.needed_cells(cell))), total,
                float(len(cell.lookbacks()) > 1), first / total if total else 1.0, float(deps),
                float(max(depth)), float(concat), heaviest / total if total else 1.0]


__all__ = ["CellArch", "CellSpace", "parse_cell_text", "IMAGE_OPS", "SERIES_OPS", "END"]
