"""nasforge's strategies beside Optuna's TPE on the REAL NAS-Bench-201 table (12-epoch results).

For each dev column pair (search ``cifar100-val`` / report ``cifar100-test``, and
``imagenet-val`` / ``imagenet-test``) and each budget in ``--budgets``, every strategy runs
``--seeds`` searches through ``nasforge.bench.run_one`` (the same search code as ``nasforge
bench``: spawned worker processes, in-memory stores, all searches of a column and budget in one
pool). Printed per strategy: mean ± sd of the test accuracy of the best-by-validation architecture,
the paired margin (same seed) over random search and over Optuna TPE with a 95% t-interval, and
the mean seconds one search takes in a worker, wall and CPU (strategy overhead, predictor fits
included, plus table lookups; process start-up excluded; wall time grows with the machine's load,
CPU time much less), and the mean best validation accuracy.

Every strategy runs with its defaults (Optuna TPE with Optuna's defaults) unless ``--options``
replaces some (``--options 'bananas:pool=mixed'``; recorded in the command line of the output). The defaults of the
model-based strategies (``bananas``, ``predictor_evolution``) were chosen on the ``-val`` columns
only (best validation accuracy found), never on a test column.

    python benchmarks/bench_peers.py --table ../shared/data/nb201_dev.csv --seeds 30 \\
        --budgets 100,300 --out benchmarks/results/peers_nb201.json

``--out`` writes every figure (and every search's result) as JSON, and a Markdown table beside
it (same name, ``.md``), both rewritten after each finished column, so an interrupted run keeps
the columns it finished; a file that exists before the run is never overwritten.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from scipy import stats

from nasforge import bench
from nasforge.bench import BenchConfig, best_so_far

STRATEGIES = ["random", "evolution", "local", "reinforce", "optuna", "bananas",
              "predictor_evolution"]
COLUMNS = [("cifar100-val", "cifar100-test"), ("imagenet-val", "imagenet-test")]


def interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t-interval."""
    m = float(diff.mean())
    if len(diff) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff)))
    return m, m - half, m + half


def timed_run(strategy: str, seed: int) -> dict:
    """``bench.run_one`` plus the CPU seconds the search took in this worker."""
    c0 = time.process_time()
    r = bench.run_one(strategy, seed)
    r["cpu_seconds"] = time.process_time() - c0
    return r


def tied_reports(values: list, reports: list) -> list[float]:
    """Report values of every evaluation whose search value equals the best one.

    ``best_so_far`` keeps the first of equal search values (a deterministic rule that reads only
    the search metric and the order of evaluation); the mean of this list is what picking one of
    those evaluations uniformly at random gives on average, printed beside it so a tie cannot
    hide. A cell evaluated twice (Optuna's TPE repeats cells) counts twice; strategies that never
    repeat a cell (``bananas``, ``predictor_evolution``, ``local``) list distinct cells.
    """
    ok = [(v, r) for v, r in zip(values, reports) if v is not None and r is not None]
    best = max(v for v, _ in ok)
    return [float(r) for v, r in ok if v == best]


def parse_options(text: str) -> dict[str, dict]:
    """``'bananas:pool=local,parents=3;evolution:population_size=50'`` -> options per strategy
    (values read as JSON where they parse, else kept as text)."""
    out: dict[str, dict] = {}
    for part in filter(None, text.split(";")):
        name, _, rest = part.partition(":")
        opts = out.setdefault(name, {})
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise SystemExit(f"--options: {item!r} in {part!r} is not key=value")
            try:
                opts[key] = json.loads(value)
            except json.JSONDecodeError:
                opts[key] = value
    return out


def run_column(table: str, search: str, report: str, strategies: list[str], seeds: int,
               budget: int, workers: int, options: dict[str, dict] | None = None) -> dict:
    cfg = BenchConfig(space="nb201", evaluator=f"table:{table}", search_metric=search,
                      report_metric=report, strategies=strategies, seeds=seeds,
                      budget=budget, workers=workers, strategy_options=options or {})
    bench.validate(cfg)
    runs: dict[str, list[dict]] = {s: [{} for _ in range(seeds)] for s in strategies}
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                initializer=bench._init, initargs=(cfg,)) as pool:
        futures = {pool.submit(timed_run, s, seed): (s, seed)
                   for seed in range(seeds) for s in strategies}
        for fut in cf.as_completed(futures):
            s, seed = futures[fut]
            r = fut.result()
            curve, rcurve = best_so_far(r["values"], r["reports"], "max")
            tied = tied_reports(r["values"], r["reports"])
            runs[s][seed] = {"seed": seed, "best_val": curve[-1], "test_of_best_val": rcurve[-1],
                             "test_ties_averaged": float(np.mean(tied)), "ties": len(tied),
                             "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"]}
    wall = time.perf_counter() - t0
    test = {s: np.array([r["test_of_best_val"] for r in runs[s]]) for s in strategies}
    rows = []
    for s in strategies:
        tied = np.array([r["test_ties_averaged"] for r in runs[s]])
        row = {"strategy": s, "test_mean": float(test[s].mean()),
               "test_sd": float(test[s].std(ddof=1)),
               "test_ties_averaged_mean": float(tied.mean()),
               "seeds_with_ties": int(sum(r["ties"] > 1 for r in runs[s])),
               "val_mean": float(np.mean([r["best_val"] for r in runs[s]])),
               "seconds_per_search": float(np.mean([r["seconds"] for r in runs[s]])),
               "cpu_seconds_per_search": float(np.mean([r["cpu_seconds"] for r in runs[s]]))}
        for base, key in (("random", "vs_random"), ("optuna", "vs_tpe")):
            if base in test and base != s:
                row[key] = list(interval(test[s] - test[base]))
        rows.append(row)
    return {"search": search, "report": report, "budget": budget, "seeds": seeds,
            "workers": workers, "wall_seconds": wall, "rows": rows, "runs": runs}


