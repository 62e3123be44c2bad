"""Experiments on a small real run: weight lottery, deep prior vs training, continual learning,
the one-architecture evaluation, and every bad input they refuse (library, CLI in-process, and
one subprocess for the exit status)."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasforge.cli import app
from nasforge.config import make_config
from nasforge.errors import ArchitectureError, ConfigError, RunError
from nasforge.evaluators.deep_prior import DeepPriorEvaluator
from nasforge.evaluators.train import TrainEvaluator
from nasforge.experiments import open_run, output_dir, pick_target, select_groups, standalone
from nasforge.experiments.continual import class_groups, continual, forgetting, run_continual
from nasforge.experiments.hypotheses import lottery, run_inference, run_lottery, spearman
from nasforge.run.rundir import Run

ARCH = "[C(16,3,1,1,1), P(2,2,0,0), C(16,3,1,1,1), SM(10)]"
FAST_DP = {"epochs": 4, "measure_latency": False}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "dp"
    cfg = make_config({"task": "digits", "evaluator": "deep_prior", "evaluator_options": FAST_DP,
                       "strategy": "random", "budget": 9, "seed": 1})
    with Run.create(cfg, out) as run:
        run.search()
    return out


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the run outside experiments/ (to check that nothing was overwritten)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and "experiments" not in p.parts and p.name != "run.lock"
            and not p.name.startswith("run.db")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_lottery_groups_a_run_and_writes_new_folders(run_dir):
    before = snapshot(run_dir)
    ctx = open_run(run_dir)
    targets = select_groups(ctx, per_group=2)
    assert [t.group for t in targets] == ["low"] * 2 + ["medium"] * 2 + ["top"] * 2
    values = [t.value for t in targets]
    assert max(values[:2]) <= min(values[2:4]) and max(values[2:4]) <= min(values[4:])
    ev = DeepPriorEvaluator(**FAST_DP)
    out = output_dir("lottery", run_dir=run_dir)
    res = run_lottery(targets[::2], ctx.space, ctx.task, out, k=3, seed=2, evaluator=ev)
    assert out.parent == run_dir / "experiments" and out.name.startswith("lottery-")
    rows = read_csv(out / "lottery.csv")
    samples = read_csv(out / "lottery_samples.csv")
    assert len(rows) == 3 and len(samples) == 9 and (out / "lottery.png").stat().st_size > 0
    assert len({s["init_seed"] for s in samples}) == 3
    for i, r in enumerate(res["summary"]):  # mean and sample std of the three encoders' accuracies
        accs = [float(x["test_acc"]) for x in samples if int(x["index"]) == i]
        assert json.loads(r["test_accs"]) == pytest.approx(accs, abs=1e-5)
        assert r["test_acc_mean"] == pytest.approx(statistics.mean(accs), abs=1e-5)  # CSV: 6 digits
        assert r["test_acc_std"] == pytest.approx(statistics.stdev(accs), abs=1e-5)
    assert res["stats"]["within_arch_std"] == pytest.approx(
        statistics.mean(r["test_acc_std"] for r in res["summary"]))
    # a second experiment gets its own folder; the run's files are untouched
    assert output_dir("lottery", run_dir=run_dir) != out
    assert snapshot(run_dir) == before


def test_lottery_varies_only_the_encoder():
    task, space = standalone()
    target = pick_target(None, arch=ARCH, space=space)
    ev = DeepPriorEvaluator(**FAST_DP)
    summary, samples = lottery([target], space, task, k=2, seed=0, evaluator=ev)
    a, b = samples
    assert a["init_seed"] != b["init_seed"] and a["test_acc"] != b["test_acc"]
    again, _ = lottery([target], space, task, k=2, seed=0, evaluator=ev)
    assert again == summary
    with pytest.raises(ConfigError, match="k = 0"):
        lottery([target], space, task, k=0)


def test_inference_side_by_side(run_dir, tmp_path):
    ctx = open_run(run_dir)
    targets = select_groups(ctx, per_group=1)
    res = run_inference(targets, ctx.space, ctx.task, tmp_path, seed=0,
                        deep_prior=DeepPriorEvaluator(**FAST_DP),
                        trained=TrainEvaluator(epochs=2, measure_latency=False))
    rows = read_csv(tmp_path / "inference.csv")
    assert [r["group"] for r in rows] == ["low", "medium", "top"]
    for r in res["rows"]:
        assert r["deep_prior_status"] == "ok" and r["trained_status"] == "ok"
    assert (tmp_path / "inference.png").is_file()
    # each row reproduces its evaluator's result for that architecture and seed
    first = res["rows"][0]
    again = DeepPriorEvaluator(**FAST_DP).evaluate(targets[0].arch, ctx.space, ctx.task, seed=0)
    assert first["deep_prior_test_acc"] == again.metrics["test_acc"]
    assert res["stats"]["mean_deep_prior_test_acc"] == pytest.approx(
        statistics.mean(r["deep_prior_test_acc"] for r in res["rows"]))
    assert res["stats"]["spearman_test_acc"] == spearman(
        [r["deep_prior_test_acc"] for r in res["rows"]], [r["trained_test_acc"] for r in res["rows"]])


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped pair in five: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 4 / 120
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # ties get average ranks: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4)
    assert spearman([0.9, 0.9, 0.95, 0.99], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    # non-finite pairs are dropped; fewer than three pairs or a constant side give NaN
    assert spearman([1, float("nan"), 2, 3], [1, 5, 2, 3]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 2], [2, 1])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_continual_deep_prior_means_do_not_forget(tmp_path):
    task, space = standalone()
    arch = space.parse(ARCH)
    res = run_continual(arch, space, task, tmp_path, n_tasks=5, epochs=3,
                        evaluator=DeepPriorEvaluator(**FAST_DP))
    rows = read_csv(tmp_path / "continual.csv")
    assert len(rows) == 15 and (tmp_path / "continual.png").is_file()
    last = {r["method"]: r for r in res["rows"] if r["step"] == 5}
    assert set(last) == {"deep_prior_linear", "deep_prior_ncm", "finetune"}
    assert last["deep_prior_ncm"]["forgetting"] < 0.2
    assert last["deep_prior_linear"]["forgetting"] > last["deep_prior_ncm"]["forgetting"]
    assert last["finetune"]["forgetting"] > last["deep_prior_ncm"]["forgetting"]
    assert last["deep_prior_ncm"]["avg_acc"] > last["finetune"]["avg_acc"]
    first = [r for r in res["rows"] if r["step"] == 1]
    assert all(math.isnan(r["forgetting"]) and r["acc_task_1"] > 0.8 for r in first)
    assert json.loads((tmp_path / "meta.json").read_text())["groups"] == [[0, 1], [2, 3], [4, 5],
                                                                         [6, 7], [8, 9]]


def test_forgetting_and_groups():
    assert math.isnan(forgetting([[0.9]]))
    history = [[0.9], [0.5, 1.0], [0.7, 0.8, 1.0]]
    assert forgetting(history) == pytest.approx(((0.9 - 0.7) + (1.0 - 0.8)) / 2)
    assert class_groups(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    for bad in (1, 11, "5"):
        with pytest.raises(ConfigError, match="n_tasks"):
            class_groups(10, bad)
    task, space = standalone()
    with pytest.raises(ConfigError, match="methods"):
        continual(space.parse(ARCH), space, task, methods=["replay"])


def test_bad_inputs_are_named(run_dir, tmp_path):
    ctx = open_run(run_dir)
    with pytest.raises(RunError, match=r"trial 99 does not exist .* indices are 0\.\.8"):
        pick_target(ctx, trial=99)
    with pytest.raises(RunError, match="not a run directory"):
        open_run(tmp_path)
    with pytest.raises(RunError, match="does not exist"):
        open_run(tmp_path / "missing")
    with pytest.raises(ArchitectureError, match="cannot parse"):
        pick_target(ctx, arch="[C(16,3,1,1,1), SM(10)", trial=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        output_dir("lottery", out=tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="per_group"):
        select_groups(ctx, per_group=0)
    # the string wins over a trial
    assert str(pick_target(ctx, arch=ARCH, trial=99).arch) == ARCH
    assert pick_target(ctx, trial=3).seed == ctx.row(3)["seed"]


def test_cli_commands_in_process(run_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--run", str(run_dir), "--trial", "2"])
    assert res.exit_code == 0, res.output
    row = open_run(run_dir).row(2)
    assert f"val_acc: {row['metrics']['val_acc']:.4f}" in res.output  # reproduces the trial
    res = runner.invoke(app, ["lottery", "--arch", ARCH, "--k", "2", "--out", str(tmp_path / "lot"),
                              "-o", "evaluator.epochs=2"])
    assert res.exit_code == 0, res.output
    assert len(read_csv(tmp_path / "lot" / "lottery.csv")) == 1
    res = runner.invoke(app, ["embed", "--run", str(run_dir), "--trial", "1", "--arch", ARCH,
                              "--out", str(tmp_path / "emb"), "--no-folders"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "emb" / "meta.json").read_text())["arch"] == ARCH
    res = runner.invoke(app, ["continual", "--arch", ARCH, "--tasks", "11"])
    assert isinstance(res.exception, ConfigError) and "n_tasks" in str(res.exception)
    res = runner.invoke(app, ["inference", "--per-group", "1"])
    assert isinstance(res.exception, ConfigError) and "run directory" in str(res.exception)


def test_cli_bad_trial_exits_with_status_2(run_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "nasforge", "evaluate", "--run", str(run_dir),
                           "--trial", "42"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "trial 42 does not exist" in proc.stderr and "0..8" in proc.stderr
    assert "Traceback" not in proc.stderr
