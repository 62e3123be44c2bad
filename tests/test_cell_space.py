"""The PNAS / POPNAS cell space: text, enumeration, expansion, equivalence, features, networks.

Networks are checked on generated tensors of the right shape (only shapes and gradients are
checked there); nothing here trains.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nasforge.core import Task
from nasforge.errors import ArchitectureError, ConfigError
from nasforge.ops.cell_ops import parse_op, same_padding
from nasforge.spaces.cell import IMAGE_OPS, SERIES_OPS, CellArch, CellSpace

torch.set_num_threads(1)


def shaped_task(kind: str, shape: tuple[int, ...], n: int = 6, classes: int = 7) -> Task:
    """Random tensors of a given shape (generated data: only shapes are checked)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return Task(name=f"gen-{kind}", kind=kind, input_shape=shape, num_classes=classes,  # type: ignore[arg-type]
                train=(x, y), val=(x, y), test=(x, y))


def test_text_round_trip_and_canonical_spacing():
    space = CellSpace()
    text = "[(-2, 3x3 conv, -1, 2x2 maxpool);(-1, 1x3-3x1 conv, 0, identity)]"
    arch = space.parse(text)
    assert str(arch) == text and space.parse(str(arch)) == arch
    assert arch.blocks[1] == (-1, "1x3-3x1 conv", 0, "identity")
    loose = "  [ ( -2 ,3x3  conv , -1,2x2 maxpool ) ;(-1, 1x3-3x1 conv,0, identity) ]"
    assert space.parse(loose) == arch
    assert str(space.parse("[]")) == "[]" and len(space.parse("[]")) == 0
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = space.sample(rng)
        assert space.parse(str(a)) == a
        assert space.from_decisions(space.to_decisions(a)) == a


@pytest.mark.parametrize("text, fragment", [
    ("(-2, 3x3 conv, -1, 2x2 maxpool)", "enclosed in '[' and ']'"),
    ("[(-2, 3x3 conv, -1)]", "block 0 (character 1)"),
    ("[(-2, 3x3 conv, -1, 2x2 maxpool);(x, identity, 0, identity)]", "in1 'x' is not an integer"),
    ("[(-3, 3x3 conv, -1, 2x2 maxpool)]", "in1 = -3; expected one of -2, -1"),
    ("[(-2, 3x3 conv, 0, 2x2 maxpool)]", "in2 = 0"),
    ("[(-2, 3x3 cnv, -1, 2x2 maxpool)]", "unknown operator '3x3 cnv'"),
    ("[(-2, 3 conv, -1, 2x2 maxpool)]", "not in this space's operators"),
    ("[" + ";".join(["(-1, identity, -1, identity)"] * 6) + "]", "6 blocks; this space allows at most 5"),
])
def test_malformed_text_names_the_problem(text, fragment):
    with pytest.raises(ArchitectureError, match=None) as info:
        CellSpace().parse(text)
    assert fragment in str(info.value)


def test_operator_grammar():
    assert parse_op("3x3:2dr conv").dilation == 2 and parse_op("3x3:2dr conv").dims == 2
    assert parse_op("7 dconv").kind == "dconv" and parse_op("7 dconv").dims == 1
    assert parse_op("1x7-7x1 conv").kernels == ((1, 7), (7, 1))
    assert parse_op("2 avgpool").kind == "avgpool" and parse_op("lstm").dims == 1
    for bad in ("3x3", "conv", "3x3x3 conv", "0x0 conv", "3x3-3 conv", "3x3:1dr conv", "se"):
        with pytest.raises(ArchitectureError):
            parse_op(bad)
    with pytest.raises(ConfigError, match="is 2-D but kind is 'series'"):
        CellSpace(kind="series", operators=["3x3 conv"])
    with pytest.raises(ConfigError, match="listed twice"):
        CellSpace(operators=["3x3 conv", "3x3 conv"])
    with pytest.raises(ConfigError, match="blocks = 0"):
        CellSpace(blocks=0)


