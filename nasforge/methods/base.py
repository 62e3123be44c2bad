"""What drives a run: the ``Method`` base and the ``MethodContext`` it is run with.

A run is driven by one method, chosen by name (``method: multitrial`` in a config, ``--method``
on the CLI; registry kind ``methods``). ``multitrial`` is the ask -> evaluate -> tell loop;
others train a supernet and derive architectures from it (one-shot), train a hypernetwork and
predict parameters, or re-evaluate the best trials with more budget (``sequential_halving``).
``docs/methods.md`` walks through writing one.

Contract of a method:

- **Options.** The constructor takes the method's own keyword options, with types and defaults;
  ``registry.create("methods", name, **options)`` validates them against that signature
  (unknown keys and wrong types are refused with a message naming them), so a config's
  ``method_options`` and the CLI's ``-o method.NAME=VALUE`` are checked before any work.
  Validate values (ranges) in the constructor and raise ``ConfigError``. Keep options as
  attributes of the same name: ``options()`` reads them back.
- **run(ctx) -> list[Trial]**: do the work and return the trials this method produced (or told).
  Everything comes from the context: task, space, evaluator, objective, seed, store, executor,
  budget, strategy. Never touch global random state: use ``ctx.rng(...)`` /
  ``ctx.torch_generator(...)``. Train networks through the one training engine
  (``ctx.fit``, i.e. ``nasforge.training.fit``), never a loop of your own.
- **Trials.** Every architecture the method produces is recorded as a ``Trial`` with
  ``ctx.evaluate`` (scored by an evaluator, on the executor's workers) or ``ctx.record`` (a
  result the method computed itself, e.g. accuracy with shared weights). Trial ids are chosen by
  the method and must be a deterministic function of its state (so a resumed run gives the same
  ids); ``ctx.next_id()`` is the first id not yet used by the run. A trial id already in the
  store with the same architecture is reused, not evaluated again; with another architecture
  the run is refused (the config changed). So ``nasforge trials``, ``report``, ``best/``,
  ``trials.csv`` and the plots see every method's trials alike. Put what makes a trial special
  (``{"method": ..., "rung": ..., "source_trial": ...}``) in its ``info``.
- **Checkpoints and exact resume.** ``ctx.save_state(step, state)`` saves the method's state at
  its own granularity (trials, epochs, steps) in the run's store, keyed by the method's name;
  ``ctx.load_state()`` returns the newest ``(step, state)`` or None. ``state`` holds plain
  Python values and tensors (``torch.save``, loaded with ``weights_only=True``): model and
  optimizer ``state_dict``s, RNG states (``core.rng_state``, ``torch.Generator.get_state()``),
  counters. A method resumed from its newest checkpoint after ``kill -9`` must finish exactly
  as an uninterrupted run with the same seed would. The options a method checkpointed with are
  saved with its state, and a resume with other options is refused.
- **Budget.** ``ctx.budget`` (trials, seconds, simulated cost) is the run's budget; each method
  documents what it counts against it.
- **Repeats.** ``ctx.repeats`` is the run option ``repeats``; ``ctx.search`` applies it (a
  proposal equal to an ok trial of that search is recorded with its result when it is
  ``reuse``). Trials that reuse another's result carry ``info["reuses"]``; rank
  ``core.evaluated(trials)`` when choosing among distinct evaluations.

A method is constructed once per run, in the driving process; only ``Job``s (architecture
text, seed, optionally an evaluator) travel to worker processes.
"""

from __future__ import annotations

import abc
import inspect
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import registry
from ..core import (Architecture, Evaluator, Objective, Objectives, SearchSpace, Strategy, Task,
                    Trial, TrialResult, best_trial, derive_seed)
from ..errors import RunError
from ..run.executors import Executor, Job, LocalExecutor
from ..run.loop import Budget, Search, TrialCallback
from ..run.store import Store
from ..training import Callback


class Method(abc.ABC):
    """Drives a run: produces architectures, records them as trials, checkpoints, resumes.

    Subclasses set ``name`` (their registry name) and implement ``run``. ``uses_strategy`` says
    whether the run's ``strategy`` means anything to the method (the CLI says so otherwise).
    """

    name: str = "method"
    uses_strategy: bool = False

    def options(self) -> dict[str, Any]:
        """The constructor options, read back from attributes of the same name."""
        out = {}
        for pname, param in inspect.signature(type(self).__init__).parameters.items():
            if pname == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            out[pname] = getattr(self, pname, param.default)
        return out

    @abc.abstractmethod
    def run(self, ctx: "MethodContext") -> list[Trial]:
        """Do the method's work within ``ctx``; return the trials it produced or told."""


