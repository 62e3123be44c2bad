"""DP-NAS on digits: Q-learning (MetaQNN) over the chain space, scored by deep priors.

Usage::

    python benchmarks/dpnas_search.py [--budget 300] [--seed 0] [--out DIR]

The same search as::

    nasforge search --strategy qlearning --evaluator deep_prior --task digits --budget 300 \\
        --schedule-scale auto

through the Python API. ``schedule_scale=auto`` shrinks DP-NAS's epsilon schedule (1500 at
epsilon 1, 100 at each of 0.9 ... 0.1, 3 greedy) to the budget, keeping its shape: about half
the trials are random (epsilon 1), the rest exploit more and more. The chain space gets the main
job's narrowing (features 16, 32, 64; 2 to 5 convolutions; otherwise DP-NAS's rules: kernels
1 to 11, pooling 2 to 4, residual blocks, classifier input map at most 8x8): DP-NAS's full
feature list (up to 1024) gives multi-million-parameter networks on 8x8 inputs, slow on two CPU
cores, while the narrowed space still spans about 20% to 99% validation accuracy. The deep-prior
evaluator keeps its defaults (kaiming-normal encoder, linear classifier, Adam lr 3e-3, 15 epochs).

Prints the best architecture (by validation accuracy, the reward) with its test accuracy, the
best test accuracy of any trial (target: >= 95%), and the mean reward of the epsilon-1 phase
against the exploiting phases (target: exploiting higher). One torch thread.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nasforge.config import make_config
from nasforge.core import Objective
from nasforge.report import epsilon_phases
from nasforge.run.rundir import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="dpnas-digits-")) / "run"
    cfg = make_config({"task": "digits", "strategy": "qlearning",
                       "strategy_options": {"schedule_scale": "auto"}, "evaluator": "deep_prior",
                       "budget": args.budget, "seed": args.seed})
    start = time.perf_counter()
    with Run.create(cfg, out) as run:
        schedule = run.components["strategy"]
        done = []

        def log(search, trial) -> None:
            done.append(trial)
            if len(done) % 25 == 0:
                best = search.best
                print(f"  {len(done)}/{args.budget} trials, {time.perf_counter() - start:.0f} s, "
                      f"epsilon {trial.info.get('epsilon')}, best val "
                      f"{best.metrics['val_acc']:.4f}", flush=True)

        run.listeners.append(log)
        run.search()
        rows = list(run.store.rows())
        stages = schedule.schedule
    seconds = time.perf_counter() - start
    objective = Objective.parse("max:val_acc")
    ok = [r for r in rows if r["status"] == "ok"]
    best = max(ok, key=lambda r: (r["metrics"]["val_acc"], -r["id"]))
    best_test = max(ok, key=lambda r: (r["metrics"]["test_acc"], -r["id"]))
    print(f"\nrun directory: {out}")
    print(f"{len(rows)} trials ({len(rows) - len(ok)} failed) in {seconds:.0f} s "
          f"({seconds / len(rows):.2f} s per trial); schedule {stages}")
    print(f"best by val_acc: trial {best['id']} val {best['metrics']['val_acc']:.4f} "
          f"test {best['metrics']['test_acc']:.4f} {best['arch']}")
    print(f"best test accuracy of any trial: {best_test['metrics']['test_acc']:.4f} "
          f"(trial {best_test['id']}, {best_test['arch']}) (target >= 0.95)")
    phases = epsilon_phases(rows, objective)
    for p in phases:
        print(f"  epsilon {p['epsilon']:.1f}: {len(p['rewards']):3d} trials, mean reward "
              f"{p['mean']:.4f}")
    random_phase = [v for p in phases if p["epsilon"] == 1.0 for v in p["rewards"]]
    exploit = [v for p in phases if p["epsilon"] < 1.0 for v in p["rewards"]]
    print(f"mean reward: epsilon 1 {np.mean(random_phase):.4f} ({len(random_phase)} trials), "
          f"exploiting (epsilon < 1) {np.mean(exploit):.4f} ({len(exploit)} trials) "
          f"(target: exploiting higher)")


if __name__ == "__main__":
    main()
