"""Architecture features: known vectors and graphs of the chain and NAS-Bench-201 spaces, and the
default ``encode`` / ``graph`` any space gets from its sequential view."""

from __future__ import annotations

import numpy as np
import pytest

from nasforge.core import SearchSpace
from nasforge.errors import ArchitectureError
from nasforge.graph import ArchGraph, SequentialFeatures, sequential_features
from nasforge.spaces.chain import ChainSpace
from nasforge.spaces.nb201 import OPS, NB201Space
from nasforge.testing import ToyArch, ToySpace


def test_chain_graph_known_arch():
    space = ChainSpace(input_shape=(1, 8, 8))
    g = space.graph(space.parse("[C(16,3,1,1,0), P(2,2,0,0), C(32,3,1,0,1), SM(10)]"))
    assert g.ops == ("input", "residual3", "maxpool2", "conv3", "classifier")
    assert g.edges == ((0, 1), (1, 2), (2, 3), (3, 4))
    assert g.inputs == (0,) and g.outputs == (4,)
    assert g.attrs[0] == {"channels": 1.0, "positions": 64.0}
    assert g.attrs[1] == {"features": 16.0, "kernel": 3.0, "stride": 1.0, "padding": 1.0,
                          "out_channels": 16.0, "out_positions": 64.0}
    assert g.attrs[2]["out_positions"] == 16.0  # 8x8 -> 4x4
    assert g.attrs[3] == {"features": 32.0, "kernel": 3.0, "stride": 1.0, "padding": 0.0,
                          "out_channels": 32.0, "out_positions": 4.0}  # 4x4 -> 2x2
    assert g.attrs[4] == {"classes": 10.0}
    assert g.one_hot(space.op_vocab).argmax(1).tolist() == [
        space.op_vocab.index(op) for op in g.ops]


def test_chain_graph_series_sizes():
    space = ChainSpace(input_shape=(2, 40))
    g = space.graph(space.parse("[C(16,5,1,2,1), P(2,2,0,0), C(32,7,2,3,1), SM(10)]"))
    assert [a.get("out_positions") for a in g.attrs] == [None, 40.0, 20.0, 10.0, None]
    assert g.attrs[0] == {"channels": 2.0, "positions": 40.0}


def test_chain_encode_layout():
    space = ChainSpace(input_shape=(1, 8, 8), features=(16, 32), kernels=(1, 3, 5))
    slot = space._slot_size()
    assert space.encoding_size == space.max_layers() * slot
    v = space.encode(space.parse("[C(32,3,1,1,1), P(2,2,0,0), SM(10)]")).reshape(-1, slot)
    kinds = v[:, :6]
    assert kinds.argmax(1)[:4].tolist() == [1, 3, 5, 0]  # conv, pool, classifier, empty
    assert (kinds[3:, 0] == 1).all()
    features = v[0, 6:9]  # one-hot over (16, 32) + other
    assert features.tolist() == [0.0, 1.0, 0.0]
    # a width outside the space's list still encodes exactly (other column + raw value)
    a, b = (space.encode(space.parse(t)) for t in ("[C(48,3,1,1,1), SM(10)]", "[C(64,3,1,1,1), SM(10)]"))
    assert not np.array_equal(a, b)
    assert a.reshape(-1, slot)[0, 8] == 1.0
    too_long = "[" + ", ".join(["C(16,1,1,0,1)"] * (space.max_layers() + 1)) + ", SM(10)]"
    with pytest.raises(ArchitectureError, match="covers at most"):
        space.encode(space.parse(too_long))


def test_chain_max_layers_bounds_every_sample():
    space = ChainSpace(input_shape=(1, 16, 16), max_fc=2, allow_consecutive_pooling=True)
    rng = np.random.default_rng(0)
    longest = max(len(space.sample(rng).layers) for _ in range(300))
    assert longest <= space.max_layers()


def test_nb201_graph_operations_as_nodes():
    space = NB201Space()
    text = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    g = space.graph(space.parse(text))
    assert g.ops == ("input", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect",
                     "none", "nor_conv_3x3", "output")
    # node 1 = op(0->1); node 2 of the cell = op(0->2) + op(1->2), read by op(2->3)
    assert g.edges == ((0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 6), (3, 6), (4, 7), (5, 7), (6, 7))
    assert g.attrs[3] == {"src": 1.0, "dst": 2.0}
    assert g.op_counts(space.op_vocab).tolist() == [1, 1, 1, 1, 2, 1, 1]
    v = space.encode(space.parse(text))
    assert v.shape == (30,) and v.sum() == 6
    assert v.reshape(6, 5).argmax(1).tolist() == [3, 2, 4, 1, 0, 3]
    assert space.op_vocab == ("input", *OPS, "output")


class CondSpace(SearchSpace):
    """A user space with no feature overrides: a depth 1-3, then that many ops (variable length)."""

    name = "cond"

    def parse(self, text):
        return ToyArch(tuple(int(t) if t.isdigit() else t for t in text.split("-")))

    def choices(self, prefix):
        if not prefix:
            return [1, 2, 3]
        return ["conv", "pool"] if len(prefix) <= prefix[0] else []

    def to_decisions(self, arch):
        return arch.values

    def from_decisions(self, decisions):
        return ToyArch(tuple(decisions))

    def build(self, arch, task):
        raise ArchitectureError("no networks")


def test_default_features_of_a_user_space():
    space = CondSpace()
    feats = sequential_features(space)
    assert feats.exhaustive and [len(p) for p in feats.positions] == [3, 2, 2, 2]
    assert space.encoding_size == (3 + 2) + 3 * (2 + 2)  # per position: choices + other + absent
    v = space.encode(ToyArch((1, "pool")))
    assert v.tolist() == [1, 0, 0, 0, 0,  0, 1, 0, 0,  0, 0, 0, 1,  0, 0, 0, 1]
    g = space.graph(ToyArch((2, "conv", "pool")))
    assert g.ops == ("input", "2", "conv", "pool", "output") and g.connected()
    assert space.op_vocab == ("input", "1", "2", "3", "conv", "pool", "other", "output")
    # a decision the space never offers lands in its position's other column / label
    odd = space.encode(ToyArch((1, "attention")))
    assert odd[5 + 2] == 1.0 and space.graph(ToyArch((1, "attention"))).ops[2] == "other"


def test_default_features_fall_back_to_random_paths(monkeypatch):
    monkeypatch.setattr(SequentialFeatures, "EXHAUSTIVE_LIMIT", 20)
    space = ToySpace(length=6, width=4)
    feats = SequentialFeatures(space)
    assert not feats.exhaustive
    assert [len(p) for p in feats.positions] == [4] * 6  # every option was still seen
    assert SearchSpace.encode(space, ToyArch((0, 2, 3, 3, 1, 0))).shape == (36,)


def test_arch_graph_refuses_non_topological_numbering():
    with pytest.raises(ValueError, match="src < dst"):
        ArchGraph(ops=("input", "a", "output"), edges=((0, 1), (2, 1)))
    g = ArchGraph(ops=("input", "a", "b", "output"), edges=((0, 1), (0, 2), (1, 3)))
    assert g.outputs == (3,) and g.connected() and g.reachable_from([0]) == {0, 1, 2, 3}
    assert g.adjacency().sum() == 3
    with pytest.raises(ArchitectureError, match="'b' is not in the vocabulary"):
        g.op_indices(("input", "a", "output"))
