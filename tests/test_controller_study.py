"""Controller studies: the memorisation regulariser makes hidden states of different
architectures differ (a known case), similarities of known cells, and the study's files and
table columns on a controller and supernet built here. The series data is generated."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from nasforge.core import Objective, Task
from nasforge.experiments.controller_study import (
    TABLE_COLUMNS,
    StudyOptions,
    controller_study,
    hidden_before_each_decision,
    similarities,
    train_controller,
)
from nasforge.oneshot.enas import shared_accuracy, shared_model
from nasforge.spaces.enas_rnn import EnasRnnSpace
from nasforge.strategies.reinforce import ReinforceSearch
from nasforge.training import seeded_module

ACTS = ("tanh", "relu", "identity", "sigmoid")


def _controller(space, memorization=0.0, lr=0.05):
    c = ReinforceSearch(seed=0, hidden_size=16, lr=lr, memorization=memorization,
                        entropy_weight=0.01)
    c.setup(space, Objective("val_acc"))
    return c


def test_memorisation_makes_hidden_states_of_different_archs_differ():
    # Two cells that differ in their first and last decisions, with the same decision between:
    # to reproduce both, the state before the last decision must remember the first one.
    space = EnasRnnSpace(num_nodes=2)
    a, b = space.parse("0:tanh 1:tanh"), space.parse("0:sigmoid 1:sigmoid")
    results = {}
    for weight in (0.0, 1.0):
        c = _controller(space, memorization=weight)
        for _ in range(40):
            c.learn([a, b], [0.5, 0.5])  # equal rewards: only memorisation and entropy act
        gap = (hidden_before_each_decision(c, a)[-1] - hidden_before_each_decision(c, b)[-1]).norm()
        ids = [c._index[x] for x in ACTS]
        p_a = torch.softmax(c.decision_logits(a)[-1][ids], 0)[ACTS.index("tanh")].item()
        p_b = torch.softmax(c.decision_logits(b)[-1][ids], 0)[ACTS.index("sigmoid")].item()
        results[weight] = (gap.item(), p_a, p_b)
    gap_off, pa_off, pb_off = results[0.0]
    gap_on, pa_on, pb_on = results[1.0]
    assert pa_on > 0.8 and pb_on > 0.8  # each cell's last choice follows from its first
    assert abs(pa_off - 0.25) < 0.05 and abs(pb_off - 0.25) < 0.05  # without: uniform
    assert gap_on > 100 * gap_off and gap_on > 0.5


def test_similarities_of_known_cells():
    space = EnasRnnSpace(num_nodes=4)
    a = space.parse("0:tanh 1:relu 1:relu 2:tanh")
    b = space.parse("0:tanh 1:sigmoid 2:relu 2:identity")
    # same activation at nodes 1 and 3; same source at nodes 2 and 4; counts tanh 2/1,
    # relu 2/1, sigmoid 0/1, identity 0/1 -> L1 distance 4
    assert similarities(space, a, b) == {"ops_in_common": 2.0, "shared_connections": 2.0,
                                         "activation_counts": -4.0}
    assert similarities(space, a, a) == {"ops_in_common": 4.0, "shared_connections": 3.0,
                                         "activation_counts": 0.0}


def test_study_writes_distributions_heat_map_and_spearman_table(tmp_path):
    space = EnasRnnSpace(num_nodes=3, hidden=8)
    g = torch.Generator().manual_seed(0)  # generated series: the class is the sign of the mean
    y = (torch.arange(48) % 2).long()
    x = torch.randn(48, 1, 6, generator=g) + (2.0 * y - 1.0)[:, None, None]
    task = Task("sign", "series", (1, 6), 2, (x, y), (x, y), (x, y))
    model = seeded_module(lambda: shared_model(space, task), 0)

    def score(arch, data):
        return shared_accuracy(model, arch, data)

    trained = _controller(space, lr=0.01)
    train_controller(trained, score, task.val, steps=3, batch=2, val_batch=16, seed=1)
    state = {k: v.clone() for k, v in trained.controller.state_dict().items()}
    options = StudyOptions(samples=12, hidden_archs=10, controller_steps=2, controller_batch=2,
                           val_batch=16, eval_rows=24)
    summary = controller_study(space, trained, lambda: _controller(space, lr=0.01), score,
                               task.val, tmp_path, options)
    for k, v in trained.controller.state_dict().items():  # the study copies, never trains it
        assert torch.equal(v, state[k])
    assert {p.name for p in tmp_path.iterdir()} == {
        "samples.csv", "distributions.png", "hidden_states.png", "spearman.csv", "spearman.md",
        "summary.json"}
    with open(tmp_path / "spearman.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == TABLE_COLUMNS
    assert [(r["controller"], r["similarity"]) for r in rows[:3]] == [
        ("trained", "ops_in_common"), ("trained", "shared_connections"),
        ("trained", "activation_counts")]
    assert {r["controller"] for r in rows} == {"trained", "untrained", "no_memorization",
                                               "memorization"}
    assert all(r["pairs"] == "45" for r in rows)  # 10 architectures -> 45 pairs
    assert all(-1 <= float(r["spearman_rho"]) <= 1 for r in rows)
    md = (tmp_path / "spearman.md").read_text().splitlines()
    assert md[0].startswith("| controller | memorization | similarity") and len(md) == 2 + 12
    with open(tmp_path / "samples.csv") as f:
        samples = list(csv.DictReader(f))
    assert len(samples) == 24 and {s["controller"] for s in samples} == {"trained", "untrained"}
    for s in samples[:3]:  # each score is the shared-weight accuracy on the first eval rows
        assert float(s["shared_score"]) == pytest.approx(
            score(space.parse(s["arch"]), (x[:24], y[:24])), abs=1e-5)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["hidden_states"]["memorization"]["memorization"] == 1.0
    assert np.isfinite(summary["distributions"]["trained"]["mean"])
    with pytest.raises(Exception, match="hidden_archs=2"):
        StudyOptions(hidden_archs=2)


def _series(n: int = 96, length: int = 8, seed: int = 0):
    """Generated series: the class is the sign of the series' mean."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).long()
    return torch.randn(n, 1, length, generator=g) + (2.0 * y - 1.0)[:, None, None], y


