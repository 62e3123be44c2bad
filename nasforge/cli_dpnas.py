"""DP-NAS commands of the ``nasforge`` CLI: embed, evaluate, lottery, inference, continual.

Each is a small function over ``nasforge.experiments`` and ``nasforge.export`` (imported by
``nasforge.cli``, which registers them on its ``app``). An architecture is given as text
(``--arch``, which wins) or as a trial of a run (``--run RUN_DIR --trial INDEX``); with a run,
its task, space, seed and evaluator options are used. Outputs go to a new folder and never
overwrite anything.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from .cli import _check_seed, _parse_sets, app, console


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and v.is_integer() and not 0 <= v <= 1:
        return f"{int(v):,}"  # counts: params, flops, epochs
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _context(run: Optional[Path], task: str, space: str, seed: int, sets: dict[str, Any]):
    """(run context or None, task, space) for a command."""
    from .experiments import open_run, standalone

    if run is not None:
        ctx = open_run(run)
        return ctx, ctx.task, ctx.space
    t, sp = standalone(task, space, seed=seed, task_options=sets.get("task_options"),
                       space_options=sets.get("space_options"))
    return None, t, sp


def _evaluator(ctx: Any, name: str, sets: dict[str, Any], **forced: Any):
    """An evaluator: the run's options (if it used ``name``), -o overrides, then ``forced``."""
    from .experiments import make_evaluator

    options = ctx.evaluator_options(name) if ctx is not None else {}
    options.update(sets.get("evaluator_options", {}))
    options.update(forced)
    return make_evaluator(name, options)


def _progress(done: int, total: int, arch: str) -> None:
    """About ten progress lines per experiment."""
    if done == total or done % max(1, total // 10) == 0:
        console.print(f"[{done}/{total}] {arch}", highlight=False, soft_wrap=True)


def _targets(ctx: Any, space: Any, archs: Optional[list[str]], per_group: int) -> list:
    from .errors import ConfigError
    from .experiments import Target, parse_archs, select_groups

    if archs:
        return [Target(a) for a in parse_archs(space, archs)]
    if ctx is None:
        raise ConfigError("give a run directory or at least one --arch NET_STRING")
    return select_groups(ctx, per_group)


def _hypothesis_inputs(run_dir: Optional[Path], arch: Optional[list[str]], per_group: int,
                       seed: Optional[int], task: str, space: str, option: Optional[list[str]]):
    """(run context or None, task, space, targets, deep prior evaluator) of lottery and
    inference: the architectures are the ``--arch`` texts or the run's low / medium / top groups;
    the deep prior trains only its head and measures no latency."""
    sets = _parse_sets(option)
    ctx, t, sp = _context(run_dir, task, space, seed or 0, sets)
    targets = _targets(ctx, sp, arch, per_group)
    dp = _evaluator(ctx, "deep_prior", sets, full_training=False, measure_latency=False)
    return ctx, t, sp, targets, dp


def _seed_and_folder(kind: str, ctx: Any, seed: Optional[int], out: Optional[Path],
                     run_dir: Optional[Path]) -> tuple[int, Path]:
    """The seed (given, else the run's, else 0) and the new output folder of experiment ``kind``."""
    from .experiments import output_dir

    use_seed = seed if seed is not None else int(ctx.config.get("seed", 0)) if ctx else 0
    return use_seed, output_dir(kind, out=out, run_dir=run_dir)


def _print_table(title: str, columns: tuple[str, ...], rows: list[list[str]],
                 overflow: str = "fold") -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow=overflow)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    console.print(table)


ArchOpt = typer.Option(None, "--arch", help="architecture text (wins over --run/--trial)")
RunOpt = typer.Option(None, "--run", help="run directory to take a trial from")
TrialOpt = typer.Option(None, "--trial", help="trial index in the run (with --run)")
TaskOpt = typer.Option("digits", help="task (without a run)")
SpaceOpt = typer.Option("chain", help="space that parses the architecture (without a run)")
OptionOpt = typer.Option(None, "--option", "-o",
                         help="task.NAME=V, space.NAME=V or evaluator.NAME=V")
# lottery and inference: a run's low / medium / top groups, or --arch texts
RunDirArg = typer.Argument(None, help="finished run (or give --arch)")
ArchListOpt = typer.Option(None, "--arch", help="architecture text (repeatable)")
PerGroupOpt = typer.Option(6, help="architectures per group (low, medium, top)")
RunSeedOpt = typer.Option(None, help="seed (default: the run's, else 0)", callback=_check_seed)


