"""``nasforge ghn ...``: train a graph hypernetwork, predict the parameters of a module of your
own, and evaluate predicted parameters against random initialisation and SGD.

Imported by ``nasforge.cli``, which registers it on its ``app``. Library code lives in
``nasforge.ghn`` (``train``, ``model``, ``evaluation``); this module parses options and prints.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from .cli import app, console
from .errors import ConfigError

ghn_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Graph hypernetworks (GHN-2): predict every parameter of a network.")
app.add_typer(ghn_app, name="ghn")


def _refuse_existing(path: Path, what: str) -> None:
    if path.exists():
        raise ConfigError(f"{what} {str(path)!r} exists; choose another path or delete it "
                          "(nothing is overwritten)")


@ghn_app.command("train")
def train_cmd(
    task: str = typer.Option("digits", help="task to train on (its training split)"),
    variant: str = typer.Option("ghn2", help="ghn2, ghn1 or mlp"),
    epochs: int = typer.Option(40, help="passes over the task's training images"),
    meta_batch: int = typer.Option(0, help="architectures per step (0: ghn2 8, others 1)"),
    train_archs: int = typer.Option(256, help="training architectures (a fixed pool)"),
    val_archs: int = typer.Option(8, help="validation architectures scored after each epoch"),
    arch_source: str = typer.Option("generator", help="generator, or space:NAME[,NAME]"),
    hid: int = typer.Option(32, help="node state size"),
    batch_size: int = typer.Option(64, help="images per step"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    seed: int = typer.Option(0, help="seed of architectures, initialisation and batches"),
    out: Path = typer.Option(Path("ghn.pt"), help="the GHN file to write"),
    resume: bool = typer.Option(False, help="continue from OUT.ckpt (written after every epoch)"),
    quiet: bool = typer.Option(False, help="no per-epoch lines"),
) -> None:
    """Train a GHN on a task (meta-batches of generated architectures) and save it to OUT."""
    from .data import load_task
    from .ghn.train import GHNTrainOptions, train_ghn

    _refuse_existing(out, "output file")
    ckpt = out.with_name(out.name + ".ckpt")
    if ckpt.exists() and not resume:
        raise ConfigError(f"checkpoint {str(ckpt)!r} exists from an earlier training; add "
                          "--resume to continue it, or delete it")
    if resume and not ckpt.exists():
        raise ConfigError(f"--resume: no checkpoint {str(ckpt)!r} to continue")
    options = GHNTrainOptions(variant=variant, epochs=epochs, meta_batch=meta_batch, hid=hid,
                              lr=lr, batch_size=batch_size, train_archs=train_archs,
                              val_archs=val_archs, arch_source=arch_source)
    t = load_task(task, seed=seed)
    start = time.perf_counter()
    log = None if quiet else (lambda line: console.print(line, highlight=False))
    ghn, result = train_ghn(t, options, seed=seed, checkpoint=ckpt, resume=resume, log=log)
    ghn.save(out)
    curve = result.curves.get("ghn_val_acc", [])
    console.print(f"saved {out} ({ghn.num_params():,} GHN parameters, {result.steps} steps, "
                  f"{time.perf_counter() - start:.0f} s"
                  + (f", validation accuracy of predicted parameters {curve[-1]:.3f}" if curve
                     else "") + ")", highlight=False)
    console.print(f"use it: ghn = nasforge.ghn.load({str(out)!r}); model = ghn(model)",
                  highlight=False)


def load_builder(spec: str) -> Any:
    """``path/to/file.py:function`` -> the function (the user's own file is executed)."""
    if ":" not in spec:
        raise ConfigError(f"--model {spec!r}; expected FILE.py:FUNCTION, e.g. my_module.py:build")
    file, func = spec.rsplit(":", 1)
    path = Path(file)
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"--model {spec!r}: {file!r} is not a Python file")
    name = f"_nasforge_user_model_{abs(hash(str(path.resolve())))}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        raise ConfigError(f"--model {spec!r}: importing {file!r} failed: "
                          f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ConfigError(f"--model {spec!r}: {file!r} has no function {func!r}")
    return fn


