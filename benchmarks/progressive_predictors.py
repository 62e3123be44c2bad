"""How well each accuracy predictor, fitted on step 1, ranks the larger cells (validation only).

Reads the raw results of ``progressive_digits.py``: for every seed, the predictor is fitted on
the 21 one-block cells that seed's PNAS run trained (their validation accuracy), as the
progressive strategy does before step 2, and ranks every 2- and 3-block cell any strategy trained
with that seed; the score is Kendall's tau against their validation accuracy (no test data).
Used to choose the ``lstm`` predictor options of ``mode: pnas`` (docs/progressive.md).

    python benchmarks/progressive_predictors.py benchmarks/results/progressive_digits.json \
        --out benchmarks/results/progressive_predictors.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nasforge import registry
from nasforge.predictors.base import kendall_tau

CONFIGS = {
    "lstm 20 epochs lr 0.01 (5 x 100)": ("lstm", {"members": 5, "hidden": 100, "embed": 100,
                                                  "lr": 0.01, "epochs": 20}),
    "lstm 200 epochs lr 0.01 (5 x 100)": ("lstm", {"members": 5, "hidden": 100, "embed": 100,
                                                   "lr": 0.01, "epochs": 200}),
    "lstm nasforge default (3 x 64, 200 epochs, lr 3e-3)": ("lstm", {}),
    "gin popnas default": ("gin", {"members": 5, "epochs": 80, "batch_size": 16, "lr": 0.005,
                                   "weight_decay": 5e-4}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    data = json.loads(args.results.read_text())
    space = registry.create("spaces", "cell", **data["space"])
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    seeds = sorted({r["seed"] for r in data["runs"]})
    out: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for seed in seeds:
        runs = [r for r in data["runs"] if r["seed"] == seed]
        pnas = next(r for r in runs if r["strategy"] == "pnas")
        train = [t for t in pnas["trials"] if t["blocks"] == 1 and t["status"] == "ok"]
        held: dict[str, float] = {}
        for r in runs:
            for t in r["trials"]:
                if t["blocks"] > 1 and t["status"] == "ok":
                    held.setdefault(t["arch"], t["val_acc"])
        xa = [space.parse(t["arch"]) for t in train]
        ya = [t["val_acc"] for t in train]
        ha = [space.parse(a) for a in held]
        hy = list(held.values())
        for name, (pred, options) in CONFIGS.items():
            t0 = time.process_time()
            model = registry.create("predictors", pred, seed=seed, **options).fit(xa, ya, space)
            tau = kendall_tau(model.predict(ha), hy)
            out[name].append(tau)
            print(f"seed {seed} {name:<52} tau {tau:+.3f} on {len(ha)} cells "
                  f"({time.process_time() - t0:.1f} s)", flush=True)
    print()
    for name, taus in out.items():
        print(f"{name:<52} mean tau {np.mean(taus):+.3f}  per seed {[round(t, 3) for t in taus]}")
    if args.out is not None:
        args.out.write_text(json.dumps({
            "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            "started": started, "uptime": load, "source": str(args.results),
            "configs": {k: list(v) for k, v in CONFIGS.items()}, "tau": out}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
