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
Markdown table beside it; an existing file is never overwritten. The searches are run seed by
seed (every configuration and column of one seed before the next seed), and ``--log`` appends
each finished search to a JSON-lines file as it ends, so a run stopped early leaves paired
results; ``--from-log LOG`` prints the table of such a file (the configurations, seeds and
columns it holds) without running anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
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


def base_config(label: str, configs: list[str]) -> str:
    """The configuration a result label (``config`` or ``config`` plus fork options) came from."""
    return max((c for c in configs if label == c or label.startswith(c + ",")
                or label.startswith(c + ":")), key=len)


def _load(table: str) -> None:
    import torch

    torch.set_num_threads(1)
    with open(table) as f:
        rows = list(csv.DictReader(f))
    for col in COLUMNS:  # the -val columns only
        _TABLE[col] = {r["arch"]: float(r[col]) for r in rows}


def one_search(config: str, column: str, seed: int, budget: int,
               forks: tuple[str, ...] = ()) -> list[dict]:
    """One search of ``config``; for each fork (options that include ``tail=k``, e.g.
    ``"tail=10,tail_retrain_every=1"``; ``bananas`` / ``predictor_evolution``), also the same
    search with those options added, continued from the first one's state at evaluation
    ``budget - k``: up to there the tail options change nothing (tests/test_bananas.py checks
    it), so the shared part runs once. A variant's CPU time counts the shared part."""
    from nasforge import registry
    from nasforge.core import Objective, Trial, TrialResult
    from nasforge.spaces.nb201 import NB201Space

    name, options = parse_config(config)
    val = _TABLE[column]
    space = NB201Space()
    at: dict[int, list[tuple[str, dict]]] = {}
    for fork in forks:
        extra = parse_config(":" + fork, flag="--forks")[1]
        k = extra.get("tail")
        if not isinstance(k, int) or not 0 < k < budget:
            raise SystemExit(f"--forks: {fork!r} needs tail=k with 0 < k < {budget}")
        at.setdefault(budget - k, []).append((fork, extra))

    def start(opts: dict):
        strategy = registry.create("strategies", name, seed=seed, **opts)
        strategy.setup(space, Objective(column), budget=budget)
        return strategy

    def finish(strategy, values: list[float], cpu_before: float, label: str) -> dict:
        c0 = time.process_time()
        while len(values) < budget:
            arch = strategy.ask(1)[0]
            values.append(val[str(arch)])
            strategy.tell([Trial(len(values) - 1, arch, TrialResult(metrics={column: values[-1]}))])
        return {"config": label, "column": column, "seed": seed, "best": max(values),
                "best_at": int(np.argmax(values)) + 1,
                "cpu": cpu_before + time.process_time() - c0}

    strategy = start(options)
    cpu = 0.0  # the main search's own CPU seconds (the forks' excluded)
    values: list[float] = []
    out = []
    while len(values) < budget:
        for fork, extra in at.get(len(values), []):
            variant = start({**options, **extra})
            variant.load_state_dict(copy.deepcopy(strategy.state_dict()))
            label = f"{config}{',' if ':' in config else ':'}{fork}"
            out.append(finish(variant, list(values), cpu, label))
        c0 = time.process_time()
        arch = strategy.ask(1)[0]
        values.append(val[str(arch)])
        strategy.tell([Trial(len(values) - 1, arch, TrialResult(metrics={column: values[-1]}))])
        cpu += time.process_time() - c0
    out.insert(0, {"config": config, "column": column, "seed": seed, "best": max(values),
                   "best_at": int(np.argmax(values)) + 1, "cpu": cpu})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="../shared/data/nb201_dev.csv")
    ap.add_argument("--configs", default=None, help="';'-separated strategy[:key=value,...]")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--columns", default=",".join(COLUMNS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--forks", default="", help="';'-separated options with tail=k (e.g. "
                    "'tail=10;tail=10,tail_retrain_every=1'): also each configuration with them, "
                    "forked from its search at evaluation budget - k")
    ap.add_argument("--paired", action="store_true", help="with --from-log: only the seeds "
                    "every configuration finished on a column")
    ap.add_argument("--log", default=None, help="append each finished search here (JSON lines)")
    ap.add_argument("--from-log", default=None, help="summarise this --log file; run nothing")
    args = ap.parse_args()
    if args.from_log:
        return summarise_log(args)
    if not args.configs:
        raise SystemExit("--configs: give one or more ';'-separated strategy[:key=value,...]")
    configs = [c for c in args.configs.split(";") if c]
    forks = tuple(f for f in args.forks.split(";") if f)
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
    log = open(args.log, "a") if args.log else None
    with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("fork")) as pool:
        futures = [pool.submit(one_search, cfg, col, s, args.budget, forks)
                   for s in seeds for cfg in configs for col in columns]
        for f in cf.as_completed(futures):
            for r in f.result():
                results.append(r)
                if log is not None:
                    log.write(json.dumps({**r, "budget": args.budget}) + "\n")
                    log.flush()
    labels = list(dict.fromkeys(r["config"] for r in sorted(
        results, key=lambda r: (configs.index(base_config(r["config"], configs)), r["config"]))))
    header = [f"Command: `python benchmarks/tune_model_based.py {' '.join(sys.argv[1:])}`",
              (f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; seeds "
              f"{seeds.start}-{seeds.stop - 1}; {args.budget} evaluations; -val columns only "
              f"({time.perf_counter() - t0:.0f} s wall)")]
    text, summary = table(results, labels, columns, optimum, header)
    print(text, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": header[0], "summary": summary, "runs": results},
                                  indent=1))
        out.with_suffix(".md").write_text(text + "\n")


