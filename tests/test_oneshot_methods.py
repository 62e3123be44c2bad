"""Methods darts and gdas on digits at toy scale: search, derive, train the genotype, resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from nasforge import registry
from nasforge.core import Objective
from nasforge.data import load_task
from nasforge.errors import ConfigError
from nasforge.evaluators.train import TrainEvaluator
from nasforge.methods import MethodContext, run_method
from nasforge.run.loop import Budget
from nasforge.run.store import Store
from nasforge.spaces.darts import DartsSpace

OPS = ["max_pool_3x3", "skip_connect", "sep_conv_3x3"]
# a small searched space: 2 nodes (5 edges), 3 operations, 3 cells of 4 channels
SPACE = dict(C=4, layers=3, nodes=2, ops=OPS)
FAST = dict(epochs=2, batch_size=16, supernet_val=False)


@pytest.fixture(scope="module")
def digits():
    # digits cut to 64 training and 64 validation rows, so searches and trials take moments
    task = load_task("digits")
    return dataclasses.replace(task, train=(task.train[0][:64], task.train[1][:64]),
                               val=(task.val[0][:64], task.val[1][:64]))


def context(tmp_path, task, name="run"):
    run = tmp_path / name
    run.mkdir(exist_ok=True)
    return MethodContext(task=task, space=DartsSpace(**SPACE),
                         evaluator=TrainEvaluator(epochs=1, measure_latency=False),
                         objective=Objective("val_acc"), seed=3, store=Store(run / "run.db"),
                         budget=Budget(trials=1), evaluator_name="train",
                         evaluator_options={"epochs": 1, "measure_latency": False},
                         work_dir=run / "method")


def alpha_history(ctx, name):
    return json.loads((ctx.work_dir / f"{name}_alphas.json").read_text())["history"]


def test_darts_second_order_search_derive_train_and_resume(tmp_path, digits):
    ctx = context(tmp_path, digits)
    method = registry.create("methods", "darts", order=2, derived=2, **FAST)
    trials = run_method(method, ctx)
    history = alpha_history(ctx, "darts")
    assert [h["epoch"] for h in history] == [1, 2] and len(history[0]["normal"]) == 5
    assert all(abs(sum(row) - 1) < 1e-5 for row in history[-1]["reduce"])
    # the trial is the genotype of the final α, trained from scratch by the run's evaluator
    assert trials[0].id == 0 and str(trials[0].arch) == history[-1]["genotype"]
    assert trials[0].status == "ok" and trials[0].metrics["val_acc"] > 0
    assert trials[0].info == {"method": "darts", "derive": "top2", "epoch": 2, "rank": 0}
    assert len(trials) == len({h["genotype"] for h in history})  # distinct genotypes only
    plots = tmp_path / "run" / "plots"
    assert (plots / "darts_alphas_normal.png").exists() and (plots / "darts_cell_0.png").exists()
    meta = ctx.store.get_meta("darts")
    assert meta["epochs"] == 2 and meta["order"] == 2 and meta["search_seconds"] > 0

    # resume from the epoch-1 checkpoint in a fresh process state: same α and genotype
    ctx2 = context(tmp_path, digits, "again")
    first = registry.create("methods", "darts", order=2, derived=2, **FAST)
    ckpt = ctx.store.latest_checkpoint("darts")
    # copy the epoch-1 engine checkpoint into a new store, as if killed after epoch 1
    epoch1 = [s for s in ctx.store.conn.execute(
        "SELECT step FROM checkpoints WHERE method='darts' ORDER BY step")]
    assert [s[0] for s in epoch1][-1] == 3 and ckpt is not None  # epochs 1, 2 then derived (3)
    blob = ctx.store.conn.execute(
        "SELECT state FROM checkpoints WHERE method='darts' AND step=1").fetchone()[0]
    ctx2.store.conn.execute("INSERT INTO checkpoints (method, step, created, state) VALUES "
                            "('darts', 1, 0, ?)", (blob,))
    ctx2.store.conn.commit()
    resumed = run_method(first, ctx2)
    assert alpha_history(ctx2, "darts") == history  # same softmax(α) every epoch, same genotypes
    assert [str(t.arch) for t in resumed] == [str(t.arch) for t in trials]
    assert resumed[0].metrics["val_acc"] == trials[0].metrics["val_acc"]


def test_gdas_samples_one_op_per_edge_and_anneals(tmp_path, digits):
    ctx = context(tmp_path, digits)
    method = registry.create("methods", "gdas", epochs=3, batch_size=16, train_rows=48,
                             derive="argmax", tau_max=10.0, tau_min=1.0, plots=False)
    trials = run_method(method, ctx)
    history = alpha_history(ctx, "gdas")
    assert [h["tau"] for h in history] == [10.0, 5.5, 1.0]
    assert history[-1]["val_acc"] is not None  # the supernet scored with argmax(α) each epoch
    assert trials[0].info["derive"] == "argmax" and trials[0].status == "ok"


def test_gumbel_model_computes_only_the_sampled_ops(tmp_path, digits):
    from nasforge.oneshot.darts import Gdas

    ctx = context(tmp_path, digits)
    model = Gdas(epochs=1).build(ctx)
    model.generator = torch.Generator().manual_seed(0)
    weights = model.arch_weights()  # the sample the forward below draws again
    assert all(int((w != 0).sum()) == 5 for w in weights.values())  # one op on each of 5 edges

    def counts():  # batches counted by each operation's batch norms (the ops that ran)
        return [[[sum(int(b) for n, b in op.named_buffers() if "num_batches" in n) for op in edge.ops]
                 for edge in cell.edges] for cell in model.supernet.cells]

    before = counts()
    model.generator = torch.Generator().manual_seed(0)
    model(digits.train[0][:4]).sum().backward()
    after = counts()
    for i, cell in enumerate(model.supernet.cells):
        w = weights["reduce" if cell.reduction else "normal"]
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge.ops):
                has_norm = any("num_batches" in n for n, _ in op.named_buffers())
                assert (after[i][e][k] != before[i][e][k]) == (bool(w[e, k] != 0) and has_norm)
    assert model.alphas.normal.grad.abs().sum() > 0  # straight-through gradient reaches α


def test_options_are_checked(tmp_path, digits):
    with pytest.raises(ConfigError, match="order = 3"):
        registry.create("methods", "darts", order=3)
    with pytest.raises(ConfigError, match="derive"):
        registry.create("methods", "darts", derive="top3")
    with pytest.raises(ConfigError, match="tau_min"):
        registry.create("methods", "gdas", tau_max=0.1, tau_min=1.0)
    with pytest.raises(ConfigError, match="lr_min"):
        registry.create("methods", "darts", lr=0.01, lr_min=0.1)
    ctx = context(tmp_path, digits)
    ctx.space = registry.create("spaces", "chain")
    with pytest.raises(ConfigError, match="darts space"):
        run_method(registry.create("methods", "darts", epochs=1), ctx)


def test_train_evaluator_aux_weight(digits):
    space = DartsSpace(C=4, layers=3, nodes=2, ops=OPS, auxiliary=True)
    geno = space.sample(__import__("numpy").random.default_rng(0))
    plain = TrainEvaluator(epochs=1, measure_latency=False).evaluate(geno, space, digits, seed=0)
    aux = TrainEvaluator(epochs=1, measure_latency=False, aux_weight=0.4).evaluate(geno, space, digits, seed=0)
    assert plain.status == aux.status == "ok"
    assert aux.metrics["train_loss"] > plain.metrics["train_loss"]  # the auxiliary term is added
    with pytest.raises(ConfigError, match="aux_weight"):
        TrainEvaluator(aux_weight=-1)


# -- through the CLI, killed with kill -9 mid-search ------------------------------------------------
CLI = ["search", "--method", "darts", "--space", "darts", "--task", "digits", "--seed", "1",
       "-o", "space.C=4", "-o", "space.layers=3", "-o", "space.nodes=2",
       "-o", "space.ops=[max_pool_3x3, skip_connect, sep_conv_3x3]",
       "-o", "method.epochs=4", "-o", "method.train_rows=64", "-o", "method.batch_size=16",
       "-o", "method.order=2", "-o", "method.supernet_val=false", "-o", "method.plots=false",
       "-o", "evaluator.epochs=1", "-o", "evaluator.measure_latency=false", "--no-export",
       "--quiet"]


def _checkpoint_steps(run_dir):
    import sqlite3

    con = sqlite3.connect(run_dir / "run.db")
    try:
        return [r[0] for r in con.execute("SELECT step FROM checkpoints WHERE method='darts' ORDER BY step")]
    finally:
        con.close()


@pytest.mark.slow
def test_darts_cli_kill_9_resumes_to_the_same_alpha_and_genotype(tmp_path):
    # the search to kill runs as a real process; the uninterrupted run and the resume run the
    # same CLI main in this process (no Python and torch start-up for them)
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}

    from nasforge.testing import main_in_process

    def rows(run_dir):
        con = sqlite3.connect(run_dir / "run.db")
        try:
            return con.execute("SELECT id, arch, status, metrics, seed, info FROM trials ORDER BY id").fetchall()
        finally:
            con.close()

    assert main_in_process(*CLI, "--out", str(tmp_path / "full")) == 0
    proc = subprocess.Popen([sys.executable, "-m", "nasforge", *CLI, "--out", "killed"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if (tmp_path / "killed" / "run.db").exists() and _checkpoint_steps(tmp_path / "killed"):
                break
        except sqlite3.OperationalError:
            pass
        assert proc.poll() is None, f"the search ended before it could be killed: {proc.stderr.read()}"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = _checkpoint_steps(tmp_path / "killed")
    assert steps and max(steps) < 4 and not rows(tmp_path / "killed")  # killed mid-search
    assert main_in_process("search", "--resume", str(tmp_path / "killed"), "--quiet") == 0
    history = [json.loads((tmp_path / run / "method" / "darts_alphas.json").read_text())["history"]
               for run in ("full", "killed")]
    assert [h["normal"] for h in history[1]] == [h["normal"] for h in history[0]]  # same α
    assert [h["genotype"] for h in history[1]] == [h["genotype"] for h in history[0]]
    full, resumed = rows(tmp_path / "full"), rows(tmp_path / "killed")
    assert len(full) == 1 and json.loads(full[0][5])["method"] == "darts"
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in resumed] == [(r[0], r[1], r[2], r[4], r[5]) for r in full]
    assert json.loads(resumed[0][3])["val_acc"] == json.loads(full[0][3])["val_acc"]


def test_paper_defaults():
    # GDAS's own search settings (240 epochs, Nesterov SGD with weight decay 5e-4, tau 10 -> 0.1);
    # DARTS's code searches first order unless --unrolled; DARTS-CC's reference is second order
    gdas = registry.create("methods", "gdas")
    assert (gdas.epochs, gdas.weight_decay, gdas.nesterov, gdas.tau_max, gdas.tau_min) == (
        240, 5e-4, True, 10.0, 0.1)
    darts = registry.create("methods", "darts")
    assert (darts.order, darts.lr, darts.weight_decay, darts.arch_lr) == (1, 0.025, 3e-4, 3e-4)
    assert registry.create("methods", "darts_cc").order == 2
