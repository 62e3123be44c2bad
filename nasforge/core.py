"""The core interfaces every nasforge component implements (see DESIGN.md).

- ``Task``: a dataset ready for training (train / val / test tensors, input shape, classes).
- ``Architecture``: an immutable, hashable value; ``str(arch)`` is its canonical text
  (``TextArchitecture``: one whose text is computed once and cached).
- ``SearchSpace``: samples, mutates, parses and builds architectures, and exposes the sequential
  view (``choices`` / ``to_decisions`` / ``from_decisions`` / ``state_key``) that controllers use.
- ``Network``: the ``nn.Module`` a space builds, split into ``encoder`` and ``head``.
- ``Evaluator``: scores one architecture on one task, returning a ``TrialResult``.
- ``Strategy``: decides what to try next (``ask`` / ``tell``); never trains a network itself.
- ``Objective``: which metric to maximise or minimise; ``Objectives``: several (a Pareto front)
  plus ``Constraint``s (``params<=50000``) that exclude trials from being chosen.
"""

from __future__ import annotations

import abc
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Hashable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ArchitectureError

if TYPE_CHECKING:  # pragma: no cover
    from .graph import ArchGraph

TaskKind = Literal["image", "series", "segmentation", "language"]
Decision = Hashable


# --------------------------------------------------------------------------------------------
# Task


