"""The core interfaces every nasforge component implements (see DESIGN.md).

- ``Task``: a dataset ready for training (train / val / test tensors, input shape, classes).
- ``Architecture``: an immutable, hashable value; ``str(arch)`` is its canonical text.
- ``SearchSpace``: samples, mutates, parses and builds architectures, and exposes the sequential
  view (``choices`` / ``to_decisions`` / ``from_decisions`` / ``state_key``) that controllers use.
- ``Network``: the ``nn.Module`` a space builds, split into ``encoder`` and ``head``.
- ``Evaluator``: scores one architecture on one task, returning a ``TrialResult``.
- ``Strategy``: decides what to try next (``ask`` / ``tell``); never trains a network itself.
- ``Objective``: which metric to maximise or minimise; several give a Pareto front.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Hashable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ArchitectureError

if TYPE_CHECKING:  # pragma: no cover
    from .graph import ArchGraph

TaskKind = Literal["image", "series", "segmentation"]
Decision = Hashable


# --------------------------------------------------------------------------------------------
# Task


@dataclass
class Task:
    """A dataset ready for training.

    ``train``, ``val`` and ``test`` are ``(x, y)`` tensor pairs; ``x`` is float32 of shape
    ``(N, *input_shape)`` (already normalised), ``y`` int64 class indices. ``input_shape`` is
    ``(C, H, W)`` for images and ``(C, L)`` for series.
    """

    name: str
    kind: TaskKind
    input_shape: tuple[int, ...]
    num_classes: int
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One split by name: ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {s: int(self.split(s)[0].shape[0]) for s in ("train", "val", "test")}

    def __repr__(self) -> str:
        return (f"Task({self.name!r}, kind={self.kind}, input_shape={self.input_shape}, "
                f"classes={self.num_classes}, sizes={self.sizes()})")


# --------------------------------------------------------------------------------------------
# Architecture and search space


class Architecture(abc.ABC):
    """An immutable, hashable architecture. ``str(arch)`` is its canonical text.

    Subclasses are frozen dataclasses (or otherwise immutable). Two architectures are equal when
    their canonical texts are, and ``space.parse(str(arch)) == arch``.
    """

    @abc.abstractmethod
    def __str__(self) -> str: ...

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, str(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class Network(nn.Module):
    """What a space builds: ``encoder`` (features) followed by ``head`` (classifier).

    Evaluators may freeze, probe or replace either part (the deep-prior evaluator keeps the
    encoder random and trains a new head on its embedding).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output, flattened to ``(N, features)``."""
        return torch.flatten(self.encoder(x), 1)


class SearchSpace(abc.ABC):
    """A set of architectures, with a sequential view used by controllers and Q-learners.

    The sequential view describes an architecture as a sequence of decisions:
    ``choices(prefix)`` lists the valid next decisions after ``prefix`` (an empty list means the
    prefix is a complete architecture), ``to_decisions`` / ``from_decisions`` convert between an
    architecture and its decisions, and ``state_key(prefix)`` is the hashable state a Q-learner
    keys its table by (by default the prefix itself). ``sample`` and ``mutate`` have defaults
    built on that view, so a space needs only ``parse``, ``build`` and the sequential view.

    Spaces never touch global random state: they take a ``numpy.random.Generator``.
    """

    #: registry name, set by subclasses
    name: str = "space"

    # -- text ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def parse(self, text: str) -> Architecture:
        """The architecture whose canonical text is ``text``; ``ArchitectureError`` if malformed."""

    # -- sequential view ------------------------------------------------------------------------
    @abc.abstractmethod
    def choices(self, prefix: Sequence[Decision]) -> list[Decision]:
        """Valid next decisions after ``prefix``; empty when ``prefix`` is complete."""

    @abc.abstractmethod
    def to_decisions(self, arch: Architecture) -> tuple[Decision, ...]:
        """The decisions that build ``arch``."""

    @abc.abstractmethod
    def from_decisions(self, decisions: Sequence[Decision]) -> Architecture:
        """The architecture built by a complete sequence of decisions."""

    def state_key(self, prefix: Sequence[Decision]) -> Hashable:
        """The state a Q-learner keys its table by after ``prefix`` (default: the prefix)."""
        return tuple(prefix)

    # -- building -------------------------------------------------------------------------------
    @abc.abstractmethod
    def build(self, arch: Architecture, task: Task) -> Network:
        """A fresh ``Network`` for ``task``; ``ArchitectureError`` if ``arch`` cannot fit it."""

    def check(self, arch: Architecture, task: Task) -> None:
        """Raise ``ArchitectureError`` if ``arch`` cannot be built for ``task`` (default: build it)."""
        self.build(arch, task)

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Architecture:
        """A random architecture: uniform choice at each decision of the sequential view."""
        return self.complete((), rng)

    def complete(self, prefix: Sequence[Decision], rng: np.random.Generator) -> Architecture:
        """Extend ``prefix`` with uniform random decisions until the architecture is complete."""
        decisions = list(prefix)
        for _ in range(10_000):
            options = self.choices(decisions)
            if not options:
                return self.from_decisions(decisions)
            decisions.append(options[int(rng.integers(len(options)))])
        raise RuntimeError(f"{self.name}: sequential view did not terminate after 10000 decisions")

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        """A neighbour of ``arch``: one decision changed, the rest completed where needed.

        Spaces with a natural mutation (one edge of a cell, one layer of a chain) override this.
        """
        decisions = list(self.to_decisions(arch))
        for _ in range(100):
            i = int(rng.integers(len(decisions))) if decisions else 0
            options = [c for c in self.choices(decisions[:i]) if c != (decisions[i] if i < len(decisions) else None)]
            if not options:
                continue
            new = decisions[:i] + [options[int(rng.integers(len(options)))]]
            # keep the old suffix where it is still valid, otherwise complete at random
            for old in decisions[i + 1:]:
                valid = self.choices(new)
                if not valid or old not in valid:
                    break
                new.append(old)
            child = self.complete(new, rng)
            if child != arch:
                return child
        return self.sample(rng)

    def options(self) -> dict[str, Any]:
        """The constructor options that define this space (saved with a run)."""
        return {}

    # -- features for learned models (predictors, graph hypernetworks; see nasforge.graph) ------
    @property
    def encoding_size(self) -> int:
        """Length of ``encode``'s vector, fixed for this space instance."""
        from .graph import sequential_features

        return sequential_features(self).size

    def encode(self, arch: Architecture) -> np.ndarray:
        """A fixed-length float32 vector of ``arch`` (default: one-hot of each decision over the
        choices seen at its position); equal archs give equal vectors, different ones differ."""
        from .graph import sequential_features

        return sequential_features(self).encode(self.to_decisions(arch))

    @property
    def op_vocab(self) -> tuple[str, ...]:
        """Every operation label ``graph`` may use, in a fixed order (one-hot columns)."""
        from .graph import sequential_features

        return sequential_features(self).vocab

    def graph(self, arch: Architecture) -> "ArchGraph":
        """``arch`` as operations (nodes) and data flow (edges); default: a chain of decisions."""
        from .graph import sequential_features

        return sequential_features(self).graph(self.to_decisions(arch))


