"""PNAS and POPNAS progressive search against random search on the cell space, digits, CPU.

Every (strategy, seed) pair is one ordinary search loop (``Search``, in-memory store) with the
same evaluation budget, the ``train`` evaluator at a tiny CPU scale and the same task split
(digits, ``split_seed`` 0; the seed changes the strategy's draws and the networks'
initialisation). Reported per strategy over the seeds: the best validation accuracy found, the
test accuracy of the trial with the best validation accuracy, the CPU time of the whole search
(training included) and of the strategy alone (its ask / tell calls: predictor fits and
scoring), each as a mean with a 95% t-interval, and the paired difference to random search.
For POPNAS the measured Pareto front of (validation accuracy, training seconds) of every seed's
trials and the predicted fronts of each step are saved too.

The cell space is small so that the budget reaches the last step: ``blocks`` 3, operators
``identity, 3x3 conv, 2x2 maxpool`` (21 one-block cells), M=2 motifs of N=1 normal cell, 6
filters; K (``beam``) 4, one exploration cell. Budget 31: PNAS 21 + 4 + 4 (+ 2 next-ranked),
POPNAS 1 (empty cell) + 21 + 4 + 1 + 4.

    python benchmarks/progressive_digits.py --seeds 3 --out benchmarks/results/progressive_digits.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nasforge import registry
from nasforge.core import Objectives
from nasforge.data import load_task
from nasforge.pareto import pareto_indices
from nasforge.run.loop import Budget, Search
from nasforge.run.store import Store

OPS = ["identity", "3x3 conv", "2x2 maxpool"]
STRATEGIES = {
    "random": ("random", {}),
    "pnas": ("progressive", {"mode": "pnas", "beam": 4}),
    "popnas": ("progressive", {"mode": "popnas", "beam": 4, "exploration": 1}),
}


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def timed(obj, name: str, total: list[float]) -> None:
    """Wrap ``obj.name`` so that its CPU time adds to ``total[0]``."""
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        t0 = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            total[0] += time.process_time() - t0

    setattr(obj, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=31)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=600, help="training rows of digits (val, test whole)")
    ap.add_argument("--filters", type=int, default=6)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", type=Path, default=None, help="raw results (JSON)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    task = load_task("digits", seed=0, limit=args.limit)
    space_options = {"blocks": 3, "motifs": 2, "normal_cells": 1, "filters": args.filters,
                     "operators": OPS}
    space = registry.create("spaces", "cell", **space_options)
    evaluator_options = {"epochs": args.epochs, "batch_size": args.batch_size,
                         "measure_latency": False}
    evaluator = registry.create("evaluators", "train", **evaluator_options)
    objectives = Objectives(["max:val_acc"])
    runs = []
    for seed in range(args.seeds):
        for label in names:
            name, options = STRATEGIES[label]
            strategy = registry.create("strategies", name, seed=seed, **options)
            strategy_cpu = [0.0]
            timed(strategy, "ask", strategy_cpu)
            timed(strategy, "tell", strategy_cpu)
            search = Search(space=space, strategy=strategy, evaluator=evaluator, task=task,
                            objective=objectives, seed=seed, store=Store(":memory:"))
            cpu0, wall0 = time.process_time(), time.perf_counter()
            trials = search.run(Budget(trials=args.budget))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            ok = [t for t in trials if t.result.status == "ok"]
            best = max(ok, key=lambda t: (t.result.metrics["val_acc"], -t.id))
            rows = [{"id": t.id, "arch": str(t.arch), "blocks": len(t.arch),
                     "status": t.result.status,
                     "val_acc": t.result.metrics.get("val_acc"),
                     "test_acc": t.result.metrics.get("test_acc"),
                     "train_seconds": t.result.cost.get("train_seconds"),
                     "params": t.result.cost.get("params"),
                     "role": t.info.get("role")} for t in trials]
            run = {"strategy": label, "seed": seed, "evaluations": len(trials),
                   "failed": len(trials) - len(ok),
                   "best_val_acc": best.result.metrics["val_acc"],
                   "test_acc_of_best": best.result.metrics["test_acc"],
                   "best_arch": str(best.arch), "cpu_seconds": cpu, "wall_seconds": wall,
                   "strategy_cpu_seconds": strategy_cpu[0], "trials": rows}
            if label == "popnas":
                pts = [(r["val_acc"], -r["train_seconds"]) for r in rows if r["status"] == "ok"]
                okrows = [r for r in rows if r["status"] == "ok"]
                run["measured_front"] = sorted(
                    ({"arch": okrows[i]["arch"], "val_acc": okrows[i]["val_acc"],
                      "train_seconds": okrows[i]["train_seconds"]} for i in pareto_indices(pts)),
                    key=lambda r: r["train_seconds"])
                run["predicted"] = [dict(r) for r in strategy.selected if r["step"] > 1]
            runs.append(run)
            print(f"seed {seed} {label:<7} best val {run['best_val_acc']:.4f} test "
                  f"{run['test_acc_of_best']:.4f} cpu {cpu:6.1f} s (strategy "
                  f"{strategy_cpu[0]:5.1f} s) wall {wall:6.1f} s  {best.arch}", flush=True)

    summary = {}
    print(f"\ndigits (train limit {args.limit}), cell space {space_options}, train evaluator "
          f"{evaluator_options}, budget {args.budget}, {args.seeds} seeds; mean [95% t-interval]")
    base = {r["seed"]: r for r in runs if r["strategy"] == "random"}
    for label in names:
        mine = [r for r in runs if r["strategy"] == label]
        entry = {}
        line = f"{label:<7}"
        for key in ("best_val_acc", "test_acc_of_best", "cpu_seconds", "strategy_cpu_seconds"):
            mean, lo, hi = t_interval([r[key] for r in mine])
            entry[key] = {"mean": mean, "lo": lo, "hi": hi}
            line += f"  {key} {mean:.4f} [{lo:.4f}, {hi:.4f}]" if "acc" in key else \
                f"  {key} {mean:.1f} [{lo:.1f}, {hi:.1f}]"
        if label != "random" and base:
            for key in ("best_val_acc", "test_acc_of_best"):
                diffs = [r[key] - base[r["seed"]][key] for r in mine if r["seed"] in base]
                mean, lo, hi = t_interval(diffs)
                entry[f"{key}_minus_random"] = {"mean": mean, "lo": lo, "hi": hi}
                line += f"  {key}-random {mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        summary[label] = entry
        print(line)
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            "started": started, "finished": finished, "uptime_before": load_before,
            "uptime_after": load_after, "task": {"name": "digits", "limit": args.limit,
                                                 "split_seed": 0},
            "space": space_options, "evaluator": evaluator_options, "budget": args.budget,
            "strategies": {k: STRATEGIES[k] for k in names}, "summary": summary, "runs": runs},
            indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
