"""Per-trial overhead of the local, process and ray executors, side by side in one run.

    python benchmarks/executors_ray.py [--workers 1,2] [--repeats 5] [--jobs 100] \\
        [--workloads toy,table,train] [--table ../shared/data/nb201_dev.csv]

Each executor is started and warmed (every worker has answered one job) before the clock
starts; then ``--repeats`` times, ``--jobs`` jobs go through it in batches of ``workers`` (the
batch mode of the search loop: submit a batch, wait for all of it), and the wall time per job is
recorded. The ray executor runs on one local cluster this script starts (its start-up time is
printed on its own) with ``workers`` CPUs; the process pool's start-up (spawn, imports) is
printed too. Workloads, all evaluated with 1 torch thread per worker:

- ``toy``: the toy space and its functional evaluator (no task, microseconds of work): the wall
  time per job is the executor's overhead.
- ``table``: NAS-Bench-201 cells looked up in ``--table`` (the ``table`` evaluator; each worker
  reads the CSV once).
- ``train``: the ``train`` evaluator, 1 epoch on digits, the main job's chain space (about a
  second of work per job; the digits task goes to each worker once). ``--train-jobs`` jobs.

The same architectures and seeds go to every executor (repeat ``r`` sends the same jobs to
each), and the script checks that every executor returns the same metrics for them. Columns:
wall ms per job (mean over repeats, 95% t interval over repeats), and the overhead over
``local``: the paired difference per repeat (same jobs), mean and 95% interval; with 2 workers
the overhead can be negative (2 jobs run at once).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
import torch

from nasforge.run.executors import Job, LocalExecutor, ProcessExecutor
from nasforge.testing import FunctionalEvaluator, ToySpace

T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def components(workload: str, table: str):
    if workload == "toy":
        return ToySpace(length=4, width=6), FunctionalEvaluator(), None
    if workload == "table":
        from nasforge.evaluators.table import TableEvaluator
        from nasforge.spaces.nb201 import NB201Space

        return NB201Space(), TableEvaluator(path=table, search_metric="cifar100-val"), None
    from nasforge.config import DEMO_CHAIN_OPTIONS
    from nasforge.data import load_task
    from nasforge.evaluators.train import TrainEvaluator
    from nasforge.run.rundir import build_space

    task = load_task("digits", seed=0)
    space = build_space("chain", dict(DEMO_CHAIN_OPTIONS), task)
    return space, TrainEvaluator(epochs=1, measure_latency=False), task


def jobs_for(space, n: int, offset: int) -> list[Job]:
    return [Job(index=offset + i, arch=str(space.sample(np.random.default_rng(offset + i))),
                seed=offset + i) for i in range(n)]


def run_batches(executor, jobs: list[Job], workers: int) -> dict[int, dict]:
    out = {}
    for i in range(0, len(jobs), workers):
        for job, result in executor.run(jobs[i:i + workers]):
            out[job.index] = dict(result.metrics, status=result.status, reason=result.reason)
    return out


def interval(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:9.2f}"
    half = T95.get(len(values), 1.96) * statistics.stdev(values) / len(values) ** 0.5
    return f"{mean:9.2f} ± {half:7.2f}"


def make_executor(name: str, workers: int):
    if name == "local":
        return LocalExecutor(workers=workers, threads=1)
    if name == "process":
        return ProcessExecutor(workers=workers, threads=1)
    from nasforge.run.ray_executor import RayExecutor

    return RayExecutor(workers=workers, threads=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--train-jobs", type=int, default=6)
    ap.add_argument("--workloads", default="toy,table,train")
    ap.add_argument("--executors", default="local,process,ray")
    ap.add_argument("--table", default="../shared/data/nb201_dev.csv")
    args = ap.parse_args()
    torch.set_num_threads(1)
    workers_list = [int(w) for w in args.workers.split(",")]
    names = args.executors.split(",")
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores (load {os.getloadavg()[0]:.1f}), python "
          f"{platform.python_version()}, torch {torch.__version__}; 1 torch thread per worker, "
          f"{args.repeats} repeats", flush=True)
    if "ray" in names:
        import ray

        from nasforge.run.ray_executor import start_local_cluster

        t0 = time.perf_counter()
        temp_dir = tempfile.mkdtemp(prefix="nasforge-ray-bench-")
        start_local_cluster(max(workers_list), temp_dir)
        print(f"ray {ray.__version__}: local cluster of {max(workers_list)} CPUs started in "
              f"{time.perf_counter() - t0:.1f} s (the ray executor's start when it starts one)",
              flush=True)
    print(f"{'workload':8} {'workers':>7} {'executor':8} {'start+warm s':>12} {'ms per job (95% CI)':>21}"
          f" {'jobs/s':>8} {'overhead ms vs local':>21}", flush=True)
    for workload in args.workloads.split(","):
        space, evaluator, task = components(workload, args.table)
        n = args.train_jobs if workload == "train" else args.jobs
        for workers in workers_list:
            reference, local_times = None, None
            for name in names:
                executor = make_executor(name, workers)
                t0 = time.perf_counter()
                executor.start(space, evaluator, task)
                run_batches(executor, jobs_for(space, 2 * workers, 10_000), workers)  # warm
                start = time.perf_counter() - t0
                per_job, results = [], {}
                for rep in range(args.repeats):
                    jobs = jobs_for(space, n, rep * n)
                    t0 = time.perf_counter()
                    results.update(run_batches(executor, jobs, workers))
                    per_job.append(1000 * (time.perf_counter() - t0) / n)
                executor.close()
                failed = sum(r["status"] != "ok" for r in results.values())
                if reference is None:
                    reference = results
                same = "" if results == reference else "  RESULTS DIFFER from " + names[0]
                if name == "local":
                    local_times = per_job
                overhead = ("" if local_times is None or name == "local" else
                            interval([a - b for a, b in zip(per_job, local_times)]))
                mean = statistics.fmean(per_job)
                print(f"{workload:8} {workers:7d} {name:8} {start:12.2f} {interval(per_job):>21}"
                      f" {1000 / mean:8.1f} {overhead:>21}"
                      + (f"  ({failed} failed)" if failed else "") + same, flush=True)
    if "ray" in names:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
