"""Executors run evaluations: ``local`` (in this process) or ``process`` (a pool on this machine).

Both take the same jobs and give the same results for the same seeds: an evaluator is
deterministic given a trial's seed, and the run tells the strategy in the order it asked,
whatever order the results arrive in. An exception inside an evaluator, or a worker process
that dies, becomes a ``failed`` trial with the reason; the run goes on.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import multiprocessing as mp
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..core import Evaluator, SearchSpace, Task, TrialResult
from ..registry import register


@dataclass
class Job:
    """One evaluation: the architecture as text (cheap to send), its seed and scratch directory."""

    index: int
    arch: str
    seed: int
    workdir: str | None = None


def evaluate_job(space: SearchSpace, evaluator: Evaluator, task: Task | None, job: Job) -> TrialResult:
    """Run one job, turning any exception into a failed result."""
    try:
        arch = space.parse(job.arch)
        workdir = Path(job.workdir) if job.workdir else None
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        return evaluator.evaluate(arch, space, task, seed=job.seed, workdir=workdir)  # type: ignore[arg-type]
    except Exception as exc:  # an evaluator bug must not end the run
        tb = traceback.format_exc(limit=3)
        return TrialResult.failed(f"{type(exc).__name__}: {exc}", artifacts={"traceback": tb})


class Executor(abc.ABC):
    """Evaluates jobs; ``run`` yields ``(job, result)`` as each finishes, in any order."""

    workers: int = 1

    def start(self, space: SearchSpace, evaluator: Evaluator, task: Task | None) -> None:
        self.space, self.evaluator, self.task = space, evaluator, task

    @abc.abstractmethod
    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, TrialResult]]: ...

    def close(self) -> None:
        """Release workers (idempotent)."""


@register("executors", "local")
class LocalExecutor(Executor):
    """Evaluates jobs one after another in this process."""

    def __init__(self, workers: int = 1):
        self.workers = 1

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, TrialResult]]:
        for job in jobs:
            yield job, evaluate_job(self.space, self.evaluator, self.task, job)


# -- process pool ---------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(space: SearchSpace, evaluator: Evaluator, task: Task | None, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(space=space, evaluator=evaluator, task=task)


def _run_in_worker(job: Job) -> TrialResult:
    return evaluate_job(_WORKER["space"], _WORKER["evaluator"], _WORKER["task"], job)


@register("executors", "process")
class ProcessExecutor(Executor):
    """A pool of ``workers`` processes on this machine (spawned, so safe with torch threads).

    The space, evaluator and task are sent to each worker once, when the pool starts; each job
    sends only the architecture text and seed. Each worker gets ``cores // workers`` threads.
    """

    def __init__(self, workers: int = 2):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: cf.ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.space, self.evaluator, self.task, threads))
        return self._pool

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, TrialResult]]:
        pool = self._ensure_pool()
        futures = {pool.submit(_run_in_worker, job): job for job in jobs}
        broken = False
        for fut in cf.as_completed(futures):
            job = futures[fut]
            try:
                result = fut.result()
            except cf.process.BrokenProcessPool as exc:
                broken = True
                result = TrialResult.failed(f"worker process died: {exc}")
            except Exception as exc:
                result = TrialResult.failed(f"{type(exc).__name__}: {exc}")
            yield job, result
        if broken:  # a dead worker breaks the pool: start a fresh one for the next batch
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