# --------------------------------------------------------------------------------------------
# Trials and evaluators

TrialStatus = Literal["ok", "failed", "pruned"]


@dataclass
class TrialResult:
    """What an evaluator returns for one architecture.

    ``metrics``: final scalar values (``val_acc``, ``test_acc``, ... as fractions in [0, 1]).
    ``curves``: per-epoch values (``train_acc``, ``val_acc``, ``train_loss``).
    ``cost``: ``params``, ``flops``, ``train_seconds``, ``latency_ms`` (and others).
    ``status``: ``ok``, ``failed`` (with ``reason``) or ``pruned`` (stopped early on purpose).
    """

    status: TrialStatus = "ok"
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def failed(cls, reason: str, **kwargs: Any) -> "TrialResult":
        return cls(status="failed", reason=reason, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "metrics": self.metrics, "curves": self.curves,
                "cost": self.cost, "reason": self.reason, "artifacts": self.artifacts}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialResult":
        return cls(status=d.get("status", "ok"), metrics=dict(d.get("metrics") or {}),
                   curves=dict(d.get("curves") or {}), cost=dict(d.get("cost") or {}),
                   reason=d.get("reason"), artifacts=dict(d.get("artifacts") or {}))


@dataclass
class Trial:
    """A finished (or running) evaluation as the run and the strategies see it."""

    id: int
    arch: Architecture
    result: TrialResult
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # strategy fields at ask time (epsilon, ...)
    started: float | None = None
    finished: float | None = None

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics

    @property
    def ok(self) -> bool:
        return self.result.status == "ok"


class Evaluator(abc.ABC):
    """Scores one architecture on one task.

    ``evaluate`` must be deterministic for a given ``seed``, must not change global random state
    the caller relies on, and returns a ``failed`` result (with a reason) rather than raising for
    an architecture that cannot be trained (NaN loss, does not fit the task). ``workdir`` is a
    private scratch directory for the trial (caches, checkpoints), removed by the run afterwards
    unless artifacts are kept. Evaluators are pickled to process-pool workers, so keep them
    light (options only; load heavy state lazily).
    """

    name: str = "evaluator"

    @abc.abstractmethod
    def evaluate(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
                 workdir: Path | None = None) -> TrialResult: ...