def cell(v: list[float] | None) -> str:
    return "" if v is None else f"{v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]"


def print_block(res: dict) -> None:
    print(f"\n{res['search']} -> {res['report']}: {res['seeds']} seeds x {res['budget']} "
          f"evaluations ({res['wall_seconds']:.0f} s wall on {res['workers']} workers)")
    print(f"{'strategy':<20} {'test of best-val':>16} {'vs random [95% CI]':>24} "
          f"{'vs TPE [95% CI]':>24} {'s/search':>9} {'cpu s':>7} {'best val':>9} "
          f"{'ties avg':>9} {'tied':>5}")
    for r in res["rows"]:
        print(f"{r['strategy']:<20} {r['test_mean']:>8.2f} ± {r['test_sd']:<5.2f} "
              f"{cell(r.get('vs_random')):>24} {cell(r.get('vs_tpe')):>24} "
              f"{r['seconds_per_search']:>9.2f} {r['cpu_seconds_per_search']:>7.2f} "
              f"{r['val_mean']:>9.2f} {r['test_ties_averaged_mean']:>9.2f} "
              f"{r['seeds_with_ties']:>5}", flush=True)


def markdown(results: list[dict], command: str) -> str:
    lines = [f"Command: `{command}`", f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"Load average at the end: {os.getloadavg()[0]:.1f}", ""]
    for res in results:
        lines += [f"### {res['search']} -> {res['report']}, {res['budget']} evaluations, "
                  f"{res['seeds']} seeds ({res['wall_seconds']:.0f} s wall, {res['workers']} "
                  "workers)", "",
                  "| strategy | test of best-val (mean ± sd) | vs random [95% CI] | vs TPE [95% CI] "
                  "| s / search (wall) | CPU s / search | mean best val | test, ties averaged "
                  "| seeds with a tie |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {r['strategy']} | {r['test_mean']:.2f} ± {r['test_sd']:.2f} | "
                         f"{cell(r.get('vs_random'))} | {cell(r.get('vs_tpe'))} | "
                         f"{r['seconds_per_search']:.2f} | {r['cpu_seconds_per_search']:.2f} | "
                         f"{r['val_mean']:.2f} | {r['test_ties_averaged_mean']:.2f} | "
                         f"{r['seeds_with_ties']} |")
        lines.append("")
    lines += ["Test of best-val: the first evaluated of equal best validation scores (the bench's "
              "rule). Ties averaged: the mean test accuracy over all evaluations that reached the "
              "best validation score (what a tie broken at random gives on average; a cell "
              "evaluated twice counts twice). Seeds with a tie: seeds where more than one "
              "evaluation reached it.", ""]
    return "\n".join(lines)


def main() -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="../shared/data/nb201_dev.csv")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--budgets", default="100", help="comma-separated evaluation budgets")
    ap.add_argument("--budget", type=int, default=None, help="one budget (same as --budgets N)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--columns", default="cifar100,imagenet")
    ap.add_argument("--options", default="",
                    help="options that replace defaults: 'strategy:key=value,...;strategy2:...'")
    ap.add_argument("--out", default=None, help="JSON file for every figure (and a .md beside)")
    args = ap.parse_args()
    strategies = args.strategies.split(",")
    options = parse_options(args.options)
    for name in options:
        if name not in strategies:
            raise SystemExit(f"--options names {name!r}, which is not in --strategies")
    budgets = [args.budget] if args.budget else [int(b) for b in args.budgets.split(",")]
    wanted = args.columns.split(",")
    out = Path(args.out) if args.out else None
    if out is not None and (out.exists() or out.with_suffix(".md").exists()):
        raise SystemExit(f"{out} (or its .md) already exists; choose another --out")
    results = []
    command = "python benchmarks/bench_peers.py " + " ".join(sys.argv[1:])
    for budget in budgets:
        for search, report in COLUMNS:
            if search.split("-")[0] not in wanted:
                continue
            res = run_column(args.table, search, report, strategies, args.seeds, budget,
                             args.workers, options)
            print_block(res)
            results.append(res)
            if out is not None:  # rewritten after every column: a long run keeps what finished
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({"command": command, "results": results}, indent=1))
                out.with_suffix(".md").write_text(markdown(results, command))


if __name__ == "__main__":
    main()
