"""The CLI end to end: the main job and a search killed with kill -9 in real subprocesses as a
user runs them, bad input (clear message, exit status 2, existing runs untouched), trials and
report. Follow-up commands that only read or refuse run in this process (``main_in_process``,
the same ``main``) to save a Python and torch start-up each; one bad input still goes through a
real process so that a traceback printed there would be seen."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasforge.testing import main_in_process, run_cli

# A small search: the main job's space and task with fewer trials and epochs.
SMALL = ["--budget", "5", "--seed", "3", "-o", "evaluator.epochs=3", "--quiet"]


def nasforge(*args: str, cwd: Path, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, check=check, timeout=timeout)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process: exit status, stdout, stderr."""
    capsys.readouterr()
    code = main_in_process(*args)
    out, err = capsys.readouterr()
    return code, out, err


def trial_rows(run_dir: Path) -> list[tuple]:
    con = sqlite3.connect(run_dir / "run.db")
    try:
        return con.execute("SELECT id, arch, status, metrics, seed FROM trials ORDER BY id").fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_main_job_small_budget_end_to_end(tmp_path, capsys):
    proc = nasforge("search", *SMALL, "--out", "runs/demo", cwd=tmp_path)
    run = tmp_path / "runs" / "demo"
    assert "leaderboard" in proc.stdout and "runs/demo" in proc.stdout
    for name in ("config.yaml", "run.db", "trials.csv", "report.html", "best/arch.txt",
                 "best/model.pt", "plots/best_so_far.png"):
        assert (run / name).exists(), name
    header = (run / "trials.csv").read_text().splitlines()[0].split(",")
    for col in ("reward", "best_val_acc", "test_acc", "val_acc_per_epoch", "train_acc_per_epoch", "net"):
        assert col in header
    code, out, err = cli(capsys, "trials", str(run), "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 5 and {"id", "arch", "status", "metrics", "cost"} <= set(rows[0])
    assert any(r["status"] == "ok" and r["metrics"]["test_acc"] > 0.3 for r in rows)
    # each progress line's best=... counts that line's trial (it used to lag one trial behind)
    import re

    seen = []
    for m in re.finditer(r"trial \d+/5 ok val_acc=([\d.]+) best=([\d.]+)", proc.stdout):
        seen.append(float(m.group(1)))
        assert float(m.group(2)) == max(seen)
    assert len(seen) == 5
    # the best model loads with weights_only and the arch text parses back
    import torch

    state = torch.load(run / "best" / "model.pt", weights_only=True)
    assert state
    # a second search into the same directory is refused and changes nothing
    before = trial_rows(run)
    code, _, err = cli(capsys, "search", *SMALL, "--out", str(run))
    assert code == 2 and "already holds a run" in err and "Traceback" not in err
    assert trial_rows(run) == before
    # report regenerates
    (run / "report.html").unlink()
    assert cli(capsys, "report", str(run))[0] == 0
    assert "Leaderboard" in (run / "report.html").read_text()


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, capsys):
    # the main job's space and task, 4 trials of 2 epochs on 400 training rows (no ONNX export:
    # the trials are compared, not the export)
    args = ["search", "--budget", "4", "--seed", "11", "-o", "evaluator.epochs=2",
            "-o", "task.limit=400", "--no-export", "--quiet"]
    full_dir, killed = tmp_path / "full", tmp_path / "killed"
    assert cli(capsys, *args, "--out", str(full_dir))[0] == 0  # the uninterrupted run

    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nasforge", *args, "--out", "killed"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = killed / "run.db"
    deadline = time.time() + 180
    while time.time() < deadline:  # kill -9 as soon as the first trial is committed
        if db.exists():
            try:
                if len(trial_rows(killed)) >= 1:
                    break
            except sqlite3.OperationalError:
                pass
        if proc.poll() is not None:
            pytest.fail(f"search ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = trial_rows(killed)
    assert 1 <= len(done_before) < 4

    # while the killed run is not resumed, a resume with another config is refused
    code, _, err = cli(capsys, "search", "--resume", str(killed), "--strategy", "evolution")
    assert code == 2 and "different config" in err and "Traceback" not in err
    assert trial_rows(killed) == done_before
    assert cli(capsys, "search", "--resume", str(killed), "--quiet")[0] == 0
    resumed = trial_rows(killed)
    assert resumed[:len(done_before)] == done_before  # nothing finished was lost or redone
    full = trial_rows(full_dir)
    assert len(full) == 4 and all(r[2] == "ok" for r in full)
    assert [(r[0], r[1], r[2], r[4]) for r in resumed] == [(r[0], r[1], r[2], r[4]) for r in full]
    assert [json.loads(r[3])["val_acc"] for r in resumed if r[2] == "ok"] == \
        [json.loads(r[3])["val_acc"] for r in full if r[2] == "ok"]


@pytest.mark.slow
def test_bad_input_gives_one_clear_message(tmp_path, capsys, monkeypatch):
    cases = [
        (["search", "--strategy", "genetic"], "unknown strategy 'genetic'"),
        (["search", "--budget", "0"], "budget = 0"),
        (["search", "--resume", "nowhere"], "holds no run to resume"),
        (["search", "-o", "strategy.dedupe_harder=1"], "unknown option 'dedupe_harder'"),
        (["search", "-o", "nonsense"], "GROUP.NAME=VALUE"),
        (["search", "-o", "evaluator.lr=fast"], "option 'lr' = 'fast': expected a number"),
        (["train", "[C(32,3,1,1,1), SM(10)"], "chain"),
        (["trials", "nowhere"], "not a run directory"),
        (["search", "--task", "mnist"], "train-images-idx3-ubyte"),
    ]
    # one case as a real process (exit status and stderr as a user sees them) ...
    proc = nasforge(*cases[0][0], cwd=tmp_path, check=False)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert cases[0][1] in proc.stderr and "Traceback" not in proc.stderr
    # ... and every case through the same main in this process (an uncaught exception fails here)
    monkeypatch.chdir(tmp_path)
    for args, expected in cases:
        code, out, err = cli(capsys, *args)
        assert code == 2, (args, out, err)
        assert expected in err, (args, err)
        assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing was created by refused searches


@pytest.mark.slow
def test_a_non_number_in_a_config_file_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "run.yaml").write_text("budget: 5E0\nevaluator_options: {lr: fast, epochs: 1e0}\n")
    keep = tmp_path / "runs" / "keep"
    keep.mkdir(parents=True)
    (keep / "notes.txt").write_text("mine")
    proc = nasforge("search", "--config", "run.yaml", "--out", "runs/keep", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: evaluator 'train': option 'lr' = 'fast': expected a number (e.g. 0.001 or 1e-3). "
        "Allowed options: " + proc.stderr.split("Allowed options: ")[1].strip()]
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*")) == ["keep", "notes.txt"]
    assert (keep / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_train_one_architecture(tmp_path):
    proc = nasforge("train", "[C(16,3,1,1,1), P(2,2,0,0), C(32,3,1,1,0), SM(10)]", "--epochs", "3",
                    "--json", cwd=tmp_path)
    result = json.loads(proc.stdout)
    assert result["status"] == "ok" and result["metrics"]["test_acc"] > 0.5


def test_run_summary_names_the_budget_only_for_methods_that_search_with_a_strategy():
    from nasforge.cli import _run_summary
    from nasforge.config import load_config

    plain = _run_summary(load_config(None, {"budget": 12}))
    assert plain.startswith("random search over chain on digits") and "budget 12 trials" in plain
    halving = _run_summary(load_config(None, {"method": "sequential_halving", "budget": 12}))
    assert halving.startswith("method sequential_halving, random search") and "12 trials" in halving
    darts = _run_summary(load_config(None, {"method": "darts", "space": "darts", "budget": 12}))
    assert darts == "method darts over darts on digits, evaluator train"


def test_piped_output_is_line_buffered():
    """Progress lines reach a pipe or a log file as they are printed (block-buffered stdout
    held every trial line of a 30-trial search until the buffer filled)."""
    code = ("import sys\nsys.argv = ['nasforge', '--help']\nfrom nasforge import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print('line_buffering', sys.stdout.line_buffering, file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert "line_buffering True" in out.stderr, out.stderr
