"""NAS-Bench-201 space: text round trip, parse errors, sequential view, mutation, networks."""

import pickle

import numpy as np
import pytest
import torch

from nasforge import registry
from nasforge.core import Network, Task
from nasforge.errors import ArchitectureError, ConfigError
from nasforge.spaces.nb201 import (EDGES, OPS, NB201Arch, NB201Space, all_cells, canonical_key,
                                   parse_cell)

EXAMPLE = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
           "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


def image_task(shape, classes=10, n=4):
    x = torch.randn(n, *shape)
    y = torch.arange(n) % classes
    return Task("toy", "image", tuple(shape), classes, (x, y), (x, y), (x, y))


def test_example_round_trip_and_edges():
    arch = NB201Space().parse(EXAMPLE)
    assert str(arch) == EXAMPLE
    assert arch.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3",
                        "skip_connect", "nor_conv_3x3", "skip_connect")
    assert arch.edge(1, 2) == "avg_pool_3x3" and arch.edge(2, 3) == "skip_connect"
    assert pickle.loads(pickle.dumps(arch)) == arch
    assert hash(parse_cell(EXAMPLE)) == hash(arch)


def test_all_cells_unique_and_round_trip():
    space = NB201Space()
    cells = list(all_cells())
    texts = [str(c) for c in cells]
    assert len(cells) == space.size == 15_625
    assert len(set(texts)) == 15_625
    for cell, text in zip(cells, texts):
        again = space.parse(text)
        assert again == cell and str(again) == text


@pytest.mark.parametrize("text, where, token", [
    ("", "1 node groups", None),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "2 node groups", None),
    ("nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|none~1|none~2|", "node 1", "nor_conv"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|none~0|none~1|none~2|", "node 2", "|nor_conv_3x3~0|+|none"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~2|+|none~0|none~1|none~2|",
     "node 2, input 1", "avg_pool"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|none~1|conv_5x5~2|",
     "node 3, input 2", "conv_5x5"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3|+|none~0|none~1|none~2|",
     "node 2, input 1", "avg_pool"),
    (" |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|none~1|none~2|", "node 1", " |"),
])
def test_parse_errors_name_the_position(text, where, token):
    with pytest.raises(ArchitectureError) as exc:
        NB201Space().parse(text)
    message = str(exc.value)
    assert where in message
    if token is not None:  # the character offset points at the offending part
        assert f"(character {text.index(token)})" in message


def test_unknown_op_lists_the_valid_ones():
    bad = EXAMPLE.replace("skip_connect~2", "conv_5x5~2")
    with pytest.raises(ArchitectureError, match="'conv_5x5'.*nor_conv_3x3"):
        parse_cell(bad)
    with pytest.raises(ArchitectureError):
        NB201Arch(("none",) * 5)


def test_sequential_view():
    space = NB201Space()
    arch = space.parse(EXAMPLE)
    decisions = space.to_decisions(arch)
    assert len(decisions) == 6
    for i in range(6):
        assert space.choices(decisions[:i]) == list(OPS)
    assert space.choices(decisions) == []
    assert space.from_decisions(decisions) == arch
    with pytest.raises(ArchitectureError):
        space.from_decisions(decisions[:5])
    rng = np.random.default_rng(0)
    # the generic sequential sampler of the base class yields valid cells too
    assert isinstance(space.complete(decisions[:3], rng), NB201Arch)


def test_sample_is_seeded_and_covers_ops():
    space = NB201Space()
    a = [str(space.sample(np.random.default_rng(3))) for _ in range(5)]
    b = [str(space.sample(np.random.default_rng(3))) for _ in range(5)]
    assert a == b
    rng = np.random.default_rng(0)
    seen = {op for _ in range(200) for op in space.sample(rng).ops}
    assert seen == set(OPS)