@dataclass
class MethodContext:
    """Everything a method works with, and the helpers that keep every method's trials,
    checkpoints and training in the run's one store and one training engine."""

    task: Task | None
    space: SearchSpace
    evaluator: Evaluator
    objective: Objective | Objectives  # one objective or a set (Pareto front, constraints)
    seed: int
    store: Store
    budget: Budget
    executor: Executor = field(default_factory=LocalExecutor)
    strategy: Strategy | None = None
    batch: int | None = None  # trials asked at once in multitrial's batch mode (None: workers)
    evaluator_name: str | None = None  # registry name and options of ``evaluator``, so a method
    evaluator_options: dict[str, Any] = field(default_factory=dict)  # can make variants of it
    trial_dir: Path | None = None  # per-trial scratch directories (None: none)
    work_dir: Path | None = None  # a directory a method may keep large files in (None: none)
    keep_trial_dirs: bool = False
    on_trial: Sequence[TrialCallback] = ()  # (ctx or search, trial) after each stored trial
    on_step: Sequence[Callable[[Any], None]] = ()  # after each checkpoint (refresh reports)
    method_name: str = "method"  # set by ``bind``; keys this method's checkpoints
    method_options: dict[str, Any] = field(default_factory=dict)
    repeats: str = "evaluate"  # the run option: a repeated proposal is evaluated again or reused

    def __post_init__(self) -> None:
        self.trials: list[Trial] = sorted(self.store.trials(self.space), key=lambda t: t.id)
        self._started = False

    def bind(self, method: Method) -> "MethodContext":
        """Key checkpoints by ``method``'s name and options (done by ``run_method``)."""
        self.method_name, self.method_options = method.name, method.options()
        return self

    # -- the run's trials -------------------------------------------------------------------------
    @property
    def best(self) -> Trial | None:
        """The best trial of the run so far (every method's), by the objective."""
        return best_trial(self.trials, self.objective)

    def stored(self) -> dict[int, Trial]:
        """Every trial in the store, by id."""
        return {t.id: t for t in self.trials}

    def next_id(self) -> int:
        """The first trial id no stored trial uses."""
        return max((t.id for t in self.trials), default=-1) + 1

    def _note(self, driver: Any, trial: Trial) -> None:
        for i, t in enumerate(self.trials):
            if t.id == trial.id:
                self.trials[i] = trial
                return
        self.trials.append(trial)

    def _stored_match(self, tid: int, arch: Architecture) -> Trial | None:
        old = self.stored().get(tid)
        if old is not None and str(old.arch) != str(arch):
            raise RunError(f"cannot resume: trial {tid} in the store is {old.arch} but method "
                           f"{self.method_name!r} now gives {arch}; was the run's config changed?")
        return old

    def _ensure_started(self) -> None:
        if not self._started:
            self.executor.start(self.space, self.evaluator, self.task)
            self._started = True

    def evaluate(self, proposals: Sequence[tuple[int, Architecture, dict[str, Any]]], *,
                 evaluator: Evaluator | None = None,
                 on_done: Callable[[Trial], None] | None = None) -> list[Trial]:
        """Evaluate ``(id, arch, info)`` proposals on the executor; record each as it finishes.

        Trials already stored (same id and architecture) are reused, not evaluated again.
        ``evaluator`` replaces the run's evaluator for these trials (e.g. one with more epochs).
        ``on_done(trial)`` is called after each newly stored trial (checkpoint there). Returns
        the trials in the order of ``proposals``.
        """
        done: dict[int, Trial] = {}
        pending: dict[int, tuple[Architecture, dict[str, Any]]] = {}
        for tid, arch, info in proposals:
            old = self._stored_match(tid, arch)
            if old is not None:
                done[tid] = old
                continue
            pending[tid] = (arch, dict(info))
        if pending:
            self._ensure_started()
            started = time.time()
            for tid, (arch, _) in pending.items():
                workdir = None if self.trial_dir is None else str(self.trial_dir / str(tid))
                self.executor.submit(Job(index=tid, arch=str(arch), seed=derive_seed(self.seed, tid),
                                         workdir=workdir, evaluator=evaluator))
            for _ in range(len(pending)):
                job, result = self.executor.next_done()
                arch, info = pending[job.index]
                trial = Trial(id=job.index, arch=arch, result=result, seed=job.seed, info=info,
                              started=started, finished=time.time())
                self._store(trial)
                if job.workdir and not self.keep_trial_dirs:
                    shutil.rmtree(job.workdir, ignore_errors=True)
                done[trial.id] = trial
                if on_done is not None:
                    on_done(trial)
        return [done[tid] for tid, _, _ in proposals]

    def record(self, tid: int, arch: Architecture, result: TrialResult, *,
               info: dict[str, Any] | None = None, seed: int | None = None,
               started: float | None = None) -> Trial:
        """Record a result the method computed itself as trial ``tid`` (reused if stored)."""
        old = self._stored_match(tid, arch)
        if old is not None:
            return old
        trial = Trial(id=tid, arch=arch, result=result,
                      seed=derive_seed(self.seed, tid) if seed is None else seed,
                      info=dict(info or {}), started=started, finished=time.time())
        self._store(trial)
        return trial

    def _store(self, trial: Trial) -> None:
        self.store.add_trial(trial)
        self._note(self, trial)
        for cb in self.on_trial:
            cb(self, trial)

    def search(self, strategy: Strategy | None = None, *, mode: str = "async",
               batch: int | None = None, first_id: int = 0,
               checkpoint_name: str = "multitrial") -> Search:
        """The multi-trial loop bound to this run (store, executor, callbacks); ``.run(budget)``."""
        strategy = strategy if strategy is not None else self.strategy
        if strategy is None:
            raise RunError("a multi-trial search needs a strategy")
        return Search(space=self.space, strategy=strategy, evaluator=self.evaluator,
                      task=self.task, objective=self.objective, seed=self.seed, store=self.store,
                      executor=self.executor, batch=batch or self.batch or self.executor.workers,
                      trial_dir=self.trial_dir, keep_trial_dirs=self.keep_trial_dirs,
                      on_trial=[self._note, *self.on_trial], on_batch=list(self.on_step),
                      mode=mode,  # type: ignore[arg-type]
                      checkpoint_name=checkpoint_name, first_id=first_id, repeats=self.repeats)

    # -- checkpoints ------------------------------------------------------------------------------
    def save_state(self, step: int, state: dict[str, Any], *, keep: int = 3) -> None:
        """Checkpoint the method's ``state`` at ``step`` (its own unit) in the run's store."""
        self.store.save_checkpoint(step, {"options": self.method_options, "state": state},
                                   keep, method=self.method_name)
        for cb in self.on_step:
            cb(self)

    def load_state(self) -> tuple[int, dict[str, Any]] | None:
        """The method's newest ``(step, state)``, or None; refuses other options than saved."""
        ckpt = self.store.latest_checkpoint(self.method_name)
        if ckpt is None:
            return None
        step, blob = ckpt
        saved = blob.get("options", {})
        changed = {k: (saved.get(k), v) for k, v in self.method_options.items()
                   if k in saved and saved.get(k) != v}
        if changed:
            what = "; ".join(f"{k}: checkpoint has {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise RunError(f"method {self.method_name!r} was checkpointed with other options "
                           f"({what}); resume it with the options it started with")
        return step, blob["state"]

    # -- randomness and training ------------------------------------------------------------------
    def rng(self, *parts: int) -> np.random.Generator:
        """A numpy Generator seeded from the run seed and ``parts`` (stable across runs)."""
        return np.random.default_rng(derive_seed(self.seed, *parts))

    def torch_generator(self, *parts: int) -> torch.Generator:
        """A torch Generator seeded from the run seed and ``parts``."""
        return torch.Generator().manual_seed(derive_seed(self.seed, *parts))

    def make_evaluator(self, **changes: Any) -> Evaluator:
        """The run's evaluator with some options changed (validated like the config's)."""
        if self.evaluator_name is None:
            raise RunError("this run's evaluator has no registry name; variants need one")
        return registry.create("evaluators", self.evaluator_name,
                               **{**self.evaluator_options, **changes})

    @staticmethod
    def fit(model: torch.nn.Module, train: Any, val: Any, config: Any, **kwargs: Any) -> Any:
        """Train ``model`` with the one training engine (``nasforge.training.fit``)."""
        from ..training import fit

        return fit(model, train, val, config, **kwargs)

    def train(self, engine: Any, train: Any, val: Any = None, *, key: str = "engine",
              extra: Callable[[], dict[str, Any]] | None = None, **fit_kwargs: Any) -> Any:
        """Fit a ``training.Engine`` with its whole state checkpointed in the store after every
        epoch (this method's checkpoint, step = epoch, entry ``key``, plus what ``extra()``
        returns), resuming from the newest such checkpoint: after ``kill -9`` the finished
        training equals an uninterrupted one (weights, optimizers, curves, callbacks' state).

        Give the engine every callback before calling (the checkpoint holds their states).
        Steps after training (deriving, recording) should save with steps above the epochs.
        """
        saver = _StoreEpochs(self, key, extra)
        engine.callbacks.append(saver)
        try:
            loaded = self.load_state()
            if loaded is not None and key in loaded[1]:
                engine.load_state_dict(loaded[1][key], n_train=int(train[0].shape[0]))
            return engine.fit(train, val, **fit_kwargs)
        finally:
            engine.callbacks.remove(saver)

    def close(self) -> None:
        if self._started:
            self.executor.close()
            self._started = False


class _StoreEpochs(Callback):
    """Engine callback (last in the list): the engine's state into the store after each epoch."""

    def __init__(self, ctx: MethodContext, key: str, extra: Callable[[], dict[str, Any]] | None):
        self.ctx, self.key, self.extra = ctx, key, extra

    def on_epoch_end(self, engine: Any, logs: dict[str, float]) -> None:
        state = {self.key: engine.state_dict()}
        if self.extra is not None:
            state.update(self.extra())
        self.ctx.save_state(engine.epoch, state)


def run_method(method: Method, ctx: MethodContext) -> list[Trial]:
    """Run ``method`` in ``ctx`` (binding its checkpoints to its name) and release the workers."""
    ctx.bind(method)
    try:
        return method.run(ctx)
    finally:
        ctx.close()
