"""The qlearning strategy (MetaQNN): learning on a toy space, schedules, CSV files, state round trip."""

from __future__ import annotations

import csv
import io
import itertools
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from nasforge import registry
from nasforge.core import Architecture, Objective, SearchSpace, Trial, TrialResult
from nasforge.errors import ArchitectureError, ConfigError
from nasforge.strategies.qlearning import (DEFAULT_SCHEDULE, QLearning, decode, encode,
                                           epsilon_at, schedule_for_budget, scaled_schedule)
from nasforge.testing import ToySpace

LAYERS = ("a", "b", "c", "d")
DEPTH = 4
TARGET = ("c", "a", "d", "b")  # the best architecture of the toy space


@dataclass(frozen=True, eq=False)
class Stack(Architecture):
    layers: tuple

    def __str__(self) -> str:
        return ">".join(self.layers)


class StackSpace(SearchSpace):
    """1..4 layers from ``LAYERS``, no layer twice in a row, closed by an ``end`` decision.

    With ``merge_states`` the Q state is ``(depth, last layer)`` (as MetaQNN's layer states),
    otherwise the whole prefix. 160 architectures.
    """

    name = "stack"

    def __init__(self, merge_states: bool = False):
        self.merge_states = merge_states

    def parse(self, text: str) -> Stack:
        layers = tuple(text.split(">"))
        if not 1 <= len(layers) <= DEPTH or any(x not in LAYERS for x in layers) \
                or any(x == y for x, y in zip(layers, layers[1:])):
            raise ArchitectureError(f"stack: {text!r} is not 1..{DEPTH} layers joined by '>'")
        return Stack(layers)

    def choices(self, prefix):
        if prefix and prefix[-1] == "end":
            return []
        if len(prefix) == DEPTH:
            return ["end"]
        return [x for x in LAYERS if not prefix or x != prefix[-1]] + (["end"] if prefix else [])

    def to_decisions(self, arch):
        return arch.layers + ("end",)

    def from_decisions(self, decisions):
        return Stack(tuple(decisions[:-1]))

    def state_key(self, prefix):
        if self.merge_states:
            return (len(prefix), prefix[-1] if prefix else None)
        return tuple(prefix)

    def build(self, arch, task):
        raise ArchitectureError("the stack space builds no networks")


def reward(arch: Stack) -> float:
    """1 per layer equal to TARGET's, 0.2..0.7 (fixed pseudo-random) otherwise, over DEPTH."""
    total = 0.0
    for i, layer in enumerate(arch.layers):
        jitter = (zlib.crc32(f"{i}{layer}".encode()) % 1000) / 1000
        total += 1.0 if layer == TARGET[i] else 0.2 + 0.5 * jitter
    return total / DEPTH


def all_archs() -> list[Stack]:
    return [Stack(c) for n in range(1, DEPTH + 1) for c in itertools.product(LAYERS, repeat=n)
            if all(x != y for x, y in zip(c, c[1:]))]


def make(space: SearchSpace | None = None, budget: int | None = None, **options) -> QLearning:
    strategy = registry.create("strategies", "qlearning", **options)
    strategy.setup(space or StackSpace(), Objective("val_acc", "max"), budget=budget)
    return strategy


def drive(strategy: QLearning, n: int, *, batch: int = 1, start: int = 0, fail_every: int = 0):
    """Ask/tell ``n`` trials as the run loop does (info, then ask(1), per trial; tell per batch).

    Returns (epsilon at ask time, architecture text, reward) per trial.
    """
    out = []
    for first in range(start, start + n, batch):
        trials = []
        for i in range(first, first + batch):
            eps = strategy.info()["epsilon"]
            arch = strategy.ask(1)[0]
            failed = fail_every and i % fail_every == fail_every - 1
            result = (TrialResult.failed("simulated") if failed
                      else TrialResult(metrics={"val_acc": reward(arch)}))
            trials.append(Trial(id=i, arch=arch, result=result, info={"epsilon": eps}))
            out.append((eps, str(arch), 0.0 if failed else reward(arch)))
        strategy.tell(trials)
    return out


# -- learning ---------------------------------------------------------------------------------------


def test_toy_space_has_the_expected_optimum():
    archs = all_archs()
    assert len(archs) == 160
    assert max(archs, key=reward) == Stack(TARGET) and reward(Stack(TARGET)) == 1.0


