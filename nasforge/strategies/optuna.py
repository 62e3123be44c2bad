"""Optuna adapter: any Optuna sampler (TPE, random, NSGA-II, QMC, GP) searching any nasforge space.

The space is searched through its sequential view, define-by-run: for each position ``i`` the
adapter calls ``trial.suggest_categorical(name, values)`` with the valid next decisions
``space.choices(prefix)``. Optuna requires one fixed distribution per parameter name, and in a
conditional space the choices at a position depend on the earlier decisions, so the name is the
position plus a stable hash of the offered choices (``d3_1f2e3d4c``); positions whose choices never
change keep one name and one distribution. Decisions Optuna cannot store (tuples, objects) are
offered as their text, or as their index when texts collide, and mapped back by index.

Objectives: one objective is told as its raw value with Optuna's direction (``max`` ->
``maximize``); several are told as a multi-objective study (every sampler above supports it;
``nsgaii`` is the usual choice). A failed trial, or one that breaks a constraint, is told as
``FAIL`` (Optuna's samplers then ignore it).

Resume: ``state_dict`` holds every trial of the study (parameters, distributions, values,
state, system attributes), the study's system attributes and the sampler's random states, all as
plain values. ``load_state_dict`` rebuilds a fresh in-memory study by replaying the trials in
order (asked-but-untold ones as ``RUNNING``) and restores the random states, so a resumed search
asks exactly what an uninterrupted one would for ``tpe``, ``random``, ``nsgaii`` and ``qmc``.
``gp`` resumes with the same history and random state but refits its Gaussian process from
scratch (Optuna keeps a warm start of the kernel fit in memory only), so it may differ slightly.

Samplers that model a fixed search space (``gp``, ``qmc``, ``nsgaii``'s crossover) model only the
parameters every trial shares; in a conditional space the others are sampled at random by the
sampler's fallback (TPE, with Optuna's default independent sampling, models every parameter).

Optuna is an optional extra: ``pip install 'nasforge[optuna]'``. Importing nasforge never imports
Optuna; constructing this strategy without it raises ``MissingDependencyError``.
"""

from __future__ import annotations

import importlib.util
import warnings
import zlib
from typing import Any, Sequence

import numpy as np

from ..core import Architecture, Decision, Strategy, Trial
from ..errors import ConfigError, MissingDependencyError
from ..registry import register

SAMPLERS = ("tpe", "random", "nsgaii", "qmc", "gp")
INSTALL_HINT = "pip install 'nasforge[optuna]'"


