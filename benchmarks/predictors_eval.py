"""Predictor rank quality on a real table: Kendall tau / Spearman rho against n, over seeds.

    python benchmarks/predictors_eval.py --table ../shared/data/nb201_dev.csv \
        --metric cifar100-val --seeds 5 --out bench-predictors

Writes OUT/rows.csv (one row per predictor, n, seed), OUT/summary.csv (mean and 95% interval)
and OUT/tau_vs_n.png. Same as ``nasforge predictors-eval``.
"""

import sys

from nasforge.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "predictors-eval", *sys.argv[1:]]
    main()
