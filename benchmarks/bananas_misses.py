"""Where a model-based search ends, seed by seed, on a ``-val`` column of the NAS-Bench-201 table.

For one configuration (``strategy`` or ``strategy:key=value,...``, values read as JSON) and one
``-val`` column, each seed's search runs ``--budget`` evaluations; printed per seed: the best
validation accuracy found and at which evaluation, how many one-edit neighbours of that cell
(counted by canonical class) were never asked, and which of those score higher. A miss whose best
cell has a better unasked neighbour is one a final local-search phase would fix; a miss with none
is stuck in another basin. Only the ``arch`` column and the named ``-val`` column are read (seeds
1000 and up by default: the tuning seeds, not the seeds 0-29 the peer bench reports).

    python benchmarks/bananas_misses.py --table ../shared/data/nb201_dev.csv \\
        --column cifar100-val --config 'bananas:candidates=20' --seeds 20
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
import torch

# benchmarks/ is on sys.path when run as a script
from tune_model_based import parse_config


def main() -> None:
    from nasforge import registry
    from nasforge.core import Objective, Trial, TrialResult
    from nasforge.spaces.nb201 import NB201Space

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="../shared/data/nb201_dev.csv")
    ap.add_argument("--column", default="cifar100-val", choices=["cifar100-val", "imagenet-val"])
    ap.add_argument("--config", default="bananas")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with open(args.table) as f:
        val = {r["arch"]: float(r[args.column]) for r in csv.DictReader(f)}
    optimum = max(val.values())
    name, options = parse_config(args.config, flag="--config")
    space = NB201Space()
    hits, c0 = 0, time.process_time()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        s = registry.create("strategies", name, seed=seed, **options)
        s.setup(space, Objective(args.column), budget=args.budget)
        archs, values = [], []
        while len(values) < args.budget:
            arch = s.ask(1)[0]
            archs.append(arch)
            values.append(val[str(arch)])
            s.tell([Trial(len(values) - 1, arch, TrialResult(metrics={args.column: values[-1]}))])
        b = int(np.argmax(values))
        seen = {space.canonical_key(a) for a in archs}
        unasked = {space.canonical_key(a): a for a in space.neighbours(archs[b])
                   if space.canonical_key(a) not in seen}
        better = sorted((val[str(a)] for a in unasked.values() if val[str(a)] > values[b]),
                        reverse=True)
        hits += values[b] >= optimum - 1e-9
        print(f"seed {seed}: best {values[b]:.2f} at evaluation {b + 1}; unasked neighbours "
              f"{len(unasked)}, better ones {better}", flush=True)
    print(f"{args.config} on {args.column}: optimum ({optimum:.2f}) found in {hits}/{args.seeds} "
          f"seeds; {(time.process_time() - c0) / args.seeds:.1f} CPU s per search")


if __name__ == "__main__":
    main()
