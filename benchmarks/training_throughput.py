"""Training throughput (samples/s) of ``nasforge.training.fit`` on digits for a small chain CNN.

Usage: ``python benchmarks/training_throughput.py [--epochs 5] [--threads N] [--device cpu]``.
Prints machine info, then one row per batch size (64, 128, 256): training samples per second
(median over repeats, validation excluded), seconds per epoch and final validation accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics

import numpy as np
import torch
from torch import nn

from nasforge.cost import count_flops, count_params
from nasforge.training import TrainConfig, evaluate, fit, resolve_device


def digits() -> tuple:
    """Train / val splits of digits: the registered task if present, else sklearn directly."""
    try:
        from nasforge.data import load_task
        task = load_task("digits", seed=0)
        return task.train, task.val, "nasforge task"
    except Exception:  # the data module may not provide digits yet
        from sklearn.datasets import load_digits
        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32)[:, None]
        x = (x - x.mean()) / x.std()
        y = torch.tensor(d.target, dtype=torch.long)
        perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
        a, b = int(0.6 * len(y)), int(0.8 * len(y))
        return (x[perm[:a]], y[perm[:a]]), (x[perm[a:b]], y[perm[a:b]]), "sklearn, 60/20/20"


def chain_cnn(in_channels: int, size: int, classes: int) -> nn.Module:
    """A DP-NAS-like chain: C(32,3) C(32,3) P(2) C(64,3) then a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * (size // 2) ** 2, classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    train, val, source = digits()
    shape = tuple(train[0].shape[1:])

    print(f"date        {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine     {platform.platform()}, {platform.processor() or platform.machine()}")
    print(f"cpus        {os.cpu_count()} (torch threads {torch.get_num_threads()})")
    print(f"python      {platform.python_version()}, torch {torch.__version__}")
    print(f"device      {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                     if device.type == "cuda" else ""))
    model = chain_cnn(shape[0], shape[1], 10)
    print(f"model       chain CNN C(32,3) C(32,3) P(2) C(64,3) FC(10) with batch norm: "
          f"{count_params(model):,} params, {count_flops(model, shape) / 1e6:.2f} MFLOPs/sample")
    print(f"data        digits ({source}): {len(train[0])} train, {len(val[0])} val, "
          f"input {shape}; {args.epochs} epochs, Adam, cosine, median of {args.repeats} runs")
    print()
    print(f"{'batch':>6} {'samples/s':>11} {'s/epoch':>9} {'val_acc':>8}")
    for batch in (64, 128, 256):
        config = TrainConfig(lr=3e-3, batch_size=batch, epochs=args.epochs)
        rates, acc = [], float("nan")
        fit(chain_cnn(shape[0], shape[1], 10), train, None,
            TrainConfig(batch_size=batch, epochs=1), seed=0, device=device)  # warm-up
        for r in range(args.repeats):
            torch.manual_seed(r)
            model = chain_cnn(shape[0], shape[1], 10)
            result = fit(model, train, None, config, seed=r, device=device)
            rates.append(len(train[0]) * result.epochs_run / result.seconds)
            acc = evaluate(model, val, device=device)[0]
        rate = statistics.median(rates)
        print(f"{batch:>6} {rate:>11,.0f} {len(train[0]) / rate:>9.3f} {acc:>8.3f}")


if __name__ == "__main__":
    main()
