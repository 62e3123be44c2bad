"""DARTS-CC at CPU scale: a family of genotypes from one search, and the family against random
genotypes (issue 10, targets 1 and 2).

    python benchmarks/darts_cc.py family  --task digits  [--C 4 --epochs 6 --train-epochs 12]
    python benchmarks/darts_cc.py family  --task mnist1d [...]        (1-D cells)
    python benchmarks/darts_cc.py front   --task digits --seeds 0 1 2 --random 10 [...]

``family`` (target 1): one ``darts_cc`` run (search, then the genotypes at λ̃ = 0, .25, .5, .75,
1 trained from scratch by the ``train`` evaluator). Reports the distinct genotypes, their
parameter counts against λ (do they fall as λ rises, by how much from λ̃ = 0 to 1), the search's
wall time and the time to train the distinct genotypes from scratch.

``front`` (target 2): per seed, one ``darts_cc`` run with ``random_baseline`` random genotypes
(the i-th with a fraction i/(N-1) of parameter-free operations) trained the same way, plus the
DARTS genotype of a ``darts`` run with the same supernet and training when the ``darts`` method
is available. A point (params, val_acc) is on or above the random front when no random genotype
with at most as many parameters has a higher validation accuracy.

Sizes are CPU sizes (the machine this was measured on had 2 cores shared with other jobs):
3 cells, C = 4 by default, search ``--epochs`` epochs with batch 128, each genotype trained
``--train-epochs`` epochs (Adam 3e-3, batch 128, the run's validation split scores it). The
search's Gumbel temperature decays over the search (``tau_decay`` = 0.8 / epochs, floor 0.2)
as DARTS-CC's 1 - 0.016 epoch does over its 50 epochs.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from nasforge import registry
from nasforge.config import make_config
from nasforge.run.rundir import Run


def config(args: argparse.Namespace, seed: int, method: str, options: dict[str, Any]) -> dict:
    return {"task": args.task, "task_options": {"limit": args.limit} if args.limit else {},
            "space": "darts",
            "space_options": {"C": args.C, "layers": 3, "nodes": 4, "allow_none": True},
            "method": method, "method_options": options,
            "evaluator": "train",
            "evaluator_options": {"epochs": args.train_epochs, "batch_size": 128,
                                  "measure_latency": False},
            "objective": ["max:val_acc", "min:params"], "seed": seed}


def darts_cc_options(args: argparse.Namespace, random: int = 0) -> dict[str, Any]:
    return {"epochs": args.epochs, "batch_size": args.batch, "random_baseline": random,
            "tau_decay": 0.8 / args.epochs, "tau_min": 0.2, "arch_lr": args.arch_lr,
            "derive": args.derive, "lambda_min": args.lambda_min, "lambda_max": args.lambda_max}


def run(cfg: dict, out: Path) -> tuple[list, dict]:
    with Run.create(make_config(cfg), out) as r:
        trials = r.search()
        meta = r.store.get_meta("darts_cc") or {}
    return trials, meta


def family_stats(trials: list, meta: dict) -> dict[str, Any]:
    """The family's parameters against λ, distinct genotypes, search and training times."""
    fam = sorted((t for t in trials if t.info.get("role") == "family"),
                 key=lambda t: t.info["lambda"])
    params = [t.result.cost.get("params") for t in fam]
    train_seconds = sum(t.result.cost.get("train_seconds", 0.0) for t in fam
                        if "same_as" not in t.info)
    return {"lambdas": [t.info["lambda"] for t in fam], "params": params,
            "val_acc": [t.result.metrics.get("val_acc") for t in fam],
            "expected_params_of_alpha": meta.get("expected_params"),
            "distinct_genotypes": len({str(t.arch) for t in fam}),
            "params_non_increasing": all(a >= b for a, b in zip(params, params[1:])),
            "params_ratio_lambda0_over_lambda1": params[0] / params[-1] if params[-1] else None,
            "search_seconds": meta.get("search_seconds"),
            "train_from_scratch_seconds": train_seconds,
            "genotypes": [str(t.arch) for t in fam]}


def family(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="darts_cc_family_"))
    start = time.perf_counter()
    trials, meta = run(config(args, args.seeds[0], "darts_cc", darts_cc_options(args)), out / "run")
    return {"task": args.task, "seed": args.seeds[0], **family_stats(trials, meta),
            "total_wall_seconds": time.perf_counter() - start, "run_dir": str(out / "run")}


def on_or_above(point: tuple[float, float], randoms: list[tuple[float, float]]) -> bool:
    """No random genotype with at most as many parameters is more accurate."""
    p, a = point
    return all(not (rp <= p and ra > a) for rp, ra in randoms)


def front(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="darts_cc_front_"))
    has_darts = "darts" in registry.available("methods")
    per_seed = []
    for seed in args.seeds:
        trials, meta = run(config(args, seed, "darts_cc", darts_cc_options(args, args.random)),
                           out / f"cc{seed}")
        pts = lambda role: [(t.result.cost["params"], t.result.metrics["val_acc"])  # noqa: E731
                            for t in trials if t.info.get("role") == role and t.status == "ok"]
        randoms, fam = pts("random"), pts("family")
        entry: dict[str, Any] = {
            "seed": seed, "random": randoms, "family": fam,
            "family_on_or_above": [on_or_above(p, randoms) for p in fam],
            **family_stats(trials, meta)}
        print(json.dumps({"partial": entry}), flush=True)  # results so far, if a later part dies
        if has_darts:
            dtrials, _ = run(config(args, seed, "darts", {"epochs": args.epochs, "batch_size": 128,
                                                          "supernet_val": False, "plots": False}),
                             out / f"darts{seed}")
            darts_pts = [(t.result.cost["params"], t.result.metrics["val_acc"]) for t in dtrials
                         if t.status == "ok"]
            entry["darts"] = darts_pts
            entry["darts_on_or_above"] = [on_or_above(p, randoms) for p in darts_pts]
        per_seed.append(entry)
        from nasforge.methods.darts_cc import write_plots

        write_plots(trials, meta, out / "plots" / f"seed{seed}", darts=entry.get("darts", []))
    return {"task": args.task, "seeds": args.seeds, "darts_method_available": has_darts,
            "per_seed": per_seed, "plots": str(out / "plots")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=("family", "front"))
    parser.add_argument("--task", default="digits")
    parser.add_argument("--C", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-epochs", type=int, default=12)
    parser.add_argument("--arch-lr", type=float, default=1e-3)
    parser.add_argument("--derive", default="argmax", choices=("argmax", "top2"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--random", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="cap the training split")
    parser.add_argument("--batch", type=int, default=128, help="search batch size")
    parser.add_argument("--lambda-min", type=float, default=1e-8)
    parser.add_argument("--lambda-max", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = family(args) if args.target == "family" else front(args)
    result.update({"args": vars(args), "date": datetime.now(timezone.utc).isoformat(),
                   "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)"})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