# --------------------------------------------------------------------------------------------
# Objectives


@dataclass(frozen=True)
class Objective:
    """A metric to maximise or minimise. ``metric`` is looked up in metrics, then in cost."""

    metric: str = "val_acc"
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"objective mode {self.mode!r}; expected 'max' or 'min'")

    def value(self, result: TrialResult) -> float | None:
        """The raw metric value of a result, or None if absent or the trial is not ok."""
        if result.status != "ok":
            return None
        v = result.metrics.get(self.metric, result.cost.get(self.metric))
        if v is None or not math.isfinite(float(v)):
            return None
        return float(v)

    def score(self, result: TrialResult) -> float | None:
        """The value oriented so that larger is better (negated for ``min``)."""
        v = self.value(result)
        if v is None:
            return None
        return v if self.mode == "max" else -v

    @classmethod
    def parse(cls, text: str) -> "Objective":
        """``val_acc`` (max), ``max:val_acc`` or ``min:params``."""
        if ":" in text:
            mode, metric = text.split(":", 1)
            return cls(metric=metric, mode=mode)  # type: ignore[arg-type]
        return cls(metric=text)

    def __str__(self) -> str:
        return f"{self.mode}:{self.metric}"


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points, every coordinate to be maximised."""
    arr = np.asarray(points, dtype=float)
    front = []
    for i, p in enumerate(arr):
        dominated = np.any(np.all(arr >= p, axis=1) & np.any(arr > p, axis=1))
        if not dominated:
            front.append(i)
    return front


def best_trial(trials: Sequence[Trial], objective: Objective) -> Trial | None:
    """The trial with the best objective score (first one on ties), or None."""
    best, best_score = None, -math.inf
    for t in trials:
        s = objective.score(t.result)
        if s is not None and s > best_score:
            best, best_score = t, s
    return best


# --------------------------------------------------------------------------------------------
# Strategies


class Strategy(abc.ABC):
    """Decides which architectures to evaluate next. Never trains a network itself.

    Contract:

    - ``ask(n)`` returns ``n`` architectures to evaluate (may repeat earlier ones).
    - ``tell(trials)`` reports finished trials, in the order they were asked; failed trials are
      told too (their ``result.status`` says so) and must not break the strategy.
    - ``state_dict()`` returns everything needed to continue exactly, RNG state included, made
      of plain Python values and tensors (it is saved with ``torch.save`` and loaded with
      ``weights_only=True``); ``load_state_dict`` restores it on a strategy constructed with the
      same options, space and objective.
    - ``info()`` returns fields recorded with each asked trial (epsilon, generation, ...).
    - With the same seed, the same sequence of ``ask`` / ``tell`` gives the same architectures.
    """

    name: str = "strategy"

    def __init__(self, *, seed: int = 0):
        self.seed = seed
        self.space: SearchSpace | None = None
        self.objective = Objective()
        self.rng = np.random.default_rng(seed)

    def setup(self, space: SearchSpace, objective: Objective, *, budget: int | None = None) -> None:
        """Attach the space and objective before the first ``ask``; ``budget`` may be None."""
        self.space = space
        self.objective = objective
        self.budget = budget

    @abc.abstractmethod
    def ask(self, n: int = 1) -> list[Architecture]: ...

    @abc.abstractmethod
    def tell(self, trials: Sequence[Trial]) -> None: ...

    def info(self) -> dict[str, Any]:
        return {}

    def reward(self, trial: Trial) -> float | None:
        """The objective score of a trial (larger is better), None for failed trials."""
        return self.objective.score(trial.result)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(self.rng, state["rng"])

    def _require_space(self) -> SearchSpace:
        if self.space is None:
            raise RuntimeError(f"strategy {self.name!r}: call setup(space, objective) before ask()")
        return self.space


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy Generator's state as plain Python values (safe for ``weights_only`` loading)."""
    return _plain(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def derive_seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (run seed, trial index, ...), stable across runs."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0]
               & 0x7FFFFFFF)


def check_arch_text(space: SearchSpace, text: str) -> Architecture:
    """Parse ``text`` with ``space``, re-raising any parse problem as ``ArchitectureError``."""
    try:
        return space.parse(text)
    except ArchitectureError:
        raise
    except Exception as exc:  # a space's parser raising something else is still bad input
        raise ArchitectureError(f"cannot parse {text!r} as a {space.name} architecture: {exc}") from None
