"""Choose the model-based strategies' options on the ``-val`` columns only (never on test).

Each named configuration (a strategy and its options) searches ``cifar100-val`` and
``imagenet-val`` of the real NAS-Bench-201 table for ``--budget`` evaluations over ``--seeds``
seeds that start at ``--first-seed`` (1000 by default, so the tuning seeds are not the seeds
0-29 the peer bench reports). Only the ``arch`` column and the two ``-val`` columns are read:
no test figure can influence a choice made from this output. Per configuration and column it
prints the mean (and sd) of the best validation accuracy found, how many seeds found the
column's best cell, and the mean CPU seconds of one search.

    python benchmarks/tune_model_based.py --table ../shared/data/nb201_dev.csv --seeds 20 \\
        --configs 'bananas;bananas:canonical=false' --out benchmarks/results/tuning/x.json

A configuration is ``strategy`` or ``strategy:key=value,key=value`` (values parsed as JSON where
they can be, else kept as text); ``;`` separates configurations. ``--out`` writes JSON and a
Markdown table beside it; an existing file is never overwritten.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

COLUMNS = ("cifar100-val", "imagenet-val")
_TABLE: dict[str, dict[str, float]] = {}


def parse_config(text: str, flag: str = "--configs") -> tuple[str, dict]:
    """``'bananas:parents=3,ucb=true'`` -> ``('bananas', {'parents': 3, 'ucb': True})`` (values read
    as JSON where they parse, else kept as text); also used by bench_peers.py and bananas_misses.py."""
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"{flag}: {item!r} in {text!r} is not key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


def _load(table: str) -> None:
    import torch

    torch.set_num_threads(1)
    with open(table) as f:
        rows = list(csv.DictReader(f))
    for col in COLUMNS:  # the -val columns only
        _TABLE[col] = {r["arch"]: float(r[col]) for r in rows}


def one_search(config: str, column: str, seed: int, budget: int) -> dict:
    from nasforge import registry
    from nasforge.core import Objective, Trial, TrialResult
    from nasforge.spaces.nb201 import NB201Space

    name, options = parse_config(config)
    val = _TABLE[column]
    space = NB201Space()
    strategy = registry.create("strategies", name, seed=seed, **options)
    strategy.setup(space, Objective(column), budget=budget)
    c0 = time.process_time()
    values = []
    while len(values) < budget:
        arch = strategy.ask(1)[0]
        values.append(val[str(arch)])
        strategy.tell([Trial(len(values) - 1, arch, TrialResult(metrics={column: values[-1]}))])
    return {"config": config, "column": column, "seed": seed, "best": max(values),
            "best_at": int(np.argmax(values)) + 1, "cpu": time.process_time() - c0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="../shared/data/nb201_dev.csv")
    ap.add_argument("--configs", required=True, help="';'-separated strategy[:key=value,...]")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--columns", default=",".join(COLUMNS))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    configs = [c for c in args.configs.split(";") if c]
    columns = args.columns.split(",")
    for c in columns:
        if c not in COLUMNS:
            raise SystemExit(f"--columns: {c!r}; expected one of {', '.join(COLUMNS)}")
    out = Path(args.out) if args.out else None
    if out is not None and (out.exists() or out.with_suffix(".md").exists()):
        raise SystemExit(f"{out} (or its .md) already exists; choose another --out")
    _load(args.table)
    optimum = {c: max(_TABLE[c].values()) for c in columns}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    t0 = time.perf_counter()
    results: list[dict] = []
    with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("fork")) as pool:
        futures = [pool.submit(one_search, cfg, col, s, args.budget)
                   for cfg in configs for col in columns for s in seeds]
        for f in cf.as_completed(futures):
            results.append(f.result())
    lines = [f"Command: `python benchmarks/tune_model_based.py {' '.join(sys.argv[1:])}`",
             (f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; seeds "
             f"{seeds.start}-{seeds.stop - 1}; {args.budget} evaluations; -val columns only "
             f"({time.perf_counter() - t0:.0f} s wall)"), "",
             ("| config | column | best val mean ± sd | seeds at the optimum | mean evals to best "
             "| CPU s / search |"), "|---|---|---|---|---|---|"]
    summary = []
    for cfg in configs:
        for col in columns:
            rs = [r for r in results if r["config"] == cfg and r["column"] == col]
            best = np.array([r["best"] for r in rs])
            row = {"config": cfg, "column": col, "best_mean": float(best.mean()),
                   "best_sd": float(best.std(ddof=1)) if len(best) > 1 else 0.0,
                   "at_optimum": int(np.sum(best >= optimum[col] - 1e-9)), "seeds": len(rs),
                   "evals_to_best": float(np.mean([r["best_at"] for r in rs])),
                   "cpu": float(np.mean([r["cpu"] for r in rs]))}
            summary.append(row)
            lines.append(f"| `{cfg}` | {col} | {row['best_mean']:.3f} ± {row['best_sd']:.3f} | "
                         f"{row['at_optimum']}/{row['seeds']} | {row['evals_to_best']:.0f} | "
                         f"{row['cpu']:.2f} |")
    text = "\n".join(lines)
    print(text, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": lines[0], "summary": summary, "runs": results},
                                  indent=1))
        out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
