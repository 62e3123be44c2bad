"""Wall time of a deep-prior evaluation against full training, and of the embedding cache.

Usage::

    python benchmarks/deep_prior_speed.py [--archs 5] [--limit 1500] [--fashion-root DIR]
                                          [--data both|digits|28]

For architectures sampled from the chain space with the main job's narrowing (features 16, 32,
64; 2 to 5 convolutions), on digits (8x8) and on 28x28 MNIST-format data, it times

- ``deep_prior``: embedding the three splits with the frozen random encoder plus the linear
  classifier's 15 epochs on the embedding (evaluator defaults), and
- ``train``: the train evaluator with its defaults (20 epochs, encoder and head trained),

and prints the ratio (target: at least 10x). The 28x28 data is Fashion-MNIST from
``--fashion-root`` (training split capped at ``--limit``), or, without it, 28x28 images made
from scikit-learn's digits (each upscaled 3x, shifted at random and noised) written as IDX files
with ``nasforge.data.write_idx`` and read back by the ``mnist`` loader; the output says which.
The made-up images do not share sources between training and test: sklearn's 1,797 digits are
split first (stratified, 70 / 30, from the seed), the IDX training file is made only from the
first part and the test file only from the second, so no test image is a near-copy of a
training image. (The ``mnist`` loader takes the validation split from the training file, so
validation images may share sources with training images; only test accuracy is reported.)

Then, on the 28x28 data, a second classifier with another learning rate (a third of the
evaluator's) on the same architecture: with the embedding cache (the first evaluation's
workdir) against recomputing the embedding (target: at least 5x). One torch thread, as a run's workers use on a busy machine; latency
measurement is off in both evaluators so that only evaluation is timed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nasforge.config import DEMO_CHAIN_OPTIONS
from nasforge.data import load_task, write_idx
from nasforge.evaluators.deep_prior import DeepPriorEvaluator
from nasforge.evaluators.train import TrainEvaluator
from nasforge.run.rundir import build_space


def digits_28(folder: Path, seed: int = 0, train: int = 6000, test: int = 1500) -> Path:
    """MNIST-format IDX files of 28x28 digits made from sklearn's 8x8 digits (real strokes).

    Training images come only from a 70% stratified split of the 1,797 digits, test images only
    from the other 30%: no source digit is in both files.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    rng = np.random.default_rng(seed)
    sources = dict(zip(("train", "t10k"), train_test_split(
        np.arange(len(d.target)), test_size=0.3, stratify=d.target, random_state=seed)))
    assert not set(sources["train"]) & set(sources["t10k"])

    def make(n: int, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = pool[rng.integers(len(pool), size=n)]
        big = np.kron(d.images[idx], np.ones((3, 3)))  # (n, 24, 24), values 0..16
        out = np.zeros((n, 28, 28))
        shifts = rng.integers(0, 5, size=(n, 2))
        for i, (dy, dx) in enumerate(shifts):
            out[i, dy:dy + 24, dx:dx + 24] = big[i]
        out = out * 16 + rng.normal(0, 12, size=out.shape)
        return np.clip(out, 0, 255).astype(np.uint8), d.target[idx].astype(np.uint8)

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        x, y = make(n, sources[prefix])
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y)
    return folder


def sample_archs(task, n: int, seed: int) -> tuple[object, list]:
    space = build_space("chain", dict(DEMO_CHAIN_OPTIONS), task)
    rng = np.random.default_rng(seed)
    archs: list = []
    while len(archs) < n:
        a = space.sample(rng)
        if a not in archs:
            archs.append(a)
    return space, archs


def compare(task, space, archs) -> list[tuple[str, float, float, float, float]]:
    """(arch, deep prior seconds, train seconds, deep prior test acc, trained test acc)."""
    dp, full = DeepPriorEvaluator(measure_latency=False), TrainEvaluator(measure_latency=False)
    for ev in (DeepPriorEvaluator(epochs=1, measure_latency=False),
               TrainEvaluator(epochs=1, measure_latency=False)):
        ev.evaluate(archs[0], space, task, seed=0)  # warm-up (lazy imports, first calls)
    rows = []
    for i, arch in enumerate(archs):
        t0 = time.perf_counter()
        a = dp.evaluate(arch, space, task, seed=i)
        t1 = time.perf_counter()
        b = full.evaluate(arch, space, task, seed=i)
        t2 = time.perf_counter()
        assert a.status == "ok" and b.status == "ok", (a.reason, b.reason)
        rows.append((str(arch), t1 - t0, t2 - t1, a.metrics["test_acc"], b.metrics["test_acc"]))
        print(f"  {i + 1}/{len(archs)} deep prior {t1 - t0:6.2f} s "
              f"(test {a.metrics['test_acc']:.3f})"
              f"  train {t2 - t1:7.2f} s (test {b.metrics['test_acc']:.3f})  ratio "
              f"{(t2 - t1) / (t1 - t0):5.1f}x  {arch}", flush=True)
    return rows


