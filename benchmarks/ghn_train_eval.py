"""Train GHN-2, GHN-1 and the MLP baseline on a task (CPU scale) and compare the accuracy of
their predicted parameters on unseen generator architectures with random initialisation and
with SGD training (issue 11's targets: >= 5x random init's accuracy, >= 60% of 1-epoch SGD's,
GHN-2 above GHN-1 and MLP).

    python benchmarks/ghn_train_eval.py --epochs 10 --train-archs 128 --test-archs 20

Prints one line per epoch and per test architecture, then a table (mean test accuracy with
95% intervals over architectures) and the targets, and writes everything to --out
(JSON; GHN files next to it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from nasforge.data import load_task
from nasforge.ghn.evaluation import evaluate_splits, mean_ci95
from nasforge.ghn.train import GHNTrainOptions, train_ghn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="digits")
    ap.add_argument("--variants", default="ghn2,ghn1,mlp")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-archs", type=int, default=128)
    ap.add_argument("--val-archs", type=int, default=4)
    ap.add_argument("--test-archs", type=int, default=20)
    ap.add_argument("--splits", default="test")
    ap.add_argument("--sgd-epochs", default="1,5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="ghn_train_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    task = load_task(args.task, seed=args.seed)
    t0 = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {line}", flush=True)

    ghns, training = {}, {}
    for variant in [v for v in args.variants.split(",") if v]:
        opts = GHNTrainOptions(variant=variant, epochs=args.epochs, train_archs=args.train_archs,
                               val_archs=args.val_archs)
        start = time.perf_counter()
        try:
            ghn, result = train_ghn(task, opts, seed=args.seed,
                                    log=lambda s, v=variant: log(f"{v} {s}"))
        except Exception as exc:  # e.g. TrainingDiverged: report it, go on with the others
            log(f"{variant}: training failed: {type(exc).__name__}: {exc}")
            training[variant] = {"failed": f"{type(exc).__name__}: {exc}"}
            continue
        seconds = time.perf_counter() - start
        ghn.save(out.with_name(f"{out.stem}_{variant}.pt"))
        ghns[variant] = ghn
        training[variant] = {"seconds": round(seconds, 1), "steps": result.steps,
                             "meta_batch": opts.effective_meta_batch,
                             "val_curve": result.curves.get("ghn_val_acc", []),
                             "train_loss": result.curves.get("train_loss", [])}
        log(f"{variant}: trained in {seconds:.0f} s ({result.steps} steps, meta-batch "
            f"{opts.effective_meta_batch})")

    splits = [s for s in args.splits.split(",") if s]
    sgd_epochs = [int(e) for e in args.sgd_epochs.split(",") if e]
    results = evaluate_splits(ghns, task, splits=splits, archs=args.test_archs,
                              sgd_epochs=sgd_epochs, seed=args.seed, generator_seed=args.seed,
                              log=log)

    def fmt(v: tuple[float, float]) -> str:
        return f"{100 * v[0]:5.1f} ± {100 * v[1]:4.1f}"

    print(f"\ntest accuracy (%) on {task.name} test images, mean ± 95% interval over architectures")
    head = ["split", "random", *[f"SGD {e}ep" for e in sgd_epochs], *ghns]
    print(" | ".join(f"{h:>13}" for h in head))
    report = {"args": vars(args), "training": training, "splits": {}}
    for split, res in results.items():
        s = res.summary()
        print(" | ".join([f"{split:>13}", fmt(s["random"]),
                          *[fmt(s[f"sgd_{e}ep"]) for e in sgd_epochs],
                          *[fmt(s[n]) for n in ghns]]))
        report["splits"][split] = {"summary": s, "names": res.names, "params": res.params,
                                   "random": res.random,
                                   "sgd": {str(k): v for k, v in res.sgd.items()},
                                   "predicted": res.predicted,
                                   "predict_seconds": res.predict_seconds}
    test = results.get("test")
    if test is not None:
        rnd = mean_ci95(test.random)[0]
        sgd1 = mean_ci95(test.sgd.get(1, []))[0] if 1 in test.sgd else math.nan
        print("\ntargets on the test split:")
        for n in ghns:
            m = mean_ci95(test.predicted[n])[0]
            secs = sum(test.predict_seconds[n]) / len(test.predict_seconds[n])
            print(f"  {n}: {m / rnd:.1f}x random init (target >= 5), {m / sgd1:.2f} of 1-epoch "
                  f"SGD (target >= 0.60), {secs:.3f} s per network to trace and predict")
        if "ghn2" in ghns:
            g2 = mean_ci95(test.predicted["ghn2"])[0]
            others = {n: mean_ci95(test.predicted[n])[0] for n in ghns if n != "ghn2"}
            print("  ghn2 beats " + ", ".join(f"{n}: {'yes' if g2 > v else 'no'}"
                                               for n, v in others.items()))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    out.write_text(json.dumps(report, indent=1, default=lambda v: None))
    print(f"\nwrote {out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