def test_mutate_changes_exactly_one_edge():
    space = NB201Space()
    rng = np.random.default_rng(1)
    arch = space.parse(EXAMPLE)
    for _ in range(100):
        child = space.mutate(arch, rng)
        assert sum(a != b for a, b in zip(arch.ops, child.ops)) == 1
    neighbours = space.neighbours(arch)
    assert len(neighbours) == len(set(neighbours)) == 24
    assert all(sum(a != b for a, b in zip(arch.ops, n.ops)) == 1 for n in neighbours)


def test_canonical_key_merges_isomorphic_cells():
    # nodes 1 and 2 swapped (no edge between them): same function, different strings
    a = NB201Arch(("nor_conv_3x3", "nor_conv_1x1", "none", "skip_connect", "avg_pool_3x3", "nor_conv_3x3"))
    b = NB201Arch(("nor_conv_1x1", "nor_conv_3x3", "none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3"))
    assert a != b and canonical_key(a) == canonical_key(b)
    c = NB201Arch(("nor_conv_3x3", "nor_conv_1x1", "none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3"))
    assert canonical_key(c) != canonical_key(a)
    # every cell with no path from input to output is the zero cell
    dead = NB201Arch(("nor_conv_3x3", "nor_conv_3x3", "none", "none", "none", "none"))
    assert canonical_key(dead) == "zero"
    keys = {canonical_key(c) for c in all_cells()}
    assert 1_000 < len(keys) < 15_625


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8), (1, 7, 9)])
def test_build_forward(shape):
    space = registry.create("spaces", "nb201", channels=4, cells_per_stage=1)
    arch = space.parse(EXAMPLE)
    net = space.build(arch, image_task(shape, classes=5))
    assert isinstance(net, Network)
    x = torch.randn(3, *shape)
    assert net(x).shape == (3, 5)
    assert net.embed(x).shape == (3, 16)  # 4C channels after two reductions
    assert isinstance(net.head, torch.nn.Linear)


def test_network_structure_follows_the_benchmark():
    space = NB201Space(channels=16, cells_per_stage=5)
    arch = space.parse(EXAMPLE)
    net = space.build(arch, image_task((3, 32, 32)))
    cells = [m for m in net.modules() if type(m).__name__ == "Cell"]
    reductions = [m for m in net.modules() if type(m).__name__ == "ResidualReduction"]
    assert len(cells) == 15 and len(reductions) == 2
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].in_channels == 3 and convs[0].out_channels == 16
    assert net.head.in_features == 64
    # the all-"none" cell still builds (its output is zeros; the reductions carry the signal)
    empty = space.build(NB201Arch(("none",) * 6), image_task((3, 32, 32)))
    assert empty(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # more convolutions, more parameters
    conv_cell = NB201Arch(("nor_conv_3x3",) * 6)
    params = lambda a: sum(p.numel() for p in space.build(a, image_task((3, 32, 32))).parameters())
    assert params(conv_cell) > params(arch) > params(NB201Arch(("skip_connect",) * 6))


def test_build_refuses_series_and_foreign_archs():
    space = NB201Space(channels=4, cells_per_stage=1)
    x = torch.randn(4, 2, 16)
    y = torch.zeros(4, dtype=torch.long)
    series = Task("s", "series", (2, 16), 2, (x, y), (x, y), (x, y))
    with pytest.raises(ArchitectureError, match="image"):
        space.build(space.parse(EXAMPLE), series)

    class Other(NB201Arch.__mro__[1]):  # a bare Architecture subclass
        def __str__(self) -> str:
            return EXAMPLE

    with pytest.raises(ArchitectureError, match="not a NAS-Bench-201 cell"):
        space.build(Other(), image_task((3, 8, 8)))


def test_options_are_validated():
    assert registry.create("spaces", "nb201", channels=8).options() == {"channels": 8, "cells_per_stage": 5}
    with pytest.raises(ConfigError):
        registry.create("spaces", "nb201", channels=0)
    with pytest.raises(ConfigError, match="unknown option"):
        registry.create("spaces", "nb201", width=8)
    assert len(EDGES) == 6
