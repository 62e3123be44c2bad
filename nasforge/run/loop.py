"""The search loop: ask the strategy, evaluate, record each finished trial, tell, checkpoint.

``Search`` is the one loop every multi-trial search uses, from the CLI's ``search`` (with a run
directory on disk) to ``bench`` (thousands of short searches in an in-memory store).

Resume contract. After every batch the strategy's state is checkpointed in the store together
with the number of trials told. On resume the strategy is restored from the latest checkpoint
and asked again: because its state includes its random state, it proposes the same
architectures, and every trial already in the store (matched by id and architecture) is reused
instead of evaluated. So no finished trial is lost or evaluated twice, the trial that was
interrupted is evaluated again, and the finished run equals one that was never interrupted.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..core import (Evaluator, Objective, SearchSpace, Strategy, Task, Trial, TrialResult,
                    best_trial, derive_seed)
from ..errors import RunError
from .executors import Executor, Job, LocalExecutor
from .store import Store

TrialCallback = Callable[["Search", Trial], None]


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
    objective: Objective = field(default_factory=Objective)
    seed: int = 0
    store: Store = field(default_factory=Store)
    executor: Executor = field(default_factory=LocalExecutor)
    batch: int = 1
    trial_dir: Path | None = None  # per-trial work directories go here (None: no workdir)
    keep_trial_dirs: bool = False
    on_trial: Sequence[TrialCallback] = ()  # after each finished trial is stored
    on_batch: Sequence[Callable[["Search"], None]] = ()  # after each tell + checkpoint

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise RunError(f"batch must be >= 1, got {self.batch}")
        self.trials: list[Trial] = []
        self.elapsed = 0.0

    # -- state ------------------------------------------------------------------------------------
    @property
    def best(self) -> Trial | None:
        return best_trial(self.trials, self.objective)

    def spent_cost(self, key: str) -> float:
        return sum(float(t.result.cost.get(key, 0.0)) for t in self.trials)

    def _restore(self) -> dict[int, Trial]:
        """Load the checkpoint (if any) and return the stored trials by id."""
        stored = {t.id: t for t in self.store.trials(self.space)}
        told = 0
        ckpt = self.store.latest_checkpoint()
        if ckpt is not None:
            told, state = ckpt
            self.strategy.load_state_dict(state["strategy"])
            self.elapsed = float(state.get("elapsed", 0.0))
        self.trials = [stored[i] for i in range(told) if i in stored]
        if len(self.trials) != told:
            raise RunError(f"store is inconsistent: checkpoint after {told} trials but only "
                           f"{len(self.trials)} of them are stored")
        return stored

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, budget: Budget) -> list[Trial]:
        """Search until the budget is spent; returns all trials (including resumed ones)."""
        self.strategy.setup(self.space, self.objective, budget=budget.trials)
        stored = self._restore()
        self.executor.start(self.space, self.evaluator, self.task)
        t0 = time.perf_counter() - self.elapsed
        try:
            while not self._exhausted(budget, time.perf_counter() - t0):
                told = len(self.trials)
                n = self.batch if budget.trials is None else min(self.batch, budget.trials - told)
                proposals = []
                for i in range(n):  # one ask per trial, so each records the strategy's info then
                    info = dict(self.strategy.info())
                    proposals.append((told + i, self.strategy.ask(1)[0], info))
                batch = self._evaluate(proposals, stored)
                self.trials.extend(batch)
                if budget.cost is not None and not any(budget.cost_key in t.result.cost for t in self.trials):
                    raise RunError(f"a cost budget needs the evaluator to report cost "
                                   f"{budget.cost_key!r}, but {self.evaluator.name!r} did not "
                                   "(for a table, give its cost column)")
                self.strategy.tell(batch)
                self.elapsed = time.perf_counter() - t0
                self.store.save_checkpoint(len(self.trials), {
                    "strategy": self.strategy.state_dict(), "elapsed": self.elapsed})
                for cb in self.on_batch:
                    cb(self)
        finally:
            self.executor.close()
        return self.trials

    def _exhausted(self, budget: Budget, elapsed: float) -> bool:
        if budget.trials is not None and len(self.trials) >= budget.trials:
            return True
        if budget.seconds is not None and elapsed >= budget.seconds:
            return True
        if budget.cost is not None and self.spent_cost(budget.cost_key) >= budget.cost:
            return True
        return False

    def _evaluate(self, proposals: list[tuple[int, object, dict]], stored: dict[int, Trial]) -> list[Trial]:
        """Evaluate a batch (reusing stored trials); results in the order asked."""
        done: dict[int, Trial] = {}
        jobs: list[Job] = []
        archs = {}
        for tid, arch, info in proposals:
            archs[tid] = (arch, info)
            old = stored.get(tid)
            if old is not None:
                if str(old.arch) != str(arch):
                    raise RunError(
                        f"cannot resume: trial {tid} in the store is {old.arch} but the strategy "
                        f"now proposes {arch}; was the run's config changed?")
                done[tid] = old
                continue
            workdir = None if self.trial_dir is None else str(self.trial_dir / str(tid))
            jobs.append(Job(index=tid, arch=str(arch), seed=derive_seed(self.seed, tid),
                            workdir=workdir))
        started = time.time()
        for job, result in (self.executor.run(jobs) if jobs else ()):
            arch, info = archs[job.index]
            trial = Trial(id=job.index, arch=arch, result=result, seed=job.seed, info=info,
                          started=started, finished=time.time())
            self.store.add_trial(trial)
            done[job.index] = trial
            for cb in self.on_trial:
                cb(self, trial)
            if job.workdir and not self.keep_trial_dirs:
                shutil.rmtree(job.workdir, ignore_errors=True)
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


__all__ = ["Budget", "Search", "regret_curve", "TrialResult"]
