"""The ``nasforge`` command: small functions over the library (no logic the Python API lacks).

User mistakes (a bad flag value, a missing file, a locked run) are printed as one clear message
and exit status 2, never as a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from .errors import NasforgeError

app = typer.Typer(add_completion=False, no_args_is_help=False,
                  help="nasforge: neural architecture search on your data.")
# piped output is not wrapped to 80 columns, so net strings stay on one line in logs
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True)


def _parse_sets(sets: list[str] | None, extra_groups: tuple[str, ...] = ()) -> dict[str, Any]:
    """``-o strategy.replay_number=10`` -> ``{"strategy_options": {"replay_number": 10}}``."""
    from .errors import ConfigError

    out: dict[str, Any] = {}
    groups = {"task", "space", "strategy", "evaluator", "method", *extra_groups}
    for item in sets or []:
        key, sep, raw = item.partition("=")
        group, dot, name = key.partition(".")
        if not sep or not dot or group not in groups or not name:
            raise ConfigError(f"option {item!r} must look like GROUP.NAME=VALUE with GROUP one of "
                              f"{', '.join(sorted(groups))} (e.g. strategy.replay_number=10)")
        out.setdefault(f"{group}_options", {})[name] = _option_value(raw)
    return out


def _option_value(raw: str) -> Any:
    """The VALUE of ``-o GROUP.NAME=VALUE``, read as YAML (text where it is not valid YAML);
    ``1e-3`` stays text here and is read as a number where the option expects one."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _check_seed(value: Optional[int]) -> Optional[int]:
    """typer callback of every ``--seed``: the config's one seed check."""
    from .config import check_seed

    return value if value is None else check_seed(value, "--seed")


def _print_leaderboard(rows: list[dict[str, Any]], objective: Any, title: str, top: int = 10,
                       pareto: bool = False) -> None:
    """The leaderboard (best first; several objectives: by Pareto rank), or with ``pareto`` the
    front only; test accuracy is shown for reference, never used to rank."""
    from .core import Objectives, evaluated
    from .report import leaderboard

    objs = Objectives.of(objective)
    if pareto:  # a trial that reuses a member's result (repeats: reuse) is not shown again
        board = sorted(objs.front(evaluated(rows)), key=lambda r: objs.choice_key(r), reverse=True)
    else:
        board = leaderboard(rows, objs, top)
    chosen = objs.best(evaluated(rows))
    shown = [o.metric for o in objs if o.metric not in ("test_acc", "params", "train_seconds")]
    table = Table(title=title)
    for col in ("#", "trial", *shown, "test_acc", "params", "seconds", "architecture"):
        table.add_column(col, overflow="fold")
    for rank, r in enumerate(board, 1):
        m, c = r["metrics"], r["cost"]
        mark = "*" if chosen is not None and r["id"] == chosen["id"] else ""
        table.add_row(f"{rank}{mark}", str(r["id"]),
                      *[f"{m.get(k, c.get(k, float('nan'))):.4g}" for k in shown],
                      f"{m['test_acc']:.4f}" if "test_acc" in m else "-",
                      f"{int(c['params']):,}" if "params" in c else "-",
                      f"{c['train_seconds']:.1f}" if "train_seconds" in c else "-", r["arch"])
    console.print(table)
    if objs.multi or objs.constraints:
        console.print(f"objectives: {objs}; * = chosen ({'front' if pareto else 'ranked by Pareto front, then'}"
                      f" highest {objs.primary.metric}, ties by fewer params)", soft_wrap=True)
    failed = sum(r["status"] == "failed" for r in rows)
    if failed:
        console.print(f"{failed} of {len(rows)} trials failed (see trials.csv, column reason)")


