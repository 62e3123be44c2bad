"""``nasforge predictors-eval``: how well each predictor ranks architectures of a table or a run.

Imported by ``nasforge.cli``, which registers it on its ``app``. Library code lives in
``nasforge.predictors.evaluate``; this module only parses options and writes files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from .cli import app, console
from .errors import ConfigError, DataError


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r}; expected comma-separated integers") from None
    if not values:
        raise ConfigError(f"{what} {text!r}; expected at least one integer")
    return values


@app.command("predictors-eval")
def predictors_eval_cmd(
    table: Optional[Path] = typer.Option(None, help="table (CSV/parquet with an 'arch' column)"),
    metric: str = typer.Option("cifar100-val", help="column (table) or trial metric (run) to "
                               "predict"),
    run: Optional[Path] = typer.Option(None, help="finished run directory: k-fold "
                                       "cross-validation on its own trials instead of a table"),
    space: str = typer.Option("nb201", help="search space of the table's architectures"),
    predictors: str = typer.Option("mlp_ensemble,gin,svr,gp,gbt",
                                   help="comma-separated predictor names"),
    ns: str = typer.Option("10,20,50,100,200", help="training-set sizes (table mode)"),
    seeds: int = typer.Option(5, help="seeds 0..SEEDS-1"),
    holdout: int = typer.Option(1000, help="fixed held-out architectures (table mode)"),
    folds: int = typer.Option(5, help="folds (run mode)"),
    options: str = typer.Option("{}", help='JSON per-predictor options, e.g. {"gin": '
                                '{"epochs": 100}}'),
    out: Path = typer.Option(..., help="new directory for rows.csv, summary.csv, tau_vs_n.png"),
) -> None:
    """Kendall tau and Spearman rho of predictors trained on n architectures (95% intervals)."""
    from . import registry
    from .predictors import evaluate as ev

    if (table is None) == (run is None):
        raise ConfigError("give exactly one of --table PATH or --run RUN_DIR")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}; expected an integer >= 1")
    try:
        opts = json.loads(options)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options {options!r} is not JSON ({exc.msg})") from None
    if not isinstance(opts, dict) or not all(isinstance(v, dict) for v in opts.values()):
        raise ConfigError(f"--options {options!r}; expected a JSON object of objects")
    names = [p.strip() for p in predictors.split(",") if p.strip()]
    for name in names:
        registry.validate_options("predictors", name, opts.get(name, {}))
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} exists and is not empty; expected a new directory "
                          "(results are never overwritten)")

    def show(row: dict) -> None:
        console.print(f"{row['predictor']:>13} n={row['n']:<4} seed={row['seed']} "
                      f"tau={row['tau']:.3f} rho={row['rho']:.3f} fit={row['fit_s']:.2f}s "
                      f"predict={row['predict_s']:.2f}s", highlight=False)

    if table is not None:
        from .evaluators.table import TableEvaluator

        sp = registry.create("spaces", space)
        index = TableEvaluator(path=str(table), search_metric=metric)._load()
        texts = sorted(index)
        archs = [sp.parse(t) for t in texts]
        y = [index[t][0] for t in texts]
        rows = ev.learning_curve(sp, archs, y, names, _ints(ns, "--ns"), range(seeds),
                                 holdout=holdout, options=opts, on_row=show)
        title = f"{table.name}: {metric}, held-out {holdout}"
    else:
        from .run.rundir import build_space, open_rows

        trials, cfg = open_rows(run)
        if not cfg.get("space"):
            raise DataError(f"{run}: the run's config names no space")
        sp = build_space(cfg["space"], cfg.get("space_options") or {}, None)
        ok = [t for t in trials if t["status"] == "ok"
              and isinstance(t["metrics"].get(metric), (int, float))
              and math.isfinite(t["metrics"][metric])]
        if not ok:
            have = sorted({k for t in trials for k in t["metrics"]})
            raise DataError(f"{run}: no finished trial has metric {metric!r}; metrics there: "
                            f"{', '.join(have) or '(none)'}")
        archs = [sp.parse(t["arch"]) for t in ok]
        y = [float(t["metrics"][metric]) for t in ok]
        rows = ev.cross_validate(sp, archs, y, names, folds=folds, seeds=range(seeds),
                                 options=opts)
        for r in rows:
            show(r)
        title = f"{run.name}: {metric}, {folds}-fold CV"
    summary = ev.summarise(rows)
    out.mkdir(parents=True, exist_ok=True)
    ev.write_csv(rows, out / "rows.csv")
    ev.write_csv(summary, out / "summary.csv")
    ev.plot_tau(summary, out / "tau_vs_n.png", title)
    for s in summary:
        console.print(f"{s['predictor']:>13} n={s['n']:<4} tau {s['tau']:.3f} ± "
                      f"{s['tau_ci95']:.3f}  rho {s['rho']:.3f} ± {s['rho_ci95']:.3f}  "
                      f"fit {s['fit_s']:.2f}s predict {s['predict_s']:.2f}s  ({s['runs']} runs)",
                      highlight=False)
    console.print(f"wrote {out}/rows.csv, summary.csv, tau_vs_n.png", highlight=False)
