"""Per-trial ask/tell cost of ``bananas`` at 300 evaluations on the real NAS-Bench-201 table.

One search of ``--budget`` evaluations (searching ``cifar100-val``); prints the CPU seconds of
each ask+tell (process time, so a loaded machine inflates it little), their mean, the worst one
and the wall total. torch runs on one thread, as in ``nasforge bench`` workers.

    python benchmarks/bananas_overhead.py --table ../shared/data/nb201_dev.csv --budget 300
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
import torch

from nasforge import registry
from nasforge.core import Objective, Trial, TrialResult
from nasforge.spaces.nb201 import NB201Space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="../shared/data/nb201_dev.csv")
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--strategy", default="bananas")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with open(args.table) as f:
        val = {r["arch"]: float(r["cifar100-val"]) for r in csv.DictReader(f)}
    space = NB201Space()
    s = registry.create("strategies", args.strategy, seed=args.seed)
    s.setup(space, Objective("cifar100-val"), budget=args.budget)
    cpu, t0 = [], time.perf_counter()
    for i in range(args.budget):
        c0 = time.process_time()
        arch = s.ask(1)[0]
        s.tell([Trial(i, arch, TrialResult(metrics={"cifar100-val": val[str(arch)]}))])
        cpu.append(time.process_time() - c0)
    cpu_arr = np.array(cpu)
    print(f"{args.strategy}, {args.budget} evaluations: CPU s per ask+tell mean {cpu_arr.mean():.4f}, "
          f"last 100 mean {cpu_arr[-100:].mean():.4f}, max {cpu_arr.max():.3f}; total CPU "
          f"{cpu_arr.sum():.1f} s, wall {time.perf_counter() - t0:.1f} s; best val "
          f"{max(val[a] for a in s.asked):.2f}")


if __name__ == "__main__":
    main()