@app.command("embed")
def embed_cmd(
    out: Path = typer.Option(..., help="new or empty output directory"),
    arch: Optional[str] = ArchOpt, run: Optional[Path] = RunOpt, trial: Optional[int] = TrialOpt,
    task: str = TaskOpt, space: str = SpaceOpt,
    seed: Optional[int] = typer.Option(None, help="init seed (default: the trial's, else 0)",
                                       callback=_check_seed),
    init: Optional[str] = typer.Option(None, help="encoder init (default: the run's, "
                                       "else kaiming_normal)"),
    batch_norm: Optional[bool] = typer.Option(None, "--batch-norm/--no-batch-norm",
                                              help="calibrated BatchNorm in the encoder"),
    no_folders: bool = typer.Option(False, "--no-folders", help="only the .npz files"),
    option: Optional[list[str]] = OptionOpt,
) -> None:
    """Write a deep prior's embedding of a task as class folders of .npy files and .npz."""
    from .experiments import pick_target
    from .export.embeddings import check_out_dir, export_embedding

    check_out_dir(out)
    sets = _parse_sets(option)
    ctx, t, sp = _context(run, task, space, seed or 0, sets)
    target = pick_target(ctx, arch=arch, trial=trial, space=sp, seed=seed or 0)
    forced = {k: v for k, v in {"init": init, "batch_norm": batch_norm}.items() if v is not None}
    ev = _evaluator(ctx, "deep_prior", sets, **forced, full_training=False)
    use_seed = seed if seed is not None else target.seed
    path = export_embedding(target.arch, sp, t, out, seed=use_seed, evaluator=ev,
                            folders=not no_folders)
    meta = json.loads((path / "meta.json").read_text())
    console.print(f"architecture: {target.arch}", highlight=False)
    console.print(f"wrote {path}: {meta['features']} features, sizes {meta['sizes']} "
                  f"(seed {use_seed}, init {ev.init}, batch_norm {ev.batch_norm})")


