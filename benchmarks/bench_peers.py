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
    # benchmarks/ is on sys.path when run as a script
    from tune_model_based import parse_config
    out: dict[str, dict] = {}
    for part in filter(None, text.split(";")):
        name, opts = parse_config(part, flag="--options")
        out.setdefault(name, {}).update(opts)
    return out


def val_optimum(table: str, search: str) -> float:
    """The best score of the search (``-val``) column: what a search that found the column's
    best cell reaches."""
    import csv

    with open(table) as f:
        return max(float(r[search]) for r in csv.DictReader(f))


def run_column(table: str, search: str, report: str, strategies: list[str], seeds: int,
               budget: int, workers: int, options: dict[str, dict] | None = None,
               first_seed: int = 0) -> dict:
    cfg = BenchConfig(space="nb201", evaluator=f"table:{table}", search_metric=search,
                      report_metric=report, strategies=strategies, seeds=seeds,
                      budget=budget, workers=workers, strategy_options=options or {},
                      first_seed=first_seed)
    bench.validate(cfg)
    runs: dict[str, list[dict]] = {s: [{} for _ in range(seeds)] for s in strategies}
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                initializer=bench._init, initargs=(cfg,)) as pool:
        futures = {pool.submit(timed_run, s, seed): (s, seed)
                   for seed in range(first_seed, first_seed + seeds) for s in strategies}
        for fut in cf.as_completed(futures):
            s, seed = futures[fut]
            r = fut.result()
            curve, rcurve = best_so_far(r["values"], r["reports"], "max")
            tied = tied_reports(r["values"], r["reports"])
            runs[s][seed - first_seed] = {"seed": seed, "best_val": curve[-1], "test_of_best_val": rcurve[-1],
                             "test_ties_averaged": float(np.mean(tied)), "ties": len(tied),
                             "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"]}
    wall = time.perf_counter() - t0
    optimum = val_optimum(table, search)
    rows = summarise_runs(runs, strategies, optimum)
    return {"search": search, "report": report, "budget": budget, "seeds": seeds,
            "first_seed": first_seed, "val_optimum": optimum,
            "workers": workers, "wall_seconds": wall, "rows": rows, "runs": runs}


def summarise_runs(runs: dict[str, list[dict]], strategies: list[str],
                   optimum: float | None = None) -> list[dict]:
    """One row per strategy: mean ± sd, paired margins over random and TPE (on the seeds both
    ran), ties averaged (NaN where a run predates that field), times, and with ``optimum`` (the
    search column's best score) the number of seeds that found it."""
    def by_seed(s: str) -> dict[int, dict]:
        return {r["seed"]: r for r in runs[s]}

    rows = []
    for s in strategies:
        mine = by_seed(s)
        test = np.array([r["test_of_best_val"] for r in mine.values()])
        tied = [r.get("test_ties_averaged", math.nan) for r in mine.values()]
        row = {"strategy": s, "seeds": len(mine), "test_mean": float(test.mean()),
               "test_sd": float(test.std(ddof=1)),
               "test_ties_averaged_mean": float(np.mean(tied)),
               "seeds_with_ties": (int(sum(r["ties"] > 1 for r in mine.values()))
                                   if all("ties" in r for r in mine.values()) else None),
               "val_mean": float(np.mean([r["best_val"] for r in mine.values()])),
               "at_val_optimum": (None if optimum is None else
                                  int(sum(r["best_val"] >= optimum - 1e-9 for r in mine.values()))),
               "seconds_per_search": float(np.mean([r["seconds"] for r in mine.values()])),
               "cpu_seconds_per_search": float(np.mean([r["cpu_seconds"]
                                                        for r in mine.values()]))}
        for base, key in (("random", "vs_random"), ("optuna", "vs_tpe")):
            if base in runs and base != s:
                theirs = by_seed(base)
                common = sorted(set(mine) & set(theirs))
                diff = np.array([mine[k]["test_of_best_val"] - theirs[k]["test_of_best_val"]
                                 for k in common])
                row[key] = list(interval(diff))
        rows.append(row)
    return rows


def merge(files: list[str], columns: list[str], budgets: list[int] | None,
          table: str | None = None) -> list[dict]:
    """The searches of several result files (same script, other seeds or strategies) as one
    result per column and budget; a (strategy, seed) in two files must agree."""
    merged: dict[tuple[str, int], dict] = {}
    for f in files:
        for res in json.loads(Path(f).read_text())["results"]:
            if res["search"].split("-")[0] not in columns or (budgets and res["budget"]
                                                               not in budgets):
                continue
            key = (res["search"], res["budget"])
            into = merged.setdefault(key, {"search": res["search"], "report": res["report"],
                                           "budget": res["budget"], "workers": res["workers"],
                                           "wall_seconds": 0.0, "runs": {}, "files": []})
            into["wall_seconds"] += res["wall_seconds"]
            into["files"].append(f)
            for s, rs in res["runs"].items():
                have = into["runs"].setdefault(s, {})
                for r in rs:
                    old = have.get(r["seed"])
                    if old is not None and old["test_of_best_val"] != r["test_of_best_val"]:
                        raise SystemExit(f"{f}: {s} seed {r['seed']} disagrees with an earlier "
                                         "file; not merged")
                    have[r["seed"]] = r
    out = []
    for res in merged.values():
        runs = {s: [rs[k] for k in sorted(rs)] for s, rs in res["runs"].items()}
        strategies = [s for s in STRATEGIES if s in runs] + [s for s in runs
                                                             if s not in STRATEGIES]
        res["runs"] = runs
        res["seeds"] = max(len(v) for v in runs.values())
        if table is not None and Path(table).exists():
            res["val_optimum"] = val_optimum(table, res["search"])
        res["rows"] = summarise_runs(runs, strategies, res.get("val_optimum"))
        out.append(res)
    return out


