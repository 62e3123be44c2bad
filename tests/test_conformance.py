"""Conformance suite: every registered space and strategy passes the same checks.

Spaces: text round trip, decisions round trip, ``choices`` consistent with ``sample``, mutation
stays in the space, built networks give one logit per class, and the features learned models read:
``encode`` (fixed length; equal archs -> equal vectors, different -> different) and ``graph`` (a DAG
from inputs to outputs over the space's operation vocabulary, equally discriminating). Strategies: ask/tell on a cheap
functional score (no training), tolerance of failed trials, same seed -> same architectures, and
a ``state_dict`` saved with ``torch.save`` and loaded with ``weights_only=True`` continues exactly
like an uninterrupted strategy. A new plug-in is checked the moment it is registered.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import torch

from nasforge import registry
from nasforge.core import Objective, SearchSpace, Task, Trial, TrialResult
from nasforge.testing import ToySpace

SPACES = registry.available("spaces")
STRATEGIES = registry.available("strategies")


def synthetic_task(kind: str, shape: tuple[int, ...], classes: int = 10, n: int = 16) -> Task:
    """Random tensors of the right shape (generated data: these tests only check shapes)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return Task(name=f"synthetic-{kind}", kind=kind, input_shape=shape, num_classes=classes,  # type: ignore[arg-type]
                train=(x, y), val=(x, y), test=(x, y))


def tasks_for(space: SearchSpace) -> list[Task]:
    kinds = getattr(space, "kinds", ("image",))
    out = []
    if "image" in kinds:
        out.append(synthetic_task("image", (1, 8, 8)))
    if "series" in kinds:
        out.append(synthetic_task("series", (1, 40)))
    return out


def make_space(name: str) -> SearchSpace:
    return registry.create("spaces", name)


def score(arch) -> float:
    """A cheap deterministic stand-in for accuracy, in [0, 1]."""
    return (zlib.crc32(str(arch).encode()) % 10_000) / 10_000


# -- spaces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPACES)
def test_space_text_and_decision_round_trip(name):
    space = make_space(name)
    rng = np.random.default_rng(0)
    for _ in range(25):
        arch = space.sample(rng)
        text = str(arch)
        assert space.parse(text) == arch
        assert str(space.parse(text)) == text
        assert hash(space.parse(text)) == hash(arch)
        decisions = space.to_decisions(arch)
        assert space.from_decisions(decisions) == arch


@pytest.mark.parametrize("name", SPACES)
def test_space_choices_consistent_with_sample(name):
    space = make_space(name)
    rng = np.random.default_rng(1)
    for _ in range(25):
        arch = space.sample(rng)
        decisions = list(space.to_decisions(arch))
        for i, d in enumerate(decisions):
            assert d in space.choices(decisions[:i]), f"decision {i} ({d!r}) not offered"
            hash(space.state_key(decisions[:i]))
        assert space.choices(decisions) == []


@pytest.mark.parametrize("name", SPACES)
def test_space_mutate_stays_in_space(name):
    space = make_space(name)
    rng = np.random.default_rng(2)
    for _ in range(15):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert child != arch
        assert space.parse(str(child)) == child


@pytest.mark.parametrize("name", SPACES)
def test_space_sampling_is_seeded(name):
    space = make_space(name)
    a = [str(space.sample(np.random.default_rng(7))) for _ in range(3)]
    b = [str(space.sample(np.random.default_rng(7))) for _ in range(3)]
    assert a == b


@pytest.mark.parametrize("name", SPACES)
def test_space_builds_networks(name):
    space = make_space(name)
    rng = np.random.default_rng(3)
    for task in tasks_for(space):
        for _ in range(3):
            arch = space.sample(rng)
            net = space.build(arch, task)
            assert hasattr(net, "encoder") and hasattr(net, "head")
            with torch.no_grad():
                out = net.eval()(task.train[0][:4])
            assert out.shape == (4, task.num_classes)


# -- features for learned models: encode / graph ------------------------------------------------

FEATURE_SPACES = [*SPACES, "toy"]


def feature_space(name: str) -> SearchSpace:
    return ToySpace() if name == "toy" else make_space(name)


def distinct_sample(space: SearchSpace, n: int, seed: int) -> list:
    """Up to ``n`` distinct architectures: samples and their mutants (near neighbours differ least)."""
    rng = np.random.default_rng(seed)
    archs: dict[str, object] = {}
    for _ in range(n):
        a = space.sample(rng)
        for b in (a, space.mutate(a, rng)):
            archs.setdefault(str(b), b)
    return list(archs.values())


