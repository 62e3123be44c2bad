"""Cost of the DARTS supernet search on digits at CPU scale: first order, second order and GDAS.

Usage: ``python benchmarks/supernet_cost.py [--epochs 2] [--C 8] [--layers 5] [--batch 64]``.

Each mode runs the real method (``darts`` order 1, ``darts`` order 2, ``gdas``) in its own
process, so peak memory is that mode's alone: the search (``epochs`` epochs on the weight half
of digits' training set, α on the other half; supernet validation off), then the derived genotype
trained from scratch by the ``train`` evaluator for the same number of epochs on the whole
training set (the network the space builds with the same ``C`` and ``layers``). Printed per mode:
search seconds per epoch, the derived network's training seconds per epoch (CPU seconds of the
process, robust to other load on the machine; wall seconds in brackets; the derived figure
includes the evaluator's parameter and FLOP counts and test scoring), the ratio of the two
(search cost / training one derived architecture, epoch for epoch), and peak resident memory of
the process at the end of the search (``ru_maxrss``) and its growth over the memory after
start-up and data loading. The modes run side by side, one process each. Results also go to ``benchmarks/results/supernet_cost.json``.
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
import time
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
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # torch's lazy imports, not timed
    base = _rss_mib()
    cpu0 = time.process_time()
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
            peak.setdefault("cpu", time.process_time())
            return original(key, value)

        ctx.store.set_meta = set_meta  # type: ignore[method-assign]
        trials = run_method(method, ctx)
        meta = ctx.store.get_meta(method.name)
        trial = trials[0]
        cpu_end = time.process_time()
        out.put({"mode": mode, "search_seconds": meta["search_seconds"],
                 "search_cpu_seconds": peak["cpu"] - cpu0,
                 "derived_cpu_seconds": cpu_end - peak["cpu"],
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
    procs = []
    for mode in a.modes.split(","):  # one process per mode, run side by side
        q = ctx.Queue()
        proc = ctx.Process(target=run_mode, args=(mode, args, q))
        proc.start()
        procs.append((mode, proc, q))
    for mode, proc, q in procs:
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
    print("search / derived: seconds per epoch of the supernet search over those of training the "
          "derived genotype from scratch (CPU seconds of the process; wall seconds in brackets)")
    print(f"{'mode':<8} {'search s/epoch':>20} {'derived s/epoch':>20} {'search/derived':>15} "
          f"{'peak RSS MiB':>13} {'search +MiB':>12} {'derived params':>15} {'val_acc':>8}")
    for r in rows:
        s_ep, d_ep = r["search_cpu_seconds"] / r["epochs"], r["derived_cpu_seconds"] / a.epochs
        s_wall, d_wall = r["search_seconds"] / r["epochs"], r["derived_train_seconds"] / a.epochs
        r.update(search_cpu_per_epoch=s_ep, derived_cpu_per_epoch=d_ep, ratio_cpu=s_ep / d_ep,
                 search_wall_per_epoch=s_wall, derived_wall_per_epoch=d_wall,
                 ratio_wall=s_wall / d_wall)
        print(f"{r['mode']:<8} {f'{s_ep:.1f} ({s_wall:.0f})':>20} {f'{d_ep:.1f} ({d_wall:.0f})':>20} "
              f"{r['ratio_cpu']:>15.1f} {r['peak_rss_mib_search']:>13.0f} "
              f"{r['peak_rss_mib_search'] - r['rss_mib_before']:>12.0f} "
              f"{r['derived_params']:>15,.0f} {r['derived_val_acc']:>8.3f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"date": str(datetime.date.today()), "args": args,
                                       "load_average": load, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