@app.command()
def search(
    task: Optional[str] = typer.Option(None, help="task name (digits, mnist1d, mnist, ...)"),
    space: Optional[str] = typer.Option(None, help="search space (chain, nb201, ...)"),
    strategy: Optional[str] = typer.Option(None, help="strategy (random, evolution, qlearning, ...)"),
    method: Optional[str] = typer.Option(
        None, help="what drives the run: multitrial (default), sequential_halving, ..."),
    evaluator: Optional[str] = typer.Option(None, help="evaluator (train, deep_prior, table:PATH, ...)"),
    objective: Optional[list[str]] = typer.Option(
        None, help="max:METRIC or min:METRIC, repeatable for a Pareto search (default: "
                   "max:val_acc and min:params)"),
    constraint: Optional[list[str]] = typer.Option(
        None, help="METRIC<=NUMBER (or >=, <, >), repeatable; trials that break it are never chosen"),
    budget: Optional[int] = typer.Option(None, help="number of trials"),
    time_budget: Optional[float] = typer.Option(None, help="minutes of search"),
    workers: Optional[int] = typer.Option(None, help="parallel evaluations (process pool when > 1)"),
    executor: Optional[str] = typer.Option(
        None, help="where evaluations run: local, process (default when workers > 1), ray "
                   "(-o executor.address=auto for a running cluster)"),
    seed: Optional[int] = typer.Option(None, help="seed of sampling and initialisation (split: -o task.split_seed=N)",
                                       callback=_check_seed),
    repeats: Optional[str] = typer.Option(
        None, help="a proposed architecture the run already evaluated: evaluate (again, with a "
                   "new seed; the default) or reuse (record the earlier result, no training)"),
    out: Optional[Path] = typer.Option(None, help="run directory (default runs/<name>)"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this directory"),
    config: Optional[Path] = typer.Option(None, help="YAML config; flags override it"),
    schedule_scale: Optional[str] = typer.Option(
        None, help="qlearning: scale the epsilon schedule's counts: a number (1: DP-NAS's counts), or "
                   "'auto' to fit the budget (the default when the budget ends in the first stage)"),
    full_training: bool = typer.Option(False, "--full-training", help="deep_prior: train the encoder too"),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                               help="component option GROUP.NAME=VALUE (repeatable)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="log lines instead of a progress bar"),
    export: Optional[bool] = typer.Option(None, "--export/--no-export",
                                          help="write best/model.onnx when the search ends (default: yes)"),
) -> None:
    """Search for architectures; prints the leaderboard and the run directory."""
    from .config import load_config
    from .run.rundir import Run

    if objective:
        objective = objective[0] if len(objective) == 1 else list(objective)  # type: ignore[assignment]
    overrides: dict[str, Any] = {"task": task, "space": space, "strategy": strategy,
                                 "method": method, "evaluator": evaluator,
                                 "objective": objective or None,
                                 "constraints": list(constraint) if constraint else None,
                                 "budget": budget,
                                 "time_budget": time_budget, "workers": workers,
                                 "executor": executor, "seed": seed, "repeats": repeats,
                                 "export": export}
    extra = _parse_sets(option, extra_groups=("executor",))
    if schedule_scale is not None:
        extra.setdefault("strategy_options", {})["schedule_scale"] = yaml.safe_load(schedule_scale)
    if full_training:
        if (evaluator or "train") != "deep_prior" and resume is None:
            from .errors import ConfigError

            raise ConfigError("--full-training switches the deep_prior evaluator to conventional "
                              f"training; it does not apply to evaluator {evaluator or 'train'!r}")
        extra.setdefault("evaluator_options", {})["full_training"] = True
    if resume is not None:
        given = {k: v for k, v in {**overrides, **extra}.items() if v is not None}
        if config is not None:
            given.update(load_config(config).model_dump(exclude_unset=True))
        run = Run.resume(resume, given)
    else:
        base = load_config(config, None).model_dump(exclude_unset=True) if config else {}
        for k, v in extra.items():
            base[k] = {**(base.get(k) or {}), **v}
        cfg = load_config(None, {**base, **{k: v for k, v in overrides.items() if v is not None}})
        run = Run.create(cfg, out)
    with run:
        cfg = run.config
        for note in cfg.notes:
            console.print(note, highlight=False, soft_wrap=True)
        console.print(f"run directory: [bold]{run.dir}[/bold]  ({_run_summary(cfg)})")
        _attach_progress(run, quiet)
        run.search()
        rows = list(run.store.rows())
    _print_leaderboard(rows, run.objectives, f"leaderboard ({len(rows)} trials)")
    console.print(f"run directory: [bold]{run.dir}[/bold] (report.html, trials.csv, best/)")


def _run_summary(cfg: Any) -> str:
    """What the run does, in words: a strategy's search with its budget, or a method that uses
    neither (one-shot and hypernetwork methods name only what they train and evaluate)."""
    from .registry import get

    method = get("methods", cfg.method)
    time_budget = f", {cfg.time_budget} min" if cfg.time_budget else ""
    if getattr(method, "uses_strategy", False):
        how = "" if cfg.method == "multitrial" else f"method {cfg.method}, "
        reuse = ", repeats reuse earlier results" if cfg.repeats == "reuse" else ""
        return (f"{how}{cfg.strategy} search over {cfg.space} on {cfg.task}, evaluator "
                f"{cfg.evaluator}, budget {cfg.budget or '-'} trials{time_budget}{reuse}")
    return (f"method {cfg.method} over {cfg.space} on {cfg.task}, evaluator {cfg.evaluator}"
            f"{time_budget}")


def _best_with(run: Any, search: Any, trial: Any) -> Any:
    """The run's chosen trial once ``trial`` counts (callbacks run before the loop adds it)."""
    trials = list(search.trials)
    if all(t.id != trial.id for t in trials):
        trials.append(trial)
    return run.objectives.best(trials)


def _attach_progress(run: Any, quiet: bool) -> None:
    """Show trials done / budget, best so far and time left (or log lines with --quiet)."""
    cfg = run.config
    from .registry import get

    # methods that use no strategy (one-shot, hypernetwork) are not bounded by the trial budget
    total = cfg.budget if getattr(get("methods", cfg.method), "uses_strategy", False) else None
    t0 = time.monotonic()
    done0 = run.store.count()
    if quiet or not console.is_terminal:
        from .core import reused_from

        def log(search: Any, trial: Any) -> None:
            best = _best_with(run, search, trial)
            bv = run.objective.value(best.result) if best else None
            value = run.objective.value(trial.result)
            shown = f"{run.objective.metric}={value if value is None else round(value, 4)}"
            if value is None and trial.result.metrics:
                # e.g. a shared-weight score (shared_val_acc), which is not the objective
                name, other = next(iter(trial.result.metrics.items()))
                shown = f"{name}={round(other, 4) if isinstance(other, float) else other}"
            console.print(
                f"trial {trial.id + 1}{f'/{total}' if total else ''} {trial.status} {shown}"
                f" best={bv if bv is None else round(bv, 4)} {trial.arch}"
                + (f" ({trial.result.reason})" if trial.result.reason else "")
                + (f" (result of trial {reused_from(trial)}, not evaluated again)"
                   if reused_from(trial) is not None else ""), soft_wrap=True)
        run.listeners.append(log)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("best {task.fields[best]}"), TimeRemainingColumn(),
                        TextColumn("{task.fields[left]}"), console=console, transient=False)
    bar = progress.add_task("search", total=total, completed=done0, best="-", left="")
    progress.start()

    finished = [done0]  # trials finish out of id order with asynchronous workers: count them

    def update(search: Any, trial: Any) -> None:
        finished[0] += 1
        best = _best_with(run, search, trial)
        bv = run.objective.value(best.result) if best else None
        left = ""
        if cfg.time_budget:
            left = f"{max(0.0, cfg.time_budget * 60 - (time.monotonic() - t0)) / 60:.1f} min left"
        progress.update(bar, completed=finished[0],
                        best="-" if bv is None else f"{bv:.4f}", left=left)
        if total is not None and finished[0] >= total:
            progress.stop()

    run.listeners.append(update)