@dataclass
class Task:
    """A dataset ready for training.

    ``train``, ``val`` and ``test`` are ``(x, y)`` tensor pairs; ``x`` is float32 of shape
    ``(N, *input_shape)`` (already normalised), ``y`` int64 class indices. ``input_shape`` is
    ``(C, H, W)`` for images and ``(C, L)`` for series. A ``language`` task (language modelling)
    holds int64 token windows: ``x`` ``(N, T)`` and ``y`` ``(N, T)`` the next token of each
    position; ``input_shape`` is ``(T,)`` and ``num_classes`` the vocabulary size.
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


def conv_dims(task: Task, who: str) -> int:
    """2 for an image task ``(C, H, W)``, 1 for a series task ``(C, L)``; any other task raises
    ``ArchitectureError`` (``who`` starts the message: a space or module that needs one)."""
    shape = tuple(task.input_shape)
    expected = {"image": 3, "series": 2}.get(task.kind)
    if expected is None or len(shape) != expected:
        raise ArchitectureError(
            f"{who}: needs an image task (C, H, W) or a series task (C, L); task {task.name!r} "
            f"has kind {task.kind!r} and input shape {shape}")
    return len(shape) - 1


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


class TextArchitecture(Architecture):
    """An ``Architecture`` that computes its canonical text once, into a ``_text`` field (set in
    ``__post_init__``), and uses it for ``str`` and ``hash``: a space's lookups hash it often.

    Equality: same type and equal ``_equal_by`` attribute (``_text`` unless a subclass names a
    field, such as its tuple of operations). Subclasses are ``@dataclass(frozen=True, eq=False)``
    so that the dataclass adds no ``__eq__`` / ``__hash__`` of its own.
    """

    _equal_by = "_text"

    def __str__(self) -> str:
        return self._text  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        key = self._equal_by
        return type(other) is type(self) and getattr(self, key) == getattr(other, key)

    def __hash__(self) -> int:
        return hash(self._text)  # type: ignore[attr-defined]


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

    # -- optional hooks ---------------------------------------------------------------------------
    def neighbours(self, arch: Architecture) -> list[Architecture] | None:
        """Every architecture one edit away from ``arch``, or None if the space cannot list them.

        Local search evaluates the whole list when there is one (NAS-Bench-201: every cell with
        one operation changed); otherwise it draws neighbours with ``mutate``.
        """
        return None

    def canonical_key(self, arch: Architecture) -> str:
        """A text equal for architectures that compute the same function (default: ``str``).

        Spaces with equivalent encodings override it (NAS-Bench-201: isomorphic cells and
        branches cut off by ``none``; DARTS: input order within a node), so a strategy can skip
        an architecture equivalent to one it already evaluated (``canonical`` option of the
        model-based strategies, ``docs/bananas.md``).
        """
        return str(arch)

    def canonical(self, arch: Architecture) -> Architecture:
        """One fixed representative of the architectures equivalent to ``arch`` (same
        ``canonical_key``); default: ``arch`` itself. Predictors read the representative's
        features (``canonical`` option), so equivalent architectures get equal predictions."""
        return arch


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


#: ``info`` key of a trial that took an earlier trial's result instead of being evaluated (run
#: option ``repeats: reuse``); its value is the id of that earlier trial
REUSES = "reuses"


def reused_from(item: Any) -> int | None:
    """The id of the trial whose result ``item`` (a ``Trial`` or a store row) reuses, else None."""
    info = item.info if isinstance(item, Trial) else (item.get("info") or {})
    ref = info.get(REUSES) if isinstance(info, dict) else None
    return None if ref is None or isinstance(ref, bool) else int(ref)


def evaluated(items: Sequence[Any]) -> list[Any]:
    """The trials / rows that were evaluated, without those that reuse an earlier result: what
    leaderboards, fronts and ``best/`` are made of, so a reused result is never counted twice."""
    return [it for it in items if reused_from(it) is None]


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

    #: whether ``evaluate`` needs a ``Task`` (False for lookups such as tabular benchmarks, which
    #: are called with ``task=None``); callers without a task refuse evaluators that need one
    needs_task: bool = True

    @abc.abstractmethod
    def evaluate(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
                 workdir: Path | None = None) -> TrialResult: ...

    def metrics(self) -> frozenset[str] | None:
        """Names of the metrics and cost keys an ok result carries, or None if not known ahead.

        A run checks its objectives and constraints against them before any work
        (``check_metrics``); with None it checks after the first successful trial.
        """
        return None

    # -- optional hooks ---------------------------------------------------------------------------
    def validate(self, space: SearchSpace) -> None:
        """Refuse, before any work, a space this evaluator cannot score (raise a ``NasforgeError``
        naming the problem); the default accepts every space."""
        return None

    def optimum(self, metric: str, mode: str = "max") -> float | None:
        """The best value of ``metric`` any architecture can reach, if the evaluator knows it
        (a tabular benchmark does; regret curves use it), else None."""
        return None


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
        if not self.metric or not self.metric.strip():
            raise ValueError(f"objective {self.mode}:{self.metric} names no metric")

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
    from .pareto import pareto_indices

    return pareto_indices(points)


#: cost keys an objective or constraint may always name (every training evaluator measures them)
COST_KEYS = ("params", "flops", "latency_ms", "train_seconds")

_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")
_OPS = {"<=": lambda v, b: v <= b, ">=": lambda v, b: v >= b,
        "<": lambda v, b: v < b, ">": lambda v, b: v > b}


def _lookup(item: Any, metric: str) -> float | None:
    """A finite metric (or cost) value of an ok ``TrialResult`` or store row, else None."""
    if isinstance(item, Trial):
        item = item.result
    if isinstance(item, TrialResult):
        status, metrics, cost = item.status, item.metrics, item.cost
    else:
        status, metrics, cost = item["status"], item["metrics"], item["cost"]
    if status != "ok":
        return None
    v = metrics.get(metric, cost.get(metric))
    try:
        v = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class Constraint:
    """A bound a trial must meet to be chosen (``params<=50000``); others are recorded, never chosen.

    ``metric`` is looked up in metrics, then cost; a trial that lacks it breaks the constraint.
    """

    metric: str
    op: Literal["<=", ">=", "<", ">"]
    bound: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"constraint operator {self.op!r}; expected <=, >=, < or >")
        if not math.isfinite(self.bound):
            raise ValueError(f"constraint bound {self.bound!r}; expected a finite number")

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        """``params<=50000``, ``val_acc>=0.9``, ``latency_ms<2`` (operators <=, >=, <, >)."""
        m = _CONSTRAINT.match(str(text))
        if m is None:
            raise ValueError(f"constraint {text!r}; expected METRIC<=NUMBER (or >=, <, >), "
                             "e.g. params<=50000")
        try:
            bound = float(m.group(3))
        except ValueError:
            raise ValueError(f"constraint {text!r}: bound {m.group(3)!r} is not a number") from None
        return cls(metric=m.group(1), op=m.group(2), bound=bound)  # type: ignore[arg-type]

    def satisfied(self, item: Any) -> bool:
        """Whether an ok result (or store row) meets the bound."""
        v = _lookup(item, self.metric)
        return v is not None and _OPS[self.op](v, self.bound)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


class Objectives:
    """One or more objectives plus constraints: what a run optimises and which trials may be chosen.

    With one objective it behaves as that ``Objective`` always did. With several, trials are
    compared by Pareto dominance of their ``scores`` (each oriented so that larger is better).

    Rules (also used by ``best/``, the leaderboard and the report):

    - *feasible*: the trial is ok, every objective metric is present and finite, and every
      constraint holds. Infeasible trials are recorded but never chosen, never on the front and
      never parents.
    - *chosen* (``best``): the feasible trial with the best first objective; ties are broken by
      the next objectives in order, then by fewer parameters (``params``), then by the earlier
      trial. It is always on the Pareto front.
    - *scalar* (the reward of Q-learning and REINFORCE): one objective: its score. Several: the
      weighted sum ``sum_i w_i * s_i`` where ``s_i`` is the oriented score, taken as
      ``log10`` of the value for the cost keys (params, flops, latency_ms, train_seconds, which
      span orders of magnitude), and the weights are 1 for the first objective and 0.05 for each
      other (so, with max:val_acc and min:params, ten times the parameters costs 0.05 accuracy).
    """

    def __init__(self, objectives: Sequence["Objective | str"] = ("max:val_acc",),
                 constraints: Sequence["Constraint | str"] = (),
                 weights: Sequence[float] | None = None):
        items = [o if isinstance(o, Objective) else Objective.parse(o) for o in objectives]
        if not items:
            raise ValueError("no objective; give at least one, e.g. max:val_acc")
        names = [o.metric for o in items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"objective metric {dup[0]!r} is given twice")
        self.items: tuple[Objective, ...] = tuple(items)
        self.constraints: tuple[Constraint, ...] = tuple(
            c if isinstance(c, Constraint) else Constraint.parse(c) for c in constraints)
        if weights is None:
            weights = [1.0] + [0.05] * (len(items) - 1)
        if len(weights) != len(items) or not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"objective weights {list(weights)!r}; expected {len(items)} finite "
                             "numbers >= 0")
        self.weights = tuple(float(w) for w in weights)

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def of(cls, spec: Any) -> "Objectives":
        """An ``Objectives`` from one, an ``Objective``, a text or a list of texts/objectives."""
        if isinstance(spec, Objectives):
            return spec
        if isinstance(spec, (Objective, str)):
            return cls([spec])
        return cls(list(spec))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Objectives":
        """From a saved run config: ``objective`` (a text or a list) and ``constraints``."""
        spec = config.get("objective") or "max:val_acc"
        return cls(objective_texts(spec), list(config.get("constraints") or []))

    # -- views --------------------------------------------------------------------------------------
    @property
    def primary(self) -> Objective:
        return self.items[0]

    @property
    def multi(self) -> bool:
        return len(self.items) > 1

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def metric_names(self) -> list[str]:
        """Every metric the objectives and constraints read, in order, without repeats."""
        out: list[str] = []
        for m in [o.metric for o in self.items] + [c.metric for c in self.constraints]:
            if m not in out:
                out.append(m)
        return out

    def __str__(self) -> str:
        text = ", ".join(str(o) for o in self.items)
        if self.constraints:
            text += " subject to " + ", ".join(str(c) for c in self.constraints)
        return text

    # -- values -------------------------------------------------------------------------------------
    def values(self, item: Any) -> tuple[float, ...] | None:
        """Raw objective values of an ok result / row / trial, None if any is missing."""
        vals = tuple(_lookup(item, o.metric) for o in self.items)
        return None if any(v is None for v in vals) else vals  # type: ignore[return-value]

    def feasible(self, item: Any) -> bool:
        """Ok, every objective present, every constraint met."""
        return self.values(item) is not None and all(c.satisfied(item) for c in self.constraints)

    def scores(self, item: Any) -> tuple[float, ...] | None:
        """Objective values oriented larger-is-better, None unless feasible."""
        if not self.feasible(item):
            return None
        vals = self.values(item)
        assert vals is not None
        return tuple(v if o.mode == "max" else -v for v, o in zip(vals, self.items))

    def scalar(self, item: Any) -> float | None:
        """The documented scalarisation (see the class docstring); None unless feasible."""
        s = self.scores(item)
        if s is None:
            return None
        if not self.multi:
            return s[0]
        total = 0.0
        for w, o, v in zip(self.weights, self.items, s):
            if o.metric in COST_KEYS:
                mag = math.log10(max(abs(v), 1e-12))
                v = mag if o.mode == "max" else -mag
            total += w * v
        return total

    def choice_key(self, item: Any) -> tuple[float, ...] | None:
        """Sort key of the chosen-trial rule (larger is better), None unless feasible."""
        s = self.scores(item)
        if s is None:
            return None
        params = _lookup(item, "params")
        return (*s, -params if params is not None else 0.0)

    # -- selection ------------------------------------------------------------------------------------
    def best(self, items: Sequence[Any]) -> Any | None:
        """The chosen trial/row (see the rule above), or None if none is feasible."""
        best, best_key = None, None
        for it in items:  # strict '>' keeps the earlier trial on a full tie
            key = self.choice_key(it)
            if key is not None and (best_key is None or key > best_key):
                best, best_key = it, key
        return best

    def front(self, items: Sequence[Any]) -> list[Any]:
        """The feasible non-dominated trials/rows, in their given order."""
        from .pareto import pareto_indices

        feasible = [(it, s) for it in items if (s := self.scores(it)) is not None]
        return [feasible[i][0] for i in pareto_indices([s for _, s in feasible])]

    def ranked(self, items: Sequence[Any], top: int | None = None) -> list[Any]:
        """Feasible trials/rows best first: by Pareto rank, then by the chosen-trial rule
        (at least the first ``top`` of them, or all)."""
        from .pareto import non_dominated_sort

        feasible = [it for it in items if self.scores(it) is not None]
        out: list[Any] = []
        for front in non_dominated_sort([self.scores(it) for it in feasible], limit=top):
            members = [feasible[i] for i in front]
            out += sorted(members, key=lambda it: self.choice_key(it), reverse=True)
        return out if self.multi else sorted(feasible, key=lambda it: self.choice_key(it),
                                              reverse=True)


#: the rule ``Objectives.best`` follows, as stated in reports and ``best/``
CHOICE_RULE = ("highest first objective; ties by the next objectives, then fewer params, then the "
               "earlier trial")


def objective_texts(spec: Any) -> list[str]:
    """The objective texts of a config's ``objective`` value (one text or a list)."""
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, Objective):
        return [str(spec)]
    return [str(s) for s in spec]


