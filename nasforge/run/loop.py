"""The search loop: ask the strategy, evaluate, record each finished trial, tell, checkpoint.

``Search`` is the one loop every multi-trial search uses, from the CLI's ``search`` (through the
``multitrial`` method, with a run directory on disk) to ``bench`` (thousands of short searches in
an in-memory store). It has two modes:

- ``batch``: ask ``batch`` architectures, evaluate them all, tell them in the order asked,
  checkpoint. A slow trial holds the others, but the sequence of proposals depends only on the
  seed, whatever the number of workers: use it for reproducible comparisons.
- ``async``: keep ``executor.workers`` trials in flight; as soon as one finishes it is recorded,
  told (alone), checkpointed, and a new one is asked, so a slow trial never holds the others.
  With one worker this is exactly ``batch`` with ``batch=1``. With N > 1 workers each trial's
  result still depends only on its architecture and seed (trial ``i`` gets seed
  ``derive_seed(run seed, i)``), but the order of tells depends on timing, so which
  architectures the strategy proposes after the first N may differ between two runs.

Resume contract. After every tell the strategy's state is checkpointed in the store with the
ids told so far (in tell order), the next id to ask, and the trials in flight (asked, not yet
finished: id, architecture text and info). On resume the strategy is restored from the latest
checkpoint; the trials in flight are evaluated again (same id, architecture and seed; taken from
the store without evaluating if they had finished after the checkpoint), then the strategy is
asked again: because its state includes its random state, it proposes the same architectures,
and every trial already in the store (matched by id and architecture) is reused instead of
evaluated. So no finished trial is lost or evaluated twice, a trial that was interrupted is
evaluated again, and a resumed ``batch`` (or one-worker) run equals one that was never
interrupted.

Repeated architectures (``repeats``). A strategy may ask an architecture the search already
evaluated. With ``repeats="evaluate"`` (the default) it is evaluated again as a new trial with its
own seed. With ``repeats="reuse"`` a proposal whose key (``space.canonical_key``) equals that of an
ok trial of this search is not evaluated: it is recorded at once as a trial with that trial's
result (status, metrics, curves, cost; no artifacts), that trial's seed and ``info["reuses"]`` =
its id, and told to the strategy like any other. A proposal equal to a trial still being
evaluated waits for it (in ``async`` mode it keeps its worker slot; in ``batch`` mode the first
of equal proposals in a batch is evaluated and the others wait for it); if that trial fails, the
waiting proposal is evaluated itself. A reused trial counts as one trial of the budget, with its
recorded cost for a cost budget. The decision depends only on trials stored under their ids, so
resume stays exact: a reuse recorded before a crash is taken from the store, one that was not is
made again from the same earlier trial.
"""

from __future__ import annotations

import collections
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from ..core import (REUSES, Evaluator, Objective, Objectives, SearchSpace, Strategy, Task, Trial,
                    TrialResult, derive_seed, missing_metrics, reused_from)
from ..errors import RunError
from .executors import Executor, Job, LocalExecutor
from .store import Store

# ``callback(driver, trial)``: the driver (a ``Search`` or a method's context) has ``trials``
# (told so far) and ``best``
TrialCallback = Callable[[Any, Trial], None]

#: values of the run option ``repeats``: what a proposal equal to an evaluated architecture gets
REPEATS = ("evaluate", "reuse")


def check_repeats(value: Any) -> str:
    """The one check of the ``repeats`` option (config, CLI, ``Search``)."""
    if not isinstance(value, str) or value not in REPEATS:
        raise RunError(f"repeats = {value!r}; expected one of {', '.join(REPEATS)} (evaluate: "
                       "train a repeated architecture again with a new seed; reuse: record the "
                       "earlier trial's result without evaluating)")
    return value