@app.command()
def train(
    arch: str = typer.Argument(..., help="architecture text, e.g. a DP-NAS net string"),
    task: str = typer.Option("digits", help="task name"),
    space: str = typer.Option("chain", help="space that parses the architecture"),
    seed: int = typer.Option(0, help="seed of initialisation (split: -o task.split_seed=N)", callback=_check_seed),
    epochs: Optional[int] = typer.Option(None, help="training epochs (evaluator default if unset)"),
    evaluator: str = typer.Option("train", help="evaluator"),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                               help="component option GROUP.NAME=VALUE (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train and test one architecture given as text."""
    from . import registry
    from .core import check_arch_text
    from .data import load_task
    from .run.rundir import build_space

    sets = _parse_sets(option)
    t = load_task(task, seed=seed, **sets.get("task_options", {}))
    sp = build_space(space, sets.get("space_options", {}), t)
    a = check_arch_text(sp, arch)
    ev_opts = dict(sets.get("evaluator_options", {}))
    if epochs is not None:
        ev_opts["epochs"] = epochs
    name, _, path = evaluator.partition(":")
    if path:
        ev_opts.setdefault("path", path)
    ev = registry.create("evaluators", name, **ev_opts)
    sp.check(a, t)
    result = ev.evaluate(a, sp, t, seed=seed)
    if as_json:
        console.print_json(json.dumps({"arch": str(a), **result.to_dict()}))
    else:
        console.print(f"architecture: {a}")
        console.print(f"status: {result.status}" + (f" ({result.reason})" if result.reason else ""))
        for k, v in {**result.metrics, **result.cost}.items():
            console.print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    if result.status == "failed":
        raise typer.Exit(1)


@app.command()
def trials(
    run_dir: Path = typer.Argument(..., help="run directory"),
    as_json: bool = typer.Option(False, "--json", help="every trial as a JSON object"),
    top: int = typer.Option(10, help="rows of the leaderboard"),
    pareto: bool = typer.Option(False, "--pareto", help="the Pareto front only (with --json: "
                                "members, chosen trial, hypervolume and its reference point)"),
) -> None:
    """Leaderboard of a run (or every trial with --json; the front with --pareto)."""
    from .core import Objectives
    from .report.front import front_summary
    from .run.rundir import open_rows

    if top < 1:
        from .errors import ConfigError

        raise ConfigError(f"--top {top}: expected a positive number of leaderboard rows")
    rows, cfg = open_rows(run_dir)
    objectives = Objectives.from_config(cfg)
    if as_json:
        doc: Any = front_summary(rows, objectives) if pareto else rows
        sys.stdout.write(json.dumps(doc, indent=1, default=str) + "\n")
        return
    title = f"{run_dir} ({len(rows)} trials)"
    _print_leaderboard(rows, objectives, f"Pareto front of {title}" if pareto else title, top,
                       pareto=pareto)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="run directory"),
           out: Optional[Path] = typer.Option(None, help="new or empty directory to write the "
                                              "report to (default: the run directory)")) -> None:
    """(Re)write trials.csv, plots and report.html of a run (the run's store is only read)."""
    import os

    from .core import Objectives
    from .errors import ConfigError, RunError
    from .report import write_html, write_plots, write_trials_csv
    from .run.rundir import open_rows

    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not empty; choose a new or empty directory "
                          "(nothing was written)")
    rows, cfg = open_rows(run_dir)
    dest = run_dir if out is None else out
    if out is None and not os.access(run_dir, os.W_OK):
        raise RunError(f"{run_dir} is read-only; write the report elsewhere with --out DIR")
    objective = Objectives.from_config(cfg)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        write_trials_csv(rows, objective, dest / "trials.csv")
        if rows:
            write_plots(rows, objective, dest / "plots")
        path = write_html(dest, rows, objective, cfg)
    except PermissionError as exc:
        raise RunError(f"cannot write the report to {dest} ({exc.strerror}); is it read-only? "
                       "Write it elsewhere with --out DIR") from None
    console.print(f"wrote {path}")


