"""Random search, regularized evolution, local search and REINFORCE on NB201 tables and a toy space."""

import io

import numpy as np
import pytest
import torch

from nasforge import registry
from nasforge.bench_tables import make_nb201_table
from nasforge.core import Objective, SearchSpace, Trial, TrialResult
from nasforge.errors import ArchitectureError, ConfigError
from nasforge.evaluators.table import TableEvaluator
from nasforge.spaces.nb201 import NB201Space
from nasforge.testing import ToyArch

STRATEGIES = ["random", "evolution", "local", "reinforce"]


class ToySpace(SearchSpace):
    """Strictly increasing sequences from 1..5 closed by 'stop'; choices depend on the prefix."""

    name = "toy"

    def choices(self, prefix):
        if prefix and prefix[-1] == "stop":
            return []
        if not prefix:
            return [1, 2, 3]
        last = prefix[-1]
        bigger = [] if len(prefix) >= 4 else [x for x in range(last + 1, 6)]
        return bigger + ["stop"]

    def to_decisions(self, arch):
        return arch.values

    def from_decisions(self, decisions):
        return ToyArch(tuple(decisions))

    def parse(self, text):
        parts = text.split("-")
        try:
            decisions = tuple(p if p == "stop" else int(p) for p in parts)
        except ValueError:
            raise ArchitectureError(f"toy: bad text {text!r}") from None
        return ToyArch(decisions)

    def build(self, arch, task):
        raise NotImplementedError

    def valid(self, arch) -> bool:
        d = arch.values
        return bool(d) and all(d[i] in self.choices(d[:i]) for i in range(len(d))) and not self.choices(d)


def toy_score(arch: ToyArch) -> float:
    nums = [d for d in arch.values if d != "stop"]
    return float(sum(nums) - 0.5 * len(nums))


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = make_nb201_table(tmp_path_factory.mktemp("nb201") / "nb201.csv", seed=0)
    return TableEvaluator(path=str(path), search_metric="cifar10-val", report_metric="cifar10-test")


def make(name, seed, space, metric="score", **options):
    strategy = registry.create("strategies", name, seed=seed, **options)
    strategy.setup(space, Objective(metric), budget=100)
    return strategy


def drive(strategy, evaluate, trials, *, batch=1, start=0):
    """A minimal ask/tell loop; returns the trials in order."""
    done = []
    i = start
    while i < start + trials:
        archs = strategy.ask(min(batch, start + trials - i))
        told = []
        for arch in archs:
            told.append(Trial(i, arch, evaluate(arch, i), seed=i))
            i += 1
        strategy.tell(told)
        done += told
    return done


def toy_eval(fail_every=0):
    def evaluate(arch, i):
        if fail_every and i % fail_every == fail_every - 1:
            return TrialResult.failed("simulated crash")
        return TrialResult(metrics={"score": toy_score(arch)})
    return evaluate


def table_eval(table):
    return lambda arch, i: table.evaluate(arch, None, None, seed=i)


# -- search quality -------------------------------------------------------------------------------


def test_every_strategy_beats_random_on_the_structured_table(table):
    space = NB201Space()
    seeds = range(6)

    def best(name, seed, **options):
        s = make(name, seed, space, "cifar10-val", **options)
        return max(t.metrics["cifar10-val"] for t in drive(s, table_eval(table), 100))

    random_mean = np.mean([best("random", s) for s in seeds])
    for name in ("evolution", "local", "reinforce"):
        mean = np.mean([best(name, s) for s in seeds])
        assert mean > random_mean + 0.3, f"{name}: {mean:.2f} vs random {random_mean:.2f}"


# -- determinism and state -----------------------------------------------------------------------


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("where", ["nb201", "toy"])
def test_state_round_trip_continues_exactly(name, where, table):
    space = NB201Space() if where == "nb201" else ToySpace()
    metric = "cifar10-val" if where == "nb201" else "score"
    base = table_eval(table) if where == "nb201" else toy_eval()

    def evaluate(arch, i):  # some failures, so failed trials are in the saved state too
        return TrialResult.failed("boom") if i % 7 == 3 else base(arch, i)

    a = make(name, 5, space, metric)
    drive(a, evaluate, 17, batch=3)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = make(name, 999, space, metric)  # another seed: everything must come from the state
    b.load_state_dict(state)
    rest_a = [str(t.arch) for t in drive(a, evaluate, 20, batch=2, start=17)]
    rest_b = [str(t.arch) for t in drive(b, evaluate, 20, batch=2, start=17)]
    assert rest_a == rest_b
    c = make(name, 5, space, metric)  # same seed, same sequence from the start
    first_c = [str(t.arch) for t in drive(c, evaluate, 17, batch=3)]
    d = make(name, 5, space, metric)
    assert first_c == [str(t.arch) for t in drive(d, evaluate, 17, batch=3)]


