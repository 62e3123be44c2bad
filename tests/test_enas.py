"""ENAS: the macro space (text, decisions, parameter count of a known architecture), the
weight-sharing supernet (two architectures choosing the same operation use the same tensor),
the controller's tanh clipping, uniform sampling of the random controller, and the ``enas``
method in process (trials, options) and through the CLI with kill -9 and an exact resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nasforge import registry
from nasforge.core import Objective, Task
from nasforge.errors import ArchitectureError, ConfigError
from nasforge.methods import MethodContext, run_method
from nasforge.methods.enas import Enas, Sampler
from nasforge.oneshot.enas import MacroSupernet, batch_statistics, shared_accuracy
from nasforge.run.loop import Budget
from nasforge.run.store import Store
from nasforge.spaces.enas_macro import MACRO_OPS, EnasMacroSpace, MacroArch, parse_macro


def tiny_task(kind: str = "image", n: int = 48, seed: int = 0) -> Task:
    """Generated data (random inputs, labels from a fixed rule), shapes only matter here."""
    g = torch.Generator().manual_seed(seed)
    shape = (1, 8, 8) if kind == "image" else (1, 16)
    x = torch.randn(3 * n, *shape, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    return Task(name=f"tiny-{kind}", kind=kind, input_shape=shape, num_classes=2,  # type: ignore[arg-type]
                train=(x[:n], y[:n]), val=(x[n:2 * n], y[n:2 * n]), test=(x[2 * n:], y[2 * n:]))


# -- the macro space ------------------------------------------------------------------------------

KNOWN = "conv_3x3 | sep_conv_5x5 +0 | max_pool_3x3 +0 +1"


def test_macro_text_and_decisions_of_a_known_architecture():
    space = EnasMacroSpace(layers=3, channels=4)
    arch = space.parse(KNOWN)
    assert arch.ops == ("conv_3x3", "sep_conv_5x5", "max_pool_3x3")
    assert arch.skips == ((), (0,), (0, 1))
    assert str(arch) == KNOWN and space.parse(str(arch)) == arch
    assert space.to_decisions(arch) == ("conv_3x3", "sep_conv_5x5", 1, "max_pool_3x3", 1, 1)
    assert space.from_decisions(space.to_decisions(arch)) == arch
    assert space.num_decisions == 6 and space.choices([]) == list(MACRO_OPS)
    assert space.choices(["conv_3x3", "conv_3x3"]) == [0, 1]
    encoded = space.encode(arch)
    assert encoded.shape == (3 * 6 + 3,) and encoded[-3:].tolist() == [1, 1, 1]
    g = space.graph(arch)
    assert g.ops == ("input", "conv_3x3", "sep_conv_5x5", "add", "max_pool_3x3", "add", "output")


@pytest.mark.parametrize("text, fragment", [
    ("conv_3x3 | conv_9x9", "unknown operation 'conv_9x9'"),
    ("conv_3x3 +0 | conv_3x3 | conv_3x3", "layer 0 adds nodes [0]"),
    ("conv_3x3 | conv_3x3 | conv_3x3 +1 +0", "distinct ascending"),
    ("conv_3x3 | conv_3x3 x0 | conv_3x3", "is not a skip"),
    ("conv_3x3 | | conv_3x3", "layer 1"),
    ("conv_3x3 | conv_3x3", "has 2 layers"),
])
def test_macro_bad_text_names_the_problem(text, fragment):
    with pytest.raises(ArchitectureError, match=fragment.replace("[", r"\[").replace("]", r"\]")
                       .replace("+", r"\+")):
        EnasMacroSpace(layers=3).parse(text)


def test_macro_parameter_count_of_a_known_architecture():
    # stem 1*4*9 + BN 8 = 44; layer 0 conv_3x3 (144 + 8) + layer BN 8 = 160; reduction after
    # layer 0: 2 nodes x (4*4 + 4*4 + BN 16) = 96; layer 1 sep_conv_5x5 at 8 channels
    # (8*25 + 64 + 16) + 16 = 296; reduction after layer 1: 3 x (64 + 64 + 32) = 480;
    # layer 2 max pool: BN 32; head 16*10 + 10 = 170. Total 1278.
    space = EnasMacroSpace(layers=3, channels=4)
    task = Task(name="t", kind="image", input_shape=(1, 8, 8), num_classes=10, train=None,  # type: ignore[arg-type]
                val=None, test=None)
    net = space.build(space.parse(KNOWN), task)
    assert sum(p.numel() for p in net.parameters()) == 1278
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    series = Task(name="s", kind="series", input_shape=(2, 9), num_classes=3, train=None,  # type: ignore[arg-type]
                  val=None, test=None)
    assert space.build(space.parse(KNOWN), series)(torch.randn(2, 2, 9)).shape == (2, 3)


def test_macro_options_are_checked():
    with pytest.raises(ConfigError, match="layers=0"):
        registry.create("spaces", "enas_macro", layers=0)


# -- shared weights -------------------------------------------------------------------------------

def test_shared_weights_are_the_same_tensor_for_the_same_choice():
    space, task = EnasMacroSpace(layers=3, channels=4), tiny_task()
    model = MacroSupernet(space, task)
    a = space.parse("conv_3x3 | conv_5x5 | avg_pool_3x3 +0")
    b = space.parse("conv_3x3 | sep_conv_3x3 +0 | max_pool_3x3")
    x, y = task.train[0][:8], task.train[1][:8]
    weight = model.op(0, "conv_3x3")[0].weight
    grads = []
    for arch in (a, b):
        model.zero_grad(set_to_none=True)
        model.use(arch)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append(weight.grad.clone())
        # only the chosen operations compute: the others get no gradient at all
        assert model.op(1, "conv_5x5")[0].weight.grad is None if arch is b else \
            model.op(1, "sep_conv_3x3")[0].weight.grad is None
    assert all(g.abs().sum() > 0 for g in grads)
    assert not torch.equal(grads[0], grads[1])  # one tensor, trained by both architectures
    with torch.no_grad():
        weight.mul_(0.0)  # changing the shared tensor changes what both architectures compute
    model.eval()
    for arch in (a, b):
        model.use(arch)
        net = space.build(arch, task)
        assert model.op(0, "conv_3x3")[0].weight is weight
        assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in net.parameters())


def test_enas_micro_shares_the_darts_supernet_operations():
    from nasforge.oneshot.enas import DartsShared, shared_model
    from nasforge.spaces.darts import DartsSpace, Genotype

    space, task = DartsSpace(C=4, layers=3), tiny_task()
    model = shared_model(space, task)
    assert isinstance(model, DartsShared)
    node = (("sep_conv_3x3", 0), ("max_pool_3x3", 1))
    a = Genotype((node,) * 4, (2, 3, 4, 5), (node,) * 4, (2, 3, 4, 5))
    other = (("sep_conv_3x3", 0), ("skip_connect", 1))
    b = Genotype((other,) * 4, (2, 3, 4, 5), (node,) * 4, (2, 3, 4, 5))
    x, y = task.train[0][:8], task.train[1][:8]
    shared = model.op(0, (2, 0), "sep_conv_3x3")  # node 2's edge from state 0 of cell 0
    weight = next(shared.parameters())
    unused = next(model.op(0, (2, 0), "dil_conv_5x5").parameters())
    for arch in (a, b):
        model.zero_grad(set_to_none=True)
        model.use(arch)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        assert weight.grad is not None and weight.grad.abs().sum() > 0
        assert unused.grad is None  # operations a genotype does not choose do not compute


def test_batch_statistics_leave_running_averages_alone():
    space, task = EnasMacroSpace(layers=3, channels=4), tiny_task()
    model = MacroSupernet(space, task)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    acc = shared_accuracy(model, space.parse(KNOWN), task.val, batch_size=47)  # leaves 1 row: joined
    assert 0.0 <= acc <= 1.0
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training


# -- the controller ---------------------------------------------------------------------------------

def test_tanh_clipping_bounds_the_controller_logits():
    space = EnasMacroSpace(layers=3)
    arch = space.parse(KNOWN)
    logits = {}
    for c in (0.0, 2.5):
        s = registry.create("strategies", "reinforce", seed=0, temperature=5.0, tanh_constant=c)
        s.setup(space, Objective())
        s.ask(1)  # fills the vocabulary
        with torch.no_grad():
            s.controller.head.weight.mul_(1000.0)
        logits[c] = s.decision_logits(arch)
    assert logits[0.0].abs().max() > 2.5  # unclipped logits do exceed the constant here
    assert logits[2.5].abs().max() <= 2.5
    assert torch.allclose(logits[2.5], 2.5 * torch.tanh(logits[0.0]))
    with pytest.raises(ConfigError, match="tanh_constant"):
        registry.create("strategies", "reinforce", tanh_constant=-1.0)


def test_random_controller_samples_uniformly():
    space = EnasMacroSpace(layers=3)
    method = Enas(controller="random")
    sampler = Sampler(method, space, tiny_task().val, seed=3)
    n = 3000
    archs = sampler.sample(n)
    ops = np.array([[MACRO_OPS.index(op) for op in a.ops] for a in archs])
    for layer in range(3):
        counts = np.bincount(ops[:, layer], minlength=6)
        chi2 = (((counts - n / 6) ** 2) / (n / 6)).sum()
        assert chi2 < 20.5, counts  # 5 degrees of freedom: p = 0.001
    bits = np.array([[1 if j in a.skips[2] else 0 for j in range(2)] for a in archs])
    assert np.all(np.abs(bits.mean(0) - 0.5) < 0.04)
    assert len({str(a) for a in archs}) > 1000  # 6**3 * 8 = 1728 architectures


def test_lstm_controller_learns_from_rewards():
    """Rewarding max_pool_3x3 at every layer makes the controller choose it more often."""
    space = EnasMacroSpace(layers=2)
    c = Enas(controller_lr=0.05, temperature=1.0, tanh_constant=2.5).make_controller(space, 0)
    target = "max_pool_3x3"

    def freq(archs):
        return np.mean([op == target for a in archs for op in a.ops])

    before = freq(c.ask(200))
    for _ in range(40):
        archs = c.ask(4)
        c.learn(archs, [float(np.mean([op == target for op in a.ops])) for a in archs])
    assert freq(c.ask(200)) > before + 0.3


# -- the method -------------------------------------------------------------------------------------

def make_ctx(store: Store, task: Task, space, **evaluator_options) -> MethodContext:
    opts = {"epochs": 1, "batch_size": 16, "measure_latency": False, **evaluator_options}
    return MethodContext(task=task, space=space,
                         evaluator=registry.create("evaluators", "train", **opts),
                         objective=Objective("val_acc"), seed=4, store=store,
                         budget=Budget(trials=1), evaluator_name="train", evaluator_options=opts)


@pytest.mark.parametrize("controller", ["lstm", "random"])
def test_enas_method_records_shared_scores_and_retrains_the_best(controller):
    task, space = tiny_task(), EnasMacroSpace(layers=3, channels=4)
    method = registry.create("methods", "enas", epochs=2, controller=controller, batch_size=16,
                             controller_steps=3, val_batch=16, samples=5, retrain=2)
    store = Store()
    trials = run_method(method, make_ctx(store, task, space))
    shared = [t for t in trials if t.info["phase"] == "shared"]
    retrained = [t for t in trials if t.info["phase"] == "retrain"]
    assert 1 <= len(shared) <= 5 and sum(t.info["count"] for t in shared) == 5
    assert all(t.info["shared_weights"] and "val_acc" not in t.metrics for t in shared)
    scores = [t.metrics["shared_val_acc"] for t in shared]
    assert scores == sorted(scores, reverse=True)
    assert [str(t.arch) for t in retrained] == [str(t.arch) for t in shared[:len(retrained)]]
    assert all("val_acc" in t.metrics and "test_acc" in t.metrics for t in retrained)
    assert all(t.info["source_trial"] == shared[t.info["rank"]].id for t in retrained)
    # run again on the same store (a resume after the search): the same trials, nothing redone
    again = run_method(registry.create("methods", "enas", **method.options()),
                       make_ctx(store, task, space))
    assert [(t.id, str(t.arch), t.metrics) for t in again] == \
        [(t.id, str(t.arch), t.metrics) for t in trials]
    assert len(store.trials(space)) == len(trials)
    ckpt = store.latest_checkpoint("enas")[1]["state"]
    history = ckpt["engine"]["callbacks"][0]["history"]
    assert len(history) == (2 if controller == "lstm" else 0)
    if controller == "lstm":
        assert ckpt["engine"]["callbacks"][0]["controller"]["updates"] == 2 * 3


def test_enas_micro_search_on_the_darts_space():
    from nasforge.spaces.darts import DartsSpace

    method = registry.create("methods", "enas", epochs=1, batch_size=24, controller_steps=2,
                             val_batch=16, samples=3, retrain=0)
    trials = run_method(method, make_ctx(Store(), tiny_task(), DartsSpace(C=2, layers=2)))
    assert trials and all(str(t.arch).startswith("Genotype(normal=") for t in trials)
    assert all(0 <= t.metrics["shared_val_acc"] <= 1 for t in trials)


def test_enas_options_are_checked():
    with pytest.raises(ConfigError, match="controller.*bayes"):
        registry.create("methods", "enas", controller="bayes")
    with pytest.raises(ConfigError, match="retrain=3"):
        registry.create("methods", "enas", samples=2, retrain=3)
    with pytest.raises(ConfigError, match="temperature"):
        registry.create("methods", "enas", temperature=0.0)
    with pytest.raises(ConfigError, match="no weight-sharing model"):
        run_method(registry.create("methods", "enas"),
                   make_ctx(Store(), tiny_task(), registry.create("spaces", "nb201")))


# -- kill -9 and resume through the CLI ------------------------------------------------------------

ENV = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
ARGS = ["search", "--method", "enas", "--space", "enas_macro", "--task", "digits", "--seed", "3",
        "-o", "task.limit=400",
        "-o", "space.layers=3", "-o", "space.channels=4", "-o", "method.epochs=3",
        "-o", "method.controller_steps=4", "-o", "method.samples=4", "-o", "method.retrain=0",
        "-o", "method.batch_size=128", "-o", "evaluator.epochs=1",
        "-o", "evaluator.measure_latency=false", "--no-export", "--quiet"]


def table(run_dir: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(run_dir / "run.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_enas_cli_kill_9_resumes_exactly(tmp_path):
    from typer.testing import CliRunner

    from nasforge.cli import app

    # the uninterrupted run and the resume in this process (saves a start-up each), the killed
    # one as a subprocess
    done = CliRunner().invoke(app, [*ARGS, "--out", str(tmp_path / "full")])
    assert done.exit_code == 0, done.output
    rows_sql = "SELECT id, arch, status, metrics, seed, info FROM trials ORDER BY id"
    full = table(tmp_path / "full", rows_sql)
    assert {json.loads(r[5])["phase"] for r in full} == {"shared"}  # retraining: tested above

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "nasforge", *ARGS, "--out", "killed"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill after epoch 1's checkpoint, in the middle of training
        try:
            if (run / "run.db").exists() and table(
                    run, "SELECT count(*) FROM checkpoints WHERE method='enas' AND step >= 1")[0][0]:
                break
        except sqlite3.OperationalError:
            pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert table(run, "SELECT count(*) FROM trials")[0][0] == 0
    again = CliRunner().invoke(app, ["search", "--resume", str(run), "--quiet"])
    assert again.exit_code == 0, again.output
    resumed = table(run, rows_sql)
    # same architectures, ids, seeds and info; shared-weight scores equal to the last bit
    same = lambda rows: [(r[0], r[1], r[2], r[4], r[5]) for r in rows]  # noqa: E731
    assert same(resumed) == same(full)
    shared = lambda rows: [json.loads(r[3]).get("shared_val_acc") for r in rows]  # noqa: E731
    assert shared(resumed) == shared(full)
