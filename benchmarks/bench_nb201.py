"""`nasforge bench` figures on NAS-Bench-201-shaped tables (generated: see nasforge.bench_tables).

Prints: table lookup cost, wall time of 4 strategies x 20 seeds x 100 evaluations on 2 workers,
and the margin of each strategy over random search on a structured table (metrics that depend on
the operations, plus noise) and on a shuffled control table (where nothing should beat random).

    python benchmarks/bench_nb201.py [--seeds 20] [--budget 100] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from nasforge.bench import BenchConfig, run_bench
from nasforge.bench_tables import make_nb201_table
from nasforge.evaluators.table import TableEvaluator
from nasforge.spaces.nb201 import NB201Space

STRATEGIES = ["random", "evolution", "reinforce", "local"]


def lookup_cost(path: Path) -> float:
    ev = TableEvaluator(path=str(path), search_metric="cifar10-val", report_metric="cifar10-test")
    space, rng = NB201Space(), np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(50_000)]
    t0 = time.perf_counter()
    for i, a in enumerate(archs):
        ev.evaluate(a, space, None, seed=i)
    return (time.perf_counter() - t0) / len(archs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# {date.today()} {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as d:
        for kind in ("structured", "random"):
            path = make_nb201_table(Path(d) / f"{kind}.csv", seed=0, kind=kind)
            if kind == "structured":
                print(f"table lookup: {lookup_cost(path):.2f} us per evaluation (15,625 rows)")
            cfg = BenchConfig(space="nb201", evaluator=f"table:{path}", search_metric="cifar10-val",
                              report_metric="cifar10-test", strategies=STRATEGIES, seeds=args.seeds,
                              budget=args.budget, workers=args.workers)
            res = run_bench(cfg, Path(d) / f"out-{kind}")
            print(f"\n{kind} table: {len(STRATEGIES)} strategies x {args.seeds} seeds x "
                  f"{args.budget} evaluations in {res['seconds']:.1f} s wall ({args.workers} workers)")
            rows = {r["strategy"]: r for r in res["table"]}
            base = np.array([r["best_search_metric"] for r in res["summary"] if r["strategy"] == "random"])
            print(f"{'strategy':<10} {'best val (mean ± sd)':>22} {'test of best':>16} {'margin vs random':>20}")
            for s in STRATEGIES:
                vals = np.array([r["best_search_metric"] for r in res["summary"] if r["strategy"] == s])
                diff = vals - base  # paired by seed
                half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
                r = rows[s]
                print(f"{s:<10} {r['search_mean']:>13.3f} ± {r['search_std']:<6.3f} "
                      f"{r['report_mean']:>16.3f} {diff.mean():>+12.3f} ± {half:.3f}")


if __name__ == "__main__":
    main()
