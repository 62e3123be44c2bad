"""CPU seconds per supernet forward+backward step: the batched cells against the per-edge loop.

Usage: ``python benchmarks/supernet_step.py [--C 4 16] [--layers 3] [--batch 64] [--steps 5]``.

Both computations run in this one process on the same seeded supernet (``SuperNet``, the 8 DARTS
operations, 4 nodes, 8x8 single-channel inputs as digits): ``batched`` is ``SuperNet.forward``
(the cells compute all edges leaving a state together), ``per_edge`` is
``nasforge.oneshot.supernet.reference_forward`` (each operation of each edge on its own, as the
supernet computed before). Per method's mixing weights: ``darts`` (``softmax(α)``, one row per
edge), ``gdas`` (hard Gumbel sample: one operation per edge), ``darts_cc`` (soft Gumbel sample
per batch row). A step is a forward, cross-entropy and backward; the two computations alternate
step by step and the median over ``--steps`` steps of each is reported (CPU seconds of this
process with one torch thread, so other load on the machine matters less). Results go to
``--out`` (default ``benchmarks/results/supernet_step.json``; an existing file is never
overwritten: exit 2).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nasforge.oneshot.supernet import Alphas, SuperNet, reference_forward
from nasforge.ops.darts_ops import PRIMITIVES
from nasforge.training import seeded_module


def weights(alphas: Alphas, method: str, batch: int, generator: torch.Generator) -> dict:
    if method == "darts":
        return alphas.softmax()
    if method == "gdas":
        return alphas.gumbel(1.0, hard=True, generator=generator)
    return alphas.gumbel(1.0, hard=False, generator=generator, samples=batch)  # darts_cc


def measure(C: int, method: str, args: argparse.Namespace) -> dict:
    net = seeded_module(lambda: SuperNet(list(PRIMITIVES), C, args.layers, 10, 1), 0)
    alphas = Alphas.like(net, torch.Generator().manual_seed(1))
    data = torch.Generator().manual_seed(2)
    x = torch.randn(args.batch, 1, 8, 8, generator=data)
    y = torch.randint(0, 10, (args.batch,), generator=data)
    times: dict[str, list[float]] = {"per_edge": [], "batched": []}
    for step in range(args.steps + 1):  # step 0 warms up
        for name, forward in (("per_edge", reference_forward), ("batched", SuperNet.forward)):
            w = weights(alphas, method, args.batch, torch.Generator().manual_seed(100 + step))
            net.zero_grad()
            alphas.zero_grad()
            t = time.process_time()
            F.cross_entropy(forward(net, x, w), y).backward()
            if step:
                times[name].append(time.process_time() - t)
    before, after = statistics.median(times["per_edge"]), statistics.median(times["batched"])
    return {"C": C, "method": method, "per_edge_cpu_s": before, "batched_cpu_s": after,
            "speedup": before / after, "steps": args.steps,
            "supernet_params": sum(p.numel() for p in net.parameters())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--C", type=int, nargs="+", default=[4, 16])
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--methods", nargs="+", default=["darts", "gdas", "darts_cc"],
                   choices=("darts", "gdas", "darts_cc"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path,
                   default=Path(__file__).parent / "results" / "supernet_step.json")
    a = p.parse_args()
    for key in ("layers", "batch", "steps", "threads"):
        if getattr(a, key) < 1:
            print(f"supernet_step: --{key} {getattr(a, key)}; expected an integer >= 1", file=sys.stderr)
            raise SystemExit(2)
    if any(c < 1 for c in a.C):
        print(f"supernet_step: --C {a.C}; expected integers >= 1", file=sys.stderr)
        raise SystemExit(2)
    if a.out.exists():
        print(f"supernet_step: {a.out} exists; pass another --out (results are never overwritten)",
              file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(a.threads)
    print(f"# {datetime.date.today()} {platform.machine()} {os.cpu_count()} cores, {a.threads} torch "
          f"thread(s); supernet 8 ops, 4 nodes, {a.layers} cells, batch {a.batch} of 1x8x8; CPU "
          f"seconds per forward+backward step, median of {a.steps}")
    print(f"{'C':>3} {'method':<9} {'per-edge s':>11} {'batched s':>10} {'speed-up':>9}")
    rows = []
    for C in a.C:
        for method in a.methods:
            r = measure(C, method, a)
            rows.append(r)
            print(f"{C:>3} {method:<9} {r['per_edge_cpu_s']:>11.3f} {r['batched_cpu_s']:>10.3f} "
                  f"{r['speedup']:>8.2f}x", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"date": str(datetime.datetime.now(datetime.timezone.utc)),
                                 "args": {k: str(v) if isinstance(v, Path) else v
                                          for k, v in vars(a).items()},
                                 "load_average": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
