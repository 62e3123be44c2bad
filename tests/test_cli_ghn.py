"""``nasforge ghn predict / eval / train`` on an untrained GHN file (fast), and their errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from typer.testing import CliRunner

from nasforge.cli import app
from nasforge.errors import ConfigError
from nasforge.ghn.model import GHN, variant_config

MODULE = """
import torch

def build():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, 10))

def needs_task(task):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, task.num_classes))
"""


def ghn_file(tmp_path):
    torch.manual_seed(0)  # test-only: an untrained GHN's random weights
    ghn = GHN(variant_config("ghn2", input_shape=(1, 8, 8), num_classes=10, task="digits"))
    return ghn.save(tmp_path / "g.pt")


def test_predict_fills_a_user_module_and_saves_weights(tmp_path):
    path = ghn_file(tmp_path)
    (tmp_path / "mine.py").write_text(MODULE)
    runner = CliRunner()
    out = tmp_path / "w.pt"
    res = runner.invoke(app, ["ghn", "predict", str(path), "--model", f"{tmp_path}/mine.py:build",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "predicted 186 parameters" in res.output and "validation accuracy" in res.output
    state = torch.load(out, weights_only=True)
    assert state["1.running_var"].shape == (8,) and state["5.weight"].shape == (10, 8)
    res = runner.invoke(app, ["ghn", "predict", str(path), "--model",
                              f"{tmp_path}/mine.py:needs_task"])
    assert res.exit_code == 0, res.output
    # nothing is overwritten
    res = runner.invoke(app, ["ghn", "predict", str(path), "--model", f"{tmp_path}/mine.py:build",
                              "--out", str(out)])
    assert isinstance(res.exception, ConfigError) and "exists" in str(res.exception)
    for spec, msg in ((f"{tmp_path}/mine.py:nothere", "no function 'nothere'"),
                      (f"{tmp_path}/mine.py", "expected FILE.py:FUNCTION"),
                      (f"{tmp_path}/none.py:build", "is not a Python file")):
        res = runner.invoke(app, ["ghn", "predict", str(path), "--model", spec])
        assert isinstance(res.exception, ConfigError) and msg in str(res.exception), res.output


def test_eval_reports_random_sgd_and_predicted(tmp_path):
    path = ghn_file(tmp_path)
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["ghn", "eval", str(path), "--archs", "2", "--sgd-epochs", "1",
                                   "--json", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "random init" in res.output and "SGD 1 ep" in res.output
    data = json.loads(out.read_text())["test"]
    assert len(data["random"]) == len(data["predicted"]["g"]) == len(data["sgd"]["1"]) == 2
    assert all(0 <= a <= 1 for a in data["predicted"]["g"] + data["random"] + data["sgd"]["1"])
    mean, ci = data["summary"]["g"]
    assert mean == sum(data["predicted"]["g"]) / 2
    assert abs(ci - 1.96 * abs(data["predicted"]["g"][0] - data["predicted"]["g"][1]) / 2) < 1e-9


def test_errors_are_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    from nasforge.testing import main_in_process

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (tmp_path / "ghn.pt").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "nasforge", "ghn", "train", "--out", "ghn.pt"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "exists" in proc.stderr and "Traceback" not in proc.stderr
    # the second through the same main in this process (no second Python and torch start-up)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main_in_process("ghn", "eval", "ghn.pt") == 2
    err = capsys.readouterr().err
    assert "cannot read GHN file 'ghn.pt'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