def require_optuna() -> Any:
    """The ``optuna`` module, or ``MissingDependencyError`` naming the extra to install."""
    if importlib.util.find_spec("optuna") is None:
        raise MissingDependencyError(
            f"strategy 'optuna' needs the package optuna, which is not installed; install it with: "
            f"{INSTALL_HINT}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial from Optuna
    return optuna


def _values_for(choices: Sequence[Decision]) -> list[Any]:
    """Values Optuna can store for ``choices``, one per choice, distinct, in the same order."""
    def distinct(vals: list[Any]) -> bool:
        return len(set(vals)) == len(vals)

    if all(type(c) is str for c in choices) and distinct(list(choices)):
        return list(choices)
    if all(type(c) is int for c in choices) and distinct(list(choices)):
        return list(choices)
    texts = [str(c) for c in choices]
    if distinct(texts):
        return texts
    return list(range(len(choices)))


def _param_name(position: int, values: Sequence[Any]) -> str:
    """The parameter name of a position offering ``values`` (stable across processes)."""
    return f"d{position}_{zlib.crc32(repr(tuple(values)).encode()):08x}"


def _plain(obj: Any) -> Any:
    """JSON-like plain values (numpy scalars/arrays -> Python), safe for ``weights_only`` loads."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


@register("strategies", "optuna")
class OptunaStrategy(Strategy):
    """Runs an Optuna sampler over the space's sequential view, through Optuna's ask/tell.

    Options: ``sampler`` — ``tpe`` (default; Optuna's defaults), ``random``, ``nsgaii`` (several
    objectives), ``qmc`` or ``gp``. The sampler is seeded from ``seed``.
    """

    name = "optuna"

    def __init__(self, *, seed: int = 0, sampler: str = "tpe"):
        super().__init__(seed=seed)
        if sampler not in SAMPLERS:
            raise ConfigError(f"optuna: sampler={sampler!r}; expected one of {', '.join(SAMPLERS)}")
        self._optuna = require_optuna()
        self.sampler_name = sampler
        self.study: Any = None
        self._pending: list[tuple[int, str]] = []  # (Optuna trial number, arch text), ask order
        self._last_number: int | None = None

    # -- study ------------------------------------------------------------------------------------
    def _make_sampler(self) -> Any:
        s = self._optuna.samplers
        seed = int(self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning for qmc / gp
            if self.sampler_name == "tpe":
                return s.TPESampler(seed=seed)
            if self.sampler_name == "random":
                return s.RandomSampler(seed=seed)
            if self.sampler_name == "nsgaii":
                return s.NSGAIISampler(seed=seed)
            if self.sampler_name == "qmc":
                return s.QMCSampler(seed=seed, warn_independent_sampling=False)
            return s.GPSampler(seed=seed, warn_independent_sampling=False)

    def _study(self) -> Any:
        if self.study is None:
            self._require_space()
            directions = ["maximize" if o.mode == "max" else "minimize" for o in self.objectives]
            self.study = self._optuna.create_study(
                storage=self._optuna.storages.InMemoryStorage(), sampler=self._make_sampler(),
                directions=directions)
        return self.study

    # -- decisions <-> parameters -----------------------------------------------------------------
    def _suggest(self, trial: Any) -> Architecture:
        space = self._require_space()
        decisions: list[Decision] = []
        for i in range(10_000):
            options = space.choices(decisions)
            if not options:
                return space.from_decisions(decisions)
            values = _values_for(options)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # independent-sampling notes from some samplers
                value = trial.suggest_categorical(_param_name(i, values), values)
            decisions.append(options[values.index(value)])
        raise RuntimeError(f"{space.name}: sequential view did not terminate after 10000 decisions")

    def _params_of(self, arch: Architecture) -> tuple[dict[str, Any], dict[str, Any]]:
        """Optuna parameters and distributions describing ``arch`` (for trials asked elsewhere)."""
        space = self._require_space()
        dist_cls = self._optuna.distributions.CategoricalDistribution
        params, dists = {}, {}
        decisions = list(space.to_decisions(arch))
        for i, d in enumerate(decisions):
            options = space.choices(decisions[:i])
            values = _values_for(options)
            name = _param_name(i, values)
            params[name] = values[options.index(d)]
            dists[name] = dist_cls(values)
        return params, dists

    def _told_values(self, trial: Trial) -> list[float] | None:
        if not self.objectives.feasible(trial.result):
            return None
        return list(self.objectives.values(trial.result))  # type: ignore[arg-type]

    # -- ask / tell ---------------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Architecture]:
        study = self._study()
        out = []
        for _ in range(n):
            trial = study.ask()
            arch = self._suggest(trial)
            self._pending.append((trial.number, str(arch)))
            self._last_number = trial.number
            out.append(arch)
        return out

    def tell(self, trials: Sequence[Trial]) -> None:
        study = self._study()
        fail = self._optuna.trial.TrialState.FAIL
        for t in trials:
            values = self._told_values(t)
            text = str(t.arch)
            match = next((k for k, (_, a) in enumerate(self._pending) if a == text), None)
            if match is None:  # asked elsewhere (e.g. re-told after a resume): add it as history
                params, dists = self._params_of(t.arch)
                study.add_trial(self._optuna.trial.create_trial(
                    state=self._optuna.trial.TrialState.COMPLETE if values is not None else fail,
                    values=values, params=params, distributions=dists))
                continue
            number, _ = self._pending.pop(match)
            if values is None:
                study.tell(number, state=fail)
            else:
                study.tell(number, values)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sampler": self.sampler_name}
        if self._last_number is not None:
            out["optuna_trial"] = self._last_number
        return out

    # -- state ----------------------------------------------------------------------------------------
    def _random_states(self) -> dict[str, Any]:
        """Every ``LazyRandomState`` of the sampler and its sub-samplers, by attribute path."""
        found: dict[str, Any] = {}

        def walk(obj: Any, path: str, depth: int) -> None:
            if depth > 3:
                return
            for key, val in vars(obj).items():
                if type(val).__name__ == "LazyRandomState":
                    found[f"{path}{key}"] = val
                elif type(val).__module__.startswith("optuna.samplers") and hasattr(val, "__dict__"):
                    walk(val, f"{path}{key}.", depth + 1)

        walk(self._study().sampler, "", 0)
        return found

    def state_dict(self) -> dict[str, Any]:
        study = self._study()
        trials = []
        for ft in study.get_trials(deepcopy=False):
            trials.append({
                "state": ft.state.name,
                "values": None if ft.values is None else [float(v) for v in ft.values],
                "params": _plain(ft.params),
                "choices": {k: _plain(list(d.choices)) for k, d in ft.distributions.items()},
                "system_attrs": _plain(ft.system_attrs),
            })
        rngs = {}
        for path, lazy in self._random_states().items():
            name, keys, pos, has_gauss, cached = lazy.rng.get_state()
            rngs[path] = [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]
        return {**super().state_dict(), "sampler": self.sampler_name, "trials": trials,
                "study_system_attrs": _plain(study._storage.get_study_system_attrs(study._study_id)), "sampler_rngs": rngs,
                "pending": [[n, a] for n, a in self._pending], "last_number": self._last_number}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("sampler", self.sampler_name) != self.sampler_name:
            raise ConfigError(f"optuna: the saved state is for sampler {state['sampler']!r}, "
                              f"this strategy uses {self.sampler_name!r}")
        ot = self._optuna.trial
        dist_cls = self._optuna.distributions.CategoricalDistribution
        self.study = None
        study = self._study()  # a fresh study and sampler, then the saved history replayed
        for key, val in state.get("study_system_attrs", {}).items():
            study._storage.set_study_system_attr(study._study_id, key, val)
        for rec in state.get("trials", []):
            st = ot.TrialState[rec["state"]]
            study.add_trial(ot.create_trial(
                state=st, values=rec["values"] if st == ot.TrialState.COMPLETE else None,
                params=rec["params"],
                distributions={k: dist_cls(v) for k, v in rec["choices"].items()},
                system_attrs=rec["system_attrs"]))
        lazies = self._random_states()
        for path, saved in state.get("sampler_rngs", {}).items():
            if path in lazies:
                name, keys, pos, has_gauss, cached = saved
                lazies[path].rng.set_state((name, np.asarray(keys, dtype=np.uint32), pos,
                                            has_gauss, cached))
        self._pending = [(int(n), str(a)) for n, a in state.get("pending", [])]
        self._last_number = state.get("last_number")
