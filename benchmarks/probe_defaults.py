"""Choose the deep-prior probe's learning rate and epochs on VALIDATION accuracy.

Usage::

    python benchmarks/probe_defaults.py [--archs 8] [--seeds 2] [--lrs 1e-2 3e-2 1e-1 3e-1]
                                        [--epochs 10 15 30 60] [--tolerance 0.005]

For architectures sampled from the chain space with the main job's narrowing (features 16, 32,
64; 2 to 5 convolutions) on digits, and for each weight seed, the frozen random encoder's
embedding of the three splits is computed once (``DeepPriorEvaluator.embedding``); then the
linear classifier is trained on it for every (learning rate, epochs) pair of the grid with the
evaluator's other defaults (Adam, batch 128, cosine schedule, best validation epoch restored).

The rule, on validation accuracy only: take the grid point with the highest mean validation
accuracy over all (architecture, seed) pairs; among the points whose mean is within
``--tolerance`` of it, choose the one with the fewest epochs (the cheapest), then the highest
mean. Test accuracy is printed for the chosen point and the best one afterwards, for the record;
it plays no part in the choice. One torch thread.

The default grid is centred on where a first grid (``--lrs 1e-3 3e-3 1e-2 3e-2 --epochs 5 10
15 30``) put its best point: at its edge, lr 3e-2 with 30 epochs. The script says when the best
point is at the edge of the grid, as a hint to widen it.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np
import torch

from nasforge.config import DEMO_CHAIN_OPTIONS
from nasforge.data import load_task
from nasforge.evaluators.deep_prior import DeepPriorEvaluator
from nasforge.run.rundir import build_space


def sample_archs(space, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    archs: list = []
    while len(archs) < n:
        a = space.sample(rng)
        if a not in archs:
            archs.append(a)
    return archs


def choose(table: dict[tuple[float, int], dict[str, float]], tolerance: float) -> tuple:
    """The grid point the rule picks (see the module docstring) and the best one."""
    best = max(table, key=lambda k: (table[k]["val"], -k[1]))
    near = [k for k in table if table[k]["val"] >= table[best]["val"] - tolerance]
    chosen = min(near, key=lambda k: (k[1], -table[k]["val"]))
    return chosen, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=8, help="sampled architectures")
    parser.add_argument("--seeds", type=int, default=2, help="weight seeds per architecture")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-2, 3e-2, 1e-1, 3e-1])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 15, 30, 60])
    parser.add_argument("--tolerance", type=float, default=0.005,
                        help="validation accuracy a cheaper point may lose (default 0.005)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the architecture sample")
    args = parser.parse_args()
    torch.set_num_threads(1)

    task = load_task("digits", seed=args.seed)
    space = build_space("chain", dict(DEMO_CHAIN_OPTIONS), task)
    archs = sample_archs(space, args.archs, args.seed + 1000)
    grid = list(itertools.product(args.lrs, args.epochs))
    print(f"torch {torch.__version__}, 1 thread; digits {task.sizes()}; chain options "
          f"{DEMO_CHAIN_OPTIONS}; {len(archs)} architectures x {args.seeds} seeds; grid lr "
          f"{args.lrs} x epochs {args.epochs}")
    val: dict[tuple, list[float]] = {k: [] for k in grid}
    test: dict[tuple, list[float]] = {k: [] for k in grid}
    seconds: dict[tuple, float] = {k: 0.0 for k in grid}
    embedder = DeepPriorEvaluator(measure_latency=False)
    start = time.perf_counter()
    for i, arch in enumerate(archs):
        for seed in range(args.seeds):
            emb = embedder.embedding(arch, space, task, seed=seed)
            for lr, epochs in grid:
                probe = DeepPriorEvaluator(lr=lr, epochs=epochs, measure_latency=False)
                t0 = time.perf_counter()
                result = probe.fit_classifier(emb, task.num_classes, seed=seed)
                seconds[(lr, epochs)] += time.perf_counter() - t0
                val[(lr, epochs)].append(result.metrics["val_acc"])
                test[(lr, epochs)].append(result.metrics["test_acc"])
        print(f"  {i + 1}/{len(archs)} {arch} ({emb.features} features)", flush=True)

    n = len(archs) * args.seeds
    table = {k: {"val": statistics.fmean(val[k]), "test": statistics.fmean(test[k]),
                 "sd": statistics.stdev(val[k]) if n > 1 else 0.0, "s": seconds[k] / n}
             for k in grid}
    print(f"\nmean over {n} (architecture, seed) pairs; validation accuracy decides, "
          "test accuracy is shown only for the record")
    print(f"{'lr':>8} {'epochs':>6} {'val':>7} {'val sd':>7} {'s/fit':>6}")
    for k in grid:
        row = table[k]
        print(f"{k[0]:>8g} {k[1]:>6d} {row['val']:>7.4f} {row['sd']:>7.4f} {row['s']:>6.2f}")
    chosen, best = choose(table, args.tolerance)
    print(f"\nbest validation: lr {best[0]:g}, {best[1]} epochs, val {table[best]['val']:.4f}")
    edges = [f"{what} {value:g} is the grid's {end}" for what, value, values in
             (("lr", best[0], args.lrs), ("epochs", best[1], args.epochs))
             for end, limit in (("smallest", min(values)), ("largest", max(values)))
             if value == limit and len(values) > 1]
    if edges:
        print(f"note: the best point is at the edge of the grid ({'; '.join(edges)})")
    print(f"chosen (fewest epochs within {args.tolerance} of the best): lr {chosen[0]:g}, "
          f"{chosen[1]} epochs, val {table[chosen]['val']:.4f}, {table[chosen]['s']:.2f} s per fit")
    print(f"for the record, test accuracy: chosen {table[chosen]['test']:.4f}, best-by-val "
          f"{table[best]['test']:.4f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
