"""Executors run evaluations: ``local`` (in this process) or ``process`` (a pool on this machine);
``ray`` (Ray tasks on a cluster) is in ``nasforge.run.ray_executor``, imported only when chosen.

Both take the same jobs and give the same results for the same seeds: an evaluator is
deterministic given a trial's seed. An executor is used in one of two ways: ``run(jobs)``
evaluates a batch and yields results as they finish, or ``submit(job)`` / ``next_done()`` keep
up to ``workers`` jobs in flight, so a new trial starts as soon as a worker is free (the
asynchronous mode of the multi-trial loop). An exception inside an evaluator, or a worker
process that dies, becomes a ``failed`` trial with the reason; the run goes on.

Results do not depend on the executor: torch's float reductions depend on its thread count, so
every evaluation runs with ``threads`` torch threads whichever executor runs it (default: the
driving process's torch threads when the executor is made, divided by ``workers``); the local
executor sets that count around each evaluation and restores the caller's afterwards.

Pool workers watch their parent: when the process that drives the run dies (even by
``kill -9``), each worker exits within about a second, so no orphan keeps computing (and the
multiprocessing resource tracker, which lives as long as some process holds its pipe, goes too).
"""

from __future__ import annotations

import abc
import collections
import concurrent.futures as cf
import multiprocessing as mp
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..core import Evaluator, SearchSpace, Task, TrialResult
from ..errors import ConfigError
from ..registry import register


def evaluation_threads(workers: int, threads: int | None = None) -> int:
    """Torch threads of one evaluation: ``threads`` if given, else this process's torch threads
    (by default one per core) divided among ``workers``."""
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    import torch

    return threads or max(1, torch.get_num_threads() // max(1, workers))


@dataclass
class Job:
    """One evaluation: the architecture as text (cheap to send), its seed and scratch directory."""

    index: int
    arch: str
    seed: int
    workdir: str | None = None
    evaluator: Evaluator | None = None  # None: the executor's evaluator (a method may vary it)


def evaluate_job(space: SearchSpace, evaluator: Evaluator, task: Task | None, job: Job) -> TrialResult:
    """Run one job, turning any exception into a failed result."""
    if job.evaluator is not None:
        evaluator = job.evaluator
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
    """Evaluates jobs on ``workers`` workers.

    Contract: ``connect`` may be called first (a run calls it before it writes anything);
    ``start`` is called once before any job; ``submit(job)`` hands a job over (it may
    run at once or when a worker frees up); ``next_done()`` blocks until some submitted job has
    finished and returns it with its result (any order; each submitted job exactly once);
    ``pending()`` counts submitted jobs not yet returned; ``run(jobs)`` is the batch form;
    ``close`` releases the workers and is idempotent. Results never depend on which worker ran a
    job, only on the job (its architecture, seed and evaluator).
    """

    workers: int = 1

    def connect(self) -> None:
        """Reach what the jobs will run on (a cluster), before a run directory is made or changed;
        ``ConfigError`` when it cannot be reached. Nothing to reach on this machine."""

    def start(self, space: SearchSpace, evaluator: Evaluator, task: Task | None) -> None:
        self.space, self.evaluator, self.task = space, evaluator, task

    @abc.abstractmethod
    def submit(self, job: Job) -> None: ...

    @abc.abstractmethod
    def next_done(self) -> tuple[Job, TrialResult]: ...

    @abc.abstractmethod
    def pending(self) -> int: ...

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, TrialResult]]:
        """Evaluate ``jobs``; yields ``(job, result)`` as each finishes, in any order."""
        for job in jobs:
            self.submit(job)
        for _ in range(len(jobs)):
            yield self.next_done()

    def close(self) -> None:
        """Release workers (idempotent)."""


@register("executors", "local")
class LocalExecutor(Executor):
    """Evaluates jobs one after another in this process, in the order submitted.

    Each evaluation runs with the torch threads a process pool of ``workers`` would give each
    of its workers (or ``threads``), so a run gives the same results with either executor.
    """

    def __init__(self, workers: int = 1, threads: int | None = None):
        self.threads = evaluation_threads(workers, threads)
        self.workers = 1
        self._queue: collections.deque[Job] = collections.deque()

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def next_done(self) -> tuple[Job, TrialResult]:
        if not self._queue:
            raise RuntimeError("next_done() with no job submitted")
        job = self._queue.popleft()
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return job, evaluate_job(self.space, self.evaluator, self.task, job)
        finally:
            torch.set_num_threads(before)

    def pending(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        self._queue.clear()


# -- process pool ---------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(space: SearchSpace, evaluator: Evaluator, task: Task | None, threads: int,
                 parent: int | None = None) -> None:
    import torch

    if parent is not None:
        watch_parent(parent)
    torch.set_num_threads(threads)
    _WORKER.update(space=space, evaluator=evaluator, task=task)


def watch_parent(parent: int, interval: float = 0.5) -> threading.Thread:
    """Exit this process (``os._exit``) soon after process ``parent`` dies.

    A daemon thread polls ``os.getppid()``: when the parent dies, the kernel re-parents this
    process, so the value changes. Polling (rather than ``PR_SET_PDEATHSIG``, which fires when
    the parent *thread* that started us ends) works on every POSIX system.
    """
    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(70)  # the driver is gone: nobody will read our result
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="nasforge-parent-watch", daemon=True)
    thread.start()
    return thread


def _run_in_worker(job: Job) -> TrialResult:
    return evaluate_job(_WORKER["space"], _WORKER["evaluator"], _WORKER["task"], job)


@register("executors", "process")
class ProcessExecutor(Executor):
    """A pool of ``workers`` processes on this machine (spawned, so safe with torch threads).

    The space, evaluator and task are sent to each worker once, when the pool starts; each job
    sends only the architecture text and seed. Each worker gets ``threads`` torch threads
    (default: this process's torch threads // workers; see ``evaluation_threads``).
    """

    def __init__(self, workers: int = 2, threads: int | None = None):
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self.workers = workers
        self.threads = evaluation_threads(workers, threads)  # torch threads per worker
        self._pool: cf.ProcessPoolExecutor | None = None
        self._futures: dict[cf.Future, Job] = {}

    def _ensure_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            threads = self.threads
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.space, self.evaluator, self.task, threads, os.getpid()))
        return self._pool

    def submit(self, job: Job) -> None:
        pool = self._ensure_pool()
        try:
            fut = pool.submit(_run_in_worker, job)
        except cf.process.BrokenProcessPool:  # a worker died earlier: start a fresh pool
            self._discard_pool()
            fut = self._ensure_pool().submit(_run_in_worker, job)
        self._futures[fut] = job

    def next_done(self) -> tuple[Job, TrialResult]:
        if not self._futures:
            raise RuntimeError("next_done() with no job submitted")
        done, _ = cf.wait(self._futures, return_when=cf.FIRST_COMPLETED)
        # the earliest submitted among those done, so simultaneous finishes come out in order
        fut = min(done, key=lambda f: list(self._futures).index(f))
        job = self._futures.pop(fut)
        try:
            result = fut.result()
        except cf.process.BrokenProcessPool as exc:
            result = TrialResult.failed(f"worker process died: {exc}")
        except Exception as exc:
            result = TrialResult.failed(f"{type(exc).__name__}: {exc}")
        return job, result

    def pending(self) -> int:
        return len(self._futures)

    def _discard_pool(self) -> None:
        """Drop a broken pool; its unfinished futures fail and are reported by ``next_done``."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self._futures.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
