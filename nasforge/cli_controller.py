"""``nasforge controller-study RUN_DIR``: the controller studies of a finished ``enas`` run
(``nasforge.experiments.controller_study``). The run is only read; the files go to a new folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli import app, console


@app.command("controller-study")
def controller_study_cmd(
    run_dir: Path = typer.Argument(..., help="directory of a finished (or checkpointed) enas run"),
    samples: int = typer.Option(1000, help="architectures sampled from each of the trained and "
                                "the untrained controller, scored with the shared weights"),
    hidden_archs: int = typer.Option(100, help="architectures whose controller hidden states are "
                                     "shown and correlated"),
    memorization: float = typer.Option(1.0, help="weight of the memorisation regulariser of the "
                                       "controller trained with it (the other has 0)"),
    controller_steps: int = typer.Option(50, help="REINFORCE steps of the two controllers "
                                         "trained with and without memorisation"),
    controller_batch: int = typer.Option(4, help="architectures per controller step"),
    eval_rows: int = typer.Option(256, help="validation rows each sampled architecture is "
                                  "scored on"),
    seed: int = typer.Option(0, help="seed of the study's sampling"),
    out: Optional[Path] = typer.Option(None, help="new folder for the results "
                                       "(default RUN_DIR/controller_study)"),
) -> None:
    """Trained vs untrained controller, hidden-state heat maps with and without memorisation,
    and the Spearman table of embedding distances against architecture similarities."""
    from .errors import ConfigError
    from .experiments.controller_study import StudyOptions, controller_study
    from .methods.enas import restore

    target = out if out is not None else run_dir / "controller_study"
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} already holds files; name a new folder with --out (earlier "
                          "results are never overwritten)")
    options = StudyOptions(samples=samples, hidden_archs=hidden_archs, memorization=memorization,
                           controller_steps=controller_steps, controller_batch=controller_batch,
                           eval_rows=eval_rows, seed=seed)
    run = restore(run_dir)
    if run.controller is None:
        raise ConfigError(f"{run_dir} is an enas run with controller: random; the study needs a "
                          "trained controller (run enas with controller: lstm)")
    summary = controller_study(run.space, run.controller, run.untrained_controller,
                               lambda arch, data: run.score(arch, data), run.task.val, target,
                               options)
    for name, d in summary["distributions"].items():
        console.print(f"{name} controller: {d['distinct']} distinct of {samples}, "
                      f"shared-weight score mean {d['mean']:.4f} (std {d['std']:.4f}, best "
                      f"{d['max']:.4f})", highlight=False)
    for name, h in summary["hidden_states"].items():
        console.print(f"{name}: hidden-state distance min {h['min_distance']:.4g} mean "
                      f"{h['mean_distance']:.4g}; first decision read back "
                      f"{h['probe_acc']:.3f} (chance {h['chance']:.3f})", highlight=False)
    console.print((target / "spearman.md").read_text(), highlight=False, markup=False)
    console.print(f"wrote samples.csv, distributions.png, hidden_states.png, spearman.csv, "
                  f"spearman.md and summary.json to {target}", highlight=False, soft_wrap=True)