def check_metrics(objectives: Objectives, evaluator: "Evaluator") -> None:
    """Refuse objectives and constraints naming a metric the evaluator does not report.

    Evaluators that declare ``metrics()`` are checked here, before any work; the cost keys in
    ``COST_KEYS`` are always accepted (the run checks them after the first successful trial).
    """
    from .errors import ConfigError

    declared = evaluator.metrics()
    if declared is None:
        return
    allowed = set(declared) | set(COST_KEYS)
    for name in objectives.metric_names():
        if name not in allowed:
            raise ConfigError(f"objective or constraint metric {name!r} is not reported by "
                              f"evaluator {evaluator.name!r}; it reports: "
                              f"{', '.join(sorted(allowed))}")


def missing_metrics(objectives: Objectives, result: TrialResult) -> list[str]:
    """Objective / constraint metrics an ok result lacks (empty for failed results)."""
    if result.status != "ok":
        return []
    return [m for m in objectives.metric_names() if m not in result.metrics and m not in result.cost]


def best_trial(trials: Sequence[Trial], objective: "Objective | Objectives") -> Trial | None:
    """The chosen trial: best objective score, ties by fewer parameters, then the earlier trial."""
    return Objectives.of(objective).best(trials)


# --------------------------------------------------------------------------------------------
# Strategies