def _build(fn: Any, task: Any, spec: str) -> Any:
    import torch

    required = [p for p in inspect.signature(fn).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        model = fn(task) if required else fn()
    except Exception as exc:
        raise ConfigError(f"--model {spec!r}: building the model failed: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"--model {spec!r} returned {type(model).__name__}; expected a "
                          "torch.nn.Module")
    return model


@ghn_app.command("predict")
def predict_cmd(
    ghn_file: Path = typer.Argument(..., help="a GHN file (nasforge ghn train writes one)"),
    model: str = typer.Option(..., help="FILE.py:FUNCTION returning an nn.Module (called with "
                              "no argument, or with the task if it takes one)"),
    task: Optional[str] = typer.Option(None, help="task to score on (default: the GHN's)"),
    out: Optional[Path] = typer.Option(None, help="write the predicted state_dict here"),
) -> None:
    """Predict every parameter of your module and report its validation accuracy."""
    import torch

    from .data import load_task
    from .ghn import load
    from .training import evaluate

    if out is not None:
        _refuse_existing(out, "--out")
    ghn = load(ghn_file)
    name = task or ghn.config.task
    if name is None:
        raise ConfigError("this GHN names no task; give --task")
    t = load_task(name)
    net = _build(load_builder(model), t, model)
    start = time.perf_counter()
    ghn(net, bn_data=t.train[0])
    seconds = time.perf_counter() - start
    acc, _ = evaluate(net, t.val)
    n = sum(p.numel() for p in net.parameters())
    console.print(f"predicted {n:,} parameters of {type(net).__name__} in {seconds:.2f} s "
                  f"(with batch-norm statistics); {name} validation accuracy {acc:.4f}",
                  highlight=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), out)
        console.print(f"saved {out} (load with model.load_state_dict(torch.load(path)))",
                      highlight=False)


def _fmt(v: tuple[float, float]) -> str:
    m, ci = v
    return "-" if m != m else (f"{100 * m:.1f}" + ("" if ci != ci else f" ± {100 * ci:.1f}"))


@ghn_app.command("eval")
def eval_cmd(
    ghn_files: list[Path] = typer.Argument(..., help="one or more GHN files"),
    splits: str = typer.Option("test", help="generator splits: test,wide,deep,dense,bnfree,val"),
    archs: int = typer.Option(20, help="architectures per split"),
    sgd_epochs: str = typer.Option("1,5", help="SGD baselines: epochs, comma-separated"),
    seed: int = typer.Option(0, help="seed of the SGD baselines"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the per-architecture "
                                            "numbers to this JSON file"),
    quiet: bool = typer.Option(False, help="no per-architecture lines"),
) -> None:
    """Accuracy of predicted parameters per split, against random init and SGD (test images)."""
    from .data import load_task
    from .ghn import load
    from .ghn.evaluation import evaluate_splits

    if isinstance(archs, bool) or archs < 1:
        raise ConfigError(f"--archs {archs}; expected an integer >= 1")
    if json_out is not None:
        _refuse_existing(json_out, "--json")
    try:
        epochs = [int(v) for v in sgd_epochs.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sgd-epochs {sgd_epochs!r}; expected comma-separated integers") from None
    ghns = {}
    for f in ghn_files:
        g = load(f)
        ghns[f"{f.stem}" if f.stem not in ghns else str(f)] = g
    tasks = {g.config.task for g in ghns.values()}
    if len(tasks) != 1 or None in tasks:
        raise ConfigError(f"ghn eval: the GHN files were trained on tasks {sorted(map(str, tasks))}; "
                          "expected one and the same task")
    task = load_task(tasks.pop())
    gen_seed = int(next(iter(ghns.values())).config.meta.get("seed", 0) or 0)
    log = None if quiet else (lambda line: console.print(line, highlight=False))
    results = evaluate_splits(ghns, task, splits=[s.strip() for s in splits.split(",") if s.strip()],
                              archs=archs, sgd_epochs=epochs, seed=seed, generator_seed=gen_seed,
                              log=log)
    from rich.table import Table

    table = Table(title=f"test accuracy (%) on {task.name}, mean ± 95% interval over architectures")
    cols = ["random init", *[f"SGD {e} ep" for e in epochs], *ghns]
    table.add_column("split")
    table.add_column("archs", justify="right")
    for c in cols:
        table.add_column(c, justify="right")
    for split, res in results.items():
        s = res.summary()
        table.add_row(split, str(s["archs"]), _fmt(s["random"]),
                      *[_fmt(s[f"sgd_{e}ep"]) for e in epochs], *[_fmt(s[n]) for n in ghns])
    console.print(table)
    for n in ghns:
        secs = [x for r in results.values() for x in r.predict_seconds[n]]
        console.print(f"{n}: {sum(secs) / len(secs):.3f} s per network to trace and predict",
                      highlight=False)
    if json_out is not None:
        payload = {split: {"summary": r.summary(), "names": r.names, "params": r.params,
                           "random": r.random, "sgd": {str(k): v for k, v in r.sgd.items()},
                           "predicted": r.predicted, "predict_seconds": r.predict_seconds}
                   for split, r in results.items()}
        json_out.write_text(json.dumps(payload, indent=1, default=lambda v: None
                                       if isinstance(v, float) and math.isnan(v) else v))
        console.print(f"wrote {json_out}", highlight=False)