def test_finds_the_best_architecture_and_exploits_it():
    best = "c>a>d>b"
    found, greedy_ok = 0, 0
    for seed in range(12):
        # 45 random, 9 x 3 decreasing, 1 greedy; few tries on repeats keep the test fast
        strategy = make(seed=seed, schedule_scale=0.03, max_tries=10)
        assert [c for _, c in strategy.schedule] == [45] + [3] * 9 + [1]
        trials = drive(strategy, 73)
        random_phase = [r for e, _, r in trials if e == 1.0]
        exploiting = [r for e, _, r in trials if e <= 0.3]
        # repeats sampled on the way count toward the schedule (DP-NAS), so the random stage
        # holds fewer than 45 evaluated trials (short paths repeat often) and the greedy
        # epsilon is reached sooner
        assert 20 <= len(random_phase) < 45 and len(exploiting) >= 10
        assert np.mean(exploiting) > np.mean(random_phase) + 0.1, seed
        found += any(a == best for _, a, _ in trials)
        greedy_ok += str(strategy.greedy()) == best
    # 73 uniform samples of 160 architectures hit the best with probability 0.37, so random
    # search would reach 8 of 12 seeds with probability 0.03
    assert found >= 8 and greedy_ok >= 8


def test_q_update_follows_metaqnn_rule():
    strategy = make(seed=0, replay_number=1, q_learning_rate=0.5, q_discount_factor=0.9,
                    initial_q=0.5)
    strategy.tell([Trial(id=0, arch=Stack(("a", "b")), result=TrialResult(metrics={"val_acc": 0.9}))])
    path = ("a", "b", "end")
    # terminal: 0.5 * 0.5 + 0.5 * 0.9; then backwards with gamma * max over the next state
    q_end = 0.5 * 0.5 + 0.5 * 0.9
    assert strategy.q_value(path[:2], "end") == pytest.approx(q_end)
    q_b = 0.5 * 0.5 + 0.5 * 0.9 * max(q_end, 0.5)
    assert strategy.q_value(path[:1], "b") == pytest.approx(q_b)
    assert strategy.q_value((), "a") == pytest.approx(0.5 * 0.5 + 0.5 * 0.9 * max(q_b, 0.5))
    assert strategy.q_value((), "c") == 0.5  # untouched: the initial value


def test_replay_update_includes_the_newest_trial(monkeypatch):
    # DP-NAS updates with the net just evaluated plus replay_number - 1 random ones
    strategy = make(seed=0, epsilon_schedule=[[1.0, 100]], replay_number=3)
    drive(strategy, 40)
    updated = []
    monkeypatch.setattr(strategy, "_update_path", lambda path, r: updated.append((path, r)))
    new = next(a for a in all_archs() if tuple(strategy.space.to_decisions(a)) not in strategy.known)
    strategy.tell([Trial(id=40, arch=new, result=TrialResult(metrics={"val_acc": 0.42}))])
    assert len(updated) == 3 and updated[0] == (new.layers + ("end",), 0.42)
    # with one replay the update is exactly the MetaQNN rule on the newest path, from 0.15
    single = make(seed=0, epsilon_schedule=[[1.0, 100]], replay_number=1)
    drive(single, 40)
    fresh = next(a for a in all_archs() if tuple(single.space.to_decisions(a)) not in single.known
                 and (a.layers,) not in single.q)
    single.tell([Trial(id=40, arch=fresh, result=TrialResult(metrics={"val_acc": 0.9}))])
    assert single.q_value(fresh.layers, "end") == pytest.approx(0.9 * 0.15 + 0.1 * 0.9)


def test_initial_q_is_dp_nas_early_stopping_threshold():
    strategy = make(seed=0)
    assert strategy.initial_q == 0.15 and strategy.q_value(("a",), "b") == 0.15