@pytest.mark.parametrize("name", ["evolution", "local"])
def test_state_may_be_loaded_before_setup(name):
    a = make(name, 1, ToySpace())
    drive(a, toy_eval(), 25)
    b = registry.create("strategies", name, seed=1)
    b.load_state_dict(a.state_dict())
    b.setup(ToySpace(), Objective("score"))
    assert [str(x) for x in a.ask(5)] == [str(x) for x in b.ask(5)]


@pytest.mark.parametrize("name", STRATEGIES)
def test_all_failed_trials_and_batches(name):
    s = make(name, 0, ToySpace())
    space = ToySpace()
    trials = drive(s, lambda arch, i: TrialResult.failed("always"), 20, batch=4)
    assert len(trials) == 20 and all(space.valid(t.arch) for t in trials)
    trials = drive(s, toy_eval(fail_every=2), 30, batch=5, start=20)
    assert all(space.valid(t.arch) for t in trials)
    assert len(s.ask(7)) == 7


# -- random search ---------------------------------------------------------------------------------


def test_random_dedupes_and_gives_up_on_tiny_spaces():
    space = ToySpace()  # 3 + ... a few dozen architectures
    s = make("random", 0, space)
    archs = [str(a) for a in s.ask(20)]
    assert len(set(archs)) == 20
    many = [str(a) for a in s.ask(200)]  # more than the space holds: repeats, but it terminates
    assert len(set(archs + many)) < 220
    plain = make("random", 0, space, dedupe=False)
    assert len({str(a) for a in plain.ask(20)}) < 20
    with pytest.raises(ConfigError):
        registry.create("strategies", "random", max_tries=0)


# -- evolution -------------------------------------------------------------------------------------


def test_evolution_ages_and_never_breeds_from_failures():
    space = ToySpace()
    s = make("evolution", 0, space, population_size=6, sample_size=3)
    failed = set()

    def evaluate(arch, i):
        if i % 3 == 0:
            failed.add(str(arch))
            return TrialResult.failed("boom")
        return TrialResult(metrics={"score": toy_score(arch)})

    trials = drive(s, evaluate, 60, batch=2)
    assert len(s.population) == 6  # the oldest died
    ok_trials = [t for t in trials if t.ok]
    assert [str(a) for a, _ in s.population] == [str(t.arch) for t in ok_trials[-6:]]
    assert s.failed == 20
    with pytest.raises(ConfigError):
        registry.create("strategies", "evolution", population_size=5, sample_size=6)


def test_evolution_children_are_mutations_of_the_population():
    space = NB201Space()
    s = make("evolution", 3, space, "score", population_size=5, sample_size=2)
    evaluate = lambda arch, i: TrialResult(metrics={"score": float(arch.ops.count("nor_conv_3x3"))})
    drive(s, evaluate, 5)
    parents = {a.ops for a, _ in s.population}
    for child in s.ask(10):
        assert any(sum(x != y for x, y in zip(child.ops, p)) == 1 for p in parents)


# -- local search ----------------------------------------------------------------------------------


def test_local_search_climbs_and_restarts():
    space = NB201Space()
    s = make("local", 0, space, "score")
    evaluate = lambda arch, i: TrialResult(metrics={"score": float(arch.ops.count("nor_conv_3x3"))})
    trials = drive(s, evaluate, 200)
    scores = [t.metrics["score"] for t in trials]
    assert max(scores) == 6.0  # the unique optimum of this additive landscape
    assert s.moves >= 3 and s.restarts >= 1
    assert len({str(t.arch) for t in trials}) > 150  # known neighbours are not re-evaluated much


def test_local_search_without_neighbour_listing():
    s = make("local", 1, ToySpace(), mutations=5)
    trials = drive(s, toy_eval(), 60)
    best = max(toy_score(t.arch) for t in trials)
    assert best == toy_score(ToyArch((2, 3, 4, 5, "stop")))  # the toy optimum


# -- REINFORCE ----------------------------------------------------------------------------------------