@dataclass
class Budget:
    """When a search stops: trials, wall-clock seconds, and/or simulated cost (sum of a cost key)."""

    trials: int | None = None
    seconds: float | None = None
    cost: float | None = None
    cost_key: str = "simulated_seconds"

    def __post_init__(self) -> None:
        if self.trials is None and self.seconds is None and self.cost is None:
            raise RunError("a search needs a budget: trials, time or simulated cost")
        for name in ("trials", "seconds", "cost"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise RunError(f"budget {name} must be positive, got {v!r}")


@dataclass
class Search:
    """One search: a space explored by a strategy, architectures scored by an evaluator."""

    space: SearchSpace
    strategy: Strategy
    evaluator: Evaluator
    task: Task | None
    objective: Objective | Objectives = field(default_factory=Objective)  # one or a set
    seed: int = 0
    store: Store = field(default_factory=Store)
    executor: Executor = field(default_factory=LocalExecutor)
    batch: int = 1
    trial_dir: Path | None = None  # per-trial work directories go here (None: no workdir)
    keep_trial_dirs: bool = False
    on_trial: Sequence[TrialCallback] = ()  # after each finished trial is stored
    on_batch: Sequence[Callable[["Search"], None]] = ()  # after each tell + checkpoint
    mode: Literal["batch", "async"] = "batch"
    checkpoint_name: str = "multitrial"  # the method its checkpoints belong to in the store
    first_id: int = 0  # id of the first trial (a method may run a search after other trials)
    repeats: str = "evaluate"  # "reuse": a proposal equal to an evaluated one takes its result

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise RunError(f"batch must be >= 1, got {self.batch}")
        if self.mode not in ("batch", "async"):
            raise RunError(f"mode {self.mode!r}; expected 'batch' or 'async'")
        self.trials: list[Trial] = []  # told, in the order told
        self.elapsed = 0.0
        self.next_id = self.first_id
        self._pending: dict[int, tuple[Any, dict]] = {}  # asked, not finished: id -> (arch, info)
        self._made_dirs: set[str] = set()  # trial directories this search created
        self.objectives = Objectives.of(self.objective)
        self._metrics_checked = False
        check_repeats(self.repeats)
        self._sources: dict[str, Trial] = {}  # reuse: key -> the ok evaluated trial of that key
        self._claimed: dict[str, int] = {}  # reuse (async): key -> id of the trial evaluating it
        self._waiting: dict[str, list[int]] = {}  # reuse (async): key -> ids waiting for it

    # -- state ------------------------------------------------------------------------------------
    @property
    def best(self) -> Trial | None:
        return self.objectives.best(self.trials)

    def spent_cost(self, key: str) -> float:
        return sum(float(t.result.cost.get(key, 0.0)) for t in self.trials)

    def _restore(self) -> tuple[dict[int, Trial], list[tuple[int, Any, dict]]]:
        """Load the checkpoint (if any); return the stored trials by id and the trials that were
        in flight when it was taken."""
        stored = {t.id: t for t in self.store.trials(self.space)}
        told_ids: list[int] = []
        in_flight: list[tuple[int, Any, dict]] = []
        ckpt = self.store.latest_checkpoint(self.checkpoint_name)
        if ckpt is not None:
            step, state = ckpt
            self.strategy.load_state_dict(state["strategy"])
            self.elapsed = float(state.get("elapsed", 0.0))
            # checkpoints before asynchronous mode told ids first_id.. in order, none in flight
            told_ids = [int(i) for i in state.get("told", range(self.first_id, self.first_id + step))]
            self.next_id = int(state.get("next_id", self.first_id + step))
            in_flight = [(int(i), self.space.parse(a), dict(info))
                         for i, a, info in state.get("in_flight", [])]
        self.trials = [stored[i] for i in told_ids if i in stored]
        if len(self.trials) != len(told_ids):
            raise RunError(f"store is inconsistent: checkpoint after {len(told_ids)} trials but "
                           f"only {len(self.trials)} of them are stored")
        for t in self.trials:
            self._note_source(t)
        return stored, in_flight

    def _checkpoint(self) -> None:
        self.store.save_checkpoint(len(self.trials), {
            "strategy": self.strategy.state_dict(), "elapsed": self.elapsed,
            "told": [t.id for t in self.trials], "next_id": self.next_id,
            "in_flight": [[i, str(a), info] for i, (a, info) in sorted(self._pending.items())]},
            method=self.checkpoint_name)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, budget: Budget) -> list[Trial]:
        """Search until the budget is spent; returns all trials told (including resumed ones)."""
        self.strategy.setup(self.space, self.objectives, budget=budget.trials)
        stored, in_flight = self._restore()
        self.executor.start(self.space, self.evaluator, self.task)
        t0 = time.perf_counter() - self.elapsed
        try:
            if self.mode == "async":
                self._run_async(budget, stored, in_flight, t0)
            else:
                self._run_batches(budget, stored, t0)
        finally:
            self.executor.close()
        return self.trials

    def _ask(self) -> tuple[int, Any, dict]:
        """One ask (so each trial records the strategy's info at its own ask) with the next id."""
        info = dict(self.strategy.info())
        arch = self.strategy.ask(1)[0]
        tid, self.next_id = self.next_id, self.next_id + 1
        return tid, arch, info

    def _told(self, batch: list[Trial], budget: Budget, t0: float) -> None:
        """Tell finished trials, checkpoint, and call the batch callbacks."""
        self.trials.extend(batch)
        self._check_metrics(batch)
        if budget.cost is not None and not any(budget.cost_key in t.result.cost for t in self.trials):
            raise RunError(f"a cost budget needs the evaluator to report cost "
                           f"{budget.cost_key!r}, but {self.evaluator.name!r} did not "
                           "(for a table, give its cost column)")
        self.strategy.tell(batch)
        self.elapsed = time.perf_counter() - t0
        self._checkpoint()
        for cb in self.on_batch:
            cb(self)

    def _run_batches(self, budget: Budget, stored: dict[int, Trial], t0: float) -> None:
        while not self._exhausted(budget, time.perf_counter() - t0):
            asked = self.next_id - self.first_id
            n = self.batch if budget.trials is None else min(self.batch, budget.trials - asked)
            proposals = [self._ask() for _ in range(n)]
            self._told(self._evaluate(proposals, stored), budget, t0)

    def _run_async(self, budget: Budget, stored: dict[int, Trial],
                   in_flight: list[tuple[int, Any, dict]], t0: float) -> None:
        ready: collections.deque[Trial] = collections.deque()  # finished before a crash: no rerun
        started: dict[int, float] = {}

        def submit(tid: int, arch: Any) -> None:
            started[tid] = time.time()
            self.executor.submit(self._job(tid, arch))

        def launch(tid: int, arch: Any, info: dict) -> None:
            self._pending[tid] = (arch, info)
            old = self._reuse(tid, arch, stored)
            if old is not None:
                self._note_source(old)
                ready.append(old)
                return
            if self.repeats == "reuse":
                key = self._key(arch)
                if key in self._sources:
                    ready.append(self._record_repeat(tid, self._sources[key]))
                    return
                if key in self._claimed:  # equal to a trial being evaluated: wait for it
                    self._waiting.setdefault(key, []).append(tid)
                    return
                self._claimed[key] = tid
            submit(tid, arch)

        def settle(trial: Trial) -> None:
            """After ``trial`` finished: the proposals waiting for it take its result, or (if it
            failed) the first of them is evaluated and the others wait for that one."""
            key = self._key(trial.arch)
            if self._claimed.get(key) != trial.id:
                return
            del self._claimed[key]
            waiting = self._waiting.pop(key, [])
            if key in self._sources:
                ready.extend(self._record_repeat(tid, self._sources[key]) for tid in waiting)
            elif waiting:
                self._claimed[key] = waiting[0]
                if waiting[1:]:
                    self._waiting[key] = waiting[1:]
                submit(waiting[0], self._pending[waiting[0]][0])

        for tid, arch, info in in_flight:  # the checkpoint's trials in flight run again first
            launch(tid, arch, info)
        while True:
            while (len(self._pending) < self.executor.workers
                   and not self._exhausted(budget, time.perf_counter() - t0, asked=True)):
                launch(*self._ask())
            if ready:
                trial = ready.popleft()
            elif self.executor.pending():
                job, result = self.executor.next_done()
                trial = self._record(job, result, started.pop(job.index, time.time()))
                if self.repeats == "reuse":
                    self._note_source(trial)
                    settle(trial)
            else:
                break
            del self._pending[trial.id]
            self._told([trial], budget, t0)

    def _check_metrics(self, batch: Sequence[Trial]) -> None:
        """Refuse to go on when the first ok trial lacks a metric the objectives read."""
        if self._metrics_checked:
            return
        for t in batch:
            if t.ok:
                self._metrics_checked = True
                missing = missing_metrics(self.objectives, t.result)
                if missing:
                    have = ", ".join(sorted({*t.result.metrics, *t.result.cost}))
                    raise RunError(f"objective or constraint metric {missing[0]!r} is not reported "
                                   f"by evaluator {self.evaluator.name!r} (trial {t.id} reported: "
                                   f"{have}); choose one of those")
                return

    def _exhausted(self, budget: Budget, elapsed: float, asked: bool = False) -> bool:
        done = (self.next_id - self.first_id) if asked else len(self.trials)
        if budget.trials is not None and done >= budget.trials:
            return True
        if budget.seconds is not None and elapsed >= budget.seconds:
            return True
        if budget.cost is not None and self.spent_cost(budget.cost_key) >= budget.cost:
            return True
        return False

    def _reuse(self, tid: int, arch: Any, stored: dict[int, Trial]) -> Trial | None:
        """The stored trial ``tid`` if it finished before a crash; refuses a different arch."""
        old = stored.get(tid)
        if old is not None and str(old.arch) != str(arch):
            raise RunError(
                f"cannot resume: trial {tid} in the store is {old.arch} but the strategy "
                f"now proposes {arch}; was the run's config changed?")
        return old

    # -- repeated architectures (``repeats="reuse"``) ---------------------------------------------
    def _key(self, arch: Any) -> str:
        return self.space.canonical_key(arch)

    def _note_source(self, trial: Trial) -> None:
        """Remember an ok evaluated trial as the result its architecture's repeats take."""
        if self.repeats == "reuse" and trial.ok and reused_from(trial) is None:
            self._sources.setdefault(self._key(trial.arch), trial)

    def _record_repeat(self, tid: int, source: Trial) -> Trial:
        """Store pending trial ``tid`` with ``source``'s result, without evaluating it."""
        arch, info = self._pending[tid]
        r = source.result
        result = TrialResult(status=r.status, metrics=dict(r.metrics),
                             curves={k: list(v) for k, v in r.curves.items()}, cost=dict(r.cost),
                             reason=r.reason)  # artifacts (files) stay the source trial's own
        now = time.time()
        trial = Trial(id=tid, arch=arch, result=result, seed=source.seed,
                      info={**info, REUSES: source.id}, started=now, finished=now)
        self.store.add_trial(trial)
        for cb in self.on_trial:
            cb(self, trial)
        return trial

    def _job(self, tid: int, arch: Any) -> Job:
        workdir = None if self.trial_dir is None else str(self.trial_dir / str(tid))
        if workdir is not None and not Path(workdir).exists():
            self._made_dirs.add(workdir)  # only a directory this run made is removed after the trial
        return Job(index=tid, arch=str(arch), seed=derive_seed(self.seed, tid), workdir=workdir)

    def _record(self, job: Job, result: TrialResult, started: float) -> Trial:
        """Store a finished trial and call the trial callbacks."""
        arch, info = self._pending[job.index]
        trial = Trial(id=job.index, arch=arch, result=result, seed=job.seed, info=info,
                      started=started, finished=time.time())
        self.store.add_trial(trial)
        for cb in self.on_trial:
            cb(self, trial)
        if job.workdir in self._made_dirs and not self.keep_trial_dirs:
            shutil.rmtree(job.workdir, ignore_errors=True)
        self._made_dirs.discard(job.workdir)
        return trial

    def _evaluate(self, proposals: list[tuple[int, Any, dict]], stored: dict[int, Trial]) -> list[Trial]:
        """Evaluate a batch (reusing stored trials); results in the order asked.

        With ``repeats="reuse"`` the first of equal proposals is evaluated and the others are
        answered after it (with its result when ok; otherwise the next one is evaluated)."""
        done: dict[int, Trial] = {}
        for tid, arch, info in proposals:
            self._pending[tid] = (arch, info)
        todo = list(proposals)
        while todo:
            jobs: list[Job] = []
            later: list[tuple[int, Any, dict]] = []
            claimed: set[str] = set()
            for tid, arch, info in todo:
                old = self._reuse(tid, arch, stored)
                if old is not None:
                    done[tid] = old
                    self._note_source(old)
                    continue
                if self.repeats == "reuse":
                    key = self._key(arch)
                    if key in self._sources:
                        done[tid] = self._record_repeat(tid, self._sources[key])
                        continue
                    if key in claimed:  # wait for the equal proposal evaluated in this round
                        later.append((tid, arch, info))
                        continue
                    claimed.add(key)
                jobs.append(self._job(tid, arch))
            started = time.time()
            finished = [self._record(job, result, started)
                        for job, result in (self.executor.run(jobs) if jobs else ())]
            for trial in sorted(finished, key=lambda t: t.id):
                done[trial.id] = trial
                self._note_source(trial)
            todo = later
        for tid, _, _ in proposals:
            del self._pending[tid]
        return [done[tid] for tid, _, _ in proposals]


def regret_curve(trials: Sequence[Trial], objective: Objective) -> list[float]:
    """Best-so-far objective value after each trial (NaN until the first ok trial)."""
    out, best = [], -math.inf
    for t in trials:
        s = objective.score(t.result)
        if s is not None and s > best:
            best = s
        out.append(math.nan if best == -math.inf else (best if objective.mode == "max" else -best))
    return out


__all__ = ["Budget", "REPEATS", "Search", "check_repeats", "regret_curve", "TrialResult"]
