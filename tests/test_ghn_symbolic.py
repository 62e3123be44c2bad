"""The graph read from the modules of DARTS / NAS-Bench-201 networks without running them
(``nasforge.ghn.symbolic``) is the traced graph, node for node and edge for edge, so a GHN's
predictions do not change; anything it does not cover falls back to tracing. (Architectures are
drawn here with seeded generators; inputs are random tensors generated here.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.core import Task
from nasforge.errors import ArchitectureError
from nasforge.ghn.graph import PRIMITIVES, build_graph
from nasforge.ghn.model import GHN, GraphTensors, variant_config


def _task(shape, kind="image"):
    x, y = torch.zeros(0, *shape), torch.zeros(0, dtype=torch.long)
    return Task("t", kind, tuple(shape), 10, (x, y), (x, y), (x, y))


def _same_graph(net, shape):
    traced = build_graph(net, shape, method="autograd")
    read = build_graph(net, shape)
    assert read.meta["method"] == "symbolic"
    assert read.to_dict()["nodes"] == traced.to_dict()["nodes"]  # order, names, ops, params, attrs
    assert torch.equal(read.adj, traced.adj)
    return read, traced


def test_darts_networks_read_equal_traced():
    from nasforge.spaces.darts import GENOTYPES, DartsSpace, genotype, parse_genotype

    rng = np.random.default_rng(0)
    default = DartsSpace()  # the space's default network (C=16, 8 cells) on 32x32 images
    _same_graph(default.build(default.sample(rng), _task((3, 32, 32))), (3, 32, 32))
    small = DartsSpace(C=4, layers=5)
    genos = [small.sample(rng) for _ in range(3)] + [genotype(k) for k in GENOTYPES]
    # every operation, repeated sources, a node summing two identities, a concat of one state
    genos.append(parse_genotype(
        "Genotype(normal=[('none', 0), ('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 1), "
        "('conv_7x1_1x7', 0), ('conv_3x3', 2), ('sep_conv_7x7', 3), ('conv_1x1', 4)], "
        "normal_concat=[2, 3, 4, 5], reduce=[('none', 0), ('avg_pool_3x3', 1), ('skip_connect', 0), "
        "('dil_conv_5x5', 2)], reduce_concat=[3])"))
    for geno in genos:
        for shape in ((3, 9, 11), (3, 16, 16)):  # odd sizes: the strided paths round up
            _same_graph(small.build(geno, _task(shape)), shape)
    series = DartsSpace(C=4, layers=3)
    for geno in [series.sample(rng) for _ in range(2)]:
        _same_graph(series.build(geno, _task((2, 13), "series")), (2, 13))


def test_nb201_networks_read_equal_traced():
    from nasforge.spaces.nb201 import NB201Space

    rng = np.random.default_rng(1)
    default = NB201Space()
    _same_graph(default.build(default.sample(rng), _task((3, 32, 32))), (3, 32, 32))
    small = NB201Space(channels=4, cells_per_stage=1)
    cells = [small.sample(rng) for _ in range(4)] + [
        small.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"),
        small.parse("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")]
    for cell in cells:
        for shape in ((3, 7, 9), (3, 8, 8)):
            _same_graph(small.build(cell, _task(shape)), shape)


def test_generator_networks_read_equal_traced():
    """The GHN's training networks: BN-free, wide, deep and dense variants of both spaces."""
    from nasforge.ghn.generator import ArchGenerator

    gen = ArchGenerator(input_shape=(3, 8, 8), num_classes=10, seed=0)
    read = 0
    for split in ("test", "bnfree", "wide", "dense"):
        for net in gen.split(split, 3):
            traced = build_graph(net.model, (3, 8, 8), method="autograd")
            g = build_graph(net.model, (3, 8, 8))
            assert g == traced, net.description
            read += g.meta["method"] == "symbolic"
    assert read >= 8