def test_reinforce_never_emits_an_invalid_decision():
    space = ToySpace()
    s = make("reinforce", 0, space, lr=0.05)
    trials = drive(s, toy_eval(fail_every=4), 40, batch=4)
    archs = [t.arch for t in trials] + s.ask(300)
    assert all(space.valid(a) for a in archs)
    assert len({str(a) for a in archs}) > 10
    # the invalid decisions have exactly zero probability: only valid options are ever scored
    assert set(s.vocab) == {1, 2, 3, 4, 5, "stop"}


def test_reinforce_learns_on_the_toy_space():
    space = ToySpace()
    s = make("reinforce", 0, space, lr=0.05, entropy_weight=0.0)
    drive(s, toy_eval(), 150, batch=5)
    late = [toy_score(a) for a in s.ask(100)]
    early = [toy_score(a) for a in make("reinforce", 0, space).ask(100)]
    assert np.mean(late) > np.mean(early) + 1.0


def test_reinforce_memorization_separates_hidden_states():
    space = NB201Space()
    rng = np.random.default_rng(0)
    probe = [space.sample(rng) for _ in range(12)]
    evaluate = lambda arch, i: TrialResult(metrics={"score": float(arch.ops.count("nor_conv_3x3"))})

    def train(memorization):
        s = make("reinforce", 0, space, "score", memorization=memorization, hidden_size=32)
        drive(s, evaluate, 60, batch=4)
        h = s.hidden_states(probe)
        assert h.shape == (12, 32)
        assert torch.allclose(s.hidden_state(probe[0]), h[0], atol=1e-6)
        distances = torch.cdist(h, h)[~torch.eye(12, dtype=torch.bool)]
        past = [space.to_decisions(space.parse(text)) for text in s.buffer]
        with torch.no_grad():
            past_logp = s._rollout(space, past)[1].mean().item()
        return distances, past_logp

    plain, plain_logp = train(0.0)
    memory, memory_logp = train(2.0)
    assert memory.min() > 1e-3  # no two different architectures share a hidden state
    assert memory.mean() > 2 * plain.mean()
    assert memory_logp > plain_logp + 0.5  # it does reproduce past samples better


def test_reinforce_cube_shaping_scales_the_update_by_the_predicted_amount():
    # two trials told at once: the first sets the baseline (advantage 0), the second's advantage
    # is r2 - r1, so the policy gradient is -(r2 - r1) / 2 * grad log p(arch 2). Cubing the
    # scores must scale every gradient entry by (0.8^3 - 0.5^3) / (0.8 - 0.5) = 1.29.
    space = NB201Space()
    archs = [space.sample(np.random.default_rng(i)) for i in (1, 2)]
    told = [Trial(id=i, arch=a, result=TrialResult(metrics={"score": v}))
            for i, (a, v) in enumerate(zip(archs, (0.5, 0.8)))]
    grads, baselines = {}, {}
    for transform in ("none", "cube"):
        s = make("reinforce", 0, space, "score", reward_transform=transform, normalize=False,
                 entropy_weight=0.0)
        captured = []
        # Adam would normalise the step's size away: compare the gradients it is given instead
        s.optimizer.step = lambda s=s, out=captured: out.append(
            [p.grad.clone() for p in s.controller.parameters()])
        s.tell(told)
        assert s.updates == 1 and len(captured) == 1
        grads[transform], baselines[transform] = captured[0], s.baseline
    ratio = (0.8 ** 3 - 0.5 ** 3) / (0.8 - 0.5)
    assert sum(float(g.abs().sum()) for g in grads["none"]) > 0
    for plain, cubed in zip(grads["none"], grads["cube"]):
        assert torch.allclose(cubed, ratio * plain, rtol=1e-4, atol=1e-9)
    # the moving baseline follows the shaped rewards: 0.9 * r1 + 0.1 * r2
    assert baselines["none"] == pytest.approx(0.9 * 0.5 + 0.1 * 0.8)
    assert baselines["cube"] == pytest.approx(0.9 * 0.5 ** 3 + 0.1 * 0.8 ** 3)


def test_reinforce_options():
    space = NB201Space()
    with pytest.raises(ConfigError, match="reward_transform"):
        registry.create("strategies", "reinforce", reward_transform="square")
    with pytest.raises(ConfigError, match="lr"):
        registry.create("strategies", "reinforce", lr=0.0)
    tiny = make("reinforce", 0, space, vocab_size=3)
    with pytest.raises(ConfigError, match="vocab_size"):
        tiny.ask(1)
