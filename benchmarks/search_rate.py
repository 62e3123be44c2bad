"""Trials per minute of the default search (the main job: random search, chain space, digits,
full training), with the in-process executor and with a pool of 2 worker processes, side by side.

    python benchmarks/search_rate.py [--trials 12]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date

import torch

from nasforge.config import make_config
from nasforge.run.rundir import Run


def rate(trials: int, workers: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        cfg = make_config({"budget": trials, "workers": workers, "seed": 0})
        with Run.create(cfg, os.path.join(d, "run")) as run:
            t0 = time.perf_counter()
            done = run.search()
            seconds = time.perf_counter() - t0
        best = max(t.metrics.get("test_acc", 0.0) for t in done if t.ok)
    return 60.0 * trials / seconds, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=12)
    args = ap.parse_args()
    print(f"# {date.today()} {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    for workers in (1, 2):
        per_min, best = rate(args.trials, workers)
        print(f"workers={workers}: {per_min:.1f} trials/min over {args.trials} trials "
              f"(best test acc {best:.4f})")


if __name__ == "__main__":
    main()
