"""ENAS against random search with weight sharing, and against REINFORCE and random search that
train every architecture independently, at the same search budget (issue 12, item 5).

For each task and seed:

1. ``enas`` (LSTM controller) and ``enas`` with ``controller: random`` (random search with weight
   sharing) search the ``enas_macro`` space: ``--epochs`` epochs of shared-weight training and
   controller training, then ``--samples`` architectures ranked by shared-weight validation
   accuracy. Their search cost is measured.
2. ``reinforce`` and ``random`` strategies with independent training (each proposal trained
   from scratch for ``--trial-epochs`` epochs by the ``train`` evaluator, scored on validation
   accuracy) search the same space until they have spent the same budget: the larger of the two
   weight-sharing searches' costs on that task and seed.
3. Each method's chosen architecture (best shared-weight score, or best validation accuracy) is
   trained from scratch by the same ``train`` evaluator for ``--final-epochs`` epochs with the
   same seed; its test accuracy is the figure.

Budgets and costs are process CPU seconds (``time.process_time``, one torch thread): the
machine this ran on is shared, so wall time would measure the neighbours' load. Mean and 95%
interval (t distribution) over seeds, per task and method. The cost target: ENAS's search cost
against ``reinforce`` with independent training for the same number of sampled architectures
(the architectures ENAS rewarded during the search plus those it ranked at the end), the
latter extrapolated from the mean CPU seconds of the reinforce trials measured in the same run.

    python benchmarks/enas_compare.py --seeds 3 --out benchmarks/results/enas_compare.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from nasforge import registry
from nasforge.core import Objective, Trial, derive_seed
from nasforge.data import load_task
from nasforge.methods import MethodContext, run_method
from nasforge.run.loop import Budget
from nasforge.run.store import Store

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t interval (0 for one value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, 0.0
    return m, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def train_evaluator(epochs: int):
    return registry.create("evaluators", "train", epochs=epochs, batch_size=64,
                           measure_latency=False)


def weight_sharing(task, space, seed: int, controller: str, args) -> dict:
    method = registry.create("methods", "enas", epochs=args.epochs, controller=controller,
                             batch_size=64, controller_steps=args.controller_steps,
                             samples=args.samples, retrain=0)
    ctx = MethodContext(task=task, space=space, evaluator=train_evaluator(1),
                        objective=Objective("val_acc"), seed=seed, store=Store(),
                        budget=Budget(trials=1))
    start = time.process_time()
    trials = run_method(method, ctx)
    cost = time.process_time() - start
    best = trials[0]  # ranked by shared-weight validation accuracy
    rewarded = args.epochs * args.controller_steps if controller == "lstm" else 0
    return {"arch": str(best.arch), "search_cpu_s": cost,
            "shared_val_acc": best.metrics["shared_val_acc"],
            "archs_scored": rewarded + args.samples, "distinct_ranked": len(trials)}


def independent(task, space, seed: int, strategy_name: str, budget_s: float, args) -> dict:
    strategy = registry.create("strategies", strategy_name, seed=seed)
    strategy.setup(space, Objective("val_acc"))
    evaluator = train_evaluator(args.trial_epochs)
    trials: list[Trial] = []
    times: list[float] = []
    start = time.process_time()
    while time.process_time() - start < budget_s:
        arch = strategy.ask(1)[0]
        t0 = time.process_time()
        result = evaluator.evaluate(arch, space, task, seed=derive_seed(seed, len(trials)))
        times.append(time.process_time() - t0)
        trial = Trial(id=len(trials), arch=arch, result=result, seed=derive_seed(seed, len(trials)))
        trials.append(trial)
        strategy.tell([trial])
    ok = [t for t in trials if t.ok and "val_acc" in t.metrics]
    best = max(ok, key=lambda t: (t.metrics["val_acc"], -t.id))
    return {"arch": str(best.arch), "search_cpu_s": time.process_time() - start,
            "trials": len(trials), "trial_cpu_s": statistics.fmean(times),
            "best_val_acc": best.metrics["val_acc"]}


def final_test(task, space, arch_text: str, seed: int, args) -> float:
    result = train_evaluator(args.final_epochs).evaluate(space.parse(arch_text), space, task,
                                                         seed=derive_seed(seed, 10_000))
    return float(result.metrics["test_acc"])


def summarize(rows: list[dict], tasks: list[str]) -> dict:
    """Print and return mean ± 95% interval per task and method, and the cost ratio."""
    print()
    print(f"{'task':8} {'method':10} {'test acc (mean ± 95%)':>24} {'search CPU s':>13}")
    summary = {}
    for task_name in tasks:
        for method in ("enas", "random_ws", "reinforce", "random"):
            sel = [r for r in rows if r["task"] == task_name and r["method"] == method]
            if not sel:
                continue
            m, h = interval([r["test_acc"] for r in sel])
            c = statistics.fmean(r["search_cpu_s"] for r in sel)
            summary[f"{task_name}/{method}"] = {"test_acc": m, "ci95": h, "search_cpu_s": c,
                                                "seeds": len(sel)}
            print(f"{task_name:8} {method:10} {m:17.4f} ± {h:.4f} {c:13.1f}  ({len(sel)} seeds)")
        enas = [r for r in rows if r["task"] == task_name and r["method"] == "enas"]
        rl = {r["seed"]: r for r in rows if r["task"] == task_name and r["method"] == "reinforce"}
        ratios = [rl[r["seed"]]["trial_cpu_s"] * r["archs_scored"] / r["search_cpu_s"]
                  for r in enas if r["seed"] in rl]
        if not ratios:
            continue
        summary[f"{task_name}/cost_ratio"] = {"mean": statistics.fmean(ratios), "min": min(ratios),
                                              "archs": enas[0]["archs_scored"]}
        print(f"{task_name:8} reinforce-with-training / enas cost for {enas[0]['archs_scored']} "
              f"architectures: {statistics.fmean(ratios):.1f}x (min {min(ratios):.1f}x over seeds)")
    return summary


def read_rows(paths: list[str]) -> list[dict]:
    """The result rows (JSON lines) printed by earlier runs, e.g. runs split by task or seed."""
    rows = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.startswith("{") and '"method"' in line:
                rows.append(json.loads(line))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="digits,mnist1d")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--epochs", type=int, default=6, help="weight-sharing search epochs")
    p.add_argument("--controller-steps", type=int, default=20)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--trial-epochs", type=int, default=2, help="epochs per independent trial")
    p.add_argument("--final-epochs", type=int, default=10)
    p.add_argument("--limit", type=int, default=None, help="rows of each task (default: all)")
    p.add_argument("--seed-list", default=None, help="comma-separated seeds (instead of --seeds)")
    p.add_argument("--merge", nargs="+", default=None,
                   help="only summarise the rows printed in these logs of earlier runs")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.merge:
        rows = read_rows(args.merge)
        summary = summarize(rows, sorted({r["task"] for r in rows}, key=args.tasks.split(",").index))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows,
                                                  "summary": summary}, indent=1))
        return 0
    seeds = [int(v) for v in args.seed_list.split(",")] if args.seed_list else range(args.seeds)
    torch.set_num_threads(1)
    rows = []
    for task_name in args.tasks.split(","):
        options = {"limit": args.limit} if args.limit else {}
        for seed in seeds:
            task = load_task(task_name, seed=seed, **options)
            space = registry.create("spaces", "enas_macro", layers=args.layers,
                                    channels=args.channels)
            found = {"enas": weight_sharing(task, space, seed, "lstm", args),
                     "random_ws": weight_sharing(task, space, seed, "random", args)}
            budget = max(found["enas"]["search_cpu_s"], found["random_ws"]["search_cpu_s"])
            found["reinforce"] = independent(task, space, seed, "reinforce", budget, args)
            found["random"] = independent(task, space, seed, "random", budget, args)
            for method, info in found.items():
                info["test_acc"] = final_test(task, space, info["arch"], seed, args)
                rows.append({"task": task_name, "seed": seed, "method": method, **info})
                print(json.dumps(rows[-1]), flush=True)
    summary = summarize(rows, args.tasks.split(","))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows,
                                              "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