def summarise_log(args) -> None:
    """The table of a ``--log`` file: per configuration and column, the seeds it holds."""
    with open(args.from_log) as f:
        results = [json.loads(line) for line in f if line.strip()]
    _load(args.table)
    configs = list(dict.fromkeys(r["config"] for r in results))
    columns = [c for c in COLUMNS if any(r["column"] == c for r in results)]
    optimum = {c: max(_TABLE[c].values()) for c in columns}
    seeds = sorted({r["seed"] for r in results})
    header = [f"Command: `python benchmarks/tune_model_based.py {' '.join(sys.argv[1:])}`",
              f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; summary of "
              f"{args.from_log} ({len(results)} searches, seeds {seeds[0]}-{seeds[-1]} as listed "
              f"per row); -val columns only"]
    text, _ = table(results, configs, columns, optimum, header, paired=args.paired)
    print(text, flush=True)


def table(results: list[dict], configs: list[str], columns: list[str], optimum: dict,
          header: list[str], paired: bool = False) -> tuple[str, list[dict]]:
    """Markdown lines and summary rows. With ``paired``, only the seeds every configuration
    finished on that column count (so the rows compare the same seeds)."""
    lines = header + ["", ("| config | column | seeds (count) | best val mean ± sd | seeds at the optimum "
                           "| mean evals to best | CPU s / search |"), "|---|---|---|---|---|---|---|"]
    summary = []
    for cfg in configs:
        for col in columns:
            rs = [r for r in results if r["config"] == cfg and r["column"] == col]
            if paired:
                common = set.intersection(*({r["seed"] for r in results
                                             if r["config"] == c and r["column"] == col}
                                            for c in configs))
                rs = [r for r in rs if r["seed"] in common]
            if not rs:
                continue
            best = np.array([r["best"] for r in rs])
            row = {"config": cfg, "column": col, "best_mean": float(best.mean()),
                   "best_sd": float(best.std(ddof=1)) if len(best) > 1 else 0.0,
                   "at_optimum": int(np.sum(best >= optimum[col] - 1e-9)), "seeds": len(rs),
                   "evals_to_best": float(np.mean([r["best_at"] for r in rs])),
                   "cpu": float(np.mean([r["cpu"] for r in rs]))}
            summary.append(row)
            ids = sorted(r["seed"] for r in rs)
            misses = sorted(r["seed"] for r in rs if r["best"] < optimum[col] - 1e-9)
            row["misses"] = misses
            lines.append(f"| `{cfg}` | {col} | {ids[0]}-{ids[-1]} ({len(ids)}) | {row['best_mean']:.3f} ± "
                         f"{row['best_sd']:.3f} | {row['at_optimum']}/{row['seeds']} (misses: "
                         f"{', '.join(map(str, misses)) or 'none'}) | {row['evals_to_best']:.0f} | "
                         f"{row['cpu']:.2f} |")
    return "\n".join(lines), summary


if __name__ == "__main__":
    main()