def cell(v: list[float] | None) -> str:
    return "" if v is None else f"{v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]"


def label(row: dict, res: dict) -> str:
    """The strategy's name, with its number of seeds where it ran fewer than the block."""
    n = row.get("seeds", res["seeds"])
    return row["strategy"] if n == res["seeds"] else f"{row['strategy']} ({n} seeds)"


def tie_count(row: dict) -> str:
    return "n/a" if row["seeds_with_ties"] is None else str(row["seeds_with_ties"])


def hits(row: dict) -> str:
    return "n/a" if row.get("at_val_optimum") is None else str(row["at_val_optimum"])


def num(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}"


def print_block(res: dict) -> None:
    print(f"\n{res['search']} -> {res['report']}: {res['seeds']} seeds x {res['budget']} "
          f"evaluations ({res['wall_seconds']:.0f} s wall on {res['workers']} workers)")
    print(f"{'strategy':<20} {'test of best-val':>16} {'vs random [95% CI]':>24} "
          f"{'vs TPE [95% CI]':>24} {'s/search':>9} {'cpu s':>7} {'best val':>9} "
          f"{'ties avg':>9} {'tied':>5} {'at opt':>6}")
    for r in res["rows"]:
        print(f"{label(r, res):<20} {r['test_mean']:>8.2f} ± {r['test_sd']:<5.2f} "
              f"{cell(r.get('vs_random')):>24} {cell(r.get('vs_tpe')):>24} "
              f"{r['seconds_per_search']:>9.2f} {r['cpu_seconds_per_search']:>7.2f} "
              f"{r['val_mean']:>9.2f} {num(r['test_ties_averaged_mean']):>9} "
              f"{tie_count(r):>5} {hits(r):>6}", flush=True)


def markdown(results: list[dict], command: str) -> str:
    lines = [f"Command: `{command}`", f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"Load average at the end: {os.getloadavg()[0]:.1f}", ""]
    for res in results:
        lines += [(f"### {res['search']} -> {res['report']}, {res['budget']} evaluations, "
                  f"{res['seeds']} seeds ({res['wall_seconds']:.0f} s wall, {res['workers']} "
                  "workers)"), "",
                  ("| strategy | test of best-val (mean ± sd) | vs random [95% CI] | vs TPE [95% CI] "
                  "| s / search (wall) | CPU s / search | mean best val | test, ties averaged "
                  "| seeds with a tie | seeds at the val optimum |"),
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {label(r, res)} | {r['test_mean']:.2f} ± {r['test_sd']:.2f} | "
                         f"{cell(r.get('vs_random'))} | {cell(r.get('vs_tpe'))} | "
                         f"{r['seconds_per_search']:.2f} | {r['cpu_seconds_per_search']:.2f} | "
                         f"{r['val_mean']:.2f} | {num(r['test_ties_averaged_mean'])} | "
                         f"{tie_count(r)} | {hits(r)} |")
        lines.append("")
    lines += [("Test of best-val: the first evaluated of equal best validation scores (the bench's "
              "rule). Ties averaged: the mean test accuracy over all evaluations that reached the "
              "best validation score (what a tie broken at random gives on average; a cell "
              "evaluated twice counts twice). Seeds with a tie: seeds where more than one "
              "evaluation reached it. Seeds at the val optimum: seeds whose best validation score "
              "is the search column's best (the table's maximum)."), ""]
    return "\n".join(lines)


def main() -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="../shared/data/nb201_dev.csv")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first-seed .. first-seed + seeds - 1 (to extend an earlier run)")
    ap.add_argument("--budgets", default="100", help="comma-separated evaluation budgets")
    ap.add_argument("--budget", type=int, default=None, help="one budget (same as --budgets N)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--columns", default="cifar100,imagenet")
    ap.add_argument("--options", default="",
                    help="options that replace defaults: 'strategy:key=value,...;strategy2:...'")
    ap.add_argument("--out", default=None, help="JSON file for every figure (and a .md beside)")
    ap.add_argument("--merge", default="",
                    help="comma-separated result files of this script to combine (other seeds "
                         "or strategies of the same columns and budgets) instead of running")
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
    if args.merge:
        if out is None:
            raise SystemExit("--merge needs --out")
        results = merge(args.merge.split(","), wanted, budgets, args.table)
        for res in results:
            print_block(res)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": command, "results": results}, indent=1))
        out.with_suffix(".md").write_text(markdown(results, command))
        return
    for budget in budgets:
        for search, report in COLUMNS:
            if search.split("-")[0] not in wanted:
                continue
            res = run_column(args.table, search, report, strategies, args.seeds, budget,
                             args.workers, options, args.first_seed)
            print_block(res)
            results.append(res)
            if out is not None:  # rewritten after every column: a long run keeps what finished
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({"command": command, "results": results}, indent=1))
                out.with_suffix(".md").write_text(markdown(results, command))


if __name__ == "__main__":
    main()