def test_reward_is_the_mean_of_the_last_five_validation_accuracies():
    curve = [0.1, 0.2, 0.95, 0.5, 0.6, 0.7, 0.8]  # best epoch 0.95, last five average 0.71

    def told(strategy, arch, **result):
        strategy.tell([Trial(id=0, arch=arch, result=TrialResult(**result))])
        return strategy.replay[-1][1]

    result = {"metrics": {"val_acc": 0.95}, "curves": {"val_acc": curve}}
    assert told(make(seed=0), Stack(("a",)), **result) == pytest.approx(0.71)
    assert told(make(seed=0, reward="metric"), Stack(("a",)), **result) == 0.95
    assert told(make(seed=0, reward_epochs=2), Stack(("a",)), **result) == pytest.approx(0.75)
    short = {"metrics": {"val_acc": 0.5}, "curves": {"val_acc": [0.3, 0.5]}}  # stopped early
    assert told(make(seed=0), Stack(("b",)), **short) == pytest.approx(0.4)
    # no per-epoch values (a table lookup): the reported value
    assert told(make(seed=0), Stack(("c",)), metrics={"val_acc": 0.6}) == 0.6
    # a min objective is negated, as every reward is "larger is better"
    low = registry.create("strategies", "qlearning", seed=0)
    low.setup(StackSpace(), Objective("val_loss", "min"))
    assert told(low, Stack(("d",)), metrics={"val_loss": 0.2},
                curves={"val_loss": [0.5, 0.3, 0.2]}) == pytest.approx(-1 / 3)
    with pytest.raises(ConfigError, match="reward.*'best'"):
        make(reward="best")


def test_repeats_count_toward_the_epsilon_schedule():
    strategy = make(seed=1, epsilon_schedule=[[1.0, 60], [0.5, 60], [0.0, 5]])
    trials = drive(strategy, 60)
    repeats = len(strategy.replay) - 60  # each repeat sampled went to the buffer
    assert repeats > 0 and strategy.position == 60 + repeats
    # so fewer than 60 evaluated trials were sampled at epsilon 1
    assert sum(e == 1.0 for e, _, _ in trials) < 60


def test_failed_trials_get_the_failed_reward():
    strategy = make(seed=0, failed_reward=0.05)
    strategy.tell([Trial(id=0, arch=Stack(("a",)), result=TrialResult.failed("nan loss"))])
    assert strategy.replay[-1][1] == 0.05


def test_no_duplicates_while_unseen_architectures_remain():
    def asked(dedupe: bool) -> list[str]:
        strategy = make(seed=1, epsilon_schedule=[[1.0, 20], [0.5, 80]], dedupe=dedupe)
        return [a for _, a, _ in drive(strategy, 100, batch=4)], strategy

    archs, strategy = asked(True)
    assert len(set(archs)) == len(archs) == 100
    # MetaQNN: repeats sampled on the way went into the replay buffer with their stored reward
    assert len(strategy.replay) > 100
    archs, strategy = asked(False)
    assert len(set(archs)) < len(archs) and len(strategy.replay) == 100


def test_a_converged_greedy_policy_repeats_after_max_tries():
    strategy = make(seed=1, epsilon_schedule=[[1.0, 20], [0.0, 5]], max_tries=5)
    archs = [a for _, a, _ in drive(strategy, 25)]
    assert len(set(archs[20:])) < 5  # the greedy path is asked again rather than looping forever


# -- schedules --------------------------------------------------------------------------------------


def test_default_schedule_is_dp_nas():
    strategy = QLearning()
    assert strategy.schedule == [(1.0, 1500)] + [(e / 10, 100) for e in range(9, 0, -1)] + [(0.0, 3)]


def test_scaling_keeps_the_shape():
    eps = [e for e, _ in DEFAULT_SCHEDULE]
    small = scaled_schedule(DEFAULT_SCHEDULE, 0.1)
    assert [e for e, _ in small] == eps
    assert [c for _, c in small] == [150] + [10] * 9 + [1]  # 0.3 rounds to 0, kept at 1
    assert scaled_schedule([[0.5, 3], [0.0, 5]], 0.5) == [(0.5, 2), (0.0, 3)]  # halves round up
    for budget in (11, 50, 100, 2403, 5000):
        sized = schedule_for_budget(DEFAULT_SCHEDULE, budget)
        assert [e for e, _ in sized] == eps and sum(c for _, c in sized) == budget
        assert sized[0][1] >= max(c for _, c in sized[1:])
    assert schedule_for_budget(DEFAULT_SCHEDULE, 2403) == list(DEFAULT_SCHEDULE)
    assert schedule_for_budget(DEFAULT_SCHEDULE, 5) == [(e, 1) for e in eps]


