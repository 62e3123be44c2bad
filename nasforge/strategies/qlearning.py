"""Q-learning over the sequential view: MetaQNN (Baker et al., ICLR 2017) as used by DP-NAS.

An architecture is a path of decisions through ``space.choices``; the state after a prefix is
``space.state_key(prefix)`` and the action is the next decision (the one after which
``choices`` is empty terminates the path). Paths are sampled epsilon-greedily from a tabular Q
function. Epsilon follows a schedule of ``[epsilon, count]`` stages (DP-NAS: 1500 random
architectures, then 100 each at 0.9 ... 0.1, then 3 greedy ones); the position in the schedule
is the number of architectures sampled so far (repeats included, see below), and once the
schedule is exhausted its last epsilon is kept. ``schedule_scale`` shrinks (or stretches) every
count keeping the shape; ``"auto"`` sizes the schedule to the run's trial budget at ``setup``
(unscaled without one). By default (``schedule_scale=None``) the schedule is sized to the budget
when the budget would end inside its first stage (DP-NAS's 1500 random architectures: the search
would be random search under another name), which is logged, and kept as it is otherwise;
``schedule_scale=1`` keeps DP-NAS's absolute counts whatever the budget.

After each told trial its path and reward go into a replay buffer, and the Q table is updated
with ``replay_number`` paths, as DP-NAS does: the one just added, then ``replay_number - 1``
drawn uniformly from the buffer (with replacement). Each path is updated backwards with

    Q(s, a) <- (1 - lr) Q(s, a) + lr * (r + gamma * max_a' Q(s', a'))

where ``r`` is the reward on the terminating transition and 0 before it, and ``max Q(s', .)`` is
0 after the terminating one. Q values start at ``initial_q`` (DP-NAS: 0.15, its early-stopping
threshold; MetaQNN used 0.5). The reward (``reward="last_epochs"``, DP-NAS) is the mean of the
last ``reward_epochs`` (5) per-epoch values of the objective's metric in the trial's ``curves``
(``val_acc`` per epoch for the ``train`` and ``deep_prior`` evaluators), which is less optimistic
than the best epoch on a small validation set; a trial without such a curve (a table lookup)
gives its reported value. ``reward="metric"`` uses the reported value always (for ``val_acc``
the best epoch's). Either is oriented so that larger is better (negated for ``min``
objectives); failed or pruned trials, and trials that break a constraint, get ``failed_reward``
(0 by default, which suits accuracies in [0, 1]). With several objectives the reward is the
scalarisation ``Objectives.scalar``: a weighted sum of the oriented scores, cost objectives
(params, flops, latency_ms, train_seconds) taken as log10, weight 1 for the first objective and
0.05 for each other (max:val_acc with min:params gives ``val_acc - 0.05 * log10(params)``);
with ``reward="last_epochs"`` the first objective's value is the mean of its last epochs there.

Repeated architectures (``dedupe``, on by default) follow DP-NAS: a sampled path whose
architecture was already evaluated is not asked again; its stored reward is added to the replay
buffer, a replay update is made, the repeat counts toward the epsilon schedule, and another path
is sampled (one already asked but not yet told is simply sampled again, without counting). Within
one ``ask`` the paths are sampled with the epsilon of its start (the one ``info`` reports), so a
stage boundary crossed by repeats takes effect at the next ``ask``. After ``max_tries`` repeats in
a row (a tiny or exhausted space, or a converged greedy policy) the repeat is asked.

Files (``write_csv`` / ``load_csv``), human-readable, one header line each:

- ``q_values.csv``: ``state,action,q``. ``state`` and ``action`` are Python literals (tuples,
  strings, numbers; e.g. ``(2, 'conv')``), ``q`` a float. Only pairs updated so far are
  written; a missing pair has the value ``initial_q``.
- ``replay_buffer.csv``: ``net,reward,epsilon,iteration``. ``net`` is the architecture's
  canonical text, ``reward`` the reward used for updates, ``epsilon`` the epsilon it was sampled
  with and ``iteration`` the schedule position at which it was sampled.

``start_from`` names a directory holding both files; they are checked against the space and
loaded at ``setup``, and the schedule continues after the number of distinct nets in the buffer
unless ``start_epsilon`` (first stage with that epsilon) and/or ``start_iteration`` (with
``start_epsilon``: architectures already asked in that stage; alone: the schedule position) say
otherwise. States and decisions must be built from ``str``, ``int``, ``float``, ``bool``,
``None`` and tuples of them, so that they can be written as literals.
"""