def report(name: str, rows) -> float:
    dp, tr = sum(r[1] for r in rows), sum(r[2] for r in rows)
    ratios = [r[2] / r[1] for r in rows]
    print(f"{name}: deep prior {dp:.1f} s, full training {tr:.1f} s for {len(rows)} architectures"
          f" -> {tr / dp:.1f}x faster in total (per architecture: median "
          f"{statistics.median(ratios):.1f}x, min {min(ratios):.1f}x); mean test accuracy "
          f"{np.mean([r[3] for r in rows]):.3f} (deep prior) vs {np.mean([r[4] for r in rows]):.3f}"
          " (trained)")
    return tr / dp


def cache_speedup(task, space, archs) -> None:
    first = DeepPriorEvaluator(measure_latency=False)
    second = DeepPriorEvaluator(lr=first.config.lr / 3, measure_latency=False)
    assert second.config.lr != first.config.lr
    print(f"  first classifier lr {first.config.lr:g}, second {second.config.lr:g}")
    cached_t, fresh_t = [], []
    for i, arch in enumerate(archs):
        with tempfile.TemporaryDirectory() as work:
            base = first.evaluate(arch, space, task, seed=i, workdir=Path(work))
            t0 = time.perf_counter()
            cached = second.evaluate(arch, space, task, seed=i, workdir=Path(work))
            t1 = time.perf_counter()
        fresh = second.evaluate(arch, space, task, seed=i)  # no workdir: embedding recomputed
        t2 = time.perf_counter()
        assert cached.cost["embedding_cached"] == 1.0 and fresh.cost["embedding_cached"] == 0.0
        assert cached.metrics == fresh.metrics
        assert cached.metrics != base.metrics  # another learning rate: another classifier
        cached_t.append(t1 - t0)
        fresh_t.append(t2 - t1)
        print(f"  {arch}: with cache {t1 - t0:.2f} s, recomputing {t2 - t1:.2f} s "
              f"({(t2 - t1) / (t1 - t0):.1f}x; embedding {fresh.cost['embed_seconds']:.2f} s, "
              f"classifier {fresh.cost['train_seconds']:.2f} s)", flush=True)
    print(f"second classifier fit: with the cache {sum(cached_t):.2f} s, recomputing the embedding "
          f"{sum(fresh_t):.2f} s -> {sum(fresh_t) / sum(cached_t):.1f}x (same metrics both ways)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=5, help="architectures per dataset")
    parser.add_argument("--limit", type=int, default=1500, help="training images of 28x28 data")
    parser.add_argument("--fashion-root", type=Path, default=None, help="Fashion-MNIST IDX files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("both", "digits", "28"), default="both",
                        help="which comparison to run (default both)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"torch {torch.__version__}, 1 thread; chain space options {DEMO_CHAIN_OPTIONS}")
    digits = load_task("digits", seed=args.seed)
    ratio_digits = ratio_28 = float("nan")
    if args.data in ("both", "digits"):
        print(f"digits 8x8: {digits.sizes()}")
        space, archs = sample_archs(digits, args.archs, args.seed)
        ratio_digits = report("digits", compare(digits, space, archs))
    if args.data == "digits":
        print(f"\nspeed-up of deep prior over full training: digits {ratio_digits:.1f}x "
              "(target >= 10x)")
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.fashion_root is not None:
            big = load_task("fashion-mnist", root=str(args.fashion_root), limit=args.limit,
                            seed=args.seed)
            what = f"Fashion-MNIST from {args.fashion_root}"
        else:
            big = load_task("mnist", root=str(digits_28(Path(tmp), args.seed)), limit=args.limit,
                            seed=args.seed)
            what = ("28x28 digits made from sklearn's digits (upscaled, shifted, noised; train "
                    "and test files from disjoint 70/30 splits of the 1,797 source digits), "
                    "written as IDX files with write_idx: NOT Fashion-MNIST (give --fashion-root "
                    "for it)")
        print(f"\n28x28 data: {what}; {big.sizes()}")
        space28, archs28 = sample_archs(big, args.archs, args.seed)
        ratio_28 = report("28x28", compare(big, space28, archs28))
        print("\nembedding cache, 28x28 data:")
        cache_speedup(big, space28, archs28)
    print(f"\nspeed-up of deep prior over full training: digits {ratio_digits:.1f}x, "
          f"28x28 {ratio_28:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