def test_a_budget_inside_the_first_stage_sizes_the_schedule(caplog):
    # DP-NAS's 1500 random architectures would make a 120-trial search random search
    with caplog.at_level("INFO", logger="nasforge"):
        strategy = make(budget=120)
    assert sum(c for _, c in strategy.schedule) == 120 and strategy.schedule[-1][0] == 0.0
    assert "budget of 120 trials ends inside the schedule's first stage" in caplog.text
    assert "schedule_scale=1" in caplog.text
    assert make(budget=120, schedule_scale=1).schedule == list(DEFAULT_SCHEDULE)  # by option
    assert make(budget=3000).schedule == list(DEFAULT_SCHEDULE)  # reaches the later stages
    assert make().schedule == list(DEFAULT_SCHEDULE)  # no trial budget known
    # the behaviour: the search explores, then exploits within the budget
    strategy = make(seed=2, budget=120, epsilon_schedule=[[1.0, 1500], [0.5, 100], [0.0, 3]],
                    max_tries=10)
    trials = drive(strategy, 120)
    random_phase = [r for e, _, r in trials if e == 1.0]
    greedy = [r for e, _, r in trials if e == 0.0]
    assert len(random_phase) < 100 and len(greedy) >= 5
    assert np.mean(greedy) > np.mean(random_phase) + 0.1


def test_auto_scale_sizes_the_schedule_to_the_budget():
    strategy = make(budget=60, schedule_scale="auto")
    assert sum(c for _, c in strategy.schedule) == 60
    assert strategy.schedule[0][0] == 1.0 and strategy.schedule[-1] == (0.0, 1)
    assert make(schedule_scale="0.5").schedule[0] == (1.0, 750)  # CLI strings are coerced


def test_info_reports_epsilon_per_trial_following_the_schedule():
    strategy = make(seed=0, epsilon_schedule=[[1.0, 3], [0.5, 2], [0.0, 2]])
    trials = drive(strategy, 10)
    assert [e for e, _, _ in trials] == [1.0] * 3 + [0.5] * 2 + [0.0] * 5  # last one is kept
    told = {(e, it) for _, _, e, it in strategy.replay}
    assert (0.5, 3) in told and (0.0, 9) in told
    assert epsilon_at([(1.0, 3), (0.5, 2)], 4) == 0.5 and epsilon_at([(1.0, 3), (0.5, 2)], 99) == 0.5


@pytest.mark.parametrize("schedule, expected", [
    ([[1.0]], "entry 0"),
    ([[1.0, 10], [1.5, 5]], "entry 1 .*: epsilon 1.5"),
    ([[1.0, 10], [-0.1, 5]], "epsilon -0.1"),
    ([[0.5, 0]], "count 0"),
    ([[0.5, -3]], "count -3"),
    ([[0.5, 2.5]], "count 2.5"),
    ([[0.5, 3, 1]], "entry 0"),
    ([], "non-empty"),
])
def test_bad_schedules_are_refused(schedule, expected):
    with pytest.raises(ConfigError, match=expected):
        registry.create("strategies", "qlearning", epsilon_schedule=schedule)
    with pytest.raises(ConfigError, match="epsilon_schedule"):
        QLearning(epsilon_schedule=schedule)


@pytest.mark.parametrize("options, expected", [
    ({"schedule_scale": 0}, "schedule_scale 0"),
    ({"schedule_scale": -2.0}, "schedule_scale -2.0"),
    ({"schedule_scale": "big"}, "schedule_scale"),
    ({"start_epsilon": 1.5}, "start_epsilon=1.5"),
    ({"start_iteration": -1}, "start_iteration=-1"),
    ({"q_learning_rate": 0.0}, "q_learning_rate=0.0"),
    ({"q_discount_factor": 1.2}, "q_discount_factor=1.2"),
    ({"replay_number": -1}, "replay_number=-1"),
    ({"start_from": "/nonexistent/dir"}, "/nonexistent/dir"),
])
def test_bad_options_are_refused(options, expected):
    with pytest.raises(ConfigError, match=expected):
        registry.create("strategies", "qlearning", **options)


def test_start_epsilon_and_iteration():
    schedule = [[1.0, 5], [0.5, 4], [0.0, 2]]
    assert make(epsilon_schedule=schedule, start_epsilon=0.5, start_iteration=3).position == 8
    assert make(epsilon_schedule=schedule, start_epsilon=0.0).info() == {"epsilon": 0.0}
    assert make(epsilon_schedule=schedule, start_iteration=6).info() == {"epsilon": 0.5}
    with pytest.raises(ConfigError, match="start_epsilon=0.7 is not in the schedule"):
        make(epsilon_schedule=schedule, start_epsilon=0.7)
    with pytest.raises(ConfigError, match="start_iteration=4 .* 0..3"):
        make(epsilon_schedule=schedule, start_epsilon=0.5, start_iteration=4)


