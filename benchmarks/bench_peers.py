"""nasforge's strategies beside Optuna's TPE on the REAL NAS-Bench-201 table (12-epoch results).

For each dev column pair (search ``cifar100-val`` / report ``cifar100-test``, and
``imagenet-val`` / ``imagenet-test``) every strategy runs ``--seeds`` searches of ``--budget``
evaluations through ``nasforge.bench.run_one`` (the same search code as ``nasforge bench``:
spawned worker processes, in-memory stores, all searches of a column in one pool). Printed per
strategy: mean ± sd of the test accuracy of the best-by-validation architecture, the paired margin
(same seed index) over random search and over Optuna TPE with a 95% t-interval, and the mean
seconds one search takes in a worker (strategy overhead plus table lookups; process start-up
excluded; on a loaded machine these grow with the load).

Nothing is tuned here: every strategy runs with its defaults (Optuna TPE with Optuna's defaults).

    python benchmarks/bench_peers.py --table ../shared/data/nb201_dev.csv --seeds 30 --budget 100
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import multiprocessing as mp

import numpy as np
from scipy import stats

from nasforge import bench
from nasforge.bench import BenchConfig, best_so_far

STRATEGIES = ["random", "evolution", "local", "reinforce", "optuna"]
COLUMNS = [("cifar100-val", "cifar100-test"), ("imagenet-val", "imagenet-test")]


def interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t-interval."""
    m = float(diff.mean())
    if len(diff) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff)))
    return m, m - half, m + half


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="../shared/data/nb201_dev.csv")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--columns", default="cifar100,imagenet")
    args = ap.parse_args()
    strategies = args.strategies.split(",")
    wanted = args.columns.split(",")
    for search, report in COLUMNS:
        if search.split("-")[0] not in wanted:
            continue
        cfg = BenchConfig(space="nb201", evaluator=f"table:{args.table}", search_metric=search,
                          report_metric=report, strategies=strategies, seeds=args.seeds,
                          budget=args.budget, workers=args.workers)
        bench.validate(cfg)
        tests: dict[str, list[float]] = {s: [math.nan] * args.seeds for s in strategies}
        seconds: dict[str, list[float]] = {s: [] for s in strategies}
        with cf.ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("spawn"),
                                    initializer=bench._init, initargs=(cfg,)) as pool:
            futures = {pool.submit(bench.run_one, s, seed): (s, seed)
                       for seed in range(args.seeds) for s in strategies}
            for fut in cf.as_completed(futures):
                s, seed = futures[fut]
                r = fut.result()
                _, rcurve = best_so_far(r["values"], r["reports"], "max")
                tests[s][seed] = rcurve[-1]
                seconds[s].append(r["seconds"])
        arr = {s: np.array(v, dtype=float) for s, v in tests.items()}
        print(f"\n{search} -> {report}: {args.seeds} seeds x {args.budget} evaluations")
        print(f"{'strategy':<10} {'test of best-val':>18} {'margin vs random [95% CI]':>30} "
              f"{'margin vs TPE [95% CI]':>28} {'s/search':>9}")
        for s in strategies:
            cells = []
            for base in ("random", "optuna"):
                if base in arr and base != s:
                    m, lo, hi = interval(arr[s] - arr[base])
                    cells.append(f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]")
                else:
                    cells.append("-")
            t = arr[s]
            print(f"{s:<10} {t.mean():>10.2f} ± {t.std(ddof=1):<5.2f} {cells[0]:>30} "
                  f"{cells[1]:>28} {np.mean(seconds[s]):>9.2f}", flush=True)


if __name__ == "__main__":
    main()