from __future__ import annotations

import ast
import csv
import math
import os
from pathlib import Path
from typing import Any, Hashable, Literal, Sequence

import logging

import numpy as np

from ..core import (Architecture, Decision, Objective, SearchSpace, Strategy, Trial,
                    check_arch_text)
from ..errors import ArchitectureError, ConfigError
from ..registry import register

#: DP-NAS's schedule: 1500 architectures at epsilon 1, 100 at each of 0.9 ... 0.1, 3 at 0.
DEFAULT_SCHEDULE: tuple[tuple[float, int], ...] = (
    (1.0, 1500), (0.9, 100), (0.8, 100), (0.7, 100), (0.6, 100), (0.5, 100), (0.4, 100),
    (0.3, 100), (0.2, 100), (0.1, 100), (0.0, 3))

log = logging.getLogger(__name__)

Q_FILE = "q_values.csv"
REPLAY_FILE = "replay_buffer.csv"
Q_COLUMNS = ("state", "action", "q")
REPLAY_COLUMNS = ("net", "reward", "epsilon", "iteration")

DecisionPath = tuple  # the decisions of a (partial) architecture, as a tuple


# --------------------------------------------------------------------------------------------
# epsilon schedules


def validate_schedule(schedule: Sequence[Sequence[float]]) -> list[tuple[float, int]]:
    """The schedule as ``(epsilon, count)`` pairs; ``ConfigError`` naming the first bad entry."""
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence) or not schedule:
        raise ConfigError(f"qlearning: epsilon_schedule {schedule!r}; expected a non-empty list "
                          f"of [epsilon, count] pairs, e.g. [[1.0, 100], [0.5, 20], [0.0, 5]]")
    out = []
    for i, entry in enumerate(schedule):
        where = f"qlearning: epsilon_schedule entry {i} {entry!r}"
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
            raise ConfigError(f"{where}: expected a pair [epsilon, count]")
        eps, count = entry
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.number)) \
                or not 0.0 <= float(eps) <= 1.0:
            raise ConfigError(f"{where}: epsilon {eps!r} must be a number in [0, 1]")
        if isinstance(count, bool) or not isinstance(count, (int, float, np.number)) \
                or not math.isfinite(float(count)) or float(count) != int(count) or int(count) < 1:
            raise ConfigError(f"{where}: count {count!r} must be a whole number >= 1")
        out.append((float(eps), int(count)))
    return out


def scaled_schedule(schedule: Sequence[Sequence[float]], scale: float) -> list[tuple[float, int]]:
    """The schedule with every count multiplied by ``scale`` and rounded (at least 1): same shape."""
    stages = validate_schedule(schedule)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
            or scale <= 0:
        raise ConfigError(f"qlearning: schedule_scale {scale!r}; expected a number > 0 or 'auto'")
    return [(eps, max(1, math.floor(count * scale + 0.5))) for eps, count in stages]


