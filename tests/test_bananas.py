"""``bananas`` and ``predictor_evolution`` (model-based strategies), the ``mlp_batched`` ensemble
and the path encoding they read.

Search quality is checked on a generated NB201-shaped table (``make_nb201_table``: accuracies that
depend on the cell's operations, plus noise) because the committed real slice covers only 300 of
the 15,625 cells; the predictor is checked on the real slice (tests/data/nb201_slice.csv).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from nasforge import registry
from nasforge.bench_tables import make_nb201_table
from nasforge.core import Objective, Trial, TrialResult
from nasforge.errors import ArchitectureError, ConfigError
from nasforge.evaluators.table import TableEvaluator
from nasforge.graph import PathFeatures, encode_paths, path_features
from nasforge.predictors import kendall_tau
from nasforge.spaces.nb201 import NB201Space
from nasforge.testing import ToySpace

SLICE = Path(__file__).parent / "data" / "nb201_slice.csv"
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
FAST = {"epochs": 40, "retrain_every": 8, "initial": 8}  # small models: these tests stay quick


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = make_nb201_table(tmp_path_factory.mktemp("nb201") / "nb201.csv", seed=0)
    return TableEvaluator(path=str(path), search_metric="cifar10-val", report_metric="cifar10-test")


def make(name, seed, space, metric="cifar10-val", **options):
    s = registry.create("strategies", name, seed=seed, **options)
    s.setup(space, Objective(metric), budget=100)
    return s


def drive(strategy, evaluate, n, *, batch=1, start=0):
    done, i = [], start
    while i < start + n:
        told = []
        for arch in strategy.ask(min(batch, start + n - i)):
            told.append(Trial(i, arch, evaluate(arch, i), seed=i))
            i += 1
        strategy.tell(told)
        done += told
    return done


# -- path encoding ----------------------------------------------------------------------------------


def test_nb201_path_encoding_counts_each_op_sequence():
    space = NB201Space()
    pf = path_features(space)
    assert pf.labels == ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert pf.max_length == 3 and pf.size == 4 + 16 + 64 + 1
    arch = space.parse(CELL)
    assert sorted(pf.paths(space.graph(arch))) == sorted([
        ("skip_connect",), ("nor_conv_3x3", "nor_conv_3x3"), ("nor_conv_3x3", "skip_connect"),
        ("nor_conv_3x3", "avg_pool_3x3", "skip_connect")])
    v = encode_paths(space, arch)
    # skip -> column 0; (conv3, conv3) -> 4 + 2*4 + 2; (conv3, skip) -> 4 + 2*4 + 0;
    # (conv3, pool, skip) -> 20 + 2*16 + 3*4 + 0
    assert np.flatnonzero(v).tolist() == [0, 12, 14, 64] and v.sum() == 4


def test_path_encoding_drops_dead_paths_and_refuses_huge_spaces():
    space = NB201Space()
    dead = space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert encode_paths(space, dead).sum() == 0
    # the same live paths, different dead edges: equal vectors (what the cell computes)
    a = space.parse("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")
    b = space.parse("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|skip_connect~1|none~2|")
    assert np.array_equal(encode_paths(space, a), encode_paths(space, b))
    with pytest.raises(ArchitectureError, match="path encoding"):
        PathFeatures(registry.create("spaces", "chain"), max_length=12)


# -- the batched ensemble ----------------------------------------------------------------------------


def _slice():
    with open(SLICE) as f:
        rows = list(csv.DictReader(f))
    space = NB201Space()
    return space, [space.parse(r["arch"]) for r in rows], np.array([float(r["cifar100-val"]) for r in rows])


def test_batched_ensemble_ranks_the_real_slice():
    space, archs, y = _slice()
    p = registry.create("predictors", "mlp_batched", seed=0, epochs=50)
    p.fit(archs[:200], y[:200], space)
    mean, std = p.predict(archs[200:], return_std=True)
    assert mean.shape == std.shape == (100,) and (std >= 0).all() and std.max() > 0
    assert kendall_tau(mean, y[200:]) > 0.45  # one-hot MLPs and GIN reach about 0.5 here
    again = registry.create("predictors", "mlp_batched", seed=0, epochs=50).fit(archs[:200], y[:200], space)
    assert np.array_equal(again.predict(archs[200:]), mean)  # same seed, same model


def test_bootstrap_members_disagree_more_on_the_examples():
    space, archs, y = _slice()
    plain = registry.create("predictors", "mlp_batched", seed=1, epochs=40).fit(archs[:60], y[:60], space)
    boot = registry.create("predictors", "mlp_batched", seed=1, epochs=40,
                           bootstrap=True).fit(archs[:60], y[:60], space)
    # members fit different resamples, so they spread on the very examples they were fitted on
    assert boot.predict(archs[:60], return_std=True)[1].mean() > \
        1.5 * plain.predict(archs[:60], return_std=True)[1].mean()


def test_batched_ensemble_options_are_checked():
    with pytest.raises(ConfigError, match="encoding = 'paths'"):
        registry.create("predictors", "mlp_batched", encoding="paths")
    with pytest.raises(ConfigError, match="members"):
        registry.create("predictors", "mlp_batched", members=0)


# -- strategies -----------------------------------------------------------------------------------------


class StubModel:
    """A predictor whose mean is a fixed function of the architecture text (std 0)."""

    def __init__(self, score):
        self.score = score

    def features(self, archs, space):
        return np.array([[self.score(str(a))] for a in archs])

    def predict_features(self, x):
        return x[:, 0].astype(float), np.zeros(len(x))


@pytest.mark.parametrize("acquisition", ["its", "ucb", "mean"])
def test_acquisition_picks_the_argmax_of_a_stub_predictor(acquisition):
    space = NB201Space()
    s = make("bananas", 0, space, acquisition=acquisition)
    pool = [space.sample(np.random.default_rng(i)) for i in range(50)]
    best = max(pool, key=lambda a: a.ops.count("nor_conv_3x3") * 10 + len(str(a)) % 7)
    s.model = StubModel(lambda t: t.count("nor_conv_3x3") * 10 + len(t) % 7)
    assert s._acquire(pool, 1) == [best]
    # through ask: the stub ranks every candidate, the strategy asks its argmax among the unseen
    s._model_ready = lambda: True
    s.tell([Trial(i, a, TrialResult(metrics={"cifar10-val": float(i)})) for i, a in enumerate(pool[:10])])
    s.model = StubModel(lambda t: t.count("nor_conv_3x3") * 10 + len(t) % 7)
    state = s.state_dict()
    pool2 = s._pool()
    s.load_state_dict(state)  # back to the rng position before the pool: the same pool again
    s.model = StubModel(lambda t: t.count("nor_conv_3x3") * 10 + len(t) % 7)
    s._model_ready = lambda: True
    asked = s.ask(1)[0]
    assert str(asked) == str(max(pool2, key=lambda a: s.model.score(str(a))))
    assert str(asked) not in {str(a) for a in pool[:10]}


@pytest.mark.parametrize("canonical", [True, False])
def test_local_pool_asks_exactly_the_unasked_neighbours_of_the_best(canonical):
    space = NB201Space()
    s = make("bananas", 3, space, metric="score", pool="local", canonical=canonical, **FAST)
    start = [space.sample(np.random.default_rng(100 + i)) for i in range(12)]
    s.tell([Trial(i, a, TrialResult(metrics={"score": float(i)})) for i, a in enumerate(start)])
    best, second = start[-1], start[-2]
    key = space.canonical_key if canonical else str
    told = {key(a) for a in start}
    expected = set()
    for a in space.neighbours(best):
        if key(a) not in told:
            expected.add(key(a))
    assert 0 < len(expected) <= 24
    s._model_ready = lambda: True
    s.model = StubModel(lambda t: t.count("nor_conv_3x3") + len(t) % 5)
    asked = []
    for i in range(len(expected)):
        arch = s.ask(1)[0]
        asked.append(key(arch))
        s.tell([Trial(12 + i, arch, TrialResult(metrics={"score": -1.0 - i}))])  # no new best
    # every unasked neighbour of the best once (one per class with canonical), nothing else
    assert len(asked) == len(set(asked)) and set(asked) == expected
    # the best's neighbourhood is done: the next ask is an unasked neighbour of the second best
    nxt = s.ask(1)[0]
    assert key(nxt) not in told | expected
    assert sum(x != y for x, y in zip(nxt.ops, second.ops)) == 1


@pytest.mark.parametrize("name", ["bananas", "predictor_evolution"])
def test_tail_asks_the_incumbents_unasked_neighbours_in_acquisition_order(name):
    space = NB201Space()
    s = registry.create("strategies", name, seed=3, tail=5, **FAST)
    s.setup(space, Objective("score"), budget=12 + 4 + 3)  # the last 5 asks are the tail
    start = [space.sample(np.random.default_rng(100 + i)) for i in range(12)]
    s.tell([Trial(i, a, TrialResult(metrics={"score": float(i)})) for i, a in enumerate(start)])
    best = start[-1]
    score = lambda t: t.count("nor_conv_3x3") * 3 + t.count("skip_connect") + len(t) % 5  # noqa: E731
    s._model_ready = lambda: True
    s.model = StubModel(score)
    key = space.canonical_key

    def expected(excluded, k):
        """The k unasked neighbours of ``best`` (one per class, first listed) that score highest
        (listing order breaks ties), as the acquisition orders them."""
        fresh, seen = [], set(excluded)
        for a in space.neighbours(best):
            if key(a) not in seen:
                seen.add(key(a))
                fresh.append(a)
        return [str(a) for a in sorted(fresh, key=lambda a: -score(str(a)))[:k]]

    told = {key(a) for a in start}
    batch = s.ask(4)  # straddles the tail's start: 2 asks before it, 2 in it
    assert s.info()["phase"] == "tail"
    assert [str(a) for a in batch[2:]] == expected(told | {key(a) for a in batch[:2]}, 2)
    s.tell([Trial(12 + i, a, TrialResult(metrics={"score": -1.0 - i})) for i, a in enumerate(batch)])
    told |= {key(a) for a in batch}
    rest = []
    for i in range(3):  # one at a time: still the best's neighbours, next in acquisition order
        arch = s.ask(1)[0]
        rest.append(str(arch))
        s.tell([Trial(16 + i, arch, TrialResult(metrics={"score": -10.0 - i}))])
    assert rest == expected(told, 3)


def phased_run(table, n, **options):
    """``bananas`` (seed 4) on the structured table for a budget of ``n``: trials and phases."""
    space = NB201Space()
    s = registry.create("strategies", "bananas", seed=4, **options, **FAST)
    s.setup(space, Objective("cifar10-val"), budget=n)
    done, phases = [], []
    for i in range(n):
        arch = s.ask(1)[0]
        phases.append(s.info()["phase"])
        done.append(Trial(i, arch, table.evaluate(arch, None, None, seed=i), seed=i))
        s.tell(done[-1:])
    return done, phases


def test_tail_leaves_the_asks_before_it_unchanged(table):
    runs = {}
    for tail in (0, 6):
        done, phases = phased_run(table, 30, tail=tail)
        if tail:  # each tail ask: one edit from the best so far
            for i in range(24, 30):
                top = max(done[:i], key=lambda t: t.metrics["cifar10-val"]).arch
                assert sum(x != y for x, y in zip(done[i].arch.ops, top.ops)) == 1
        runs[tail] = ([str(t.arch) for t in done], phases)
    assert runs[0][0][:24] == runs[6][0][:24]  # the paper's search up to the tail
    assert runs[6][1][24:] == ["tail"] * 6 and "tail" not in runs[0][1]
    assert runs[0][0][24:] != runs[6][0][24:]


class SpreadStub(StubModel):
    """A stub with a fixed std per architecture (so the Thompson draw has something to scale)."""

    def predict_features(self, x):
        return x[:, 0].astype(float), np.full(len(x), 3.0)


@pytest.mark.parametrize("name", ["bananas", "predictor_evolution"])
def test_spread_scales_the_thompson_draw(name):
    space = NB201Space()
    pool = [space.sample(np.random.default_rng(i)) for i in range(40)]
    score = lambda t: float(t.count("nor_conv_3x3"))  # noqa: E731
    mean = np.array([score(str(a)) for a in pool])
    picks = {}
    for spread in (1.0, 2.5):
        s = make(name, 11, space, spread=spread, **FAST)
        s.model = SpreadStub(score)
        draw = np.random.default_rng(0)
        draw.bit_generator.state = s.rng.bit_generator.state  # the draw the strategy will make
        expected = mean + spread * 3.0 * draw.standard_normal(len(pool))
        picks[spread] = [str(a) for a in s._acquire(pool, 5)]
        assert picks[spread] == [str(pool[i]) for i in np.argsort(-expected, kind="stable")[:5]]
    assert picks[1.0] != picks[2.5]
    s = make(name, 11, space, spread=2.5, acquisition="ucb", **FAST)  # only Thompson reads it
    s.model = SpreadStub(score)
    ucb = make(name, 11, space, acquisition="ucb", **FAST)
    ucb.model = SpreadStub(score)
    assert s._acquire(pool, 5) == ucb._acquire(pool, 5)


def edits(a, b):
    return sum(x != y for x, y in zip(a.ops, b.ops))


@pytest.mark.parametrize("name", ["bananas", "predictor_evolution"])
def test_escape_asks_far_cells_while_the_best_is_stagnant(name):
    space = NB201Space()
    start = [space.sample(np.random.default_rng(200 + i)) for i in range(12)]
    score = lambda t: t.count("nor_conv_3x3") * 3 + t.count("skip_connect") + len(t) % 5  # noqa: E731
    runs = {}
    for escape in (0, 4):
        s = make(name, 3, space, metric="score", escape=escape, **FAST)
        # the best comes first: 11 successes since it, stagnant for escape=4 from the start
        s.tell([Trial(i, a, TrialResult(metrics={"score": 100.0 if i == 0 else float(i)}))
                for i, a in enumerate(start)])
        s._model_ready = lambda: True
        s.model = StubModel(score)
        asked, phases = [], []
        for i in range(6):
            arch = s.ask(1)[0]
            asked.append(arch)
            phases.append(s.info()["phase"])
            s.tell([Trial(12 + i, arch, TrialResult(metrics={"score": -1.0 - i}))])
        runs[escape] = (asked, phases)
        # the best improves: the usual pool again
        arch = s.ask(1)[0]
        s.tell([Trial(18, arch, TrialResult(metrics={"score": 1000.0}))])
        s.ask(1)
        assert s.info()["phase"] == "model"
    assert runs[0][1] == ["model"] * 6 and runs[4][1] == ["escape"] * 6
    if name == "bananas":  # the stub's best of the usual pool is a neighbour of a top parent
        tops = [start[0], start[-1]]  # the two best told
        assert any(min(edits(a, t) for t in tops) == 1 for a in runs[0][0])
        # the escape pool: no one-edit neighbour of the parents, except a random sample's chance
        s = make(name, 3, space, metric="score", escape=4, **FAST)
        s.tell([Trial(i, a, TrialResult(metrics={"score": 100.0 if i == 0 else float(i)}))
                for i, a in enumerate(start)])
        far = [a for a in s._pool() if min(edits(a, t) for t in tops) >= 2]
        assert len(far) >= 0.9 * len(s._pool()) and len(far) > 50
    else:  # each child is a 2-3-edit mutation of a population member
        for a in runs[4][0]:
            assert min(edits(a, m) for m in start) >= 2
            assert any(edits(a, m) in (2, 3) for m in start)
    assert all(edits(a, start[0]) >= 2 for a in runs[4][0])  # none next to the stuck best


@pytest.mark.parametrize("name", ["bananas", "predictor_evolution"])
def test_escape_mode_add_keeps_the_usual_pool_and_adds_far_cells(name):
    space = NB201Space()
    start = [space.sample(np.random.default_rng(300 + i)) for i in range(12)]
    told = [Trial(i, a, TrialResult(metrics={"score": 100.0 if i == 0 else float(i)}))
            for i, a in enumerate(start)]
    pools = {}
    for options in ({}, {"escape": 4, "escape_mode": "add"}):
        s = make(name, 5, space, metric="score", **options, **FAST)
        s.tell(told)
        if name == "bananas":
            pools[len(options)] = [str(a) for a in s._pool()]
        else:  # the candidates the acquisition sees: capture them
            seen = []
            s._model_ready = lambda: True
            s._acquire = lambda pool, n, seen=seen: seen.extend(map(str, pool)) or pool[:n]
            s.ask(1)
            assert s.info()["phase"] == ("escape" if options else "model")
            pools[len(options)] = seen
    usual, added = pools[0], pools[2]
    assert added[:len(usual)] == usual  # the usual pool first, drawn from the same rng state
    extra = [space.parse(t) for t in added[len(usual):]]
    parents = [start[0], start[-1]] if name == "bananas" else start
    assert len(extra) >= (15 if name == "bananas" else 5)  # 100 or 20 far tries, less repeats
    assert all(min(edits(a, p) for p in parents) >= 1 for a in extra)
    if name == "bananas":
        assert all(min(edits(a, p) for p in parents) >= 2 for a in extra)


def test_far_mutations_are_two_or_three_edits_away():
    space = NB201Space()
    s = make("bananas", 0, space, escape=5, **FAST)
    parent = space.parse(CELL)
    far = s._far_mutations(parent, 200)
    assert 150 < len(far) <= 200  # the tries that fell back to one edit or the parent dropped
    assert {edits(a, parent) for a in far} == {2, 3}


def test_escape_leaves_the_asks_before_the_first_stagnation_unchanged(table):
    runs = {}
    for escape in (0, 5):
        done, phases = phased_run(table, 40, escape=escape)
        runs[escape] = ([str(t.arch) for t in done], phases)
    first = runs[5][1].index("escape")  # this seed stagnates within 40 asks
    assert "escape" not in runs[0][1]
    assert runs[0][0][:first] == runs[5][0][:first]
    assert runs[0][0][first:] != runs[5][0][first:]


def test_local_pool_is_the_mixed_pool_on_a_space_without_neighbour_lists():
    space = ToySpace()  # lists no neighbours: "local" has nothing of its own to offer
    told = [Trial(i, space.sample(np.random.default_rng(i)), TrialResult(metrics={"score": float(i)}))
            for i in range(10)]
    pools = []
    for pool in ("local", "mixed"):
        s = make("bananas", 7, space, metric="score", pool=pool, **FAST)
        s.tell(told)
        pools.append([str(a) for a in s._pool()])
    assert pools[0] == pools[1] and len(pools[0]) > 10


def test_bananas_beats_random_on_the_structured_table(table):
    space = NB201Space()
    evaluate = lambda arch, i: table.evaluate(arch, None, None, seed=i)  # noqa: E731

    def best(name, seed, **opts):
        return max(t.metrics["cifar10-val"] for t in drive(make(name, seed, space, **opts), evaluate, 40))

    seeds = range(3)
    bananas = np.mean([best("bananas", s, **FAST) for s in seeds])
    rand = np.mean([best("random", s) for s in seeds])
    assert bananas > rand + 0.5, (bananas, rand)


@pytest.mark.parametrize("name, options", [("bananas", {}), ("bananas", {"pool": "local"}),
                                           ("bananas", {"tail": 75, "tail_retrain_every": 1}),
                                           ("bananas", {"escape": 3, "spread": 2.0}),
                                           ("bananas", {"escape": 3, "escape_mode": "add"}),
                                           ("predictor_evolution", {}),
                                           ("predictor_evolution", {"tail": 75}),
                                           ("predictor_evolution", {"escape": 3, "spread": 2.0}),
                                           ("predictor_evolution", {"escape": 3, "escape_mode": "add"})])
def test_state_round_trip_continues_exactly_with_failures(name, options, table):
    space = NB201Space()

    def evaluate(arch, i):
        return TrialResult.failed("boom") if i % 7 == 3 else table.evaluate(arch, None, None, seed=i)

    a = make(name, 5, space, **FAST, **options)
    first = drive(a, evaluate, 17, batch=3)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = registry.create("strategies", name, seed=999, **FAST, **options)  # state before setup
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    b.setup(space, Objective("cifar10-val"), budget=100)
    rest_a = [str(t.arch) for t in drive(a, evaluate, 13, batch=2, start=17)]
    rest_b = [str(t.arch) for t in drive(b, evaluate, 13, batch=2, start=17)]
    assert rest_a == rest_b
    assert a.fits >= 2  # the model was refitted after the resume point too
    every = [str(t.arch) for t in first] + rest_a
    assert len(set(every)) == len(every)  # never asks an architecture twice


def test_predictor_evolution_children_are_mutations_of_the_population():
    space = NB201Space()
    s = make("predictor_evolution", 1, space, metric="score", **FAST)
    score = lambda a: float(sum(op == "nor_conv_3x3" for op in a.ops))  # noqa: E731
    for i in range(30):
        arch = s.ask(1)[0]
        members = {str(m) for m, _ in s.population}
        if s.info()["phase"] == "model":
            assert any(sum(x != y for x, y in zip(arch.ops, space.parse(m).ops)) == 1
                       for m in members)
        s.tell([Trial(i, arch, TrialResult(metrics={"score": score(arch)}))])
    assert s.fits >= 2


def test_options_are_checked():
    with pytest.raises(ConfigError, match="acquisition='thompson'"):
        registry.create("strategies", "bananas", acquisition="thompson")
    with pytest.raises(ConfigError, match="pool='near'"):
        registry.create("strategies", "bananas", pool="near")
    with pytest.raises(ConfigError, match="retrain_every=0"):
        registry.create("strategies", "bananas", retrain_every=0)
    with pytest.raises(ConfigError, match="tail=-1"):
        registry.create("strategies", "bananas", tail=-1)
    with pytest.raises(ConfigError, match="tail_retrain_every=0"):
        registry.create("strategies", "predictor_evolution", tail=5, tail_retrain_every=0)
    with pytest.raises(ConfigError, match="escape=-2"):
        registry.create("strategies", "bananas", escape=-2)
    with pytest.raises(ConfigError, match="escape_mode='swap'"):
        registry.create("strategies", "predictor_evolution", escape_mode="swap")
    with pytest.raises(ConfigError, match="spread=0"):
        registry.create("strategies", "predictor_evolution", spread=0)
    with pytest.raises(ConfigError, match="'spread' = 'wide'"):
        registry.create("strategies", "bananas", spread="wide")
    with pytest.raises(ConfigError, match="sample_size=9"):
        registry.create("strategies", "predictor_evolution", population_size=5, sample_size=9)


@pytest.mark.parametrize("name", ["bananas", "predictor_evolution"])
def test_crash_mid_batch_then_resume_through_the_store_equals_uninterrupted(tmp_path, name):
    # the run loop's own crash/resume check (tests/test_run.py), with this strategy
    from test_run import test_resume_after_crash_equals_uninterrupted as check

    check(tmp_path, name)


def test_runs_on_a_space_with_default_features():
    space = ToySpace()
    s = make("bananas", 0, space, metric="score", **FAST)
    done = drive(s, lambda a, i: TrialResult(metrics={"score": float(sum(a.values))}), 25, batch=2)
    assert len(done) == 25 and s.fits >= 1
