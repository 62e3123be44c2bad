"""Model-based search with an ensemble of MLPs: ``bananas`` and ``predictor_evolution``.

``bananas`` (White, Neiswanger & Savani, AAAI 2021): the first ``initial`` asks are random
samples; after that an ensemble of MLPs (``nasforge.predictors.batched``, path encoding by
default) is fitted on every successful trial so far and the next architecture is the best, by an
acquisition function, of a pool of candidates: every neighbour (one edit away) of the ``parents``
best architectures so far where the space lists neighbours, plus ``candidates`` random mutations
of them (one or two edits), plus ``candidates // 4`` random samples (``pool="mixed"``, the
default). ``pool="local"`` is predictor-guided local search: the pool is the unasked neighbours of
the best architecture so far (of the next best when those are all asked, and so on down the
ranking), so the search climbs from the incumbent as local search does (White et al., "Local
search is state of the art for NAS benchmarks") but in the order the acquisition prefers; on a
space that lists no neighbours it is the mixed pool. Acquisitions: ``its``
(independent Thompson sampling, BANANAS's default: one draw from each candidate's normal
N(mean, std) of the ensemble, the largest draw wins), ``ucb`` (mean + ``beta`` x std) and
``mean`` (pure exploitation). A batch ask takes the best ``n`` of one draw. The ensemble's
members fit bootstrap resamples by default (``bootstrap``), so they disagree where the data are
thin and Thompson sampling explores there.

``predictor_evolution``: regularized (aging) evolution whose child is chosen by the predictor:
the parent is the best of ``sample_size`` random members of the population (as ``evolution``),
``candidates`` mutations of it are scored by the ensemble and the best by the acquisition
(``its`` by default) is asked. Until ``initial`` trials succeeded the asks are random samples.

Both never ask an architecture twice, nor, with ``canonical`` (the default), one equivalent to an
architecture already asked (same ``space.canonical_key``; the ensemble then reads each
architecture's representative, ``space.canonical``); the pool leaves those out, and when it is
empty a random unseen sample is asked. ``bananas``'s ``depth`` 2 adds the cells two edits from
its parents to the pool. With ``tail`` k > 0 (both strategies; 0, the paper's behaviour, by
default) the last k asks of the search's trial budget take the local pool (the incumbent's
unasked neighbours in acquisition order), refitting every ``tail_retrain_every`` successes; the
asks before the tail are those of the search without one.

Basin-escape options (both strategies, off by default; tuning round 4,
``benchmarks/results/tuning/04_basin_escape.md``): ``spread`` s multiplies the ensemble's std in
the Thompson draw (``its``: one draw from N(mean, s x std); 1, the paper's, by default), a wider
posterior that explores more. ``escape`` k > 0: once the best score has not improved for k
successful trials (a stagnant incumbent, as in local search with restarts), the mutations are
larger: ``bananas``'s pool is ``candidates`` cells two or three edits from its ``parents`` best
architectures (2 or 3 successive mutations; on a space that lists neighbours the ones that land
one edit away or on the parent are dropped) plus ``candidates // 4`` random samples, without the
one-edit neighbours; ``predictor_evolution``'s candidates are such mutations of the tournament
winner. ``escape_mode="add"`` keeps the usual pool (or mutations) while stagnant and adds
those far cells to it, so the acquisition chooses between climbing and jumping (``"replace"``, the
default mode, drops the usual pool). The search returns to its usual pool as soon as the best
improves; a tail, when one is set, and ``pool="local"``'s unasked neighbours take precedence
(``info()["phase"]`` reads ``escape`` while escaping). Stagnation is read from the history, so
it needs no state of its own. Until the first stagnation an ``escape`` search asks exactly what
the search without it asks.

They refit the ensemble after every ``retrain_every`` new successful trials (1: before every
ask; larger values make the search cheaper), and keep torch to one thread while they fit and
score (``torch.set_num_threads(1)``, restored after).

State: the trials told (text and score), the asked texts, the population (evolution), the
ensemble's weights and the number of trials it was fitted on, and the random state: a resumed
search asks exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..core import Architecture, Strategy, Trial, derive_seed
from ..errors import ConfigError
from ..predictors.batched import ENCODINGS, BatchedMLPEnsemble
from ..registry import register

ACQUISITIONS = ("its", "ucb", "mean")
POOLS = ("mixed", "local")
ESCAPE_MODES = ("replace", "add")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread inside (tiny models: threads only add overhead)."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def _check_int(strategy: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{strategy}: {key}={value!r}; expected an integer >= {low}")
    return value


class _ModelBased(Strategy):
    """History, the ensemble predictor, candidate scoring and state shared by both strategies."""

    def __init__(self, *, seed: int, initial: int, acquisition: str, beta: float,
                 retrain_every: int, members: int, hidden: int, layers: int, epochs: int,
                 lr: float, encoding: str, bootstrap: bool, canonical: bool, tail: int = 0,
                 tail_retrain_every: int | None = None, spread: float = 1.0, escape: int = 0,
                 escape_mode: str = "replace"):
        super().__init__(seed=seed)
        if not isinstance(canonical, bool):
            raise ConfigError(f"{self.name}: canonical={canonical!r}; expected true or false")
        self.canonical = canonical
        _check_int(self.name, "initial", initial, 2)
        _check_int(self.name, "retrain_every", retrain_every, 1)
        if acquisition not in ACQUISITIONS:
            raise ConfigError(f"{self.name}: acquisition={acquisition!r}; expected one of "
                              f"{', '.join(ACQUISITIONS)}")
        if not (isinstance(beta, (int, float)) and np.isfinite(beta) and beta >= 0):
            raise ConfigError(f"{self.name}: beta={beta!r}; expected a finite number >= 0")
        if encoding not in ENCODINGS:
            raise ConfigError(f"{self.name}: encoding={encoding!r}; expected one of "
                              f"{', '.join(ENCODINGS)}")
        if not (isinstance(spread, (int, float)) and not isinstance(spread, bool)
                and np.isfinite(spread) and spread > 0):
            raise ConfigError(f"{self.name}: spread={spread!r}; expected a finite number > 0")
        self.initial, self.acquisition, self.beta = initial, acquisition, float(beta)
        self.spread = float(spread)
        self.escape = _check_int(self.name, "escape", escape, 0)
        if escape_mode not in ESCAPE_MODES:
            raise ConfigError(f"{self.name}: escape_mode={escape_mode!r}; expected one of "
                              f"{', '.join(ESCAPE_MODES)}")
        self.escape_mode = escape_mode
        self.retrain_every = retrain_every
        self.tail = _check_int(self.name, "tail", tail, 0)
        self.tail_retrain_every = (retrain_every if tail_retrain_every is None else
                                   _check_int(self.name, "tail_retrain_every", tail_retrain_every, 1))
        self.model_options = {"members": _check_int(self.name, "members", members, 1),
                              "hidden": _check_int(self.name, "hidden", hidden, 1),
                              "layers": _check_int(self.name, "layers", layers, 1),
                              "epochs": _check_int(self.name, "epochs", epochs, 1),
                              "lr": float(lr), "encoding": encoding, "bootstrap": bool(bootstrap),
                              "canonical": canonical}
        if not (np.isfinite(lr) and lr > 0):
            raise ConfigError(f"{self.name}: lr={lr!r}; expected a positive number")
        self._encodings: dict[str, np.ndarray] = {}
        self.model_seed = int(seed)  # the models' seeds derive from it (saved with the state)
        self.history: list[tuple[Architecture, float | None]] = []  # told, in order
        self.asked: list[str] = []
        self._asked_set: set[str] = set()  # keys (canonical keys with ``canonical``) of asked
        self.model = self._new_model(0)
        self.fitted_on = 0  # successful trials the model was fitted on (0: no model)
        self.fits = 0

    def _new_model(self, fit_index: int) -> BatchedMLPEnsemble:
        model = BatchedMLPEnsemble(seed=derive_seed(self.model_seed, fit_index),
                                   **self.model_options)
        model.share_cache(self._encodings)  # encodings outlive refits (pure functions of archs)
        return model

    # -- history --------------------------------------------------------------------------------------
    def _ok(self) -> list[tuple[Architecture, float]]:
        return [(a, s) for a, s in self.history if s is not None]

    def _key(self, arch: Architecture) -> str:
        """What "asked before" compares: the space's canonical key with ``canonical``, else
        the text."""
        return self._require_space().canonical_key(arch) if self.canonical else str(arch)

    def _remember(self, arch: Architecture) -> None:
        key = self._key(arch)
        if key not in self._asked_set:
            self._asked_set.add(key)
            self.asked.append(str(arch))

    def _random_unseen(self, tries: int = 100) -> Architecture:
        space = self._require_space()
        arch = space.sample(self.rng)
        for _ in range(tries - 1):
            if self._key(arch) not in self._asked_set:
                break
            arch = space.sample(self.rng)
        return arch

    def tell(self, trials: Sequence[Trial]) -> None:
        for t in trials:
            self._remember(t.arch)  # trials asked elsewhere (a resume) count as seen
            self.history.append((t.arch, self.reward(t)))
            self._after_tell(t.arch, self.history[-1][1])

    def _after_tell(self, arch: Architecture, score: float | None) -> None:
        return None

    # -- the model ------------------------------------------------------------------------------------
    def _model_ready(self) -> bool:
        """Refit when ``retrain_every`` new successes arrived; False while too few (or all equal)."""
        ok = self._ok()
        if len(ok) < self.initial or len({s for _, s in ok}) < 2:
            return False
        every = self.tail_retrain_every if self._in_tail() else self.retrain_every
        if self.fitted_on == 0 or len(ok) - self.fitted_on >= every:
            self.model = self._new_model(self.fits)
            with one_thread():
                self.model.fit([a for a, _ in ok], [s for _, s in ok], self._require_space())
            self.fitted_on = len(ok)
            self.fits += 1
        return True

    def _ranked(self) -> list[Architecture]:
        """Successful architectures, best first (the earlier told first on equal scores)."""
        ok = self._ok()
        order = sorted(range(len(ok)), key=lambda i: (-ok[i][1], i))
        return [ok[i][0] for i in order]

    def _in_tail(self) -> bool:
        """True when the next ask is one of the last ``tail`` of the budget (never without a
        budget)."""
        budget = getattr(self, "budget", None)
        return bool(self.tail) and budget is not None and budget - len(self.asked) <= self.tail

    def _stagnant(self) -> bool:
        """True with ``escape`` k > 0 when the last k successful trials did not improve on the
        best score (its first occurrence is k or more successes back); a function of the
        history, so it needs no state of its own."""
        if not self.escape:
            return False
        scores = [s for _, s in self.history if s is not None]
        if not scores:
            return False
        first_best = int(np.argmax(scores))
        return len(scores) - 1 - first_best >= self.escape

    def _far_mutations(self, parent: Architecture, count: int) -> list[Architecture]:
        """``count`` tries at cells two or three edits from ``parent`` (2 or 3 successive
        mutations, evenly chosen); on a space that lists neighbours the tries that land on
        ``parent`` or one of its one-edit neighbours are dropped."""
        space = self._require_space()
        listed = space.neighbours(parent)
        near = ({self._key(a) for a in listed} | {self._key(parent)}) if listed else set()
        out = []
        for _ in range(count):
            child = parent
            for _ in range(int(self.rng.integers(2, 4))):
                child = space.mutate(child, self.rng)
            if self._key(child) not in near:
                out.append(child)
        return out

    def _local_pool(self) -> list[Architecture]:
        """The unasked one-edit neighbours of the best architecture that has any (going down
        the ranking); empty when the space lists no neighbours or all are asked."""
        space = self._require_space()
        for arch in self._ranked():
            listed = space.neighbours(arch)
            if not listed:
                return []
            fresh = self._unseen(listed)
            if fresh:
                return fresh
        return []

    def _acquire(self, pool: list[Architecture], n: int) -> list[Architecture]:
        """The ``n`` best of ``pool`` by the acquisition function (pool order breaks ties)."""
        with one_thread():
            x = self.model.features(pool, self._require_space())
            mean, std = self.model.predict_features(x)
        if self.acquisition == "its":
            value = self.rng.normal(mean, self.spread * std)
        elif self.acquisition == "ucb":
            value = mean + self.beta * std
        else:
            value = mean
        order = np.argsort(-value, kind="stable")
        return [pool[int(i)] for i in order[:n]]

    def _unseen(self, archs: Sequence[Architecture]) -> list[Architecture]:
        """``archs`` without repeats and without anything asked before, in order."""
        out, seen = [], set()
        for a in archs:
            key = self._key(a)
            if key not in seen and key not in self._asked_set:
                seen.add(key)
                out.append(a)
        return out

    def _mutations(self, parent: Architecture, count: int, max_edits: int = 1) -> list[Architecture]:
        space = self._require_space()
        out = []
        for _ in range(count):
            child = space.mutate(parent, self.rng)
            if max_edits > 1 and self.rng.random() < 0.5:
                child = space.mutate(child, self.rng)
            out.append(child)
        return out

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "history": [[str(a), s] for a, s in self.history],
                "asked": list(self.asked), "fitted_on": self.fitted_on, "fits": self.fits,
                "model_seed": self.model_seed,
                "model": self.model.state_dict() if self.fitted_on else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._defer_until_setup(state):
            return
        super().load_state_dict(state)
        space = self.space
        self.history = [(space.parse(t), None if s is None else float(s))
                        for t, s in state["history"]]
        self.asked = list(state["asked"])
        self._asked_set = {self._key(space.parse(t)) for t in self.asked}
        self.fitted_on, self.fits = int(state["fitted_on"]), int(state["fits"])
        self.model_seed = int(state["model_seed"])
        self.model = self._new_model(max(self.fits - 1, 0))
        if self.fitted_on:
            self.model.load_state_dict(state["model"], space)


@register("strategies", "bananas")
class Bananas(_ModelBased):
    """BANANAS: random start, then the pool's best by Thompson sampling (or UCB) of an MLP
    ensemble refitted every ``retrain_every`` successful trials."""

    name = "bananas"

    def __init__(self, *, seed: int = 0, initial: int = 10, acquisition: str = "its",
                 beta: float = 0.5, parents: int = 2, candidates: int = 100,
                 retrain_every: int = 10, members: int = 5, hidden: int = 32, layers: int = 2,
                 epochs: int = 100, lr: float = 0.01, encoding: str = "path",
                 bootstrap: bool = True, canonical: bool = True, depth: int = 1,
                 pool: str = "mixed", tail: int = 0, tail_retrain_every: int | None = None,
                 spread: float = 1.0, escape: int = 0, escape_mode: str = "replace"):
        super().__init__(seed=seed, initial=initial, acquisition=acquisition, beta=beta,
                         retrain_every=retrain_every, members=members, hidden=hidden,
                         layers=layers, epochs=epochs, lr=lr, encoding=encoding,
                         bootstrap=bootstrap, canonical=canonical, tail=tail,
                         tail_retrain_every=tail_retrain_every, spread=spread, escape=escape,
                         escape_mode=escape_mode)
        if pool not in POOLS:
            raise ConfigError(f"{self.name}: pool={pool!r}; expected one of {', '.join(POOLS)}")
        self.pool = pool
        self.parents = _check_int(self.name, "parents", parents, 1)
        self.candidates = _check_int(self.name, "candidates", candidates, 1)
        self.depth = _check_int(self.name, "depth", depth, 1)
        if depth > 2:
            raise ConfigError(f"{self.name}: depth={depth}; expected 1 or 2")
        self._phase = "random"

    def _pool(self) -> list[Architecture]:
        if self.pool == "local" or self._in_tail():
            local = self._local_pool()
            if local:
                return local
        space = self._require_space()
        top = self._ranked()[:self.parents]
        pool: list[Architecture] = []
        escaping = self._stagnant() and not self._in_tail()
        if escaping and self.escape_mode == "replace":
            per = max(1, self.candidates // len(top))
            for parent in top:
                pool += self._far_mutations(parent, per)
            pool += [space.sample(self.rng) for _ in range(max(1, self.candidates // 4))]
            return self._unseen(pool)
        for parent in top:
            listed = space.neighbours(parent)
            if listed:
                pool += listed
                if self.depth == 2:
                    pool += [b for a in listed for b in (space.neighbours(a) or ())]
        per = max(1, self.candidates // len(top))
        for parent in top:
            pool += self._mutations(parent, per, max_edits=2)
        pool += [space.sample(self.rng) for _ in range(max(1, self.candidates // 4))]
        if escaping:  # escape_mode "add": the usual pool and the far cells
            for parent in top:
                pool += self._far_mutations(parent, per)
        return self._unseen(pool)

    def ask(self, n: int = 1) -> list[Architecture]:
        self._require_space()
        out: list[Architecture] = []
        while len(out) < n:
            pool = self._pool() if self._model_ready() else []
            if pool:
                self._phase = ("tail" if self._in_tail() else
                               "escape" if self._stagnant() else "model")
                picks = self._acquire(pool, min(n - len(out), self._asks_in_phase()))
            else:
                self._phase = "random"
                picks = [self._random_unseen()]
            for a in picks:
                self._remember(a)
            out += picks
        return out

    def _asks_in_phase(self) -> int:
        """How many asks of one batch may come from one pool: up to the tail's start when a tail
        is coming (a batch that straddles it takes the tail's pool from its first ask in it)."""
        budget = getattr(self, "budget", None)
        if not self.tail or budget is None or self._in_tail():
            return 1 << 30
        return max(1, budget - self.tail - len(self.asked))

    def info(self) -> dict[str, Any]:
        return {"phase": self._phase, "fits": self.fits}


@register("strategies", "predictor_evolution")
class PredictorEvolution(_ModelBased):
    """Regularized evolution whose child is the predictor's pick among ``candidates``
    mutations of the tournament winner."""

    name = "predictor_evolution"

    def __init__(self, *, seed: int = 0, population_size: int = 20, sample_size: int = 5,
                 candidates: int = 20, initial: int = 10, acquisition: str = "its",
                 beta: float = 0.5, retrain_every: int = 10, members: int = 5, hidden: int = 32,
                 layers: int = 2, epochs: int = 100, lr: float = 0.01, encoding: str = "path",
                 bootstrap: bool = True, canonical: bool = True, tail: int = 0,
                 tail_retrain_every: int | None = None, spread: float = 1.0, escape: int = 0,
                 escape_mode: str = "replace"):
        super().__init__(seed=seed, initial=initial, acquisition=acquisition, beta=beta,
                         retrain_every=retrain_every, members=members, hidden=hidden,
                         layers=layers, epochs=epochs, lr=lr, encoding=encoding,
                         bootstrap=bootstrap, canonical=canonical, tail=tail,
                         tail_retrain_every=tail_retrain_every, spread=spread, escape=escape,
                         escape_mode=escape_mode)
        self.population_size = _check_int(self.name, "population_size", population_size, 1)
        if not 1 <= sample_size <= population_size:
            raise ConfigError(f"{self.name}: sample_size={sample_size}; expected "
                              f"1..population_size ({population_size})")
        self.sample_size = sample_size
        self.candidates = _check_int(self.name, "candidates", candidates, 1)
        self.population: deque[tuple[Architecture, float]] = deque()
        self._phase = "random"

    def _after_tell(self, arch: Architecture, score: float | None) -> None:
        if score is None:
            return
        self.population.append((arch, score))
        while len(self.population) > self.population_size:
            self.population.popleft()

    def _parent(self) -> Architecture:
        k = min(self.sample_size, len(self.population))
        picks = self.rng.choice(len(self.population), size=k, replace=False)
        best = max(picks, key=lambda i: (self.population[i][1], -i))
        return self.population[int(best)][0]

    def ask(self, n: int = 1) -> list[Architecture]:
        self._require_space()
        out: list[Architecture] = []
        for _ in range(n):
            pool = []
            if self.population and self._model_ready():
                if self._in_tail():
                    pool = self._local_pool()
                if not pool and self._stagnant() and not self._in_tail():
                    parent = self._parent()
                    usual = (self._mutations(parent, self.candidates)
                             if self.escape_mode == "add" else [])
                    pool = self._unseen(usual + self._far_mutations(parent, self.candidates))
                    self._phase = "escape"
                if not pool:
                    pool = self._unseen(self._mutations(self._parent(), self.candidates))
                    self._phase = "model"
            if pool:
                if self._in_tail():
                    self._phase = "tail"
                arch = self._acquire(pool, 1)[0]
            else:
                self._phase = "random"
                arch = self._random_unseen()
            self._remember(arch)
            out.append(arch)
        return out

    def info(self) -> dict[str, Any]:
        return {"phase": self._phase, "fits": self.fits, "population": len(self.population)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "population": [[str(a), s] for a, s in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.space is not None:
            self.population = deque((self.space.parse(t), float(s))
                                    for t, s in state["population"])
