"""The CLI end to end, through subprocesses as a user runs it: main job, kill -9 and resume,
bad input (clear message, exit status 2, existing runs untouched), trials and report."""

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

from nasforge.testing import run_cli

# A small search: the main job's space and task with fewer trials and epochs.
SMALL = ["--budget", "5", "--seed", "3", "-o", "evaluator.epochs=3", "--quiet"]


def nasforge(*args: str, cwd: Path, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, check=check, timeout=timeout)


def trial_rows(run_dir: Path) -> list[tuple]:
    con = sqlite3.connect(run_dir / "run.db")
    try:
        return con.execute("SELECT id, arch, status, metrics, seed FROM trials ORDER BY id").fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_main_job_small_budget_end_to_end(tmp_path):
    proc = nasforge("search", *SMALL, "--out", "runs/demo", cwd=tmp_path)
    run = tmp_path / "runs" / "demo"
    assert "leaderboard" in proc.stdout and "runs/demo" in proc.stdout
    for name in ("config.yaml", "run.db", "trials.csv", "report.html", "best/arch.txt",
                 "best/model.pt", "plots/best_so_far.png"):
        assert (run / name).exists(), name
    header = (run / "trials.csv").read_text().splitlines()[0].split(",")
    for col in ("reward", "best_val_acc", "test_acc", "val_acc_per_epoch", "train_acc_per_epoch", "net"):
        assert col in header
    rows = json.loads(nasforge("trials", str(run), "--json", cwd=tmp_path).stdout)
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
    again = nasforge("search", *SMALL, "--out", "runs/demo", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert "Traceback" not in again.stderr
    assert trial_rows(run) == before
    # report regenerates
    (run / "report.html").unlink()
    nasforge("report", str(run), cwd=tmp_path)
    assert "Leaderboard" in (run / "report.html").read_text()


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    args = ["search", "--budget", "6", "--seed", "11", "-o", "evaluator.epochs=4", "--quiet"]
    nasforge(*args, "--out", "full", cwd=tmp_path)

    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nasforge", *args, "--out", "killed"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = tmp_path / "killed" / "run.db"
    deadline = time.time() + 180
    while time.time() < deadline:
        if db.exists():
            try:
                if len(trial_rows(tmp_path / "killed")) >= 2:
                    break
            except sqlite3.OperationalError:
                pass
        if proc.poll() is not None:
            pytest.fail(f"search ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = trial_rows(tmp_path / "killed")
    assert 2 <= len(done_before) < 6

    # while the killed run is not resumed, a resume with another config is refused
    bad = nasforge("search", "--resume", "killed", "--strategy", "evolution", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "different config" in bad.stderr
    nasforge("search", "--resume", "killed", "--quiet", cwd=tmp_path)
    resumed = trial_rows(tmp_path / "killed")
    assert resumed[:len(done_before)] == done_before  # nothing finished was lost or redone
    full = trial_rows(tmp_path / "full")
    assert [(r[0], r[1], r[2], r[4]) for r in resumed] == [(r[0], r[1], r[2], r[4]) for r in full]
    assert [json.loads(r[3])["val_acc"] for r in resumed if r[2] == "ok"] == \
        [json.loads(r[3])["val_acc"] for r in full if r[2] == "ok"]


@pytest.mark.slow
def test_bad_input_gives_one_clear_message(tmp_path):
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
    for args, expected in cases:
        proc = nasforge(*args, cwd=tmp_path, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert expected in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
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
