"""Multi-objective search: hypervolume of the front each strategy finds on the same budget.

Objectives: max validation accuracy and min parameters, on the real NAS-Bench-201 table
(``/work/shared/data/nb201_dev.csv``: CIFAR-100 accuracies after 12 epochs, all 15,625 cells).
The table has no parameter column, so one is added: each cell's network in nasforge's NB201
skeleton (C=16, N=5, 100 classes) is counted exactly (``nasforge.bench_tables.nb201_params``).

For every seed each strategy runs the ordinary search loop (``Search``, in-memory store) for
``--budget`` evaluations. Hypervolume uses one fixed reference point for every run: accuracy 0
and the largest parameter count in the table; it is normalised by the box between that
reference and the ideal point (best accuracy and smallest count in the table), so 1 would be a
single architecture that is both. The whole table's front is given for scale. Strategies are
compared with random search paired by seed: the mean difference with a 95% t-interval.

    python benchmarks/pareto_bench.py --seeds 30 --budget 100
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nasforge import registry
from nasforge.bench_tables import add_params_column
from nasforge.core import Objectives
from nasforge.evaluators.table import TableEvaluator
from nasforge.pareto import hypervolume
from nasforge.run.loop import Budget, Search
from nasforge.run.store import Store
from nasforge.spaces.nb201 import NB201Space

DEFAULT_TABLE = "/work/shared/data/nb201_dev.csv"


def t_interval(diffs: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval of paired differences."""
    from scipy import stats

    n = len(diffs)
    mean = float(diffs.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=DEFAULT_TABLE, help="NB201 table with an arch column")
    ap.add_argument("--metric", default="cifar100-val", help="accuracy column searched")
    ap.add_argument("--classes", type=int, default=100, help="classes of the counted networks")
    ap.add_argument("--strategies", default="random,evolution,local")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None, help="write per-seed hypervolumes here (CSV)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if "random" not in names:
        ap.error("--strategies must include random (the pairing baseline)")

    with tempfile.TemporaryDirectory() as tmp:
        table = add_params_column(args.table, Path(tmp) / "with_params.csv",
                                  num_classes=args.classes)
        evaluator = TableEvaluator(path=str(table), search_metric=args.metric,
                                   cost_columns=["params"])
        space = NB201Space()
        evaluator.validate(space)
        objectives = Objectives([f"max:{args.metric}", "min:params"])
        rows = [evaluator.lookup(a) for a in evaluator._load()]  # every cell's values
        accs = [r[args.metric] for r in rows if not math.isnan(r[args.metric])]
        params = [r["params"] for r in rows]
        reference = (0.0, -max(params))
        ideal = (max(accs), -min(params))
        box = (ideal[0] - reference[0]) * (ideal[1] - reference[1])
        everything = [(r[args.metric], -r["params"]) for r in rows if not math.isnan(r[args.metric])]
        table_hv = hypervolume(everything, reference) / box

        hv: dict[str, list[float]] = {n: [] for n in names}
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            for name in names:
                strategy = registry.create("strategies", name, seed=seed)
                search = Search(space=space, strategy=strategy, evaluator=evaluator, task=None,
                                objective=objectives, seed=seed, store=Store(":memory:"))
                trials = search.run(Budget(trials=args.budget))
                points = [s for t in trials if (s := objectives.scores(t.result)) is not None]
                hv[name].append(hypervolume(points, reference) / box)
        seconds = time.perf_counter() - t0

    print(f"NB201 {args.metric} (max) against params (min), {args.budget} evaluations, "
          f"{args.seeds} seeds, {seconds:.0f} s")
    print(f"reference point: {args.metric}=0, params={max(params):,.0f}; normalised by the box to "
          f"the ideal point ({max(accs):.2f}, {min(params):,.0f}); whole table's front: {table_hv:.4f}")
    print(f"{'strategy':<12}{'hypervolume mean':>18}{'std':>9}{'vs random (paired, 95% CI)':>40}")
    base = np.array(hv["random"])
    for name in names:
        vals = np.array(hv[name])
        line = f"{name:<12}{vals.mean():>18.4f}{vals.std(ddof=1):>9.4f}"
        if name != "random":
            mean, lo, hi = t_interval(vals - base)
            wins = int((vals > base).sum())
            line += f"{mean:>+14.4f} [{lo:+.4f}, {hi:+.4f}], wins {wins}/{len(vals)}"
        print(line)
    if args.out is not None:
        with open(args.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seed", *names])
            for seed in range(args.seeds):
                w.writerow([seed, *[f"{hv[n][seed]:.6f}" for n in names]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
