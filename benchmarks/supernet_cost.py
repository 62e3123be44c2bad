"""Cost of the DARTS supernet search on digits at CPU scale: first order, second order and GDAS.

Usage: ``python benchmarks/supernet_cost.py [--epochs 2] [--C 8] [--layers 5] [--batch 64]``.

Each mode runs the real method (``darts`` order 1, ``darts`` order 2, ``gdas``) in its own
process, so peak memory is that mode's alone: the search (``epochs`` epochs on the weight half
of digits' training set, α on the other half; supernet validation off), then the derived genotype
trained from scratch by the ``train`` evaluator for the same number of epochs on the whole
training set (the network the space builds with the same ``C`` and ``layers``). Printed per mode:
search seconds per epoch, peak resident memory of the process (``ru_maxrss``) and its growth
during the search over the memory after start-up and data loading, the derived network's
training seconds per epoch, and the ratio of the two (search cost / training one derived
architecture, epoch for epoch). Results also go to ``benchmarks/results/supernet_cost.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import queue
import resource
import tempfile
from pathlib import Path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_mode(mode: str, args: dict, out: "mp.Queue") -> None:
    import torch

    torch.set_num_threads(args["threads"])
    from nasforge import registry
    from nasforge.core import Objective
    from nasforge.data import load_task
    from nasforge.evaluators.train import TrainEvaluator
    from nasforge.methods import MethodContext, run_method
    from nasforge.run.loop import Budget
    from nasforge.run.store import Store
    from nasforge.spaces.darts import DartsSpace

    task = load_task("digits")
    base = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        ev = {"epochs": args["epochs"], "measure_latency": False, "batch_size": args["batch"]}
        ctx = MethodContext(task=task, space=DartsSpace(C=args["C"], layers=args["layers"]),
                            evaluator=TrainEvaluator(**ev), objective=Objective("val_acc"),
                            seed=0, store=Store(Path(tmp) / "run.db"), budget=Budget(trials=1),
                            evaluator_name="train", evaluator_options=ev,
                            work_dir=Path(tmp) / "method")
        common = dict(epochs=args["epochs"], batch_size=args["batch"], supernet_val=False,
                      plots=False)
        if mode == "gdas":
            method = registry.create("methods", "gdas", **common)
        else:
            method = registry.create("methods", "darts", order=int(mode[-1]), **common)
        # measure the search alone for memory: peak after it, before the derived training
        peak = {}

        original = ctx.store.set_meta

        def set_meta(key, value):
            peak.setdefault("search", _rss_mib())
            return original(key, value)

        ctx.store.set_meta = set_meta  # type: ignore[method-assign]
        trials = run_method(method, ctx)
        meta = ctx.store.get_meta(method.name)
        trial = trials[0]
        out.put({"mode": mode, "search_seconds": meta["search_seconds"],
                 "epochs": meta["epochs"], "supernet_params": meta["supernet_params"],
                 "peak_rss_mib_search": peak["search"], "rss_mib_before": base,
                 "peak_rss_mib_total": _rss_mib(),
                 "derived": str(trial.arch), "derived_params": trial.result.cost.get("params"),
                 "derived_train_seconds": trial.result.cost.get("train_seconds"),
                 "derived_val_acc": trial.metrics.get("val_acc")})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--modes", default="order1,order2,gdas")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "supernet_cost.json"))
    a = p.parse_args()
    args = {"epochs": a.epochs, "C": a.C, "layers": a.layers, "batch": a.batch, "threads": a.threads}
    ctx = mp.get_context("spawn")
    rows = []
    for mode in a.modes.split(","):
        q = ctx.Queue()
        proc = ctx.Process(target=run_mode, args=(mode, args, q))
        proc.start()
        while True:
            try:
                rows.append(q.get(timeout=5))
                break
            except queue.Empty:
                if not proc.is_alive():
                    raise SystemExit(f"mode {mode} failed (exit code {proc.exitcode})")
        proc.join()
    load = os.getloadavg()
    print(f"# {datetime.date.today()} {platform.machine()} {os.cpu_count()} cores, load average "
          f"{load[0]:.1f}; digits, supernet C={a.C} layers={a.layers} 4 nodes 8 ops, batch "
          f"{a.batch}, {a.epochs} epochs, {a.threads} torch thread(s)")
    print(f"{'mode':<8} {'search s/epoch':>15} {'peak RSS MiB':>13} {'search +MiB':>12} "
          f"{'derived s/epoch':>16} {'search/derived':>15} {'derived params':>15} {'val_acc':>8}")
    for r in rows:
        s_ep = r["search_seconds"] / r["epochs"]
        d_ep = r["derived_train_seconds"] / a.epochs
        r["search_seconds_per_epoch"], r["derived_seconds_per_epoch"] = s_ep, d_ep
        r["ratio"] = s_ep / d_ep
        print(f"{r['mode']:<8} {s_ep:>15.1f} {r['peak_rss_mib_search']:>13.0f} "
              f"{r['peak_rss_mib_search'] - r['rss_mib_before']:>12.0f} {d_ep:>16.1f} "
              f"{r['ratio']:>15.1f} {r['derived_params']:>15,.0f} {r['derived_val_acc']:>8.3f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"date": str(datetime.date.today()), "args": args,
                                       "load_average": load, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
