"""Run-directory commands of the ``nasforge`` CLI: ``repair`` (salvage a damaged store).

Imported by ``nasforge.cli``, which registers it on its ``app``. The run being repaired is only
read; everything goes to a new directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli import app, console


@app.command("repair")
def repair_cmd(
    run_dir: Path = typer.Argument(..., help="run directory whose run.db is damaged"),
    out: Optional[Path] = typer.Option(None, help="new or empty directory for the repaired run "
                                       "(default RUN_DIR-repaired)"),
) -> None:
    """Copy everything readable of a run's store (config, trials, checkpoints) into a new run."""
    from .run.rundir import repair_run
    from .run.store import lost_text

    new, rep = repair_run(run_dir, out)
    state = "damaged" if rep.problems else "sound"
    console.print(f"{run_dir}/run.db is {state}" + (f" ({'; '.join(rep.problems)})" if rep.problems
                                                     else "") + f"; it was not changed.",
                  highlight=False, soft_wrap=True)
    console.print(f"saved {rep.trials_saved} trials into {new}/run.db"
                  f"{lost_text(rep.trials_lost, rep.maybe_more_lost)}", highlight=False,
                  soft_wrap=True)
    if rep.checkpoints_saved:
        console.print(f"saved {rep.checkpoints_saved} strategy checkpoints"
                      + (f" ({rep.checkpoints_dropped} dropped: unreadable or newer than a lost "
                         "trial)" if rep.checkpoints_dropped else ""), highlight=False)
    else:
        console.print("no strategy checkpoint could be kept: on resume the strategy starts again "
                      "from its seed and reuses the saved trials", highlight=False)
    if rep.meta_lost or "config" not in rep.meta_saved:
        console.print("the run's config could not be read: the trials are kept, but the run "
                      "cannot be resumed from them", highlight=False)
    else:
        console.print(f"continue with: nasforge search --resume {new}"
                      + (" (lost trials are evaluated again)" if rep.trials_lost else ""),
                      highlight=False, soft_wrap=True)