class Strategy(abc.ABC):
    """Decides which architectures to evaluate next. Never trains a network itself.

    Contract:

    - ``ask(n)`` returns ``n`` architectures to evaluate (may repeat earlier ones).
    - ``tell(trials)`` reports finished trials: a batch in the order asked (``batch`` mode), or
      one trial at a time as each finishes, possibly not in the order asked, while others are
      still out (asynchronous workers); failed trials are told too (their ``result.status``
      says so) and must not break the strategy.
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
        self.objectives = Objectives()
        self.objective = self.objectives.primary
        self.rng = np.random.default_rng(seed)

    def setup(self, space: SearchSpace, objective: "Objective | Objectives", *,
              budget: int | None = None) -> None:
        """Attach the space and objective(s) before the first ``ask``; ``budget`` may be None.

        ``objective`` may be one ``Objective`` or an ``Objectives`` set; ``self.objectives`` is
        always the set and ``self.objective`` its first objective.
        """
        self.space = space
        self.objectives = Objectives.of(objective)
        self.objective = self.objectives.primary
        self.budget = budget
        self._load_pending_state()

    @abc.abstractmethod
    def ask(self, n: int = 1) -> list[Architecture]: ...

    @abc.abstractmethod
    def tell(self, trials: Sequence[Trial]) -> None: ...

    def info(self) -> dict[str, Any]:
        return {}

    # -- optional hooks (a run calls them; the defaults write nothing) ----------------------------
    def write_csv(self, directory: str | Path) -> None:
        """Write the strategy's own human-readable files (e.g. a Q table) into the run directory
        ``directory``; called after every batch of trials. Default: nothing."""
        return None

    def write_plots(self, rows: Sequence[dict[str, Any]], plots_dir: Path) -> list[Path]:
        """Write the strategy's own plots of the run's trial ``rows`` into ``plots_dir`` when the
        run refreshes its plots; returns the files written. Default: none."""
        return []

    def reward(self, trial: Trial) -> float | None:
        """The trial's score, larger is better; None for failed trials and broken constraints.

        One objective: its score. Several: ``Objectives.scalar`` (a documented weighted sum).
        """
        return self.objectives.scalar(trial.result)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(self.rng, state["rng"])

    def _require_space(self) -> SearchSpace:
        if self.space is None:
            raise RuntimeError(f"strategy {self.name!r}: call setup(space, objective) before ask()")
        return self.space

    # -- a state loaded before ``setup`` (its architecture texts need the space to be parsed) ----
    _pending_state: dict[str, Any] | None = None

    def _defer_until_setup(self, state: dict[str, Any]) -> bool:
        """For a ``load_state_dict`` that parses texts: True (and the state kept) when no space
        is attached yet; ``setup`` then loads it (``_load_pending_state``, its last step; a
        subclass that overrides ``setup`` calls ``super().setup`` last)."""
        if self.space is None:
            self._pending_state = state
            return True
        self._pending_state = None
        return False

    def _load_pending_state(self) -> None:
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)


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
