"""Trials per minute with 2 workers, batch-synchronous against asynchronous, on workloads whose
trial times differ by 10x, at equal total threads (2 worker processes x 1 torch thread each).

    python benchmarks/async_workers.py [--trials 24] [--workload sleep,train] [--repeats 1]

Workloads (half the architectures are slow, chosen by a hash of their text):

- ``sleep``: a trial sleeps 0.2 s or 2 s. Measures scheduling alone (no CPU contention).
- ``train``: the ``train`` evaluator on digits, chain space of the main job, 1 or 24 epochs
  (about 10x in time: an epoch costs about 1.4 s and a trial about 2 s more on this machine).

Both modes run random search with the same seed, so they evaluate the same architectures with
the same seeds (random search's proposals do not depend on results): the same work, scheduled
two ways. ``batch`` asks 2, waits for both, tells both; ``async`` starts a new trial as soon as
either worker is free. Both workers are started (and warmed with one short job each) before
the clock starts.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import zlib
from datetime import datetime, timezone

import numpy as np
import torch

from nasforge import registry
from nasforge.core import Objective, TrialResult
from nasforge.evaluators.train import TrainEvaluator
from nasforge.run.executors import Job, ProcessExecutor
from nasforge.run.loop import Budget, Search
from nasforge.run.store import Store
from nasforge.testing import FunctionalEvaluator, ToySpace


def slow(arch) -> bool:
    return zlib.crc32(str(arch).encode()) % 2 == 1


class SleepEvaluator(FunctionalEvaluator):
    """The toy score after sleeping 2 s (slow architectures) or 0.2 s."""

    def evaluate(self, arch, space, task, *, seed, workdir=None):
        time.sleep(2.0 if slow(arch) else 0.2)
        return super().evaluate(arch, space, task, seed=seed, workdir=workdir)


class PidEvaluator(FunctionalEvaluator):
    """Answers with the worker's process id after a short sleep (to warm up the pool)."""

    def evaluate(self, arch, space, task, *, seed, workdir=None):
        time.sleep(0.5)
        return TrialResult(metrics={"pid": float(os.getpid())})


class TenfoldEpochsEvaluator(TrainEvaluator):
    """Full training for 24 epochs (slow architectures) or 1 epoch."""

    def evaluate(self, arch, space, task, *, seed, workdir=None):
        self.config.epochs = 24 if slow(arch) else 1
        return super().evaluate(arch, space, task, seed=seed, workdir=workdir)


def components(workload: str):
    if workload == "sleep":
        return ToySpace(length=4, width=6), SleepEvaluator(), None
    from nasforge.config import DEMO_CHAIN_OPTIONS
    from nasforge.data import load_task
    from nasforge.run.rundir import build_space

    task = load_task("digits", seed=0)
    space = build_space("chain", dict(DEMO_CHAIN_OPTIONS), task)
    return space, TenfoldEpochsEvaluator(epochs=24, measure_latency=False), task


def measure(workload: str, mode: str, trials: int, seed: int) -> dict:
    space, evaluator, task = components(workload)
    executor = ProcessExecutor(workers=2, threads=1)
    executor.start(space, evaluator, task)
    # start both workers (spawn, imports) before the clock starts: until two pids answered
    pids: set[float] = set()
    while len(pids) < 2:
        warm = [Job(index=-1 - i, arch=str(space.sample(np.random.default_rng(i))), seed=0,
                    evaluator=PidEvaluator()) for i in range(2)]
        pids |= {r.metrics.get("pid") for _, r in executor.run(warm)}
    search = Search(space=space, strategy=registry.create("strategies", "random", seed=seed),
                    evaluator=evaluator, task=task, objective=Objective("val_acc"), seed=seed,
                    store=Store(), executor=executor, batch=2, mode=mode,
                    on_batch=[lambda s: last.__setitem__(0, time.perf_counter())])
    last = [0.0]
    t0 = time.perf_counter()
    done = search.run(Budget(trials=trials))
    seconds = last[0] - t0  # until the last trial is told (the pool's shutdown is not counted)
    # each trial's own time (sleep, or measured training), to compare with ideal schedules
    durations = [(2.0 if slow(t.arch) else 0.2) if workload == "sleep"
                 else float(t.result.cost.get("train_seconds", 0.0))
                 for t in sorted(done, key=lambda t: t.id)]
    return {"seconds": seconds, "per_min": 60.0 * trials / seconds,
            "slow": sum(slow(t.arch) for t in done), "archs": sorted(str(t.arch) for t in done),
            "failed": sum(not t.ok for t in done), "durations": durations}


def ideal(durations: list[float], mode: str, workers: int = 2) -> float:
    """Seconds the schedule would take with no overhead: pairs wait for their slower member in
    ``batch`` mode; in ``async`` mode each trial starts on the first free worker."""
    if mode == "batch":
        return sum(max(durations[i:i + workers]) for i in range(0, len(durations), workers))
    free = [0.0] * workers
    for d in durations:
        free[free.index(min(free))] += d
    return max(free)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--workload", default="sleep,train")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores (load {load:.1f}), python {platform.python_version()}, torch "
          f"{torch.__version__}; 2 workers x 1 thread, {args.trials} trials, random search")
    print(f"{'workload':9} {'mode':6} {'rep':>3} {'seconds':>8} {'trials/min':>10} {'slow':>5} "
          f"{'ideal s':>8} {'ideal/min':>9}")
    for workload in args.workload.split(","):
        rates: dict[str, list[float]] = {"batch": [], "async": []}
        for rep in range(args.repeats):
            results = {}
            for mode in ("batch", "async"):
                r = measure(workload, mode, args.trials, args.seed + rep)
                results[mode] = r
                rates[mode].append(r["per_min"])
                best = ideal(r["durations"], mode)
                print(f"{workload:9} {mode:6} {rep:3d} {r['seconds']:8.1f} {r['per_min']:10.1f} "
                      f"{r['slow']:5d} {best:8.1f} {60 * args.trials / best:9.1f}"
                      + (f"  ({r['failed']} failed)" if r["failed"] else ""), flush=True)
            assert results["batch"]["archs"] == results["async"]["archs"], "different workloads"
            d = results["async"]["durations"]
            times = sorted(d)
            print(f"{workload:9} trial seconds: fastest {times[0]:.1f}, median {times[len(times) // 2]:.1f},"
                  f" slowest {times[-1]:.1f}")
        b, a = sum(rates["batch"]) / len(rates["batch"]), sum(rates["async"]) / len(rates["async"])
        print(f"{workload:9} async / batch = {a / b:.2f}x  ({a:.1f} vs {b:.1f} trials/min)")


if __name__ == "__main__":
    main()
