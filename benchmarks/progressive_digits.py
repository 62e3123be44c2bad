"""PNAS and POPNAS against random search, regularized evolution and TPE: cell space, digits, CPU.

Every (strategy, seed) pair is one ordinary search loop (``Search``, in-memory store) with the
same evaluation budget, the ``train`` evaluator at a tiny CPU scale and the same task split
(digits, ``split_seed`` 0; the seed changes the strategy's draws and the networks'
initialisation). Reported per strategy over the seeds: the best validation accuracy found, the
test accuracy of the trial with the best validation accuracy, the CPU time of the whole search
(training included) and of the strategy alone (its ask / tell / info calls: predictor fits
and scoring), each as a mean with a 95% t-interval, and the paired difference of ``--compare``
(popnas) to each other strategy.
For POPNAS the measured Pareto front of (validation accuracy, training seconds) of every seed's
trials and the predicted fronts of each step are saved too.

The cell space is small so that the budget reaches the last step: ``blocks`` 3, operators
``identity, 3x3 conv, 2x2 maxpool`` (21 one-block cells), M=2 motifs of N=1 normal cell, 6
filters; K (``beam``) 4, one exploration cell. Budget 31: PNAS 21 + 4 + 4 (+ 2 next-ranked),
POPNAS 1 (empty cell) + 21 + 4 + 1 + 4.

    python benchmarks/progressive_digits.py --seeds 3 --out benchmarks/results/progressive_digits.json

Baselines users would pick instead: ``evolution`` (regularized evolution, its defaults:
population 20, sample 5) and ``optuna`` (TPE, Optuna's defaults) through the sequential view.
``--merge`` reuses the runs of an earlier results file, so only the missing (strategy, seed)
pairs run; the output holds the union and the summary over it. ``--check-against`` says for each
run whether every trial (cell, status, accuracies) equals another execution's in a file.
Reruns of random (seed 0) and pnas (seed 3) were identical; popnas is not deterministic, as its
second objective is the measured training time, which depends on the machine's load (seed 3:
the same step 1, other cells from the step-2 Pareto walk on):

    python benchmarks/progressive_digits.py --seeds 3 --strategies random,pnas,popnas,evolution,optuna \
        --merge benchmarks/results/progressive_digits.json \
        --out benchmarks/results/progressive_digits_baselines.json
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
    "evolution": ("evolution", {}),
    "optuna": ("optuna", {}),
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


def parse_seeds(text: str) -> list[int]:
    """``3`` -> seeds 0, 1, 2; ``3-4`` -> 3, 4; ``0,2`` -> 0, 2."""
    try:
        if "," in text:
            return sorted({int(x) for x in text.split(",") if x.strip()})
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            return list(range(lo, hi + 1))
        return list(range(int(text)))
    except ValueError:
        raise SystemExit(f"--seeds {text!r}: expected a count (3), a range (3-4) or a list (0,2)")


def paired(runs: list[dict], label: str, other: str, key: str) -> tuple[list[int], list[float]]:
    """Seeds both strategies ran and ``label - other`` of ``key`` on each."""
    mine = {r["seed"]: r for r in runs if r["strategy"] == label}
    theirs = {r["seed"]: r for r in runs if r["strategy"] == other}
    seeds = sorted(set(mine) & set(theirs))
    return seeds, [mine[s][key] - theirs[s][key] for s in seeds]


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
    ap.add_argument("--seeds", default="3", help="count (3 = seeds 0-2), range (3-4) or list (0,2)")
    ap.add_argument("--budget", type=int, default=31)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=600, help="training rows of digits (val, test whole)")
    ap.add_argument("--filters", type=int, default=6)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", type=Path, default=None, help="raw results (JSON)")
    ap.add_argument("--merge", type=Path, default=None,
                    help="earlier results JSON (same protocol): its runs are kept, not rerun")
    ap.add_argument("--check-against", type=Path, default=None,
                    help="results JSON to compare every run of this invocation with, trial by trial")
    ap.add_argument("--rerun", default="",
                    help="strategy:seed pairs to run again even if --merge has them (the new run "
                         "replaces the merged one), e.g. pnas:3,popnas:3")
    ap.add_argument("--compare", default="popnas",
                    help="strategy whose paired margin against every other one is reported")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    import torch

    torch.set_num_threads(1)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise SystemExit(f"--strategies: unknown {', '.join(unknown)}; expected some of "
                         f"{', '.join(STRATEGIES)}")
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
    protocol = {"task": {"name": "digits", "limit": args.limit, "split_seed": 0},
                "space": space_options, "evaluator": evaluator_options, "budget": args.budget}
    runs, merged = [], None
    if args.merge is not None:
        old = json.loads(args.merge.read_text())
        differs = [k for k, v in protocol.items() if json.loads(json.dumps(v)) != old.get(k)]
        if differs:
            raise SystemExit(f"--merge {args.merge}: its {', '.join(differs)} differ from this "
                             f"run's; merge only results of the same protocol")
        rerun = {(p.split(":")[0], int(p.split(":")[1])) for p in args.rerun.split(",") if p}
        runs = [r for r in old["runs"] if r["strategy"] in names and r["seed"] in seeds
                and (r["strategy"], r["seed"]) not in rerun]
        for r in runs:
            if r.get("source", "this run") == "this run":
                r["source"] = str(args.merge)
        merged = {k: old.get(k) for k in ("command", "started", "finished", "uptime_before",
                                          "uptime_after")}
        merged["path"] = str(args.merge)
        merged["strategies"] = old.get("strategies")
        merged["merged"] = old.get("merged")  # the chain of earlier merges
    done = {(r["strategy"], r["seed"]) for r in runs}
    for seed in seeds:
        for label in names:
            if (label, seed) in done:
                continue
            name, options = STRATEGIES[label]
            strategy = registry.create("strategies", name, seed=seed, **options)
            strategy_cpu = [0.0]
            for method in ("ask", "tell", "info"):  # progressive prepares a step in info()
                timed(strategy, method, strategy_cpu)
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
                   "strategy_cpu_seconds": strategy_cpu[0],
                   "distinct_archs": len({space.canonical_key(t.arch) for t in trials}),
                   "source": "this run", "trials": rows}
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

    checks = []
    if args.check_against is not None:
        ref = {(r["strategy"], r["seed"]): r for r in json.loads(args.check_against.read_text())["runs"]}
        for r in runs:  # every run of the output against the reference's run of its pair
            o = ref.get((r["strategy"], r["seed"]))
            if o is None or (o["cpu_seconds"], o["wall_seconds"]) == (r["cpu_seconds"],
                                                                      r["wall_seconds"]):
                continue  # no counterpart, or the same execution merged into both files
            fields = ("arch", "status", "val_acc", "test_acc")
            same = [{k: t[k] for k in fields} for t in r["trials"]] == \
                [{k: t[k] for k in fields} for t in o["trials"]]
            checks.append({"strategy": r["strategy"], "seed": r["seed"], "identical": same,
                           "against": str(args.check_against)})
            print(f"check {r['strategy']} seed {r['seed']}: trials (arch, status, val_acc, "
                  f"test_acc) {'identical to' if same else 'DIFFER from'} {args.check_against}")

    summary = {}
    runs.sort(key=lambda r: (r["seed"], names.index(r["strategy"])))
    print(f"\ndigits (train limit {args.limit}), cell space {space_options}, train evaluator "
          f"{evaluator_options}, budget {args.budget}, seeds {seeds}; mean [95% t-interval]")
    for label in names:
        mine = [r for r in runs if r["strategy"] == label]
        if not mine:
            continue
        entry = {"seeds": [r["seed"] for r in mine]}
        line = f"{label:<9}"
        for key in ("best_val_acc", "test_acc_of_best", "cpu_seconds", "strategy_cpu_seconds"):
            mean, lo, hi = t_interval([r[key] for r in mine])
            entry[key] = {"mean": mean, "lo": lo, "hi": hi}
            line += f"  {key} {mean:.4f} [{lo:.4f}, {hi:.4f}]" if "acc" in key else \
                f"  {key} {mean:.1f} [{lo:.1f}, {hi:.1f}]"
        summary[label] = entry
        print(line)
    margins = {}
    if args.compare in summary:
        print(f"\npaired margins {args.compare} - baseline (same seeds), mean [95% t-interval]")
        for other in names:
            if other == args.compare or other not in summary:
                continue
            entry = {}
            line = f"{args.compare} - {other:<9}"
            for key in ("best_val_acc", "test_acc_of_best"):
                both, diffs = paired(runs, args.compare, other, key)
                mean, lo, hi = t_interval(diffs)
                entry[key] = {"mean": mean, "lo": lo, "hi": hi, "seeds": both, "diffs": diffs}
                line += f"  {key} {mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"
            margins[other] = entry
            print(line + f"  (seeds {both})")
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            "started": started, "finished": finished, "uptime_before": load_before,
            "uptime_after": load_after, **protocol, "seeds": seeds,
            "strategies": {k: STRATEGIES[k] for k in names}, "merged": merged,
            "checks": checks, "summary": summary, "compare": args.compare,
            "paired_margins": margins, "runs": runs},
            indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
