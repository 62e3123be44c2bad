"""``nasforge predictors-eval``: how well each predictor ranks architectures of a table or a run.

Imported by ``nasforge.cli``, which registers it on its ``app``. Library code lives in
``nasforge.predictors.evaluate``; this module only parses options and writes files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
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
    predictors: str = typer.Option("mlp_ensemble,gin,lstm,svr,gp,gbt",
                                   help="comma-separated predictor names"),
    ns: str = typer.Option("10,20,50,100,200", help="training-set sizes (table mode)"),
    seeds: int = typer.Option(5, help="seeds 0..SEEDS-1"),
    holdout: int = typer.Option(1000, help="fixed held-out architectures (table mode)"),
    folds: int = typer.Option(5, help="folds (run mode)"),
    proxies: str = typer.Option("", help="run mode: also rank the trials by these zero-cost "
                                "proxies (grad_norm,snip,synflow,jacob_cov, or 'all'), with "
                                "params / flops baselines; needs the run's task"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples for the proxies' 95% intervals"),
    proxy_batch: int = typer.Option(64, help="minibatch size of the zero-cost proxies"),
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
    proxy_names = _proxy_names(proxies)
    if not names and not proxy_names:
        raise ConfigError(f"--predictors {predictors!r} names no predictor (and no --proxies); "
                          "expected at least one")
    if proxy_names and run is None:
        raise ConfigError(f"--proxies {proxies!r} needs --run RUN_DIR (the proxies score networks "
                          "on the run's task); a table has no task data")
    if bootstrap < 1 or proxy_batch < 2:
        raise ConfigError(f"--bootstrap {bootstrap} / --proxy-batch {proxy_batch}; expected "
                          "integers >= 1 / >= 2")
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
        from .core import evaluated
        from .run.rundir import build_space, open_rows

        trials, cfg = open_rows(run)
        if not cfg.get("space"):
            raise DataError(f"{run}: the run's config names no space")
        wants_shape = any("input_shape" in registry.option_model(
            registry.get("predictors", name)).model_fields for name in names)
        task = (_run_task(run, cfg, needed=bool(proxy_names))
                if proxy_names or wants_shape else None)
        sp = build_space(cfg["space"], cfg.get("space_options") or {}, task)
        # a trial that reuses another's result (repeats: reuse) is not a second data point
        ok = [t for t in evaluated(trials) if t["status"] == "ok"
              and math.isfinite(_trial_value(t, metric))]
        if not ok:
            have = sorted({k for t in trials for k in [*t["metrics"], *t["cost"]]})
            raise DataError(f"{run}: no finished trial has metric {metric!r}; metrics there: "
                            f"{', '.join(have) or '(none)'}, wall_seconds")
        archs = [sp.parse(t["arch"]) for t in ok]
        y = [_trial_value(t, metric) for t in ok]
        if task is not None:  # cost baselines and cost features measure the run's own networks
            for name in names:
                fields = registry.option_model(registry.get("predictors", name)).model_fields
                for key, value in (("input_shape", list(task.input_shape)),
                                   ("num_classes", task.num_classes)):
                    if key in fields:
                        opts.setdefault(name, {}).setdefault(key, value)
        rows = ev.cross_validate(sp, archs, y, names, folds=folds, seeds=range(seeds),
                                 options=opts) if names else []
        for r in rows:
            show(r)
        if proxy_names:
            proxy_rows = _rank_proxies(sp, task, ok, archs, y, proxy_names, bootstrap,
                                       proxy_batch)
        title = f"{run.name}: {metric}, {folds}-fold CV"
    summary = ev.summarise(rows)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if rows:
        ev.write_csv(rows, out / "rows.csv")
        ev.write_csv(summary, out / "summary.csv")
        ev.plot_tau(summary, out / "tau_vs_n.png", title)
        written += ["rows.csv", "summary.csv", "tau_vs_n.png"]
    if proxy_names:
        ev.write_csv(proxy_rows, out / "proxies.csv")
        written.append("proxies.csv")
    for s in summary:
        console.print(f"{s['predictor']:>13} n={s['n']:<4} tau {s['tau']:.3f} ± "
                      f"{s['tau_ci95']:.3f}  rho {s['rho']:.3f} ± {s['rho_ci95']:.3f}  "
                      f"fit {s['fit_s']:.2f}s predict {s['predict_s']:.2f}s  ({s['runs']} runs)",
                      highlight=False)
    console.print(f"wrote {out}/{', '.join(written)}", highlight=False)


def _proxy_names(text: str) -> list[str]:
    from .evaluators.zero_cost import PROXIES, check_proxies

    if text.strip() == "all":
        return list(PROXIES)
    return check_proxies([p.strip() for p in text.split(",") if p.strip()])


def _trial_value(trial: dict, metric: str) -> float:
    """A trial's metric, else its cost entry, else ``wall_seconds`` (finished - started); NaN
    when it has none of them or the value is not a number."""
    if metric == "wall_seconds" and metric not in trial["metrics"]:
        start, end = trial.get("started"), trial.get("finished")
        value = end - start if isinstance(start, (int, float)) and isinstance(end, (int, float)) \
            else math.nan
    else:
        value = trial["metrics"].get(metric, trial["cost"].get(metric, math.nan))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else math.nan


def _run_task(run: Path, cfg: dict, *, needed: bool):
    """The run's task (its config's task, options and seed); None when the run has none or it
    cannot be loaded, unless ``needed`` (then the reason, as a ``DataError``)."""
    from .data import load_task
    from .errors import NasforgeError

    if not cfg.get("task"):
        if needed:
            raise DataError(f"{run}: the run has no task (a table run?); zero-cost proxies need "
                            "the task's data")
        return None
    try:
        return load_task(cfg["task"], seed=cfg.get("seed", 0), **(cfg.get("task_options") or {}))
    except NasforgeError as exc:
        if needed:
            raise DataError(f"{run}: cannot load the run's task {cfg['task']!r} for the "
                            f"zero-cost proxies: {exc}") from None
        return None


def _rank_proxies(space, task, trials: list, archs: list, y: list, proxy_names: list[str],
                  bootstrap: int, batch: int) -> list[dict]:
    """Each proxy (and the trials' params / flops) as a ranker of the trials' targets."""
    from .predictors import evaluate as ev

    def progress(i: int, arch, out: dict) -> None:
        if (i + 1) % 10 == 0 or i + 1 == len(archs):
            console.print(f"proxies: {i + 1}/{len(archs)} architectures", highlight=False)

    scores, seconds = ev.proxy_scores(space, task, archs, [t["seed"] for t in trials],
                                      proxy_names, batch_size=batch, on_arch=progress)
    for cost in ("params", "flops"):
        values = np.array([float(t["cost"].get(cost, math.nan)) for t in trials])
        if np.isfinite(values).all():
            scores[cost], seconds[cost] = values, math.nan
    rows = []
    for name, values in scores.items():
        row = {"proxy": name, **ev.rank_scores(values, y, resamples=bootstrap),
               "seconds_per_arch": seconds[name]}
        rows.append(row)
        console.print(f"{name:>13} tau {row['tau']:.3f} [{row['tau_lo']:.3f}, {row['tau_hi']:.3f}]"
                      f"  rho {row['rho']:.3f} [{row['rho_lo']:.3f}, {row['rho_hi']:.3f}]  "
                      f"{row['seconds_per_arch']:.3f} s/arch  (n={row['n']})", highlight=False)
    return rows
