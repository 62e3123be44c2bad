"""The chain (MetaQNN / DP-NAS) space: net-string text, sequential view, mutation and building."""

from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasforge import registry
from nasforge.core import Task
from nasforge.errors import ArchitectureError, ConfigError
from nasforge.ops.blocks import ConvBNReLU, ResidualBlock
from nasforge.spaces import chain
from nasforge.spaces.chain import ChainArch, ChainSpace, parse_chain

EXAMPLE = "[C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), C(1024,1,1,0,1), C(512,3,1,0,1), SM(10)]"

# spaces the properties are checked on: DP-NAS defaults on digits-sized input, a larger input with
# FC layers and pooling options switched on, and series
SPACES = {
    "digits": ChainSpace(),
    "fc32": ChainSpace(input_size=32, max_fc=2, allow_initial_pooling=True,
                       allow_consecutive_pooling=True, min_conv=2, max_conv=8),
    "series": ChainSpace(input_shape=(1, 40)),
}
# small features so that building many sampled networks stays fast
SMALL = {"image": ChainSpace(input_size=8, features=(4, 8), max_fc=1, fc_sizes=(8,)),
         "series": ChainSpace(input_shape=(1, 40), features=(4, 8), max_fc=1, fc_sizes=(8,))}

seeds = st.integers(0, 2**32 - 1)
space_names = st.sampled_from(sorted(SPACES))
fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def synthetic_task(shape: tuple[int, ...], classes: int = 10, n: int = 4) -> Task:
    """A task of random tensors (synthetic data: these tests only check shapes)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    kind = "image" if len(shape) == 3 else "series"
    return Task(name=f"synthetic-{kind}", kind=kind, input_shape=shape, num_classes=classes,
                train=(x, y), val=(x, y), test=(x, y))


def sample(name: str, seed: int) -> ChainArch:
    return SPACES[name].sample(np.random.default_rng(seed))


# -- the DP-NAS example -----------------------------------------------------------------------


def test_example_round_trips_and_builds_on_32x32():
    arch = parse_chain(EXAMPLE)
    assert str(arch) == EXAMPLE
    assert arch.layers[1] == ("P", 4, 4) and arch.layers[2] == ("C", 32, 3, 1, 1, 0)
    assert arch.depth == 5 and arch.num_classes == 10
    space = ChainSpace(input_size=32)
    space.validate(arch)  # the example is in the space for 32x32 (and 28x28) input
    ChainSpace(input_size=28).validate(arch)
    task = synthetic_task((1, 32, 32))
    assert space.layer_shapes(arch, task.input_shape) == [
        (32, 32, 32), (32, 8, 8), (32, 8, 8), (1024, 8, 8), (512, 6, 6)]
    net = space.build(arch, task)
    assert isinstance(net.encoder[2], ResidualBlock)
    with torch.no_grad():
        assert net.embed(task.train[0]).shape == (4, 512 * 36)
        assert net(task.train[0]).shape == (4, 10)


def test_example_is_rejected_on_8x8_before_building(monkeypatch):
    arch = parse_chain(EXAMPLE)
    space = ChainSpace()
    task = synthetic_task((1, 8, 8))
    with pytest.raises(ArchitectureError, match=r"C\(512,3,1,0,1\) \(layer 4\).*2x2 map to 0x0"):
        space.check(arch, task)

    def no_modules(*args, **kwargs):
        raise AssertionError("build created a module before rejecting the architecture")

    monkeypatch.setattr(chain, "ConvBNReLU", no_modules)
    monkeypatch.setattr(chain, "ResidualBlock", no_modules)
    with pytest.raises(ArchitectureError, match="does not fit"):
        space.build(arch, task)
    # and the sequential view never offers it: the residual block needs a map larger than 3
    with pytest.raises(ArchitectureError, match=r"layer 2 C\(32,3,1,1,0\) is not in the chain space"):
        space.validate(arch)


def test_classifier_input_limit_is_enforced():
    space = ChainSpace()
    wide = parse_chain("[C(1024,3,1,1,1), SM(10)]")  # 1024 * 8 * 8 = 65536 values
    with pytest.raises(ArchitectureError, match="65536 values, more than max_num_fc_input = 20000"):
        space.check(wide, synthetic_task((1, 8, 8)))
    space.check(parse_chain("[C(256,3,1,1,1), SM(10)]"), synthetic_task((1, 8, 8)))  # 16384 fits


def test_wrong_task_kind_is_rejected():
    task = synthetic_task((1, 8, 8))
    task.kind = "series"
    with pytest.raises(ArchitectureError, match="series task with input shape"):
        ChainSpace().check(parse_chain("[C(16,3,1,1,1), SM(10)]"), task)


# -- text ---------------------------------------------------------------------------------------


@fast
@given(name=space_names, seed=seeds)
def test_sampled_text_round_trips(name, seed):
    arch = sample(name, seed)
    text = str(arch)
    assert parse_chain(text) == arch
    assert str(parse_chain(text)) == text
    assert hash(SPACES[name].parse(text)) == hash(arch)


@fast
@given(name=space_names, seed=seeds, before=st.sampled_from(["", " ", "\n", "\t "]),
       after=st.sampled_from(["", "  ", "\n  "]))
def test_parse_accepts_any_whitespace_between_tokens(name, seed, before, after):
    text = str(sample(name, seed))
    spaced = re.sub(r"\s*([\[\](),])\s*", lambda m: before + m.group(1) + after, text)
    assert parse_chain(spaced) == parse_chain(text)
    assert str(parse_chain(spaced)) == text


@fast
@given(name=space_names, seed=seeds, data=st.data())
def test_truncated_text_is_rejected_at_its_end(name, seed, data):
    text = str(sample(name, seed))
    cut = data.draw(st.integers(0, len(text) - 1))
    with pytest.raises(ArchitectureError, match=rf"at character {cut} \(layer \d+\)"):
        parse_chain(text[:cut])


@fast
@given(name=space_names, seed=seeds, data=st.data(),
       bad=st.sampled_from(["-1", "x", "1.5", "", "2a", "+3", "_"]))
def test_bad_numbers_are_rejected_where_they_stand(name, seed, data, bad):
    text = str(sample(name, seed))
    numbers = list(re.finditer(r"\d+", text))
    m = data.draw(st.sampled_from(numbers))
    corrupted = text[:m.start()] + bad + text[m.end():]
    layer = text[:m.start()].count("(") - 1
    with pytest.raises(ArchitectureError, match=rf"at character {m.start()} \(layer {layer}\)"):
        parse_chain(corrupted)


@fast
@given(name=space_names, seed=seeds, data=st.data(),
       bad=st.sampled_from(["Q", "X", "c", "CONV", "Sm", "F", "PP"]))
def test_unknown_layer_letters_are_rejected(name, seed, data, bad):
    text = str(sample(name, seed))
    m = data.draw(st.sampled_from(list(re.finditer(r"[A-Z]+(?=\()", text))))
    corrupted = text[:m.start()] + bad + text[m.end():]
    with pytest.raises(ArchitectureError, match=rf"at character {m.start()} .*unknown layer type '{bad}'"):
        parse_chain(corrupted)


@fast
@given(name=space_names, seed=seeds)
def test_missing_sm_is_rejected(name, seed):
    text = str(sample(name, seed))
    corrupted = text[:text.rindex(", SM(")] + "]"
    last = corrupted.rfind(", ") + 2 if ", " in corrupted else 1
    n_layers = corrupted.count("(")
    with pytest.raises(ArchitectureError, match=rf"at character {last} \(layer {n_layers - 1}\): "
                                                r"the last layer must be SM\(classes\)"):
        parse_chain(corrupted)


@pytest.mark.parametrize("text, message", [
    ("", r"character 0 .*expected '\['"),
    ("[]", r"character 1 .*expected a layer"),
    ("[SM(10)] x", r"character 9 .*unexpected text after the closing"),
    ("[C(32,5,1,2), SM(10)]", r"character 11 .*C takes 5 numbers .* found only 4"),
    ("[C(32,5,1,2,1,0), SM(10)]", r"character 13 .*C takes 5 numbers .* found more"),
    ("[C(32,5,1,2,1) SM(10)]", r"character 15 .*expected ',' or '\]'"),
    ("[C(32,5,1,2,1), P(2,2,1,0), SM(10)]", r"character 16 \(layer 1\): P's padding and flag must be 0"),
    ("[C(32,5,1,3,1), SM(10)]", r"character 1 \(layer 0\): .*padding 3 must be at most kernel // 2 = 2"),
    ("[C(32,5,1,2,0), SM(10)]", r"layer 0.*residual block .* written C\(32,3,1,1,0\)"),
    ("[C(32,5,1,2,2), SM(10)]", r"layer 0.*skip flag 2"),
    ("[C(0,5,1,2,1), SM(10)]", r"layer 0.*features 0 must be >= 1"),
    ("[C(32,5,1,2,1), SM(10), SM(10)]", r"character 16 \(layer 1\): SM must be the last layer"),
    ("[C(32,5,1,2,1), FC(64), C(32,5,1,2,1), SM(10)]", r"layer 2\): .*after an FC layer"),
])
def test_malformed_text_messages(text, message):
    with pytest.raises(ArchitectureError, match=message):
        parse_chain(text)


def test_arch_checks_its_layers_when_built_directly():
    assert ChainArch((("C", 8, 3, 1, 1, 1), ("SM", 10))) == parse_chain("[C(8,3,1,1,1), SM(10)]")
    with pytest.raises(ArchitectureError, match="layer 0"):
        ChainArch((("C", 8, 3), ("SM", 10)))
    with pytest.raises(ArchitectureError, match="last layer must be SM"):
        ChainArch((("C", 8, 3, 1, 1, 1),))


# -- sequential view -------------------------------------------------------------------------------


@fast
@given(name=space_names, seed=seeds)
def test_decisions_are_offered_and_invert_exactly(name, seed):
    space = SPACES[name]
    arch = sample(name, seed)
    decisions = space.to_decisions(arch)
    assert space.from_decisions(decisions) == arch
    for i, d in enumerate(decisions):
        assert d in space.choices(decisions[:i]), f"decision {i} {d} not offered"
        hash(space.state_key(decisions[:i]))
    assert space.choices(decisions) == []
    assert space.contains(arch)


@fast
@given(name=space_names, seed=seeds)
def test_sampled_architectures_follow_the_rules(name, seed):
    space = SPACES[name]
    arch = sample(name, seed)
    layers = arch.layers
    assert layers[-1] == ("SM", space.num_classes)
    assert arch.depth <= space.max_conv
    shape = space.input_shape or (1, space.input_size, space.input_size)
    shapes = space.layer_shapes(arch, shape)
    assert max(shapes[-1][1:]) <= space.max_image_size
    assert math.prod(shapes[-1]) <= space.max_num_fc_input
    fcs = [layer[1] for layer in layers if layer[0] == "FC"]
    assert len(fcs) <= space.max_fc and fcs == sorted(fcs, reverse=True)
    inputs = [shape] + shapes  # the map each conv / pool layer sees
    for prev, layer, seen in zip((("start",),) + layers, layers, inputs):
        if layer[0] == "P":
            assert prev[0] != "start" or space.allow_initial_pooling
            assert prev[0] != "P" or space.allow_consecutive_pooling
            assert layer[2] <= layer[1] and all(layer[1] < n for n in seen[1:])
            assert all((n - layer[1]) % layer[2] == 0 for n in seen[1:])  # windows tile the map
        if layer[0] == "C" and layer[5] == 1:
            assert all(layer[2] < n for n in seen[1:])
            assert layer[3] == (2 if layer[2] >= 7 else 1)
            assert layer[4] in (0, (layer[2] - 1) // 2)
        if layer[0] == "C" and layer[5] == 0:
            assert all(n > 3 for n in seen[1:])


def test_state_key_is_a_small_metaqnn_state():
    space = SPACES["digits"]
    prefix = [("C", 32, 3, 1, 1, 1), ("C", 64, 3, 1, 0, 1)]
    assert space.state_key([]) == ("start", 0, (8, 8), 0, 0, 0, 0, 0)
    assert space.state_key(prefix) == ("C", 2, (4, 4), 64, 3, 1, 0, 0)  # a 6x6 map, bucket 4
    # the key forgets the history: other layers before the same last layer give the same state
    other = [("C", 16, 5, 1, 2, 1), ("C", 64, 3, 1, 0, 1)]
    assert space.state_key(other) == space.state_key(prefix)
    assert space.state_key(prefix + [("P", 2, 2)]) == ("P", 2, (2, 2), 64, 2, 2, 0, 0)  # 3x3 map
    done = prefix + [("C", 16, 1, 1, 0, 1), ("SM", 10)]
    assert space.state_key(done) == ("SM", 3, (4, 4), 16, 1, 1, 0, 0)
    buckets = ChainSpace(size_buckets=(1, 4, 8))  # MetaQNN's buckets
    assert buckets.state_key(prefix)[2] == (4, 4)
    assert buckets.state_key(prefix + [("C", 64, 5, 1, 0, 1)])[2] == (1, 1)  # 2x2 map


def test_invalid_prefixes_are_named():
    space = SPACES["digits"]
    with pytest.raises(ArchitectureError, match=r"layer 0 P\(2,2,0,0\) is not in the chain space.*"
                                                r"map is 8x8 .*depth 0 of max_conv=12"):
        space.choices([("P", 2, 2)])  # no initial pooling
    with pytest.raises(ArchitectureError, match=r"layer 2 P\(2,2,0,0\) is not in the chain space.*"
                                                r"map is 4x4 .*depth 1 of max_conv=12"):
        space.choices([("C", 16, 3, 1, 1, 1), ("P", 2, 2), ("P", 2, 2)])  # no consecutive pooling
    with pytest.raises(ArchitectureError, match="already complete after SM"):
        space.choices([("C", 16, 7, 2, 0, 1), ("SM", 10), ("SM", 10)])
    with pytest.raises(ArchitectureError, match="layer 0 C\\(16,13,1,0,1\\) is not in the chain space"):
        space.choices([("C", 16, 13, 1, 0, 1)])  # kernel 13 is not in the space


def test_no_dead_ends_on_tight_limits():
    # 32x32 input must shrink to <= 2 within 3 convs: only strided large kernels get there
    space = ChainSpace(input_size=32, max_image_size=2, min_conv=1, max_conv=2, allow_residual=False)
    rng = np.random.default_rng(0)
    for _ in range(30):
        arch = space.sample(rng)
        shapes = space.layer_shapes(arch, (1, 32, 32))
        assert max(shapes[-1][1:]) <= 2
    with pytest.raises(ConfigError, match="no architecture satisfies these options"):
        ChainSpace(input_size=32, max_image_size=2, min_conv=1, max_conv=1, allow_residual=False)


# -- mutation --------------------------------------------------------------------------------------


@fast
@given(name=space_names, seed=seeds)
def test_mutate_gives_a_different_valid_architecture(name, seed):
    space = SPACES[name]
    rng = np.random.default_rng(seed)
    arch = space.sample(rng)
    child = space.mutate(arch, rng)
    assert child != arch
    space.validate(child)
    assert space.parse(str(child)) == child


def test_mutate_repairs_an_architecture_outside_the_space():
    space = SPACES["digits"]
    child = space.mutate(parse_chain(EXAMPLE), np.random.default_rng(0))
    assert child.layers[:2] == parse_chain(EXAMPLE).layers[:2]  # the valid prefix is kept
    space.validate(child)


# -- building -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, shape", [("image", (1, 8, 8)), ("series", (1, 40))])
def test_sampled_architectures_build_and_run(kind, shape):
    space = SMALL[kind]
    rng = np.random.default_rng(0)
    for classes in (10, 3):  # the head follows the task's classes, whatever SM(n) says
        task = synthetic_task(shape, classes=classes, n=5)
        for _ in range(6):
            arch = space.sample(rng)
            space.check(arch, task)
            net = space.build(arch, task).eval()
            with torch.no_grad():
                out = net(task.train[0])
                emb = net.embed(task.train[0])
            assert out.shape == (5, classes)
            last = space.layer_shapes(arch, shape)[-1]
            assert emb.shape == (5, math.prod(last))
            convs = (torch.nn.Conv1d if kind == "series" else torch.nn.Conv2d)
            assert any(isinstance(m, convs) for m in net.encoder.modules())


def test_batch_norm_option_and_layer_types():
    arch = parse_chain("[C(8,3,1,1,1), C(16,3,1,1,0), P(2,2,0,0), C(16,1,1,0,1), FC(32), SM(10)]")
    plain = SPACES["digits"].build(arch, synthetic_task((1, 8, 8)))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert [type(m).__name__ for m in plain.encoder] == [
        "ConvBNReLU", "ResidualBlock", "MaxPool2d", "ConvBNReLU", "Flatten"]
    assert [m.out_features for m in plain.head if isinstance(m, torch.nn.Linear)] == [32, 10]
    bn = ChainSpace(batch_norm=True).build(arch, synthetic_task((1, 8, 8)))
    # conv 1, residual block 2 + 1 in its projection, conv 1
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()) == 5
    with torch.no_grad():
        assert bn.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("dim, size", [(1, 12), (2, 7)])
def test_residual_block_shapes(dim, size):
    x = torch.randn(2, 4, *(size,) * dim)
    same = ResidualBlock(dim, 4, 4)
    assert isinstance(same.shortcut, torch.nn.Identity)
    assert same(x).shape == x.shape
    wider = ResidualBlock(dim, 4, 8)
    assert not isinstance(wider.shortcut, torch.nn.Identity)
    assert wider(x).shape == (2, 8, *(size,) * dim)
    strided = ResidualBlock(dim, 4, 4, stride=2, use_batch_norm=True)
    assert strided(x).shape == (2, 4, *((size + 1) // 2,) * dim)
    assert ConvBNReLU(dim, 4, 6, 3, 2, 1)(x).shape == (2, 6, *((size + 1) // 2,) * dim)


# -- options ---------------------------------------------------------------------------------------


def test_registry_options_round_trip_and_validation():
    space = registry.create("spaces", "chain", input_size=28, features=[16, 32, 64], max_conv=5)
    assert isinstance(space, ChainSpace) and space.name == "chain"
    opts = space.options()
    assert opts["features"] == [16, 32, 64] and opts["input_size"] == 28
    assert ChainSpace(**opts).options() == opts
    assert registry.create("spaces", "chain", **opts).options() == opts
    with pytest.raises(ConfigError, match="kernels"):
        registry.create("spaces", "chain", kernels="three")
    with pytest.raises(ConfigError, match="min_conv = 6 exceeds max_conv = 5"):
        ChainSpace(min_conv=6, max_conv=5)
    with pytest.raises(ConfigError, match="pool_sizes.*1 is not an integer >= 2"):
        ChainSpace(pool_sizes=(1, 2))
    with pytest.raises(ConfigError, match="input_shape"):
        ChainSpace(input_shape=(1, 2, 3, 4))
    with pytest.raises(ConfigError, match="input_size = 28 disagrees with input_shape"):
        ChainSpace(input_size=28, input_shape=(1, 8, 8))


def test_for_task_and_pickling():
    task = synthetic_task((1, 40), classes=5)
    space = ChainSpace.for_task(task, features=(4, 8))
    assert (space.input_size, space.num_classes, space.kinds) == (40, 5, ("series",))
    assert space.options()["input_shape"] == [1, 40]
    assert registry.create("spaces", "chain", **space.options()).options() == space.options()
    arch = space.sample(np.random.default_rng(1))
    clone = pickle.loads(pickle.dumps(space))
    assert clone.options() == space.options()
    assert clone.sample(np.random.default_rng(1)) == arch
    assert clone.to_decisions(arch)[-1] == ("SM", 5)