def schedule_for_budget(schedule: Sequence[Sequence[float]], budget: int) -> list[tuple[float, int]]:
    """The schedule rescaled so that its counts add up to ``budget`` (each stage at least 1).

    Counts are proportional to the original ones, rounded by largest remainder so the total is
    exactly ``budget``; a budget smaller than the number of stages gives one per stage.
    """
    stages = validate_schedule(schedule)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"qlearning: budget {budget!r}; expected an integer >= 1")
    if budget <= len(stages):
        return [(eps, 1) for eps, _ in stages]
    total = sum(c for _, c in stages)
    shares = [budget * c / total for _, c in stages]
    counts = [max(1, math.floor(s)) for s in shares]
    while sum(counts) < budget:  # give the stages furthest below their share one more
        i = max(range(len(counts)), key=lambda k: (shares[k] - counts[k], -k))
        counts[i] += 1
    while sum(counts) > budget:  # raising small stages to 1 overshot: take from the largest
        i = min((k for k in range(len(counts)) if counts[k] > 1),
                key=lambda k: (shares[k] - counts[k], k))
        counts[i] -= 1
    return [(eps, c) for (eps, _), c in zip(stages, counts)]


def epsilon_at(schedule: Sequence[tuple[float, int]], position: int) -> float:
    """Epsilon for the architecture asked at ``position`` (the last epsilon once exhausted)."""
    for eps, count in schedule:
        if position < count:
            return eps
        position -= count
    return schedule[-1][0]


# --------------------------------------------------------------------------------------------
# literal encoding of states and decisions (CSV cells and state_dict entries)


def _literal(value: Any) -> Hashable:
    """``value`` as plain str/int/float/bool/None/tuple; ``ConfigError`` for anything else."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ConfigError(f"qlearning: {value!r} is not a finite number")
        return float(value)
    if isinstance(value, tuple):
        return tuple(_literal(v) for v in value)
    raise ConfigError(f"qlearning: {value!r} of type {type(value).__name__} cannot be stored; "
                      f"states and decisions must be str, int, float, bool, None or tuples")


def encode(value: Hashable) -> str:
    """A state or decision as Python literal text, e.g. ``(2, 'conv')``."""
    return repr(_literal(value))


def decode(text: str) -> Hashable:
    """The state or decision written by ``encode`` (parsed as a literal, never evaluated)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ConfigError(f"qlearning: {text!r} is not a literal state or decision") from None
    return _literal(value)


# --------------------------------------------------------------------------------------------
# the strategy


