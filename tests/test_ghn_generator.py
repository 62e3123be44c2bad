"""The GHN architecture generator: deterministic splits, structurally disjoint, the
out-of-distribution splits have their defining property, every network builds, runs and has a
graph; the dense convolutions added to the DARTS operations. (Inputs are generated here.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasforge.errors import ConfigError
from nasforge.ghn.generator import (SPLITS, ArchGenerator, GeneratorConfig, cell_key,
                                    description_key)
from nasforge.ghn.graph import build_graph
from nasforge.ops.darts_ops import make_op
from nasforge.spaces.darts import parse_genotype

SHAPE = (1, 8, 8)  # digits


def _gen(seed=0, **kw):
    return ArchGenerator(input_shape=SHAPE, num_classes=10, seed=seed, **kw)


def test_deterministic_per_seed_and_split():
    a, b, c = _gen(0), _gen(0), _gen(1)
    for split in SPLITS:
        da, db = a.descriptions(split, 8), b.descriptions(split, 8)
        assert da == db
        assert da != c.descriptions(split, 8)
    assert a.description("train", 5) == b.descriptions("train", 6)[5]
    na, nb = a.build(a.description("test", 3)), b.build(b.description("test", 3))
    sa, sb = na.state_dict(), nb.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # the global torch random state is untouched by building
    state = torch.get_rng_state()
    a.build(a.description("val", 0))
    assert torch.equal(state, torch.get_rng_state())
    # reading a split in two steps gives the same networks as in one
    fresh = _gen(0)
    fresh.descriptions("test", 3)
    assert fresh.descriptions("test", 10) == a.descriptions("test", 10)


def test_splits_are_disjoint_and_distinct():
    g = _gen(0)
    train = {cell_key(d) for d in g.descriptions("train", 300)}
    held = {}
    for split in SPLITS[1:]:
        ds = g.descriptions(split, 30)
        keys = [description_key(d) for d in ds]
        assert len(set(keys)) == len(keys), split  # no duplicates within a split
        held[split] = {cell_key(d) for d in ds}
        assert not held[split] & train, split
    assert not held["val"] & held["test"]
    # train and test streams do not share their random stream (the reference's seed flaw)
    assert g.descriptions("train", 1)[0]["arch"] != g.descriptions("test", 1)[0]["arch"]


def test_out_of_distribution_splits():
    cfg = GeneratorConfig()
    g = _gen(0)
    test = g.descriptions("test", 60)
    families = {d["family"] for d in test}
    assert families == {"darts", "chain", "nb201"}
    for d in g.descriptions("wide", 30):
        if d["family"] == "darts":
            assert d["C"] in {c * cfg.wide_factor for c in cfg.channels}
        elif d["family"] == "nb201":
            assert d["channels"] in {c * cfg.wide_factor for c in cfg.channels}
    for d in g.descriptions("deep", 20):
        geno = parse_genotype(d["arch"])
        assert d["family"] == "darts" and cfg.deep_cells[0] <= d["layers"] <= cfg.deep_cells[1]
        assert 1 <= len(geno.normal) <= 2
    for d in g.descriptions("dense", 20):
        geno = parse_genotype(d["arch"])
        assert cfg.dense_nodes[0] <= len(geno.normal) <= cfg.dense_nodes[1]
    for net in g.split("bnfree", 6):
        assert not net.description["bn"]
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.model.modules())
    assert sum(d["bn"] for d in test) > 40
    for d in test:  # DeepNets-1M's rules: at most one 5x5 / 7x7 dense conv per cell
        if d["family"] == "darts":
            geno = parse_genotype(d["arch"])
            for cell in (geno.normal, geno.reduce):
                assert sum(op in ("conv_5x5", "conv_7x1_1x7") for e in cell for op, _ in e) <= 1


def test_networks_build_run_and_have_graphs():
    g = _gen(0, sizes={"test": 12})
    x = torch.randn(2, *SHAPE)
    nets = g.split("test") + g.split("bnfree", 2)
    assert {n.description["family"] for n in nets} >= {"darts", "chain"}
    for net in nets:
        net.model.eval()
        assert net.model(x).shape == (2, 10)
        graph = build_graph(net.model, SHAPE)
        assert graph.n_params == sum(p.numel() for p in net.model.parameters())
    stream = g.stream("train")
    first = [next(stream).description for _ in range(3)]
    assert first == g.descriptions("train", 3)


def test_series_task_and_bad_options():
    g = ArchGenerator(input_shape=(2, 40), num_classes=5, seed=0)
    ds = g.descriptions("test", 40)
    assert {d["family"] for d in ds} <= {"darts", "chain"}
    assert not any("conv_7x1_1x7" in d["arch"] for d in ds)
    assert g.build(ds[0])(torch.randn(2, 2, 40)).shape == (2, 5)
    with pytest.raises(ConfigError, match="unknown split 'holdout'"):
        g.descriptions("holdout", 3)
    with pytest.raises(ConfigError, match="ops"):
        GeneratorConfig(ops=("max_pool_3x3", "skip_connect"))
    with pytest.raises(ConfigError, match="cells"):
        GeneratorConfig(cells=(5, 2))
    with pytest.raises(ConfigError, match="the train split is a stream"):
        g.descriptions("train")
    with pytest.raises(ConfigError, match="out of range"):
        _gen(0, sizes={"val": 2}).description("val", 2)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_dense_conv_ops(k):
    op = make_op(f"conv_{k}x{k}", 2, 6, stride=1)
    assert sum(p.numel() for p in op.parameters()) == 6 * 6 * k * k + 2 * 6
    assert op(torch.randn(2, 6, 7, 7)).shape == (2, 6, 7, 7)
    assert make_op(f"conv_{k}x{k}", 2, 6, stride=2)(torch.randn(2, 6, 7, 7)).shape == (2, 6, 4, 4)
    assert make_op(f"conv_{k}x{k}", 1, 6, stride=2)(torch.randn(2, 6, 9)).shape == (2, 6, 5)