def test_predictions_bitwise_equal():
    from nasforge.spaces.darts import DartsSpace
    from nasforge.spaces.nb201 import NB201Space

    gen = torch.Generator().manual_seed(0)
    ghn = GHN(variant_config("ghn2", hid=16, primitives=PRIMITIVES, num_classes=10))
    with torch.no_grad():
        for p in ghn.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    rng = np.random.default_rng(2)
    for space in (DartsSpace(C=4, layers=4), NB201Space(channels=4, cells_per_stage=2)):
        net = space.build(space.sample(rng), _task((3, 8, 8)))
        read, traced = _same_graph(net, (3, 8, 8))
        with torch.no_grad():
            a = ghn.predict([GraphTensors.from_graph(read)])[0]
            b = ghn.predict([GraphTensors.from_graph(traced)])[0]
        assert a.keys() == b.keys() == dict(net.named_parameters()).keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_falls_back_to_tracing():
    from nasforge.spaces.nb201 import NB201Space

    space = NB201Space(channels=4, cells_per_stage=1)
    net = space.build(space.parse("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"),
                      _task((3, 8, 8)))
    # a hook may change what the forward pass does: traced
    h = net.encoder[3].register_forward_hook(lambda m, a, out: out)
    assert build_graph(net, (3, 8, 8)).meta["method"] == "autograd"
    with pytest.raises(ArchitectureError, match="symbolic"):
        build_graph(net, (3, 8, 8), method="symbolic")
    h.remove()
    assert build_graph(net, (3, 8, 8)).meta["method"] == "symbolic"
    # a module type it does not know: traced, same graph as before the swap
    net.encoder[-2] = nn.Sequential(nn.GELU(), net.encoder[-2])
    g = build_graph(net, (3, 8, 8))
    assert g.meta["method"] == "autograd" and g.op_counts()["glob_avg"] == 1
    # an input the network rejects (4 channels for a 3-channel stem): the trace's error
    with pytest.raises(ArchitectureError, match="cannot trace"):
        build_graph(net, (4, 8, 8))
    # a model in training mode is read in eval mode, as it is traced, and left in its mode
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.5))
    small.train()
    assert build_graph(small, (3, 8, 8)).meta["method"] == "symbolic" and small[2].training


def test_shapes_follow_the_layers():
    """Sizes the layers would reject are noticed (and traced, which raises the real error)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 5), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 3))
    g = build_graph(model, (3, 8, 8))  # 8 -> 4 -> ceil(4 / 2) = 2
    assert g.meta["method"] == "symbolic"
    assert [n.op for n in g.nodes] == ["input", "conv", "bias", "max_pool", "linear", "bias"]
    assert g == build_graph(model, (3, 8, 8), method="autograd")
    for shape in ((3, 9, 9), (3, 3, 3)):  # 9 -> 5 -> 3: 36 features, not 16; 3: no 5x5 window
        with pytest.raises(ArchitectureError, match="cannot trace"):
            build_graph(model, shape)


def test_inference_paths_give_the_same_bits():
    """``ghn(model)`` (symbolic graph, inference mode, gather-once GNN sweep) writes exactly the
    parameters the differentiable path predicts from the traced graph."""
    from nasforge.spaces.darts import DartsSpace

    gen = torch.Generator().manual_seed(3)
    ghn = GHN(variant_config("ghn2", hid=16, primitives=PRIMITIVES, num_classes=10,
                             input_shape=(3, 8, 8)))
    with torch.no_grad():
        for p in ghn.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    space = DartsSpace(C=4, layers=4)
    net = space.build(space.sample(np.random.default_rng(4)), _task((3, 8, 8)))
    traced = GraphTensors.from_graph(build_graph(net, (3, 8, 8), method="autograd"))
    want = ghn.predict([traced])[0]  # out-of-place, differentiable
    with torch.no_grad():
        nograd = ghn.predict([traced])[0]
    ghn(net, bn_data=[])
    for name, p in net.named_parameters():
        assert torch.equal(p.data, want[name].detach()) and torch.equal(nograd[name], p.data), name
