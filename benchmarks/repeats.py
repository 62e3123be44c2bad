"""How often strategies ask an architecture again, and what ``repeats: reuse`` saves.

Each strategy searches the real NAS-Bench-201 table (``shared/data/nb201_dev.csv``, searching
``cifar100-val``, reporting ``cifar100-test``) for ``--budget`` trials per seed, once with
``repeats="evaluate"`` (the default: every proposal is looked up, i.e. trained) and once with
``repeats="reuse"``. Printed per strategy, mean over seeds [min, max]:

- ``same text``: proposals (of the ``evaluate`` run) whose text an earlier trial already had;
- ``same class``: proposals whose ``canonical_key`` (isomorphic NB201 cell) an earlier trial had;
- ``evaluations``: what the ``reuse`` run evaluated (the rest of its trials reused a result);
- best-by-validation test accuracy after the budget, ``evaluate`` and ``reuse``.

A table gives one value per cell, so with ``evaluate`` an exact repeat costs a lookup and changes
nothing; what the counts measure is the training an ``evaluate`` run would spend again with a
real evaluator. Isomorphic cells differ in the table (they were trained separately), so with
``reuse`` a cell of an evaluated class takes that class's first value and later proposals may
differ from the ``evaluate`` run's.

    python benchmarks/repeats.py [--seeds 10] [--budget 100] [--strategies random,evolution,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from nasforge import registry
from nasforge.core import Objective, reused_from
from nasforge.evaluators.table import TableEvaluator
from nasforge.run.loop import Budget, Search
from nasforge.run.store import Store
from nasforge.spaces.nb201 import NB201Space

ROOT = Path(__file__).resolve().parents[1]
TABLE = Path("../shared/data/nb201_dev.csv")  # from the repository root, as the other benchmarks


def one(strategy: str, seed: int, budget: int, repeats: str, evaluator, space) -> dict:
    search = Search(space=space, strategy=registry.create("strategies", strategy, seed=seed),
                    evaluator=evaluator, task=None, objective=Objective("cifar100-val"),
                    seed=seed, store=Store(":memory:"), repeats=repeats)
    t0 = time.perf_counter()
    trials = search.run(Budget(trials=budget))
    texts, keys, same_text, same_class = set(), set(), 0, 0
    for t in sorted(trials, key=lambda t: t.id):
        text, key = str(t.arch), space.canonical_key(t.arch)
        same_text += text in texts
        same_class += key in keys
        texts.add(text)
        keys.add(key)
    best = search.best
    return {"strategy": strategy, "seed": seed, "repeats": repeats, "trials": len(trials),
            "same_text": same_text, "same_class": same_class,
            "evaluations": sum(reused_from(t) is None for t in trials),
            "best_test": best.metrics.get("cifar100-test") if best else None,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--strategies", default="random,evolution,local,optuna,bananas")
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "repeats.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    space = NB201Space()
    evaluator = TableEvaluator(path=str(args.table), search_metric="cifar100-val",
                               report_metric="cifar100-test")
    rows = []
    for strategy in args.strategies.split(","):
        for seed in range(args.seeds):
            for repeats in ("evaluate", "reuse"):
                rows.append(one(strategy, seed, args.budget, repeats, evaluator, space))
    load = os.getloadavg()
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
            "load_average": [round(x, 2) for x in load], "machine": platform.machine(),
            "command": "python benchmarks/repeats.py " + " ".join(
                f"--{k} {v}" for k, v in vars(args).items() if k not in ("out", "table")),
            "table": str(args.table.name)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))

    def stat(values) -> str:
        a = np.asarray(values, dtype=float)
        return f"{a.mean():.1f} [{a.min():.0f}, {a.max():.0f}]"

    print(f"# {meta['date']}, load average {load[0]:.2f}, {meta['command']}")
    print(f"| strategy | same text (of {args.budget}) | same class | reuse: evaluations | "
          "best test, evaluate | best test, reuse |")
    print("|---|---|---|---|---|---|")
    for strategy in args.strategies.split(","):
        ev = [r for r in rows if r["strategy"] == strategy and r["repeats"] == "evaluate"]
        ru = [r for r in rows if r["strategy"] == strategy and r["repeats"] == "reuse"]
        print(f"| {strategy} | {stat([r['same_text'] for r in ev])} | "
              f"{stat([r['same_class'] for r in ev])} | {stat([r['evaluations'] for r in ru])} | "
              f"{np.mean([r['best_test'] for r in ev]):.2f} | "
              f"{np.mean([r['best_test'] for r in ru]):.2f} |")
    print(f"raw results: {args.out}")


if __name__ == "__main__":
    main()
