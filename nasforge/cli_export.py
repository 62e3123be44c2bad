"""``nasforge export``: a trial of a run as a file other runtimes load (ONNX).

A small function over ``nasforge.export.onnx.export_trial``; registered on ``nasforge.cli.app``
when ``nasforge.cli`` imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .cli import app, console

FORMATS = ("onnx",)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="run directory"),
    trial: Optional[int] = typer.Option(None, help="trial index (default: the run's best trial)"),
    format: str = typer.Option("onnx", "--format", help="file format: onnx"),
    out: Optional[Path] = typer.Option(None, help="output file (default RUN_DIR/export/trial-<id>.onnx)"),
    untrained: bool = typer.Option(False, "--untrained",
                                   help="export the trial's network with its initial weights "
                                        "when its trained weights were not kept"),
    exporter: str = typer.Option("auto", help="auto, torchscript or dynamo (torch.export)"),
    as_json: bool = typer.Option(False, "--json", help="print what was written as JSON"),
) -> None:
    """Export a trial's network (trained weights where kept) with a dynamic batch dimension,
    checked against PyTorch in onnxruntime."""
    from .errors import ConfigError
    from .export.onnx import export_trial

    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}; expected one of {', '.join(FORMATS)}")
    res = export_trial(run_dir, trial=trial, out=out, untrained=untrained,
                       exporter=exporter)  # type: ignore[arg-type]
    e = res.export
    if as_json:
        console.print_json(json.dumps({"trial": res.trial, "arch": res.arch, "weights": res.weights,
                                       **e.to_dict()}))
        return
    console.print(f"wrote [bold]{e.path}[/bold]: trial {res.trial} {res.arch}", soft_wrap=True)
    console.print(f"  weights {res.weights}; {e.exporter} exporter, opset {e.opset}, "
                  f"{e.seconds:.2f} s; onnxruntime on a batch of {e.check_batch}: max abs "
                  f"difference {e.max_abs_diff:.2g}", soft_wrap=True, highlight=False)
