"""ONNX export of a run's best model: export time per exporter (first export in a fresh process,
then warm), file size, the onnxruntime check, and inference time of onnxruntime against PyTorch.

    python benchmarks/onnx_export.py RUN_DIR [--repeats 5]

RUN_DIR is a finished run with ``best/model.pt`` (the main job: ``nasforge search --out RUN_DIR``).
Nothing is written into RUN_DIR; exports go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from nasforge.experiments import make_evaluator, open_run
from nasforge.export.onnx import (export_onnx, load_weights, missing_packages, ort_session,
                                  trial_network, INPUT_NAME, OUTPUT_NAME)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {date.today()} {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    import onnx  # noqa: F401  - the first export of a process pays these imports
    import onnxruntime  # noqa: F401

    print(f"import onnx + onnxruntime: {time.perf_counter() - t0:.2f} s")
    ctx = open_run(args.run_dir)
    arch = ctx.space.parse((ctx.dir / "best" / "arch.txt").read_text().strip())
    name, _, _ = str(ctx.config.get("evaluator", "train")).partition(":")
    evaluator = make_evaluator(name, ctx.evaluator_options(name))
    net = trial_network(arch, ctx.space, ctx.task, evaluator=evaluator)
    load_weights(net, ctx.dir / "best" / "model.pt")
    net.eval()
    params = sum(p.numel() for p in net.parameters())
    print(f"best architecture: {arch} ({params:,} parameters, input {tuple(ctx.task.input_shape)})")
    example = ctx.task.val[0][:2]
    exporters = ["torchscript"] + ([] if missing_packages("dynamo") else ["dynamo"])
    with tempfile.TemporaryDirectory() as d:
        for exporter in exporters:
            times, diffs = [], []
            for i in range(1 + args.repeats):  # the first one is the exporter's first in this process
                res = export_onnx(net, example, Path(d) / f"{exporter}-{i}.onnx", exporter=exporter)
                times.append(res.seconds)
                diffs.append(res.max_abs_diff)
            size = (Path(d) / f"{exporter}-0.onnx").stat().st_size
            print(f"{exporter:11s} export: first {times[0]:.2f} s, then median "
                  f"{statistics.median(times[1:]):.3f} s; check {res.check_seconds:.3f} s; "
                  f"{size / 1024:.0f} KiB, opset {res.opset}; max |onnx - torch| "
                  f"{max(diffs):.2g} (batch {res.check_batch})")
        session = ort_session(Path(d) / "torchscript-0.onnx")
        for batch in (1, 256):
            x = ctx.task.test[0][:batch]
            with torch.no_grad():
                t_torch = timed(lambda: net(x), args.repeats * 4)
            arr = x.numpy()
            t_ort = timed(lambda: session.run([OUTPUT_NAME], {INPUT_NAME: arr}), args.repeats * 4)
            out = session.run([OUTPUT_NAME], {INPUT_NAME: arr})[0]
            with torch.no_grad():
                agree = float(np.mean(out.argmax(1) == net(x).numpy().argmax(1)))
            print(f"inference batch {batch:3d}: torch {t_torch * 1e3:.2f} ms, onnxruntime "
                  f"{t_ort * 1e3:.2f} ms; same predicted class {agree:.0%}")


if __name__ == "__main__":
    main()