@pytest.mark.parametrize("name", FEATURE_SPACES)
def test_space_encode_is_fixed_length_and_identifies_archs(name):
    space = feature_space(name)
    archs = distinct_sample(space, 30, seed=4)
    assert len(archs) > 20
    size = space.encoding_size
    assert isinstance(size, int) and size > 0
    vectors = {}
    for arch in archs:
        v = space.encode(arch)
        assert isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (size,)
        assert np.isfinite(v).all()
        again = space.encode(space.parse(str(arch)))  # an equal, separately built architecture
        assert np.array_equal(v, again)
        vectors[v.tobytes()] = str(arch)
    assert len(vectors) == len(archs), "two different architectures share an encoding"


@pytest.mark.parametrize("name", FEATURE_SPACES)
def test_space_graph_is_a_dag_that_identifies_archs(name):
    from nasforge.graph import ArchGraph

    space = feature_space(name)
    vocab = space.op_vocab
    assert len(set(vocab)) == len(vocab)
    archs = distinct_sample(space, 30, seed=5)
    graphs = {}
    for arch in archs:
        g = space.graph(arch)
        assert isinstance(g, ArchGraph)
        assert g == space.graph(space.parse(str(arch))) and hash(g) == hash(space.graph(arch))
        assert ArchGraph.from_dict(g.to_dict()) == g
        assert all(s < d for s, d in g.edges)  # numbered in topological order, so acyclic
        assert g.inputs and g.outputs
        assert all(not g.predecessors(i) for i in g.inputs)
        reach = g.reachable_from(g.inputs)
        assert g.connected() and set(g.outputs) <= reach
        assert reach == set(range(g.num_nodes)), "a node no input reaches"
        onehot = g.one_hot(vocab)  # every label is in the space's vocabulary
        assert onehot.shape == (g.num_nodes, len(vocab)) and (onehot.sum(1) == 1).all()
        assert len(g.attrs) == g.num_nodes
        graphs[g.key()] = str(arch)
    assert len(graphs) == len(archs), "two different architectures share a graph"


# -- strategies -----------------------------------------------------------------------------------


def toy_result(arch, fail_every: int = 0, index: int = 0) -> TrialResult:
    if fail_every and index % fail_every == fail_every - 1:
        return TrialResult.failed("simulated failure")
    return TrialResult(metrics={"val_acc": score(arch)})


def drive(strategy, space, n_trials: int, *, batch: int = 1, start: int = 0, fail_every: int = 3):
    """Ask/tell loop with a functional evaluator; returns the architectures asked."""
    asked = []
    i = start
    while i < start + n_trials:
        archs = strategy.ask(batch)
        assert len(archs) == batch
        trials = []
        for arch in archs:
            assert space.choices(list(space.to_decisions(arch))) == []  # complete
            trials.append(Trial(id=i, arch=arch, result=toy_result(arch, fail_every, i)))
            asked.append(str(arch))
            i += 1
        strategy.tell(trials)
    return asked


#: strategies that need a space hook the toy space lacks: the space they are checked on, and
#: options that keep their predictors quick (the checks are about ask/tell, not learning)
HOOKED_SPACES = {
    "progressive": lambda: registry.create("spaces", "cell", blocks=3,
                                           operators=["identity", "3x3 conv"]),
}
QUICK_OPTIONS = {"progressive": {"beam": 6, "exploration": 2,
                                 "predictor_options": {"members": 1, "epochs": 3}}}


def strategy_space(name: str) -> SearchSpace:
    return HOOKED_SPACES[name]() if name in HOOKED_SPACES else ToySpace()


def make_strategy(name: str, seed: int, space: SearchSpace, budget: int = 40):
    strategy = registry.create("strategies", name, seed=seed, **QUICK_OPTIONS.get(name, {}))
    strategy.setup(space, Objective("val_acc", "max"), budget=budget)
    return strategy


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_ask_tell_with_failures(name):
    space = strategy_space(name)
    strategy = make_strategy(name, 0, space)
    asked = drive(strategy, space, 30)
    assert len(asked) == 30
    assert all(space.parse(a) == space.parse(a) for a in asked)
    assert isinstance(strategy.info(), dict)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_batched_ask(name):
    space = strategy_space(name)
    strategy = make_strategy(name, 0, space)
    assert len(drive(strategy, space, 24, batch=4)) == 24


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_same_seed_same_architectures(name):
    space = strategy_space(name)
    a = drive(make_strategy(name, 5, space), space, 30)
    b = drive(make_strategy(name, 5, space), space, 30)
    c = drive(make_strategy(name, 6, space), space, 30)
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_state_round_trip_continues_exactly(name):
    space = strategy_space(name)
    full = drive(make_strategy(name, 3, space), space, 40)

    first = make_strategy(name, 3, space)
    part1 = drive(first, space, 20)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    second = make_strategy(name, 3, space)
    second.load_state_dict(state)
    part2 = drive(second, space, 20, start=20)
    assert part1 + part2 == full