@app.command()
def bench(
    space: str = typer.Option(..., help="search space (e.g. nb201)"),
    evaluator: str = typer.Option(..., help="evaluator, e.g. table:PATH"),
    task: Optional[str] = typer.Option(None, help="task for evaluators that train (train, deep_prior)"),
    search_metric: str = typer.Option(..., help="metric the strategies optimise"),
    report_metric: Optional[str] = typer.Option(None, help="metric reported for the best arch"),
    strategies: str = typer.Option("random,evolution,reinforce,local", help="comma-separated"),
    budget: Optional[int] = typer.Option(None, help="evaluations per search (default 100)"),
    cost_budget: Optional[float] = typer.Option(None, help="simulated seconds per search instead"),
    cost_column: Optional[str] = typer.Option(None, help="table column of simulated seconds"),
    seeds: int = typer.Option(20, help="seeds per strategy"),
    workers: int = typer.Option(2, help="parallel searches"),
    mode: str = typer.Option("max", help="max or min the search metric"),
    out: Path = typer.Option(..., help="output directory"),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                               help="task.NAME=V, space.NAME=V, evaluator.NAME=V or "
                                                    "STRATEGY.NAME=V"),
    repeats: str = typer.Option(
        "evaluate", help="in each search, a proposed architecture it already evaluated: evaluate "
                         "(again, with a new seed; the default) or reuse (record the earlier "
                         "result)"),
) -> None:
    """Compare strategies over many seeds with regret curves and confidence intervals."""
    from .bench import BenchConfig, run_bench
    from .errors import ConfigError

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    if budget is None and cost_budget is None:
        budget = 100
    task_opts: dict[str, Any] = {}
    space_opts: dict[str, Any] = {}
    ev_opts: dict[str, Any] = {}
    strat_opts: dict[str, dict[str, Any]] = {}
    for item in option or []:
        key, sep, raw = item.partition("=")
        group, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"option {item!r} must look like GROUP.NAME=VALUE")
        value = _option_value(raw)
        if group == "task":
            task_opts[name] = value
        elif group == "space":
            space_opts[name] = value
        elif group == "evaluator":
            ev_opts[name] = value
        elif group in names:
            strat_opts.setdefault(group, {})[name] = value
        else:
            raise ConfigError(f"option {item!r}: group {group!r} is neither task, space, evaluator "
                              f"nor one of the strategies ({', '.join(names)})")
    if task_opts and task is None:
        raise ConfigError(f"task options {', '.join(task_opts)} given without --task")
    cfg = BenchConfig(space=space, evaluator=evaluator, search_metric=search_metric,
                      report_metric=report_metric, strategies=names, seeds=seeds, budget=budget,
                      cost_budget=cost_budget, cost_column=cost_column, space_options=space_opts,
                      evaluator_options=ev_opts, strategy_options=strat_opts, mode=mode,
                      workers=workers, task=task, task_options=task_opts, repeats=repeats)
    res = run_bench(cfg, out, progress=lambda done, total: console.print(
        f"\r{done}/{total} searches", end="") if console.is_terminal else None,
        note=lambda line: console.print(line, highlight=False, soft_wrap=True))
    table = Table(title=f"{len(names)} strategies x {seeds} seeds, {budget or cost_budget} "
                        f"{'evaluations' if budget else 'simulated s'} ({res['seconds']:.1f} s)")
    for col in ("strategy", "runs", f"best {search_metric}", f"{report_metric or search_metric} of best"):
        table.add_column(col)
    for row in res["table"]:
        table.add_row(row["strategy"], str(row["runs"]),
                      f"{row['search_mean']:.4f} ± {row['search_std']:.4f}",
                      f"{row['report_mean']:.4f} ± {row['report_std']:.4f}")
    console.print(table)
    if repeats == "reuse":
        rows = res["summary"]
        console.print(f"repeats reuse: {sum(r['reused'] for r in rows)} of "
                      f"{sum(r['evaluations'] for r in rows)} trials took an earlier result "
                      "instead of an evaluation (column reused)")
    console.print(f"wrote {out}/summary.csv, curves.csv, regret.png")