def test_same_padding_gives_ceil_sizes():
    for size, k, s, d in itertools.product(range(1, 12), (1, 2, 3, 5, 7), (1, 2), (1, 2)):
        before, after = same_padding(size, k, s, d)
        out = (size + before + after - d * (k - 1) - 1) // s + 1
        assert out == -(-size // s)


@pytest.mark.parametrize("lookback, ops", [(2, 12), (2, 13), (3, 4), (1, 1)])
def test_block_enumeration_count(lookback, ops):
    space = CellSpace(lookback=lookback, operators=[f"{k}x{k} conv" for k in range(1, ops + 1)])
    for b in range(3):
        blocks = space.blocks_for(b)
        L, O = lookback + b, ops
        assert len(blocks) == (L * L * O * O + L * O) // 2
        assert len(set(blocks)) == len(blocks)
        for in1, op1, in2, op2 in blocks:  # the symmetry rule
            assert in2 >= in1 and (in2 != in1 or space.op_index[op2] >= space.op_index[op1])
        # every unordered pair appears exactly once
        pairs = {frozenset([(a, o1), (c, o2)]) for a, o1, c, o2 in blocks}
        assert len(pairs) == len(blocks)


def test_reference_step_one_counts():
    assert len(CellSpace().first_cells((-2, -1))) == 300  # POPNASv3: 12 image ops
    assert len(CellSpace(kind="series").first_cells((-2, -1))) == 351  # 13 series ops


def test_expand_adds_every_allowed_block_once():
    space = CellSpace(blocks=3, operators=["identity", "3x3 conv", "2x2 maxpool"])
    cell = space.parse("[(-2, identity, -1, 3x3 conv)]")
    children = space.expand(cell)
    assert len(children) == (9 * 9 + 3 * 3) // 2  # L = 3 inputs (-2, -1, 0), O = 3
    assert all(c.blocks[:1] == cell.blocks and len(c) == 2 for c in children)
    assert {c.blocks[1] for c in children} == set(space.blocks_for(1))
    assert any(c.blocks[1][0] == 0 or c.blocks[1][2] == 0 for c in children)
    grand = space.expand(children[0])
    assert len(grand) == (16 * 9 + 4 * 3) // 2
    assert space.expand(grand[0]) == []  # B = 3 reached


def test_equivalence_and_canonical_representative():
    space = CellSpace()
    a = space.parse("[(-2, 3x3 conv, -1, identity);(-1, 2x2 maxpool, 0, 1x1 conv)]")
    b = space.parse("[(-1, identity, -2, 3x3 conv);(0, 1x1 conv, -1, 2x2 maxpool)]")
    c = space.parse("[(-1, 2x2 maxpool, -1, 2x2 maxpool);(-2, 3x3 conv, -1, identity)]")
    d = space.parse("[(-2, 3x3 conv, -1, identity);(-1, 2x2 maxpool, -1, 2x2 maxpool)]")
    other = space.parse("[(-2, 3x3 conv, -1, identity);(-1, 2x2 maxpool, -1, 1x1 conv)]")
    assert space.canonical_key(a) == space.canonical_key(b) != space.canonical_key(other)
    assert space.canonical_key(c) == space.canonical_key(d)
    assert space.canonical(a) == space.canonical(b)
    assert space.canonical(c) == space.canonical(d)
    rng = np.random.default_rng(5)
    for _ in range(40):
        x = space.sample(rng)
        rep = space.canonical(x)
        assert space.canonical_key(rep) == space.canonical_key(x)
        assert space.canonical(rep) == rep
        space.validate(rep)


def test_features_for_predictors():
    space = CellSpace(blocks=3, operators=["identity", "3x3 conv", "2x2 maxpool"])
    cell = space.parse("[(-2, identity, -1, 3x3 conv);(0, 2x2 maxpool, -1, identity)]")
    g = space.graph(cell)
    assert g.ops == ("input-2", "input", "identity", "3x3 conv", "add", "2x2 maxpool",
                     "identity", "add")
    assert g.inputs == (0, 1) and g.outputs == (7,)
    assert set(g.edges) == {(0, 2), (1, 3), (2, 4), (3, 4), (4, 5), (1, 6), (5, 7), (6, 7)}
    two_unused = space.parse("[(-1, identity, -1, 3x3 conv);(-1, 2x2 maxpool, -1, identity)]")
    g2 = space.graph(two_unused)
    assert g2.ops[-1] == "concat" and g2.predecessors(len(g2.ops) - 1) == [3, 6]
    v = space.encode(cell)
    assert v.shape == (space.encoding_size,) and v.sum() == 2 * 5  # two present blocks
    # time features (POPNASv3): blocks, cells, op score, multiple lookbacks, first-level
    # fraction, dependencies, depth, concat inputs, heaviest-path fraction
    f = space.time_features(cell, {"identity": 0.0, "3x3 conv": 1.0, "2x2 maxpool": 0.5})
    assert f == [2.0, 8.0, 1.5, 1.0, 1.0 / 1.5, 1.0, 2.0, 1.0, 1.5 / 1.5]
    assert space.time_features(space.parse("[]")) == [0, 0, 0, 0, 1, 0, 0, 0, 1]
    only_two = space.parse("[(-2, identity, -2, 3x3 conv)]")
    assert space.time_features(only_two)[1] == 4.0  # cells 7, 5, 3, 1 of 8
    assert space.needed_cells(only_two) == [1, 3, 5, 7]


@pytest.mark.parametrize("kind, shape", [("image", (1, 8, 8)), ("image", (3, 7, 5)),
                                         ("series", (1, 40)), ("series", (2, 13))])
def test_networks_build_and_run(kind, shape):
    ops = IMAGE_OPS + ("3x3:2dr conv",) if kind == "image" else SERIES_OPS
    space = CellSpace(kind=kind, filters=6, operators=list(ops))
    task = shaped_task(kind, shape)
    rng = np.random.default_rng(1)
    cells = [space.sample(rng) for _ in range(4)]
    # every operator, in a normal and in a reduction position, reading both lookbacks
    cells += [CellArch(((-2, op, -1, op), (0, op, -2, ops[0]))) for op in ops]
    cells.append(space.parse("[]"))
    for cell in cells:
        net = space.build(cell, task)
        out = net(task.train[0])
        assert out.shape == (6, 7), str(cell)
        out.sum().backward()
    other = CellSpace(kind="series" if kind == "image" else "image")
    with pytest.raises(ArchitectureError, match="create the space with kind"):
        other.build(other.sample(rng), task)


def test_macro_shapes_follow_the_reference():
    space = CellSpace(filters=4)
    task = shaped_task("image", (1, 9, 9))
    shapes = space.cell_shapes(task)
    assert len(shapes) == space.num_cells == 8
    assert [(s.channels, s.sizes, red) for s, red in shapes] == [
        (4, (9, 9), False), (4, (9, 9), False), (8, (5, 5), True), (8, (5, 5), False),
        (8, (5, 5), False), (16, (3, 3), True), (16, (3, 3), False), (16, (3, 3), False)]
    net = space.build(space.parse("[(-1, 3x3 conv, -1, identity)]"), task)
    assert len(net.encoder.cells) == 8 and net.head.in_features == 16


def test_mutate_and_neighbours_stay_valid():
    space = CellSpace(blocks=3)
    rng = np.random.default_rng(2)
    for _ in range(30):
        a = space.sample(rng)
        child = space.mutate(a, rng)
        assert child != a
        space.validate(child)
        for n in space.neighbours(a)[:20]:
            space.validate(n)
            assert len(n) == len(a)
