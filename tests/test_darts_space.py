"""DARTS space: genotype text and JSON, published genotypes, the builder's fidelity to the DARTS
code (parameter counts), shapes on images and series, aux head, drop-path, sequential view."""

import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasforge import registry
from nasforge.core import Network, Objective, Task, Trial, TrialResult
from nasforge.errors import ArchitectureError, ConfigError, NasforgeError
from nasforge.ops.darts_ops import PRIMITIVES, DropPath, FactorizedReduce, make_op
from nasforge.spaces.darts import (GENOTYPES, DartsSpace, Genotype, build_network, from_json,
                                   genotype, parse_genotype, reduction_positions, to_json)

# the DARTS code prints the second-order cell like this (namedtuple repr)
DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def task(kind, shape, classes=10, n=4):
    """Random tensors of the right shape (generated data: these tests check shapes only)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.arange(n) % classes
    return Task("toy", kind, tuple(shape), classes, (x, y), (x, y), (x, y))


def n_params(module):
    return sum(p.numel() for p in module.parameters())


# -- fidelity -------------------------------------------------------------------------------------


def test_darts_v2_cifar10_parameter_counts_match_the_darts_code():
    net = build_network(genotype("DARTS_V2"), (3, 32, 32), 10, C=36, layers=20, auxiliary=True)
    aux = net.encoder.auxiliary_head
    assert n_params(net) == 3_825_768
    assert n_params(net) - n_params(aux) == 3_349_342
    assert reduction_positions(20) == [6, 13] and net.encoder.aux_index == 13
    # the auxiliary head on CIFAR's 8x8 map: 5x5/3 pool -> 2x2, 1x1 conv 576->128, 2x2 conv -> 768
    assert isinstance(aux.features[1], torch.nn.AvgPool2d)
    assert aux.features[2].weight.shape == (128, 576, 1, 1)
    assert aux.features[5].weight.shape == (768, 128, 2, 2)


def test_without_aux_head_same_network_minus_head():
    geno = genotype("DARTS_V2")
    with_aux = build_network(geno, (3, 32, 32), 10, C=8, layers=6, auxiliary=True)
    without = build_network(geno, (3, 32, 32), 10, C=8, layers=6, auxiliary=False)
    assert without.encoder.auxiliary_head is None
    assert n_params(without) == n_params(with_aux) - n_params(with_aux.encoder.auxiliary_head)


# -- text -----------------------------------------------------------------------------------------


def test_darts_v2_text_is_the_darts_print_and_round_trips():
    space = DartsSpace()
    geno = space.parse("DARTS_V2")
    assert isinstance(geno, Genotype) and str(geno) == DARTS_V2_TEXT
    assert space.parse(DARTS_V2_TEXT) == geno and str(space.parse(DARTS_V2_TEXT)) == DARTS_V2_TEXT
    assert geno.normal[3] == (("skip_connect", 0), ("dil_conv_3x3", 2))
    assert geno.reduce_concat == (2, 3, 4, 5)
    assert space.parse("DARTS") == geno and space.genotype("DARTS_V2") == geno
    assert pickle.loads(pickle.dumps(geno)) == geno and hash(pickle.loads(pickle.dumps(geno))) == hash(geno)


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_published_genotypes_round_trip(name):
    geno = genotype(name)
    assert str(geno) == GENOTYPES[name]
    assert parse_genotype(str(geno)) == geno
    assert from_json(to_json(geno)) == geno


def test_search_code_range_form_and_source_layout_are_accepted():
    # the DARTS search code prints concat as range(2, 6); genotypes.py writes NASNet over many
    # lines with spaces around '=', trailing commas and comments
    flat = DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)")
    assert str(parse_genotype(flat)) == DARTS_V2_TEXT
    source = """Genotype(
      normal = [
        ("sep_conv_5x5", 1), ('sep_conv_3x3', 0),   # node 2
        ('sep_conv_5x5', 0), ('sep_conv_3x3', 0),
        ('avg_pool_3x3', 1), ('skip_connect', 0),
        ('avg_pool_3x3', 0), ('avg_pool_3x3', 0),
        ('sep_conv_3x3', 1), ('skip_connect', 1),
      ],
      normal_concat = [2, 3, 4, 5, 6],
      reduce = [('sep_conv_5x5', 1), ('sep_conv_7x7', 0), ('max_pool_3x3', 1), ('sep_conv_7x7', 0),
        ('avg_pool_3x3', 1), ('sep_conv_5x5', 0), ('skip_connect', 3), ('avg_pool_3x3', 2),
        ('sep_conv_3x3', 2), ('max_pool_3x3', 1),],
      reduce_concat = [4, 5, 6],
    )"""
    assert parse_genotype(source) == genotype("NASNet")
    # fields in another order, and positional fields (a namedtuple accepts both)
    swapped = ("Genotype(reduce_concat=[2, 3, 4, 5], reduce=" + DARTS_V2_TEXT.split("reduce=")[1]
               .split(", reduce_concat")[0] + ", normal=" + DARTS_V2_TEXT.split("normal=")[1]
               .split(", normal_concat")[0] + ", normal_concat=range(2, 6))")
    assert parse_genotype(swapped) == genotype("DARTS_V2")


def test_nested_form_for_nodes_with_other_edge_counts():
    text = ("Genotype(normal=[[('sep_conv_3x3', 0), ('none', 1), ('skip_connect', 0)], "
            "[('dil_conv_5x5', 2)]], normal_concat=[2, 3], reduce=[[('max_pool_3x3', 0), "
            "('max_pool_3x3', 1)], [('skip_connect', 2), ('avg_pool_3x3', 1)]], reduce_concat=[2, 3])")
    geno = parse_genotype(text)
    assert str(geno) == text  # the normal cell has 3- and 1-edge nodes: printed nested
    assert [len(n) for n in geno.normal] == [3, 1]
    assert str(geno).count("[[") == 2  # both cells nested: one form per genotype
    flat_reduce = parse_genotype(text.replace("reduce=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)], "
                                              "[('skip_connect', 2), ('avg_pool_3x3', 1)]]",
                                              "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), "
                                              "('skip_connect', 2), ('avg_pool_3x3', 1)]"))
    assert flat_reduce == geno  # a cell of two-edge nodes may be written either way
    net = build_network(geno, (1, 8, 8), 3, C=4, layers=3)
    assert net.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 3)


GOOD = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=[2], "
        "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])")


@pytest.mark.parametrize("text, message, at", [
    # (text, what the message says, where: the last occurrence of a substring, or an offset)
    ("", "empty genotype text", None),
    ("DARTS_V3", "unknown genotype name 'DARTS_V3'", "DARTS_V3"),
    (GOOD[:-1], "expected ',' or ')', found the end of the text", ""),
    (GOOD.replace("conv_3x3', 1", "conv_9x9', 1"), "unknown operation 'sep_conv_9x9'", "'sep_conv_9x9'"),
    (GOOD.replace("conv_3x3', 1", "conv_3x3', 2"), "normal node 2: input 2 is not an earlier state; "
     "expected 0..1", "[('sep"),
    (GOOD.replace(", ('sep_conv_3x3', 1)", ""), "1 edges; the DARTS form lists two edges per node",
     "[('sep"),
    (GOOD.replace("normal_concat=[2]", "normal_concat=[2, 3]"),
     "normal_concat contains 3; expected intermediate states 2..2", "3]"),
    (GOOD.replace("normal_concat=[2]", "normal_concat=[3, 2]"), "normal_concat contains 3", "3, 2]"),
    (GOOD.replace("normal_concat=[2]", "normal_concat=[2, 2]"), "distinct states in increasing order",
     "2], reduce="),
    (GOOD.replace("normal_concat=[2]", "normal_concat=range(2, 4)"), "normal_concat contains 3",
     "range(2, 4)"),
    (GOOD.replace("normal_concat=[2]", "normal_concat='2'"), "expected a list of states", "'2'"),
    (GOOD.replace(", reduce_concat=[2]", ""), "lacks reduce_concat", 0),
    (GOOD.replace("normal_concat=[2],", "normal_concat=[2], normal=[],"), "given twice", "[],"),
    (GOOD[:-1] + ", extra=1)", "unknown field 'extra'", "1)"),
    (GOOD.replace("normal_concat=[2]", "[2]"), "positional fields must come first",
     "[2], reduce="),
    (GOOD.replace("Genotype", "Genotyp"), "expected Genotype(...), found a call of Genotyp", 0),
    ("__import__('os').system('true')", "unexpected character '.'", ".system"),
    (GOOD.replace("1)], normal_concat", "1)] + [], normal_concat"), "unexpected character '+'", "+ []"),
    (GOOD.replace("0), ('sep", "0, 1), ('sep"), "expected an edge ('operation', input), found a "
     "tuple of 3 items", "('sep_conv_3x3', 0, 1)"),
    (GOOD.replace("0), ('sep", "'0'), ('sep"), "expected an input state number, found the string '0'",
     "'0')"),
    (GOOD.replace("('sep_conv_3x3', 0)", "[]"), "expected an edge", "[]"),
    (GOOD + " Genotype", "unexpected 'Genotype' after the genotype", "Genotype"),
    ("Genotype(" * 20, "nesting too deep", None),
])
def test_malformed_genotypes_are_refused_with_position(text, message, at):
    with pytest.raises(ArchitectureError) as info:
        DartsSpace().parse(text)
    assert message in str(info.value)
    if at is not None:
        position = at if isinstance(at, int) else text.rindex(at)
        assert f"at character {position} " in str(info.value), str(info.value)


_edge = st.one_of(
    st.builds(lambda op, i: f"({op!r}, {i})", st.sampled_from(list(PRIMITIVES) + ["sep_conv_9x9", ""]),
              st.one_of(st.integers(-2, 7), st.just(10 ** 30))),
    st.text(alphabet="()[],'\"_ 0123456789sepconvx", max_size=16))
_cell = st.lists(_edge, max_size=9).map(lambda es: "[" + ", ".join(es) + "]")
_concat = st.one_of(st.lists(st.integers(-1, 7), max_size=5).map(str),
                    st.builds(lambda a, b: f"range({a}, {b})", st.integers(-1, 7), st.integers(-1, 9)))
genotype_texts = st.one_of(
    st.builds(lambda n, nc, r, rc: f"Genotype(normal={n}, normal_concat={nc}, reduce={r}, "
              f"reduce_concat={rc})", _cell, _concat, _cell, _concat),
    st.text(alphabet="Genotype(normal=[('sep_conv_3x3', 0)], _concat=range(2, 6))\n\uff10\x00",
            max_size=120),
    st.text(max_size=60),
)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=genotype_texts)
def test_genotype_texts_parse_or_raise_one_clear_error(text):
    # generated texts: each either parses and round-trips or gives one bounded line
    try:
        geno = parse_genotype(text)
    except NasforgeError as exc:
        assert isinstance(exc, ArchitectureError)
        message = str(exc)
        assert message and "\n" not in message and len(message) < 2000, message[:300]
        return
    assert parse_genotype(str(geno)) == geno and from_json(to_json(geno)) == geno


def test_size_limits():
    with pytest.raises(ArchitectureError, match="at most 100000"):
        parse_genotype("Genotype(" + " " * 100_000 + ")")
    nodes = ", ".join(f"('skip_connect', {j + 1}), ('skip_connect', {j})" for j in range(17))
    text = f"Genotype(normal=[{nodes}], normal_concat=[2], reduce=[{nodes}], reduce_concat=[2])"
    with pytest.raises(ArchitectureError, match="17 nodes; at most 16"):
        parse_genotype(text)
    with pytest.raises(ArchitectureError, match="number 100000000000... is too large"):
        parse_genotype(GOOD.replace("0)", "1" + "0" * 5000 + ")"))
    with pytest.raises(ArchitectureError, match="not a DARTS genotype"):
        DartsSpace().build(registry.get("spaces", "nb201")().sample(np.random.default_rng(0)),
                           task("image", (1, 8, 8)))


def test_json_form():
    geno = genotype("DARTS_V2")
    data = json.loads(to_json(geno))
    assert data["format"] == "nasforge-darts-genotype/1"
    assert data["normal"][3] == [["skip_connect", 0], ["dil_conv_3x3", 2]]
    assert data["reduce_concat"] == [2, 3, 4, 5]
    assert from_json(to_json(geno)) == geno and from_json(data) == geno
    assert DartsSpace().parse(geno.to_json()) == geno  # parse accepts the JSON form too
    del data["format"]
    assert from_json(data) == geno  # the format tag is optional on input
    for bad, message in [("{", "invalid JSON genotype at character 1"),
                         ('{"normal": []}', "missing ['normal_concat', 'reduce', 'reduce_concat']"),
                         (json.dumps({**data, "normal": [[["sep_conv_3x3", "0"]]]}), "is not [operation, input]"),
                         (json.dumps({**data, "reduce_concat": [2, 9]}), "reduce_concat contains 9"),
                         (json.dumps({**data, "format": "other/2"}), "format 'other/2'")]:
        with pytest.raises(ArchitectureError, match=message.replace("[", r"\[").replace("(", r"\(")):
            from_json(bad)


# -- the network ----------------------------------------------------------------------------------


def test_forward_shapes_cifar_digits_series_and_odd_sizes():
    geno = genotype("DARTS_V2")
    net = DartsSpace(C=4, layers=5, auxiliary=True).build(geno, task("image", (3, 32, 32)))
    assert isinstance(net, Network)
    x = torch.randn(3, 3, 32, 32)
    net.train()
    out = net(x)
    assert out.shape == (3, 10) and net.aux_logits.shape == (3, 10)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (3, 10)
    assert net.aux_logits is None  # only training-mode passes produce auxiliary logits
    for kind, shape in [("image", (1, 8, 8)), ("image", (1, 7, 9)), ("series", (1, 40)),
                        ("series", (2, 37))]:
        space = DartsSpace(C=4, layers=3, auxiliary=True)
        t = task(kind, shape, classes=5)
        net = space.build(geno, t)
        net.train()
        assert net(t.train[0]).shape == (4, 5) and net.aux_logits.shape == (4, 5)
        with torch.no_grad():
            assert net.eval()(t.train[0][:2]).shape == (2, 5)
    series = DartsSpace(C=4, layers=3).build(geno, task("series", (1, 40)))
    assert isinstance(series.encoder.stem[0], torch.nn.Conv1d)


def test_too_small_inputs_and_wrong_kinds_are_refused():
    geno = genotype("DARTS_V2")
    space = DartsSpace(C=4, layers=3)
    space.check(geno, task("image", (1, 3, 3)))  # 3 -> 2 -> 1: both reductions fit
    for shape in [(1, 2, 2), (1, 8, 1), (3, 1, 32)]:
        with pytest.raises(ArchitectureError, match="too small for 2 reduction cells"):
            space.check(geno, task("image", shape))
        with pytest.raises(ArchitectureError, match="too small"):
            space.build(geno, task("image", shape))
    with pytest.raises(ArchitectureError, match="needs an image task"):
        space.build(geno, task("segmentation", (1, 8, 8)))
    with pytest.raises(ArchitectureError, match="needs an image task"):
        space.build(geno, task("series", (1, 8, 8)))
    with pytest.raises(ArchitectureError, match="no 1-D form"):
        space.check(genotype("AmoebaNet"), task("series", (1, 40)))
    evaluator = registry.create("evaluators", "train", epochs=1, measure_latency=False)
    result = evaluator.evaluate(geno, space, task("image", (1, 2, 2)), seed=0)
    assert result.status == "failed" and "too small" in result.reason


def test_factorized_reduce_matches_the_darts_definition_and_handles_odd_sizes():
    torch.manual_seed(0)
    fr = FactorizedReduce(2, 4, 6)
    x = torch.randn(2, 4, 8, 8)
    r = torch.relu(x)
    expected = fr.bn(torch.cat([fr.conv_1(r), fr.conv_2(r[:, :, 1:, 1:])], dim=1))
    assert torch.allclose(fr(x), expected)
    assert fr(torch.randn(2, 4, 7, 5)).shape == (2, 6, 4, 3)
    for op in PRIMITIVES:  # every strided op rounds odd sizes up
        assert make_op(op, 2, 4, stride=2)(torch.randn(1, 4, 7, 5)).shape == (1, 4, 4, 3), op
        assert make_op(op, 1, 4, stride=2)(torch.randn(1, 4, 7)).shape == (1, 4, 4), op


def test_drop_path_drops_whole_samples_and_only_in_training():
    x = torch.ones(4000, 2, 3)
    torch.manual_seed(0)
    drop = DropPath(0.25)
    y = drop(x)
    kept = (y[:, 0, 0] > 0).float().mean().item()
    assert abs(kept - 0.75) < 0.03
    assert torch.all((y == 0).all(dim=(1, 2)) | (y == 1 / 0.75).all(dim=(1, 2)))
    space = DartsSpace(C=4, layers=3, drop_path=0.5)
    net = space.build(genotype("DARTS_V2"), task("image", (1, 8, 8)))
    assert net.drop_path_prob == 0.5
    x = torch.randn(8, 1, 8, 8)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # no drop-path at evaluation
    net.train()
    torch.manual_seed(1)
    a = net(x)
    net.drop_path_prob = 0.0
    torch.manual_seed(1)
    assert not torch.allclose(a, net(x))
    with pytest.raises(ConfigError, match="drop_path_prob"):
        net.drop_path_prob = 1.0
    # the training engine routes the masks to its own seeded generator: the global RNG is unused
    from nasforge.training import dropout_from
    net.drop_path_prob = 0.5
    outs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        with dropout_from(net, torch.Generator().manual_seed(7)):
            outs.append(net(x))
    assert torch.equal(outs[0], outs[1]) and not torch.allclose(outs[0], net.eval()(x))


# -- the space ------------------------------------------------------------------------------------


def test_space_options_are_validated():
    for options, message in [({"C": 0}, "C=0"), ({"layers": 0}, "layers=0"),
                             ({"ops": ["sep_conv_3x3", "conv_9x9"]}, "ops="),
                             ({"ops": ["none"]}, "leaves no operation"),
                             ({"drop_path": 1.0}, "drop_path=1.0"), ({"nodes": 17}, "at most 16")]:
        with pytest.raises(ConfigError, match=message):
            registry.create("spaces", "darts", **options)
    space = registry.create("spaces", "darts", C=8, layers=3, ops=["skip_connect", "sep_conv_3x3"])
    assert space.options()["ops"] == ["skip_connect", "sep_conv_3x3"]
    assert space.genotype_ops == ["skip_connect", "sep_conv_3x3"]


def test_sequential_view_and_sampling():
    space = DartsSpace()
    rng = np.random.default_rng(0)
    geno = space.sample(rng)
    decisions = space.to_decisions(geno)
    assert len(decisions) == 32 == space.num_decisions
    assert decisions[:2] == (geno.normal[0][0][1], geno.normal[0][0][0])  # input, then op
    assert space.choices([]) == [0, 1]
    assert space.choices([1, "skip_connect"]) == [0]  # the second edge leaves another state
    assert space.choices([1, "skip_connect", 0]) == list(PRIMITIVES[1:])  # no 'none' by default
    assert space.from_decisions(decisions) == geno
    assert space.to_decisions(space.parse("DARTS_V2"))[:4] == (0, "sep_conv_3x3", 1, "sep_conv_3x3")
    for name in ("NASNet", "AmoebaNet"):
        with pytest.raises(ArchitectureError, match="sequential view covers the searched space"):
            space.to_decisions(space.parse(name))
    with pytest.raises(ArchitectureError, match="decision 2 = 1"):
        space.from_decisions([1, "skip_connect", 1] + list(decisions[3:]))
    with pytest.raises(ArchitectureError, match="31 decisions"):
        space.from_decisions(decisions[:31])
    samples = [space.sample(rng) for _ in range(200)]
    ops = {op for g in samples for op in g.ops()}
    assert ops == set(PRIMITIVES[1:])
    assert all(space.outside(g) is None for g in samples)
    with_none = DartsSpace(allow_none=True)
    assert "none" in {op for _ in range(50) for op in with_none.sample(rng).ops()}


def test_canonical_key_ignores_edge_order_within_nodes():
    space = DartsSpace()
    geno = space.parse("DARTS_V2")
    swapped = parse_genotype(str(geno).replace("('skip_connect', 0), ('dil_conv_3x3', 2)",
                                               "('dil_conv_3x3', 2), ('skip_connect', 0)"))
    assert swapped != geno and space.canonical_key(swapped) == space.canonical_key(geno)
    other = parse_genotype(str(geno).replace("('dil_conv_3x3', 2)", "('dil_conv_5x5', 2)"))
    assert space.canonical_key(other) != space.canonical_key(geno)


def test_mutate_changes_one_edge():
    space = DartsSpace()
    rng = np.random.default_rng(4)
    for name in ("DARTS_V2", "NASNet"):
        parent = space.parse(name)
        for _ in range(30):
            child = space.mutate(parent, rng)
            diffs = [(a, b) for cp, cc in ((parent.normal, child.normal), (parent.reduce, child.reduce))
                     for np_, nc in zip(cp, cc) for a, b in zip(np_, nc) if a != b]
            assert len(diffs) == 1
            (op_a, src_a), (op_b, src_b) = diffs[0]
            assert (op_a == op_b) != (src_a == src_b)  # the op or the input changed, not both
            if name == "DARTS_V2":
                assert space.outside(child) is None


@pytest.mark.parametrize("strategy", ["random", "evolution", "local", "reinforce", "qlearning"])
def test_strategies_search_the_darts_space(strategy):
    space = DartsSpace()
    s = registry.create("strategies", strategy, seed=0)
    s.setup(space, Objective("val_acc", "max"), budget=3)
    seen = []
    for i in range(3):  # 32 decisions each: the LSTM controller is the slow one
        (arch,) = s.ask(1)
        assert space.parse(str(arch)) == arch and space.outside(arch) is None
        seen.append(str(arch))
        s.tell([Trial(id=i, arch=arch, result=TrialResult(metrics={"val_acc": len(arch.ops()) / 100
                                                                    + 0.01 * arch.ops().count("sep_conv_3x3")}))])
    assert len(set(seen)) > 1


def test_encode_is_a_one_hot_of_op_and_input_per_edge():
    space = DartsSpace()
    geno = space.parse("DARTS_V2")
    v = space.encode(geno).reshape(2, 4, 2, 8 + 5)
    assert space.encoding_size == 2 * 4 * 2 * 13 == v.size
    assert (v[..., :8].sum(-1) == 1).all() and (v[..., 8:].sum(-1) == 1).all()
    # normal node 5: ('skip_connect', 0), ('dil_conv_3x3', 2)
    assert v[0, 3, 0, PRIMITIVES.index("skip_connect")] == 1 and v[0, 3, 0, 8 + 0] == 1
    assert v[0, 3, 1, PRIMITIVES.index("dil_conv_3x3")] == 1 and v[0, 3, 1, 8 + 2] == 1
    # 'none' is encodable (DARTS-CC derivations) even where sampling leaves it out
    with_none = parse_genotype(str(geno).replace("('dil_conv_3x3', 2)", "('none', 2)"))
    assert space.encode(with_none).reshape(2, 4, 2, 13)[0, 3, 1, 0] == 1
    with pytest.raises(ArchitectureError, match="use graph"):
        space.encode(space.parse("NASNet"))
    small = DartsSpace(ops=["skip_connect", "sep_conv_3x3"])
    with pytest.raises(ArchitectureError, match="cannot encode operation 'dil_conv_3x3'"):
        small.encode(geno)


def test_graph_has_operations_as_nodes():
    space = DartsSpace()
    g = space.graph(space.parse("DARTS_V2"))
    # 2 inputs + 8 normal ops + concat + 8 reduce ops + output
    assert g.num_nodes == 20 and g.inputs == (0, 1) and g.outputs == (19,)
    assert g.ops[:4] == ("input", "input", "sep_conv_3x3", "sep_conv_3x3") and g.ops[10] == "concat"
    assert g.ops[9] == "dil_conv_3x3" and g.predecessors(9) == [2, 3]  # reads state 2 = ops 2 + 3
    assert g.predecessors(10) == list(range(2, 10))
    assert g.predecessors(11) == [1]  # reduce ('max_pool_3x3', 0): the cell two back
    assert g.predecessors(12) == [10]  # reduce ('max_pool_3x3', 1): the normal cell's output
    assert g.attrs[11] == {"cell": 1.0, "state": 2.0, "src": 0.0, "stride": 2.0}
    assert g.predecessors(19) == list(range(11, 19))
    nasnet = space.graph(space.parse("NASNet"))  # other shapes too: 5 nodes, unused states
    assert nasnet.num_nodes == 2 + 10 + 1 + 10 + 1 and nasnet.connected()
    assert "sep_conv_7x7" in nasnet.ops and set(nasnet.ops) <= set(space.op_vocab)


def test_aux_loss_and_drop_path_ramp_with_the_training_engine():
    from nasforge.spaces.darts import DropPathSchedule, auxiliary_loss
    from nasforge.training import Engine, TrainConfig

    t = task("image", (1, 8, 8), classes=3, n=24)
    space = DartsSpace(C=4, layers=3, auxiliary=True)
    heads = []
    for loss_fn in (None, auxiliary_loss(0.4)):
        net = space.build(genotype("DARTS_V2"), t)
        before = net.encoder.auxiliary_head.classifier.weight.detach().clone()
        engine = Engine(net, TrainConfig(epochs=2, batch_size=8, lr=1e-2), seed=0, loss_fn=loss_fn,
                        callbacks=[DropPathSchedule(0.2)])
        engine.fit(t.train, t.val)
        assert net.drop_path_prob == pytest.approx(0.1)  # 0.2 * (epoch 2 - 1) / 2 epochs
        heads.append(torch.equal(before, net.encoder.auxiliary_head.classifier.weight))
    assert heads == [True, False]  # the auxiliary head learns only through the auxiliary loss
