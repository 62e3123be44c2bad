"""Zero-cost proxies and learned predictors as rankers of really trained chain architectures.

    python benchmarks/zero_cost.py --out bench-zc                  # trains 80 archs on digits
    python benchmarks/zero_cost.py --run runs/some-run --out bench-zc   # reuses a finished run

Without ``--run`` it first runs a random search of ``--trials`` chain architectures on digits
with the ``train`` evaluator for ``--epochs`` epochs (OUT/run). Then, on that run's trials:

1. accuracy: each zero-cost proxy (grad_norm, snip, synflow, jacob_cov; one minibatch, each
   trial's own initialisation) and the params / flops baselines as rankers of ``val_acc``
   (Kendall tau, Spearman rho, 95% bootstrap intervals, seconds per proxy evaluation), and the
   learned predictors by ``--folds``-fold cross-validation -> OUT/accuracy/;
2. time: the predictors of ``train_seconds`` (POPNASv3's time predictor is ``svr`` on operation
   counts, log params and log FLOPs) against the params / flops baselines -> OUT/time/.

Both steps are ``nasforge predictors-eval --run``; see docs/predictors.md for measured figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from nasforge.cli import main as cli_main

ACCURACY_PREDICTORS = "svr,gp,gbt,mlp_ensemble,gin,lstm,params"
TIME_PREDICTORS = "svr,gbt,params,flops"
FAST = {"mlp_ensemble": {"members": 3, "epochs": 100}, "gin": {"members": 2, "epochs": 100},
        "lstm": {"members": 2, "epochs": 100}, "svr": {"cost_features": True}}


def cli(*args: str) -> None:
    sys.argv = ["nasforge", *args]
    try:
        cli_main()
    except SystemExit as exc:
        if exc.code:
            raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="finished run directory to reuse")
    ap.add_argument("--trials", type=int, default=80)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=1, help="cross-validation repetitions")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--proxy-batch", type=int, default=64)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = args.run
    if run is None:
        run = args.out / "run"
        cli("search", "--task", "digits", "--space", "chain", "--strategy", "random",
            "--budget", str(args.trials), "--seed", "1", "-o", f"evaluator.epochs={args.epochs}",
            "-o", "evaluator.measure_latency=false", "--out", str(run), "--quiet")
    common = ["--run", str(run), "--folds", str(args.folds), "--seeds", str(args.seeds),
              "--options", json.dumps(FAST)]
    print(f"== accuracy (val_acc) on {run}", flush=True)
    cli("predictors-eval", *common, "--metric", "val_acc", "--predictors", ACCURACY_PREDICTORS,
        "--proxies", "all", "--bootstrap", str(args.bootstrap),
        "--proxy-batch", str(args.proxy_batch), "--out", str(args.out / "accuracy"))
    print(f"== training time (train_seconds) on {run}", flush=True)
    cli("predictors-eval", *common, "--metric", "train_seconds", "--predictors",
        TIME_PREDICTORS, "--out", str(args.out / "time"))


if __name__ == "__main__":
    main()
