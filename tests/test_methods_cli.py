"""Methods and workers through the CLI: sequential halving end to end with kill -9 and resume; a
search with --workers 2 killed with kill -9 leaves no orphan process and resumes without losing or
repeating a finished trial. The searches that are killed run as real subprocesses; the reference
runs, resumes and read-only commands run the same ``main`` in this process (``main_in_process``)
to save a Python and torch start-up each."""

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

from test_cli import cli  # the CLI's main in this process: (status, stdout, stderr)

# tiny networks (one or two 8-channel layers, digits, 1 epoch) so each trial takes a moment; no
# ONNX export of the best network (the trials are what is compared)
TINY = ["-o", "space.features=[8]", "-o", "space.kernels=[3]", "-o", "space.min_conv=1",
        "-o", "space.max_conv=2", "-o", "evaluator.epochs=1", "-o", "evaluator.measure_latency=false",
        "--no-export", "--quiet"]
ENV = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def rows(run_dir: Path) -> list[tuple]:
    con = sqlite3.connect(run_dir / "run.db")
    try:
        return con.execute("SELECT id, arch, status, metrics, seed, info FROM trials ORDER BY id").fetchall()
    finally:
        con.close()


def start_and_kill(args: list[str], cwd: Path, run_dir: Path, min_rows: int) -> tuple[int, list[tuple]]:
    """Start a search, kill -9 it once ``min_rows`` trials are stored; returns (pid, rows)."""
    proc = subprocess.Popen([sys.executable, "-m", "nasforge", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if (run_dir / "run.db").exists() and len(rows(run_dir)) >= min_rows:
                break
        except sqlite3.OperationalError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"search ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.pid, rows(run_dir)


def descendants(pid: int) -> set[int]:
    """Processes whose parent chain (as of now) or session leads back to ``pid``'s session."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, session = fields[0], int(fields[3])  # stat fields 3 (state) and 6 (session)
        if session == pid and int(entry.name) != pid and state != "Z":
            out.add(int(entry.name))
    return out


@pytest.mark.slow
def test_sequential_halving_cli_kill_9_resume_and_reports(tmp_path, capsys):
    args = ["search", "--method", "sequential_halving", "--budget", "4", "--seed", "5",
            "-o", "method.top_k=2", *TINY]
    assert cli(capsys, *args, "--out", str(tmp_path / "full"))[0] == 0
    full = rows(tmp_path / "full")
    # 4 search trials, 2 at 2 epochs, 1 at 4 epochs
    assert [json.loads(r[5]).get("rung") for r in full] == [None] * 4 + [1, 1, 2]
    assert [json.loads(r[5]).get("epochs") for r in full[4:]] == [2, 2, 4]

    # killed once the first rung trial is committed (the method is past its search phase)
    _, before = start_and_kill([*args, "--out", "killed"], tmp_path, tmp_path / "killed", 5)
    assert 5 <= len(before) < 7
    code, _, err = cli(capsys, "search", "--resume", str(tmp_path / "killed"), "-o", "method.top_k=3")
    assert code == 2 and "method_options" in err and "Traceback" not in err
    assert cli(capsys, "search", "--resume", str(tmp_path / "killed"), "--quiet")[0] == 0
    resumed = rows(tmp_path / "killed")
    assert resumed[:len(before)] == before  # nothing finished was lost or redone
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in resumed] == [(r[0], r[1], r[2], r[4], r[5]) for r in full]
    assert [json.loads(r[3])["val_acc"] for r in resumed] == [json.loads(r[3])["val_acc"] for r in full]

    # the rung trials are trials like any other: trials --json, trials.csv, report, best/
    run = tmp_path / "killed"
    code, out, err = cli(capsys, "trials", str(run), "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [r["info"].get("rung") for r in listed] == [None] * 4 + [1, 1, 2]
    assert len((run / "trials.csv").read_text().strip().splitlines()) == 1 + 7
    (run / "report.html").unlink()
    assert cli(capsys, "report", str(run))[0] == 0
    assert "Leaderboard" in (run / "report.html").read_text()
    best = json.loads((run / "best" / "metrics.json").read_text())
    top = max(resumed, key=lambda r: json.loads(r[3])["val_acc"])
    assert json.loads(r"%s" % top[3])["val_acc"] == best["metrics"]["val_acc"]


@pytest.mark.slow
def test_workers_die_with_the_driver_and_async_resume(tmp_path, capsys):
    args = ["search", "--budget", "6", "--seed", "2", "--workers", "2", *TINY, "--out", "w2"]
    pid, before = start_and_kill(args, tmp_path, tmp_path / "w2", 1)
    assert 1 <= len(before) < 6
    # the workers (and the multiprocessing resource tracker) leave within a few seconds
    deadline = time.time() + 5
    while descendants(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not descendants(pid), f"orphans of the killed search: {descendants(pid)}"
    assert cli(capsys, "search", "--resume", str(tmp_path / "w2"), "--quiet")[0] == 0
    after = rows(tmp_path / "w2")
    assert [r[0] for r in after] == list(range(6))  # every trial once
    assert [r for r in after if r[0] in {b[0] for b in before}] == before  # finished: untouched