# -- files and state ----------------------------------------------------------------------------------


def test_literal_encoding_round_trips():
    for value in [(), ("a", 3), (2, None), ((1, "x"), 0.25, True), "end", -4, 1e-300]:
        assert decode(encode(value)) == value and type(decode(encode(value))) is type(value)
    assert encode(np.int64(3)) == "3"
    for bad in ["__import__('os')", "[1, 2]", "{1: 2}", "(1,"]:
        with pytest.raises(ConfigError):
            decode(bad)
    with pytest.raises(ConfigError, match="cannot be stored"):
        encode(frozenset({1}))


def test_csv_round_trip(tmp_path):
    space = StackSpace(merge_states=True)
    first = make(space, seed=4, schedule_scale=0.03)
    drive(first, 40, fail_every=7)
    first.write_csv(tmp_path)
    with open(tmp_path / "q_values.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["state", "action", "q"] and ["(0, None)", "'c'"] in [r[:2] for r in rows]
    with open(tmp_path / "replay_buffer.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["net", "reward", "epsilon", "iteration"] and len(rows) == len(first.replay) + 1
    assert space.parse(rows[1][0]) and float(rows[1][2]) == 1.0

    second = make(space, seed=4, schedule_scale=0.03)
    second.load_csv(tmp_path)
    assert second.q == first.q  # exact floats, same states and actions
    assert second.replay == first.replay and second.position == len(first.known)

    resumed = make(space, seed=9, schedule_scale=0.03, start_from=str(tmp_path), start_epsilon=0.5)
    assert resumed.q == first.q and resumed.info() == {"epsilon": 0.5}
    assert len(drive(resumed, 5)) == 5


def _rewrite(path, column: str, row: int, value: str) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[row - 2][column] = value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("file, column, value, expected", [
    ("q_values.csv", "action", "'z'", "q_values.csv, row 3: action \"'z'\" is not a decision"),
    ("q_values.csv", "state", "(7, 'a')", r"q_values.csv, row 3: state \"\(7, 'a'\)\" is not reached"),
    ("q_values.csv", "state", "__import__('os')", "q_values.csv, row 3: state .* is not a literal"),
    ("q_values.csv", "q", "high", "q_values.csv, row 3: q 'high'"),
    ("replay_buffer.csv", "net", "a>a", "replay_buffer.csv, row 3: net 'a>a' is not a stack"),
    ("replay_buffer.csv", "epsilon", "2", "replay_buffer.csv, row 3: epsilon '2'"),
    ("replay_buffer.csv", "iteration", "x", "replay_buffer.csv, row 3: iteration 'x'"),
])
def test_csv_that_does_not_match_the_space_is_refused(tmp_path, file, column, value, expected):
    first = make(StackSpace(merge_states=True), seed=0)
    drive(first, 10)
    first.write_csv(tmp_path)
    _rewrite(tmp_path / file, column, 3, value)
    with pytest.raises(ConfigError, match=expected):
        make(StackSpace(merge_states=True)).load_csv(tmp_path)


def test_csv_from_another_space_is_refused(tmp_path):
    first = make(StackSpace(), seed=0)
    drive(first, 5)
    first.write_csv(tmp_path)
    with pytest.raises(ConfigError, match="replay_buffer.csv, row 2: net '.*' is not a toy"):
        make(ToySpace()).load_csv(tmp_path)
    (tmp_path / "q_values.csv").unlink()
    with pytest.raises(ConfigError, match="q_values.csv does not exist"):
        make(StackSpace()).load_csv(tmp_path)


@pytest.mark.parametrize("merge_states", [False, True])
def test_state_dict_round_trip_continues_identically(merge_states):
    space = StackSpace(merge_states=merge_states)
    options = dict(seed=3, epsilon_schedule=[[1.0, 20], [0.5, 15], [0.1, 15], [0.0, 10]],
                   max_tries=10)
    full = make(space, **options)
    expected = drive(full, 30, batch=3, fail_every=5)
    extra = full.ask(2)  # asked but not told when the state is saved
    expected_after = drive(full, 18, batch=3, start=32)

    first = make(space, **options)
    assert drive(first, 30, batch=3, fail_every=5) == expected
    assert first.ask(2) == extra
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    second = make(space, **options)
    second.load_state_dict(state)
    assert second.pending == first.pending and second.q == first.q
    assert drive(second, 18, batch=3, start=32) == expected_after
    assert second.q == full.q and second.replay == full.replay
