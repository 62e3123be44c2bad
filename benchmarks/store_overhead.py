"""Store overhead per trial: the search loop on the toy space with a zero-cost evaluator.

Compares, side by side in one run, an in-memory store with the on-disk SQLite (WAL) store a
run uses, so the difference is what persisting each trial and checkpoint costs.

    python benchmarks/store_overhead.py [--trials 2000]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from nasforge import registry
from nasforge.core import Objective
from nasforge.run.loop import Budget, Search
from nasforge.run.store import Store
from nasforge.testing import FunctionalEvaluator, ToySpace


def timed(store: Store, trials: int) -> float:
    search = Search(space=ToySpace(length=6, width=8), strategy=registry.create("strategies", "random", seed=0),
                    evaluator=FunctionalEvaluator(), task=None, objective=Objective(), store=store)
    t0 = time.perf_counter()
    search.run(Budget(trials=trials))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# {date.today()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread, "
          f"python {platform.python_version()}, torch {torch.__version__}")
    mem, disk = [], []
    for _ in range(args.repeats):
        mem.append(timed(Store(":memory:"), args.trials))
        with tempfile.TemporaryDirectory() as d:
            disk.append(timed(Store(Path(d) / "run.db"), args.trials))
    m, d = min(mem), min(disk)
    print(f"loop + in-memory store : {1e3 * m / args.trials:.3f} ms per trial")
    print(f"loop + SQLite WAL file : {1e3 * d / args.trials:.3f} ms per trial")
    print(f"store overhead on disk : {1e3 * (d - m) / args.trials:.3f} ms per trial "
          f"(trial row + strategy checkpoint, one transaction each)")


if __name__ == "__main__":
    main()