@register("strategies", "qlearning")
class QLearning(Strategy):
    """MetaQNN: epsilon-greedy paths from a Q table learned by experience replay (see module)."""

    name = "qlearning"

    def __init__(self, *, seed: int = 0,
                 epsilon_schedule: list[list[float]] | None = None,
                 schedule_scale: float | Literal["auto"] | None = None,
                 replay_number: int = 50,
                 q_learning_rate: float = 0.1,
                 q_discount_factor: float = 1.0,
                 initial_q: float = 0.15,
                 reward: Literal["last_epochs", "metric"] = "last_epochs",
                 reward_epochs: int = 5,
                 failed_reward: float = 0.0,
                 dedupe: bool = True,
                 max_tries: int = 100,
                 start_from: str | None = None,
                 start_epsilon: float | None = None,
                 start_iteration: int | None = None):
        super().__init__(seed=seed)
        self.base_schedule = validate_schedule(
            DEFAULT_SCHEDULE if epsilon_schedule is None else epsilon_schedule)
        if schedule_scale not in ("auto", None):
            scaled_schedule(self.base_schedule, schedule_scale)  # validates the scale
        self.schedule_scale = schedule_scale
        self.schedule = self._schedule_for(None)
        if replay_number < 0:
            raise ConfigError(f"qlearning: replay_number={replay_number}; expected an integer >= 0")
        if not 0.0 < q_learning_rate <= 1.0:
            raise ConfigError(f"qlearning: q_learning_rate={q_learning_rate}; expected 0 < lr <= 1")
        if not 0.0 <= q_discount_factor <= 1.0:
            raise ConfigError(
                f"qlearning: q_discount_factor={q_discount_factor}; expected a number in [0, 1]")
        for key, value in (("initial_q", initial_q), ("failed_reward", failed_reward)):
            if not math.isfinite(value):
                raise ConfigError(f"qlearning: {key}={value}; expected a finite number")
        if reward not in ("last_epochs", "metric"):
            raise ConfigError(f"qlearning: reward={reward!r}; expected 'last_epochs' (DP-NAS: mean "
                              f"of the last reward_epochs values) or 'metric' (the reported value)")
        if reward_epochs < 1:
            raise ConfigError(f"qlearning: reward_epochs={reward_epochs}; expected an integer >= 1")
        if max_tries < 1:
            raise ConfigError(f"qlearning: max_tries={max_tries}; expected an integer >= 1")
        if start_epsilon is not None and not 0.0 <= start_epsilon <= 1.0:
            raise ConfigError(f"qlearning: start_epsilon={start_epsilon}; expected a number in [0, 1]")
        if start_iteration is not None and start_iteration < 0:
            raise ConfigError(f"qlearning: start_iteration={start_iteration}; expected an integer >= 0")
        if start_from is not None and not Path(start_from).is_dir():
            raise ConfigError(f"qlearning: start_from={start_from!r} is not a directory; expected "
                              f"one holding {Q_FILE} and {REPLAY_FILE}")
        self.replay_number = replay_number
        self.lr = q_learning_rate
        self.gamma = q_discount_factor
        self.initial_q = initial_q
        self.reward_kind = reward
        self.reward_epochs = reward_epochs
        self.failed_reward = failed_reward
        self.dedupe = dedupe
        self.max_tries = max_tries
        self.start_from = start_from
        self.start_epsilon = start_epsilon
        self.start_iteration = start_iteration

        self.q: dict[Hashable, dict[Decision, float]] = {}  # state -> action -> value
        self.replay: list[tuple[DecisionPath, float, float, int]] = []  # path, reward, epsilon, iteration
        self.known: dict[DecisionPath, float] = {}  # reward of every path told (first one kept)
        self.pending: list[tuple[DecisionPath, float, int]] = []  # asked, not told: path, epsilon, iteration
        self.position = 0  # architectures asked so far: the place in the schedule
        self._started = False  # set once ask/tell/load ran, so a late setup() resets nothing
        self._choices: dict[DecisionPath, list[Decision]] = {}  # caches of the space's sequential view
        self._states: dict[DecisionPath, Hashable] = {}
        self._texts: dict[DecisionPath, str] = {}  # canonical text of each replayed path

    # -- set-up -----------------------------------------------------------------------------------
    def _schedule_for(self, budget: int | None) -> list[tuple[float, int]]:
        if self.schedule_scale is None:  # size to the budget only if it ends in the first stage
            first_eps, first_count = self.base_schedule[0]
            if budget is None or budget > first_count or len(self.base_schedule) == 1:
                return list(self.base_schedule)
            sized = schedule_for_budget(self.base_schedule, budget)
            log.info("qlearning: the budget of %d trials ends inside the schedule's first stage "
                     "(%d architectures at epsilon %g), so the schedule is sized to the budget: "
                     "%s (schedule_scale=1 keeps the given counts)", budget, first_count,
                     first_eps, ", ".join(f"{c} at {e:g}" for e, c in sized))
            return sized
        if self.schedule_scale == "auto":
            return self.base_schedule if budget is None else schedule_for_budget(self.base_schedule, budget)
        return scaled_schedule(self.base_schedule, self.schedule_scale)

    def setup(self, space: SearchSpace, objective: Objective, *, budget: int | None = None) -> None:
        """Attach space and objective; size an ``auto`` schedule to ``budget``; load ``start_from``."""
        if space is not self.space:
            for cache in (self._choices, self._states, self._texts):
                cache.clear()
        super().setup(space, objective, budget=budget)
        if self._started:
            return
        self.schedule = self._schedule_for(budget)
        if self.start_from is not None:
            self.load_csv(self.start_from)
        if self.start_epsilon is not None or self.start_iteration is not None:
            self.position = self._start_position()

    def _start_position(self) -> int:
        if self.start_epsilon is None:
            return int(self.start_iteration or 0)
        offset = 0
        for eps, count in self.schedule:
            if eps == self.start_epsilon:
                it = int(self.start_iteration or 0)
                if it >= count:
                    raise ConfigError(
                        f"qlearning: start_iteration={it} but the stage at epsilon {eps} has "
                        f"{count} architectures; expected 0..{count - 1}")
                return offset + it
            offset += count
        raise ConfigError(f"qlearning: start_epsilon={self.start_epsilon} is not in the schedule; "
                          f"expected one of {sorted({e for e, _ in self.schedule}, reverse=True)}")

    # -- the sequential view, cached ----------------------------------------------------------------
    def _options(self, prefix: DecisionPath) -> list[Decision]:
        options = self._choices.get(prefix)
        if options is None:
            options = self._choices[prefix] = list(self._require_space().choices(list(prefix)))
        return options

    def _state(self, prefix: DecisionPath) -> Hashable:
        state = self._states.get(prefix)
        if state is None and prefix not in self._states:
            state = self._states[prefix] = self._require_space().state_key(list(prefix))
        return state

    # -- Q values ---------------------------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        """The epsilon the next asked architecture is sampled with."""
        return epsilon_at(self.schedule, self.position)

    def q_value(self, state: Hashable, action: Decision) -> float:
        """Q(state, action); ``initial_q`` for pairs never updated."""
        return self.q.get(state, {}).get(action, self.initial_q)

    def _sample_path(self, epsilon: float) -> DecisionPath:
        path: list[Decision] = []
        for _ in range(10_000):
            options = self._options(tuple(path))
            if not options:
                return tuple(path)
            if self.rng.random() < epsilon:
                path.append(options[int(self.rng.integers(len(options)))])
            else:
                values = self.q.get(self._state(tuple(path)), {})
                qs = [values.get(a, self.initial_q) for a in options]
                best = max(qs)
                ties = [a for a, v in zip(options, qs) if v == best]
                path.append(ties[int(self.rng.integers(len(ties)))] if len(ties) > 1 else ties[0])
        raise RuntimeError("qlearning: the space's sequential view did not terminate")

    def greedy_path(self) -> DecisionPath:
        """The path of highest Q value at every step (ties: the first option), no randomness."""
        path: list[Decision] = []
        while options := self._options(tuple(path)):
            values = self.q.get(self._state(tuple(path)), {})
            path.append(max(options, key=lambda a: values.get(a, self.initial_q)))
        return tuple(path)

    def greedy(self) -> Architecture:
        """The architecture the learned Q table prefers (epsilon 0, ties to the first option)."""
        return self._require_space().from_decisions(list(self.greedy_path()))

    def _update_path(self, path: DecisionPath, reward: float) -> None:
        """One MetaQNN update, from the terminating transition back to the first one."""
        next_max = 0.0  # after the terminating action there is nothing to gain
        target_reward = reward
        for i in range(len(path) - 1, -1, -1):
            values = self.q.setdefault(self._state(path[:i]), {})
            old = values.get(path[i], self.initial_q)
            values[path[i]] = (1 - self.lr) * old + self.lr * (target_reward + self.gamma * next_max)
            target_reward = 0.0
            # the transition into this state (the next one updated) bootstraps from its best action
            next_max = max(values.get(a, self.initial_q) for a in self._options(path[:i]))

    def _replay_update(self) -> None:
        """DP-NAS's update: the entry just added, then ``replay_number - 1`` random entries."""
        if not self.replay or self.replay_number < 1:
            return
        path, reward, _, _ = self.replay[-1]
        self._update_path(path, reward)
        for k in self.rng.integers(len(self.replay), size=self.replay_number - 1):
            path, reward, _, _ = self.replay[int(k)]
            self._update_path(path, reward)

    def trial_reward(self, trial: Trial) -> float | None:
        """The reward of a told trial (see the module docstring); None if it failed."""
        score = self.reward(trial)
        if score is None or self.reward_kind != "last_epochs":
            return score
        first = self.objective
        curve = [float(v) for v in trial.result.curves.get(first.metric) or []]
        tail = curve[-self.reward_epochs:]
        reported = first.score(trial.result)
        if not tail or not all(math.isfinite(v) for v in tail) or reported is None:
            return score  # no per-epoch values of the metric: the reported one
        mean = float(np.mean(tail))
        # replace the first objective's reported score by its mean over the last epochs
        return score + self.objectives.weights[0] * ((mean if first.mode == "max" else -mean) - reported)

    def _add_replay(self, path: DecisionPath, reward: float, epsilon: float, iteration: int) -> None:
        self.replay.append((path, float(reward), float(epsilon), int(iteration)))
        self.known.setdefault(path, float(reward))

    # -- ask / tell -------------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Architecture]:
        space = self._require_space()
        self._started = True
        out = []
        for _ in range(n):
            eps = self.epsilon
            for attempt in range(self.max_tries):
                path = self._sample_path(eps)
                last = attempt == self.max_tries - 1
                if not self.dedupe or last:
                    break
                if path in self.known:  # DP-NAS: reuse the stored reward, learn, count, sample again
                    self._add_replay(path, self.known[path], eps, self.position)
                    self._replay_update()
                    self.position += 1
                elif not any(p == path for p, _, _ in self.pending):
                    break
            self.pending.append((path, eps, self.position))
            self.position += 1
            out.append(space.from_decisions(list(path)))
        return out

    def tell(self, trials: Sequence[Trial]) -> None:
        space = self._require_space()
        self._started = True
        for trial in trials:
            path = tuple(space.to_decisions(trial.arch))
            for i, (p, eps, iteration) in enumerate(self.pending):
                if p == path:
                    del self.pending[i]
                    break
            else:  # a trial this strategy did not ask: record it with its own fields
                eps = float(trial.info.get("epsilon", self.epsilon))
                iteration = self.position
            reward = self.trial_reward(trial)
            self._add_replay(path, self.failed_reward if reward is None else reward, eps, iteration)
            self._replay_update()

    def info(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "position": self.position,
            "schedule": [[eps, count] for eps, count in self.schedule],
            "q": [[encode(s), encode(a), v] for s, values in self.q.items() for a, v in values.items()],
            "replay": [[encode(p), r, e, it] for p, r, e, it in self.replay],
            "pending": [[encode(p), e, it] for p, e, it in self.pending],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.position = int(state["position"])
        self.schedule = validate_schedule(state["schedule"])
        self.q = {}
        for s, a, v in state["q"]:
            self.q.setdefault(decode(s), {})[decode(a)] = float(v)
        self.replay, self.known = [], {}
        for p, r, e, it in state["replay"]:
            self._add_replay(decode(p), r, e, it)  # type: ignore[arg-type]
        self.pending = [(decode(p), float(e), int(it)) for p, e, it in state["pending"]]  # type: ignore[misc]
        self._started = True

    # -- CSV files --------------------------------------------------------------------------------
    def write_csv(self, directory: str | os.PathLike) -> None:
        """Write ``q_values.csv`` and ``replay_buffer.csv`` (format in the module docstring)."""
        space = self._require_space()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        q_rows = [[encode(s), encode(a), repr(v)] for s, values in self.q.items()
                  for a, v in values.items()]
        replay_rows = []
        for path, reward, eps, iteration in self.replay:
            if path not in self._texts:
                self._texts[path] = str(space.from_decisions(list(path)))
            replay_rows.append([self._texts[path], repr(reward), repr(eps), str(iteration)])
        _write_rows(directory / Q_FILE, Q_COLUMNS, q_rows)
        _write_rows(directory / REPLAY_FILE, REPLAY_COLUMNS, replay_rows)

    def load_csv(self, directory: str | os.PathLike) -> None:
        """Replace Q table and replay buffer with the files in ``directory``, checked against the space.

        Every net must parse in the space, and every Q row must name a state reached by one of
        the buffer's nets and an action the space offers there; otherwise ``ConfigError`` names
        the file, the row and the value. The schedule position becomes the number of distinct
        nets in the buffer.
        """
        space = self._require_space()
        directory = Path(directory)
        replay_file, q_file = directory / REPLAY_FILE, directory / Q_FILE
        replay = []
        for row_no, row in _read_rows(replay_file, REPLAY_COLUMNS):
            where = f"{replay_file}, row {row_no}"
            try:
                arch = check_arch_text(space, row["net"])
                path = tuple(space.to_decisions(arch))
            except ArchitectureError as exc:
                raise ConfigError(f"{where}: net {row['net']!r} is not a {space.name} "
                                  f"architecture: {exc}") from None
            reward = _number(row, "reward", where, float)
            eps = _number(row, "epsilon", where, float)
            if not 0.0 <= eps <= 1.0:
                raise ConfigError(f"{where}: epsilon {row['epsilon']!r}; expected a number in [0, 1]")
            replay.append((path, reward, eps, _number(row, "iteration", where, int)))

        allowed: dict[Hashable, set[Decision]] = {}  # state -> actions the space offers there
        for path, *_ in replay:
            for i in range(len(path) + 1):
                allowed.setdefault(self._state(path[:i]), set()).update(self._options(path[:i]))
        q: dict[Hashable, dict[Decision, float]] = {}
        for row_no, row in _read_rows(q_file, Q_COLUMNS):
            where = f"{q_file}, row {row_no}"
            state, action = (_decoded(row, key, where) for key in ("state", "action"))
            if state not in allowed:
                raise ConfigError(f"{where}: state {row['state']!r} is not reached by any net in "
                                  f"{REPLAY_FILE}")
            if action not in allowed[state]:
                raise ConfigError(f"{where}: action {row['action']!r} is not a decision the "
                                  f"{space.name} space offers in state {row['state']}")
            q.setdefault(state, {})[action] = _number(row, "q", where, float)

        self.q = q
        self.replay, self.known, self.pending = [], {}, []
        for entry in replay:
            self._add_replay(*entry)
        self.position = len(self.known)


# --------------------------------------------------------------------------------------------
# CSV helpers


def _write_rows(path: Path, columns: Sequence[str], rows: list[list[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(tmp, path)


def _read_rows(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """The data rows of a CSV file as (line number, row) pairs; the header must hold ``columns``."""
    if not path.is_file():
        raise ConfigError(f"qlearning: {path} does not exist; expected a CSV file with columns "
                          f"{', '.join(columns)}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path}: header {reader.fieldnames!r} lacks column(s) "
                              f"{', '.join(missing)}; expected {', '.join(columns)}")
        rows = []
        for row in reader:
            if any(row.get(c) is None for c in columns):
                raise ConfigError(f"{path}, row {reader.line_num}: {len(row)} fields; expected "
                                  f"{len(columns)} ({', '.join(columns)})")
            rows.append((reader.line_num, row))
    return rows


def _number(row: dict[str, str], key: str, where: str, kind: type) -> Any:
    text = row[key].strip()
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} {row[key]!r}; expected a finite "
                          f"{'integer' if kind is int else 'number'}")
    return value


def _decoded(row: dict[str, str], key: str, where: str) -> Hashable:
    try:
        return decode(row[key])
    except ConfigError:
        raise ConfigError(f"{where}: {key} {row[key]!r} is not a literal (e.g. (2, 'conv'), 'conv', 3)"
                          ) from None