def _load_command_modules() -> None:
    """Commands that live in their own modules register themselves on ``app`` when imported."""
    import importlib

    for module in ("nasforge.cli_dpnas", "nasforge.cli_export", "nasforge.cli_runs",
                   "nasforge.cli_predictors", "nasforge.cli_controller", "nasforge.cli_ghn"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_load_command_modules()


def _warnings_as_lines() -> None:
    """Print nasforge's warnings as one ``warning: ...`` line on stderr (others as Python does)."""
    import warnings

    from .errors import NasforgeWarning

    default_show = warnings.showwarning
    if getattr(default_show, "nasforge", False):
        return

    def show(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if issubclass(category, NasforgeWarning):
            err_console.print(f"[bold yellow]warning:[/bold yellow] {message}", highlight=False,
                              soft_wrap=True)
        else:
            default_show(message, category, *args, **kwargs)

    show.nasforge = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    warnings.simplefilter("always", NasforgeWarning)


def _disk_full(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain that says the disk (or quota) is full, if any."""
    import errno
    import sqlite3

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return cur
        if isinstance(cur, sqlite3.OperationalError) and (
                getattr(cur, "sqlite_errorcode", None) == 13 or "disk is full" in str(cur)):
            return cur  # SQLITE_FULL
        cur = cur.__cause__ or cur.__context__
    return None


def _show_library_notes() -> None:
    """The library's INFO lines (how a schedule was sized, what is downloaded) go to stderr."""
    import logging

    class _CurrentStderr(logging.StreamHandler):
        """Writes to whatever ``sys.stderr`` is at the time of the message, so calling ``main``
        again in one process (tests, notebooks) never writes to a stream closed since."""

        @property
        def stream(self):  # type: ignore[override]
            return sys.stderr

        @stream.setter
        def stream(self, value):
            pass

    logger = logging.getLogger("nasforge")
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main() -> None:
    """Entry point: run the CLI, printing user mistakes as one message (exit status 2)."""
    _warnings_as_lines()
    _show_library_notes()
    if not sys.stdout.isatty() and hasattr(sys.stdout, "reconfigure"):
        # progress lines reach a log file or a pipe (`| tee`) as they are printed
        sys.stdout.reconfigure(line_buffering=True)
    try:
        app()
    except NasforgeError as exc:
        from rich.markup import escape  # messages may hold brackets: pip install 'nasforge[onnx]'

        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; continue with --resume RUN_DIR")
        sys.exit(130)
    except Exception as exc:
        full = _disk_full(exc)
        if full is None:
            raise
        from rich.markup import escape
        where = getattr(full, "filename", None)
        what = f"{full.strerror} ({where})" if isinstance(full, OSError) and where else (
            full.strerror if isinstance(full, OSError) and full.strerror else str(full))
        err_console.print(f"[bold red]disk full:[/bold red] {escape(what)}; finished trials are "
                          "kept: free some space, then continue a search with --resume RUN_DIR",
                          highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