@app.command("evaluate")
def evaluate_cmd(
    arch: Optional[str] = ArchOpt, run: Optional[Path] = RunOpt, trial: Optional[int] = TrialOpt,
    evaluator: str = typer.Option("deep_prior", help="deep_prior or train"),
    task: str = TaskOpt, space: str = SpaceOpt,
    seed: Optional[int] = typer.Option(None, help="seed (default: the trial's, else 0)",
                                       callback=_check_seed),
    option: Optional[list[str]] = OptionOpt,
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Evaluate one architecture (text or a run's trial) and print its metrics."""
    from .errors import ConfigError
    from .experiments import pick_target

    if evaluator not in ("deep_prior", "train"):
        raise ConfigError(f"--evaluator {evaluator!r}; expected deep_prior or train")
    sets = _parse_sets(option)
    ctx, t, sp = _context(run, task, space, seed or 0, sets)
    target = pick_target(ctx, arch=arch, trial=trial, space=sp, seed=seed or 0)
    ev = _evaluator(ctx, evaluator, sets)
    use_seed = seed if seed is not None else target.seed
    sp.check(target.arch, t)
    result = ev.evaluate(target.arch, sp, t, seed=use_seed)
    if as_json:
        console.print_json(json.dumps({"arch": str(target.arch), "seed": use_seed,
                                       **result.to_dict()}, default=str))
    else:
        where = f" (trial {target.trial} of {run})" if target.trial is not None else ""
        console.print(f"architecture: {target.arch}{where}", highlight=False)
        console.print(f"evaluator {evaluator}, seed {use_seed}, task {t.name}: {result.status}"
                      + (f" ({result.reason})" if result.reason else ""), highlight=False)
        for k, v in {**result.metrics, **result.cost}.items():
            console.print(f"  {k}: {_fmt(v)}")
    if result.status == "failed":
        raise typer.Exit(1)


@app.command("lottery")
def lottery_cmd(
    run_dir: Optional[Path] = RunDirArg, arch: Optional[list[str]] = ArchListOpt,
    k: int = typer.Option(5, help="random encoders per architecture"),
    per_group: int = PerGroupOpt,
    seed: Optional[int] = RunSeedOpt,
    task: str = TaskOpt, space: str = SpaceOpt,
    out: Optional[Path] = typer.Option(None, help="new or empty output directory "
                                       "(default RUN_DIR/experiments/lottery-<time>)"),
    option: Optional[list[str]] = OptionOpt,
) -> None:
    """H2, weight lottery: test accuracy of low / medium / top architectures over K encoders."""
    from .experiments.hypotheses import run_lottery

    ctx, t, sp, targets, ev = _hypothesis_inputs(run_dir, arch, per_group, seed, task, space,
                                                 option)
    use_seed, folder = _seed_and_folder("lottery", ctx, seed, out, run_dir)
    res = run_lottery(targets, sp, t, folder, k=k, seed=use_seed, evaluator=ev,
                      progress=_progress, info={"run": str(run_dir) if run_dir else None})
    _print_table(f"weight lottery: {k} random encoders per architecture ({t.name})",
                 ("group", "trial", "run's value", "test acc mean", "std", "architecture"),
                 [[r["group"], _fmt(r["trial"]), _fmt(r["objective"]), _fmt(r["test_acc_mean"]),
                   _fmt(r["test_acc_std"]), r["arch"]] for r in res["summary"]])
    s = res["stats"]
    console.print(f"mean std within an architecture: {_fmt(s['within_arch_std'])}; std between "
                  f"architecture means: {_fmt(s['between_arch_std'])}")
    console.print(f"wrote {folder}/lottery.csv, lottery_samples.csv, lottery.png")


@app.command("inference")
def inference_cmd(
    run_dir: Optional[Path] = RunDirArg, arch: Optional[list[str]] = ArchListOpt,
    per_group: int = PerGroupOpt,
    epochs: Optional[int] = typer.Option(None, help="full-training epochs (default: the "
                                         "train evaluator's)"),
    seed: Optional[int] = RunSeedOpt,
    task: str = TaskOpt, space: str = SpaceOpt,
    out: Optional[Path] = typer.Option(None, help="new or empty output directory "
                                       "(default RUN_DIR/experiments/inference-<time>)"),
    option: Optional[list[str]] = OptionOpt,
) -> None:
    """H3, parameter inference: the same architectures as deep priors and fully trained."""
    from .experiments import make_evaluator
    from .experiments.hypotheses import run_inference

    ctx, t, sp, targets, dp = _hypothesis_inputs(run_dir, arch, per_group, seed, task, space,
                                                 option)
    train_opts = ctx.evaluator_options("train") if ctx is not None else {}
    train_opts["measure_latency"] = False
    if epochs is not None:
        train_opts["epochs"] = epochs
    trained = make_evaluator("train", train_opts)
    use_seed, folder = _seed_and_folder("inference", ctx, seed, out, run_dir)
    res = run_inference(targets, sp, t, folder, seed=use_seed, deep_prior=dp, trained=trained,
                        progress=_progress, info={"run": str(run_dir) if run_dir else None})
    _print_table(f"deep prior against full training ({t.name})",
                 ("group", "trial", "deep prior test", "trained test", "dp s", "train s",
                  "architecture"),
                 [[r["group"], _fmt(r["trial"]), _fmt(r["deep_prior_test_acc"]),
                   _fmt(r["trained_test_acc"]), _fmt(r["deep_prior_seconds"], 2),
                   _fmt(r["trained_seconds"], 2), r["arch"]] for r in res["rows"]])
    s = res["stats"]
    console.print("Spearman rank correlation of test accuracies: "
                  f"{_fmt(s['spearman_test_acc'], 3)}")
    console.print(f"wrote {folder}/inference.csv, inference.png")


@app.command("continual")
def continual_cmd(
    arch: Optional[str] = ArchOpt, run: Optional[Path] = RunOpt, trial: Optional[int] = TrialOpt,
    task: str = TaskOpt, space: str = SpaceOpt,
    tasks: int = typer.Option(5, "--tasks", help="class groups learned one after another"),
    epochs: int = typer.Option(30, help="training epochs per group"),
    seed: Optional[int] = typer.Option(None, help="seed (default: the trial's, else 0)",
                                       callback=_check_seed),
    out: Optional[Path] = typer.Option(None, help="new or empty output directory "
                                       "(default [RUN_DIR/]experiments/continual-<time>)"),
    option: Optional[list[str]] = OptionOpt,
) -> None:
    """Class-incremental learning: deep prior (linear head, class means) against fine-tuning."""
    from .experiments import output_dir, pick_target
    from .experiments.continual import class_groups, run_continual

    sets = _parse_sets(option)
    ctx, t, sp = _context(run, task, space, seed or 0, sets)
    target = pick_target(ctx, arch=arch, trial=trial, space=sp, seed=seed or 0)
    class_groups(int(t.num_classes), tasks)  # refuse a bad --tasks before any work
    sp.check(target.arch, t)
    ev = _evaluator(ctx, "deep_prior", sets, full_training=False, measure_latency=False)
    use_seed = seed if seed is not None else target.seed
    folder = output_dir("continual", out=out, run_dir=run)
    res = run_continual(target.arch, sp, t, folder, n_tasks=tasks, seed=use_seed, epochs=epochs,
                        evaluator=ev)
    _print_table(f"class-incremental {t.name}, {tasks} tasks: {target.arch}",
                 ("method", "tasks learned", "classes", "avg accuracy", "forgetting"),
                 [[r["method"], str(r["step"]), r["classes"], _fmt(r["avg_acc"]),
                   _fmt(r["forgetting"])] for r in res["rows"]], overflow="ellipsis")
    console.print(f"wrote {folder}/continual.csv, continual.png")