def test_enas_method_searches_the_recurrent_cell_space():
    from nasforge import registry
    from nasforge.methods import MethodContext, run_method
    from nasforge.run.loop import Budget
    from nasforge.run.store import Store

    x, y = _series()
    task = Task("sign", "series", (1, 8), 2, (x[:48], y[:48]), (x[48:72], y[48:72]),
                (x[72:], y[72:]))
    space = EnasRnnSpace(num_nodes=3, hidden=8)
    method = registry.create("methods", "enas", epochs=1, batch_size=16, controller_steps=2,
                             val_batch=16, samples=3, retrain=1)
    opts = {"epochs": 1, "batch_size": 16, "measure_latency": False}
    ctx = MethodContext(task=task, space=space,
                        evaluator=registry.create("evaluators", "train", **opts),
                        objective=Objective("val_acc"), seed=1, store=Store(),
                        budget=Budget(trials=1), evaluator_name="train", evaluator_options=opts)
    trials = run_method(method, ctx)
    shared = [t for t in trials if t.info["phase"] == "shared"]
    retrained = [t for t in trials if t.info["phase"] == "retrain"]
    assert shared and all(0 <= t.metrics["shared_val_acc"] <= 1 for t in shared)
    assert all(space.parse(str(t.arch)) == t.arch for t in shared)
    assert len(retrained) == 1 and retrained[0].ok and "val_acc" in retrained[0].metrics


@pytest.mark.slow
def test_controller_study_cli_on_an_enas_run(tmp_path, capsys):
    from nasforge.testing import main_in_process, run_cli

    x, y = _series(n=120)
    np.savez(tmp_path / "series.npz", x_train=x[:96, 0].numpy(), y_train=y[:96].numpy(),
             x_test=x[96:, 0].numpy(), y_test=y[96:].numpy())
    run = str(tmp_path / "run")
    # the ENAS run through the CLI's main in this process (saves a Python and torch start-up)
    assert main_in_process(
        "search", "--method", "enas", "--space", "enas_rnn", "--task", "arrays",
        "-o", f"task.path={tmp_path / 'series.npz'}", "-o", "space.num_nodes=3",
        "-o", "space.hidden=8", "-o", "method.epochs=1", "-o", "method.controller_steps=2",
        "-o", "method.samples=2", "-o", "method.retrain=0", "-o", "method.batch_size=32",
        "--no-export", "--quiet", "--out", run) == 0
    args = ("controller-study", "run", "--samples", "6", "--hidden-archs", "6",
            "--controller-steps", "1", "--controller-batch", "2", "--eval-rows", "8")
    proc = run_cli(*args, cwd=tmp_path)  # the study as a real process
    assert "| controller | memorization | similarity |" in proc.stdout
    out = tmp_path / "run" / "controller_study"
    assert (out / "spearman.csv").is_file() and (out / "hidden_states.png").is_file()
    capsys.readouterr()
    assert main_in_process("controller-study", run, *args[2:]) == 2  # never overwrites results
    err = capsys.readouterr().err
    assert "already holds files" in err and "Traceback" not in err
    # the one command reproduces the Spearman table (and the samples) exactly (in this process)
    assert main_in_process("controller-study", run, *args[2:], "--out", run + "/again") == 0
    for name in ("spearman.csv", "spearman.md", "samples.csv"):
        assert (out.parent / "again" / name).read_text() == (out / name).read_text(), name
