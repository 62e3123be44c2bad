"""DARTS-CC: the α(λ) formula on hand-set anchors, λ normalisation, the complexity term against
parameter counts of built networks, derivation at the λ extremes of a constructed hypernetwork,
Gumbel weights, the random baseline, options; and the method end to end through the CLI on
Fashion-MNIST IDX files the test generates, with kill -9 and resume."""

from __future__ import annotations

import json
import math
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
from nasforge.cost import count_params
from nasforge.errors import ConfigError
from nasforge.methods.darts_cc import DartsCC, DartsCCModel, random_genotypes
from nasforge.oneshot.dartscc import (PARAMETER_FREE, AlphaHypernet, LambdaLinear, LambdaRange,
                                      MLPAlpha,
                                      PiecewiseLinear, complexity, complexity_scale,
                                      expected_params, gumbel_weights, max_params,
                                      temperature)
from nasforge.oneshot.derive import derive
from nasforge.oneshot.supernet import SuperNet
from nasforge.ops.darts_ops import PRIMITIVES
from nasforge.spaces.darts import Genotype, build_network

ROOT = Path(__file__).resolve().parents[1]


def test_piecewise_linear_formula_on_hand_set_anchors():
    pw = PiecewiseLinear((1, 1), anchors=3)
    with torch.no_grad():
        pw.anchors.copy_(torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1))
    # pivots 0, .5, 1: linear between anchors
    for t, expected in [(0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.75, 2.0), (1.0, 3.0)]:
        assert pw(t).item() == pytest.approx(expected)
    # moved pivots: the segment comes from the uniform grid, the weight from the pivots
    with torch.no_grad():
        pw.pivots.copy_(torch.tensor([0.0, 0.4, 1.0]))
    # t = .25: seg 0, d = (.4 - .25) / .4 = .375 -> 0 * .375 + 1 * .625
    assert pw(0.25).item() == pytest.approx(0.625)
    # t = .45: seg = floor(.99999 * .45 * 2) = 0 (still), d = (.4 - .45) / .4 = -.125 -> 1.125
    assert pw(0.45).item() == pytest.approx(1.125)
    # t = .75: seg 1, d = (1 - .75) / .6 -> 1 * d + 3 * (1 - d)
    d = 0.25 / 0.6
    assert pw(0.75).item() == pytest.approx(d + 3 * (1 - d))
    # gradients reach anchors and pivots
    pw(0.3).sum().backward()
    assert pw.anchors.grad.abs().sum() > 0 and pw.pivots.grad.abs().sum() > 0
    # fixed pivots (option pivots: fixed): no gradient, the same state dict, and the method
    # optimises only the anchors
    fixed = AlphaHypernet(8, 2, learn_pivots=False)
    assert set(fixed.state_dict()) == set(AlphaHypernet(8, 2).state_dict())
    sum(a.sum() for a in fixed(0.6).values()).backward()
    assert all(m.pivots.grad is None and m.anchors.grad is not None
               for cell in fixed.cells.values() for m in cell)
    model, engine, _, _ = DartsCC(epochs=1, pivots="fixed").build(_context())
    optimised = {id(p) for g in engine.optimizers["alpha"].param_groups for p in g["params"]}
    assert optimised == {id(m.anchors) for cell in model.hyper.cells.values() for m in cell}


def _context():
    """A minimal method context: generated 8x8 images (random), a 2-node darts space."""
    from types import SimpleNamespace

    from nasforge.spaces.darts import DartsSpace

    g = torch.Generator().manual_seed(0)
    task = SimpleNamespace(name="gen", kind="image", input_shape=(1, 8, 8), num_classes=10,
                           train=(torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 10))
    return SimpleNamespace(space=DartsSpace(C=4, layers=3, nodes=2, allow_none=True), task=task,
                           seed=0, rng=lambda salt: np.random.default_rng(salt))


def test_lambda_conditioned_classifier():
    # LambdaLinear: anchors start equal (λ-independent); hand-set anchors interpolate linearly
    layer = LambdaLinear(3, 2, anchors=3)
    x = torch.ones(1, 3)
    assert torch.allclose(layer(x, 0.0), layer(x, 1.0))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1).expand(3, 2, 3))
        layer.bias.zero_()
    assert layer(x, 0.25).tolist() == [[1.5, 1.5]]  # weight .5 per input, 3 inputs
    assert layer(x, 0.75).tolist() == [[6.0, 6.0]]  # weight 2
    # in the method: the logits come from it at the step's λ̃; the weight step trains it and
    # not the supernet's unused classifier
    model, engine, _, _ = DartsCC(epochs=1, lambda_classifier=True).build(_context())
    trained = {id(p) for g in engine.optimizers["weights"].param_groups for p in g["params"]}
    assert id(model.classifier.weight) in trained
    assert id(model.supernet.classifier.weight) not in trained
    with torch.no_grad():
        model.classifier.weight[-1].add_(1.0)
    model.eval()
    xb = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model.eval_tilde = 0.0
    low = model(xb)
    model.eval_tilde = 1.0
    assert not torch.allclose(low, model(xb))


def test_mlp_alpha_depends_on_lambda():
    m = MLPAlpha((3, 8), hidden=4)
    assert m(0.0).shape == (3, 8)
    assert not torch.allclose(m(0.0), m(1.0))


def test_lambda_range():
    r = LambdaRange(1e-8, 1e-4)
    assert r.tilde(1e-6) == pytest.approx(0.5)
    assert r.value(0.25) == pytest.approx(1e-7)
    assert r.value(r.tilde(3e-5)) == pytest.approx(3e-5)
    g = torch.Generator().manual_seed(0)
    draws = [r.sample(g) for _ in range(2000)]
    tildes = np.array([t for _, t in draws])
    assert all(1e-8 <= lam <= 1e-4 for lam, _ in draws)
    assert abs(tildes.mean() - 0.5) < 0.03 and abs((tildes < 0.25).mean() - 0.25) < 0.03
    with pytest.raises(ConfigError, match="lambda = 1"):
        r.tilde(1.0)
    with pytest.raises(ConfigError, match="low < high"):
        LambdaRange(1e-4, 1e-8)


def test_complexity_term_equals_parameter_counts_of_built_networks():
    """softmax-expected parameters with α one-hot on sep_conv_3x3 = params(all edges
    sep_conv_3x3) - params(all edges none): the count of every cell's edges, by hand."""
    C, layers, nodes = 4, 3, 2
    net = SuperNet(PRIMITIVES, C, layers, 10, 1, n_nodes=nodes)
    table = net.op_param_counts()
    k = PRIMITIVES.index("sep_conv_3x3")
    hot = {ct: torch.full((net.num_edges, len(PRIMITIVES)), -1e4).index_fill_(1, torch.tensor([k]), 0.0)
           for ct in ("normal", "reduce")}

    def cell(op):
        return tuple(tuple((op, s) for s in range(j + 2)) for j in range(nodes))

    concat = tuple(range(2, nodes + 2))
    full = count_params(build_network(Genotype(cell("sep_conv_3x3"), concat, cell("sep_conv_3x3"), concat),
                                      (1, 8, 8), 10, C=C, layers=layers))
    empty = count_params(build_network(Genotype(cell("none"), concat, cell("none"), concat),
                                       (1, 8, 8), 10, C=C, layers=layers))
    assert expected_params(hot, table).item() == pytest.approx(full - empty)
    # by hand: sep_conv_3x3 at c channels = 2 * (9c + c*c + 2c); cells: normal c=4, reduce 8, 16;
    # 5 edges per cell of 2 nodes
    sep = lambda c: 2 * (9 * c + c * c + 2 * c)  # noqa: E731
    assert full - empty == 5 * (sep(4) + sep(8) + sep(16))
    # uniform α: the mean over operations; λ scales it
    zero = {ct: torch.zeros(net.num_edges, len(PRIMITIVES)) for ct in ("normal", "reduce")}
    mean = sum(table[ct].sum().item() for ct in table) / len(PRIMITIVES)
    assert complexity(zero, table, 1e-6).item() == pytest.approx(1e-6 * mean)
    # the relative unit: divided by the cells' largest count (every edge its largest operation:
    # sep_conv_5x5 here, 2 * (25c + c*c + 2c)), so α one-hot on it gives exactly λ
    sep5 = lambda c: 2 * (25 * c + c * c + 2 * c)  # noqa: E731
    assert max_params(table) == 5 * (sep5(4) + sep5(8) + sep5(16))
    assert complexity_scale(table, "params") == 1.0
    hot5 = {ct: torch.full_like(hot[ct], -1e4).index_fill_(1, torch.tensor(
        [PRIMITIVES.index("sep_conv_5x5")]), 0.0) for ct in hot}
    assert complexity(hot5, table, 0.3, "relative").item() == pytest.approx(0.3)
    assert complexity(hot, table, 1.0, "relative").item() == pytest.approx(
        (full - empty) / max_params(table))
    with pytest.raises(ConfigError, match="complexity unit 'millions'"):
        complexity_scale(table, "millions")


def test_derive_at_the_lambda_extremes_of_a_constructed_hypernet():
    """Anchors set so that α(0) prefers sep_conv_5x5 everywhere and α(1) prefers none on the
    edges from state 0 and max_pool_3x3 elsewhere."""
    hyper = AlphaHypernet(len(PRIMITIVES), n_nodes=3, anchors=5)
    big, small = PRIMITIVES.index("sep_conv_5x5"), PRIMITIVES.index("max_pool_3x3")
    none = PRIMITIVES.index("none")
    with torch.no_grad():
        for nodes in hyper.cells.values():
            for j, pw in enumerate(nodes):
                pw.anchors.zero_()
                pw.anchors[0, :, big] = 2.0
                pw.anchors[4, :, small] = 1.0
                pw.anchors[4, 0, :] = -10.0  # edges from state 0: none, then max_pool_3x3
                pw.anchors[4, 0, none] = 3.0
                pw.anchors[4, 0, small] = 2.9
    concat = (2, 3, 4)
    low = derive(hyper(0.0), PRIMITIVES, "argmax")
    cell = tuple(tuple(("sep_conv_5x5", s) for s in range(j + 2)) for j in range(3))
    assert low == Genotype(cell, concat, cell, concat)
    high = derive(hyper(1.0), PRIMITIVES, "argmax")  # none edges are dropped
    cell = tuple(tuple(("max_pool_3x3", s) for s in range(1, j + 2)) for j in range(3))
    assert high == Genotype(cell, concat, cell, concat)
    # top2: none excluded; max_pool_3x3 has softmax weight .48 on the edges from state 0 and
    # .28 on the others, so every node keeps its edge from state 0 first, then state 1
    top = derive(hyper(1.0), PRIMITIVES, "top2")
    assert all(len(edges) == 2 and edges[0] == ("max_pool_3x3", 0) for edges in top.normal)
    assert str(top).startswith("Genotype(normal=[('max_pool_3x3', 0), ('max_pool_3x3', 1)")
    # derive(λ) of the method's model: λ = lambda_min is λ̃ = 0, lambda_max is λ̃ = 1
    model = DartsCCModel(SuperNet(PRIMITIVES, 2, 3, 10, 1, n_nodes=3), hyper)
    lams = LambdaRange(1e-8, 1e-4)
    assert model.derive(1e-8, lams) == low and model.derive(1e-4, lams) == high
    assert model.derive(1e-4, lams, "top2") == top
    built = count_params(build_network(low, (1, 8, 8), 10, C=4, layers=3))
    assert count_params(build_network(high, (1, 8, 8), 10, C=4, layers=3)) < built


def test_gumbel_weights_and_temperature():
    alpha = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    w = gumbel_weights(alpha, 16, 1.0, torch.Generator().manual_seed(1))
    assert w.shape == (16, 5, 8) and torch.allclose(w.sum(-1), torch.ones(16, 5))
    again = gumbel_weights(alpha, 16, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(w, again)
    assert not torch.allclose(w[0], w[1])  # one draw per sample
    cold = gumbel_weights(alpha, 64, 1e-3, torch.Generator().manual_seed(2))
    assert (cold.max(-1).values > 0.99).float().mean() > 0.95  # nearly one-hot when cold
    assert temperature(0) == 1.0 and temperature(49) == pytest.approx(0.216)
    assert temperature(100) == 0.1 and temperature(10, 0.2, 0.05) == 0.05


def test_random_baseline_fractions():
    rng = np.random.default_rng(0)
    genos = random_genotypes(5, PRIMITIVES, 4, "argmax", rng)
    for i, (geno, fraction) in enumerate(genos):
        ops = geno.ops()  # 28 edges, less the none edges dropped
        assert fraction == i / 4
        assert sum(op not in PARAMETER_FREE for op in ops) == 28 - round(fraction * 28)
    assert len(genos[0][0].ops()) == 28 and "none" not in genos[0][0].ops()
    top = random_genotypes(3, PRIMITIVES, 4, "top2", rng)
    assert all(len(e) == 2 and "none" not in top[2][0].ops() for e in top[1][0].normal)
    assert all(op in PARAMETER_FREE for op in top[2][0].ops())


def test_options_are_checked():
    for bad, match in [({"epochs": 0}, "epochs"), ({"lambdas": [0, 2]}, "lambdas"),
                       ({"derive": "best"}, "derive"), ({"random_baseline": 1}, "random_baseline"),
                       ({"lambda_min": 1e-3, "lambda_max": 1e-4}, "low < high"),
                       ({"order": 3}, "order"), ({"arch_fraction": 1.0}, "arch_fraction"),
                       ({"device": "tpu"}, "device"), ({"complexity": "flops"}, "complexity"),
                       ({"pivots": "moving"}, "pivots")]:
        with pytest.raises(ConfigError, match=match):
            registry.create("methods", "darts_cc", **bad)
    # the reference's defaults stay the defaults; the CPU preset is a config file
    ref = registry.create("methods", "darts_cc")
    assert (ref.complexity, ref.lambda_min, ref.lambda_max, ref.pivots, ref.order, ref.arch_lr) \
        == ("params", 1e-8, 1e-4, "learned", 2, 1e-3)
    from nasforge.config import load_config

    cpu = load_config(ROOT / "configs" / "darts_cc_digits_cpu.yaml")
    preset = registry.create("methods", "darts_cc", **cpu.method_options)
    assert (preset.complexity, preset.lambda_min, preset.lambda_max, preset.pivots,
            preset.lambda_sampling, preset.lambda_jitter, preset.warmup_epochs) \
        == ("relative", 3e-2, 10.0, "fixed", "coupled", 0.0, 10)
    assert (preset.lr, preset.batch_size, preset.arch_batch_size) == (0.1, 128, 64)
    assert preset.alpha_average_epochs == 0
    assert (ref.lr, ref.arch_batch_size) == (0.025, ref.batch_size)
    assert (ref.lambda_sampling, ref.warmup_epochs) == ("uniform", 0)
    assert isinstance(registry.create("methods", "darts_cc"), DartsCC)


def test_anchor_sampling_gives_every_anchor_the_same_weight_mass():
    # uniform λ̃ (the reference's): an end anchor's hat function is cut in half by [0, 1], so it
    # gets 1/8 of the interpolation weight against 1/4 for an inner anchor (K = 5)
    g = torch.Generator().manual_seed(0)
    mass = LambdaRange(1e-2, 1e1).anchor_mass(20000, g)
    assert mass[0] == pytest.approx(0.125, abs=0.01) and mass[4] == pytest.approx(0.125, abs=0.01)
    assert all(m == pytest.approx(0.25, abs=0.01) for m in mass[1:4])
    # an anchor plus jitter in [0, 1] of the spacing, clipped: 1/K each (exactly, in expectation)
    for jitter in (0.0, 0.5, 1.0):
        r = LambdaRange(1e-2, 1e1, "anchors", 5, jitter)
        assert all(m == pytest.approx(0.2, abs=0.01) for m in r.anchor_mass(20000, g)), jitter
    # jitter 0: only the grid; jitter 1: all of [0, 1], each end clipped to with mass 1/(2K)
    grid = {round(LambdaRange(1e-2, 1e1, "anchors", 5, 0.0).sample(g)[1], 9) for _ in range(500)}
    assert grid == {0.0, 0.25, 0.5, 0.75, 1.0}
    r = LambdaRange(1e-2, 1e1, "anchors", 3, 1.0)
    draws = np.array([r.sample(g) for _ in range(6000)])
    assert ((draws[:, 1] >= 0) & (draws[:, 1] <= 1)).all()
    assert (draws[:, 1] == 0).mean() == pytest.approx(1 / 6, abs=0.02)
    assert (draws[:, 1] == 1).mean() == pytest.approx(1 / 6, abs=0.02)
    assert np.allclose(draws[:, 0], [r.value(t) for t in draws[:, 1]])
    for bad, match in [({"sampling": "beta"}, "sampling"), ({"jitter": 1.5}, "jitter"),
                       ({"sampling": "anchors", "anchors": 1}, "anchors")]:
        with pytest.raises(ConfigError, match=match):
            LambdaRange(1e-2, 1e1, **bad)
    for bad, match in [({"lambda_sampling": "grid"}, "sampling"),
                       ({"lambda_jitter": -0.1}, "jitter")]:
        with pytest.raises(ConfigError, match=match):
            registry.create("methods", "darts_cc", **bad)


def _fit_search(method: DartsCC, checkpoint: Path, *, stop_at_epoch: int | None = None,
                resume: bool = False) -> tuple[DartsCCModel, list[float]]:
    """The method's search on the generated ``_context`` data through the engine (checkpoint
    after every epoch); ``stop_at_epoch`` dies at the first step of that epoch (as kill -9
    would, after the previous epoch's checkpoint). Returns the model and the λ̃ of each step."""
    from nasforge.training import Callback

    class Stop(Exception):
        pass

    class Record(Callback):
        def __init__(self) -> None:
            self.tildes: list[float] = []

        def on_step_start(self, engine) -> None:
            if engine.epoch == stop_at_epoch:
                raise Stop

        def on_step_end(self, engine, loss: float, acc: float) -> None:
            self.tildes.append(engine.model.lam_tilde)

    model, engine, _, data = method.build(_context())
    record = Record()
    engine.callbacks.insert(0, record)  # stops before the step's draws and steps
    try:
        engine.fit(data, checkpoint=checkpoint, resume=resume)
    except Stop:
        pass
    return model, record.tildes


def test_anchor_sampling_search_resumes_exactly(tmp_path):
    method = DartsCC(epochs=3, batch_size=4, order=1, pivots="fixed", complexity="relative",
                     lambda_min=1e-2, lambda_max=1e1, lambda_sampling="anchors",
                     lambda_jitter=0.5, arch_lr=0.03)
    full, tildes = _fit_search(method, tmp_path / "full.pt")
    assert len(tildes) == 3 * 2 and all(0 <= t <= 1 for t in tildes)
    _, first = _fit_search(method, tmp_path / "cut.pt", stop_at_epoch=2)
    resumed, rest = _fit_search(method, tmp_path / "cut.pt", resume=True)
    assert first + rest == tildes  # the same λ̃ draws, before and after the cut
    for a, b in zip(full.hyper.parameters(), resumed.hyper.parameters()):
        assert torch.equal(a, b)
    lams = LambdaRange(1e-2, 1e1)
    for lam in (1e-2, 1e-1, 1e1):
        assert full.derive(lam, lams) == resumed.derive(lam, lams)


def test_warmup_epochs_train_the_weights_only(tmp_path):
    method = DartsCC(epochs=2, batch_size=4, order=1, pivots="fixed", arch_lr=0.03,
                     warmup_epochs=1)
    initial, _, _, _ = method.build(_context())
    warm, _ = _fit_search(method, tmp_path / "warm.pt", stop_at_epoch=2)
    assert all(torch.equal(a, b) for a, b in zip(initial.hyper.parameters(), warm.hyper.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(initial.supernet.parameters(),
                                                     warm.supernet.parameters()))
    full, _ = _fit_search(method, tmp_path / "full.pt")
    assert not all(torch.equal(a, b) for a, b in zip(initial.hyper.parameters(), full.hyper.parameters()))
    with pytest.raises(ConfigError, match="warmup_epochs"):
        DartsCC(epochs=2, warmup_epochs=2)


def test_arch_batch_size_sets_the_architecture_steps_batch(tmp_path):
    # 16 generated rows: 8 weight rows at batch 4 (2 steps per epoch), 8 architecture rows;
    # every training-mode forward records its batch: weight steps see 4, architecture steps 8
    # (the default: batch_size for both, the reference's)
    assert DartsCC(batch_size=4).arch_batch_size == 4
    method = DartsCC(epochs=2, batch_size=4, arch_batch_size=8, order=1, pivots="fixed",
                     warmup_epochs=1)
    model, engine, _, data = method.build(_context())
    seen: list[int] = []
    model.register_forward_pre_hook(
        lambda module, args: seen.append(int(args[0].shape[0])) if module.training else None)
    engine.fit(data, checkpoint=tmp_path / "c.pt")
    # epoch 1 (warm-up): two weight steps; epoch 2: per step an architecture then a weight step
    assert seen == [4, 4, 8, 4, 8, 4]
    with pytest.raises(ConfigError, match="arch_batch_size"):
        DartsCC(arch_batch_size=0)


# --------------------------------------------------------------------------------------------
# end to end through the CLI (slow)

ENV = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_fashion_idx(folder: Path) -> None:
    """Generated Fashion-MNIST stand-ins: 8x8 byte images whose class sets a bright row."""
    from nasforge.data.formats import write_idx

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for images, labels, n in ((IDX[0], IDX[1], 80), (IDX[2], IDX[3], 20)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 60, (n, 8, 8), dtype=np.uint8)
        x[np.arange(n), y % 8, :] = 250
        write_idx(folder / images, x)
        write_idx(folder / labels, y)


def rows(run_dir: Path) -> list[tuple]:
    con = sqlite3.connect(run_dir / "run.db")
    try:
        return con.execute("SELECT id, arch, status, metrics, seed, info FROM trials ORDER BY id").fetchall()
    finally:
        con.close()


def epochs_stored(run_dir: Path) -> int:
    if not (run_dir / "run.db").exists():
        return 0
    con = sqlite3.connect(f"file:{run_dir / 'run.db'}?mode=ro", uri=True)  # never creates it
    try:
        row = con.execute("SELECT max(step) FROM checkpoints WHERE method = 'darts_cc'").fetchone()
        return row[0] or 0
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def history(run_dir: Path) -> list:
    con = sqlite3.connect(run_dir / "run.db")
    try:
        return json.loads(con.execute("SELECT value FROM meta WHERE key = 'darts_cc'").fetchone()[0])
    finally:
        con.close()


@pytest.mark.slow
def test_darts_cc_cli_protocol_file_kill_9_resume(tmp_path):
    data = tmp_path / "fmnist"
    write_fashion_idx(data)
    args = ["search", "--method", "darts_cc", "--space", "darts", "--task", "fashion-mnist",
            "--config", str(ROOT / "configs" / "darts_cc_fmnist.yaml"), "--seed", "3",
            "-o", f"task.root={data}", "-o", "space.C=2", "-o", "method.epochs=4",
            "-o", "method.batch_size=32", "-o", "method.order=1", "-o", "method.random_baseline=2",
            "-o", "method.lambdas=[0,1]", "-o", "method.tau_decay=0.2",
            # the family from the mean of α(λ) over the last 3 epochs: killed after epoch 2 or 3,
            # the resumed run must carry the running sum over
            "-o", "method.alpha_average_epochs=3",
            "-o", "evaluator.epochs=1", "-o", "evaluator.batch_size=32",
            "-o", "evaluator.measure_latency=false", "--quiet"]

    from nasforge.testing import main_in_process

    # the run to kill is a real process; the uninterrupted run and the resume run the same CLI
    # main in this process (saves a Python and torch start-up each)
    # (the plots, a third of a run's time here, only for the uninterrupted run: they are checked
    # there, and the killed run is compared with it by its stored α history and trials)
    proc = subprocess.Popen([sys.executable, "-m", "nasforge", *args, "-o", "method.plots=false",
                             "--out", "killed"], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 1200
    while epochs_stored(tmp_path / "killed") < 2 and time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"search ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= epochs_stored(tmp_path / "killed") <= 4 and not rows(tmp_path / "killed")
    assert main_in_process("search", "--resume", str(tmp_path / "killed"), "--quiet") == 0
    assert main_in_process(*args, "--out", str(tmp_path / "full")) == 0

    full = rows(tmp_path / "full")
    roles = [json.loads(r[5])["role"] for r in full]
    assert roles == ["family", "family", "random", "random"]
    assert [json.loads(r[5])["lambda"] for r in full[:2]] == [1e-8, 1e-4]
    meta = history(tmp_path / "full")
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]
    assert meta["alpha_average_epochs"] == 3 and meta["averaged_steps"] == 3 * 2
    assert meta["history"][-1]["genotypes_avg"] == meta["derived"]
    assert (tmp_path / "full" / "plots" / "darts_cc_acc_vs_params.png").exists()
    # same α(λ) per epoch, same genotypes, same trials as the uninterrupted run
    killed = history(tmp_path / "killed")
    assert killed.pop("search_seconds") > 0 and meta.pop("search_seconds") > 0
    # CPU seconds of the resumed process's part of the search (differ between runs)
    assert killed.pop("search_cpu_seconds_this_process") > 0
    assert meta.pop("search_cpu_seconds_this_process") > 0
    assert killed == meta
    assert rows(tmp_path / "killed") == full


def test_benchmark_reuse_refuses_other_settings(tmp_path, capsys):
    # benchmarks/darts_cc.py front --reuse takes random genotypes, DARTS and GDAS from an earlier
    # front result only when made with the same sizes and training; else exit 2, one line
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_darts_cc", ROOT / "benchmarks" / "darts_cc.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = {"target": "front", "task": "digits", "C": 4, "epochs": 8, "train_epochs": 10,
            "train_batch": 64, "random": 2, "derive": "argmax", "limit": 600, "batch": 32,
            "arch_lr": 0.03}
    entry = {"seed": 0, "random": [[2350, 0.86, 0.88], [4546, 0.91, 0.94]],
             "darts": [[8190, 0.96, 0.94]], "gdas": [[7726, 0.97, 0.97]]}
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"args": args, "per_seed": [entry]}))
    ns = argparse.Namespace(**args, seeds=[0], skip=[])
    assert bench.reusable(ns, earlier) == {0: entry}
    for change, match in [({"limit": 300}, "limit = 600"), ({"seeds": [0, 1]}, "seed 1"),
                          ({"target": "x"}, "")]:
        path = earlier
        if change.get("target"):
            path = tmp_path / "missing.json"
            match = "not a readable JSON"
        with pytest.raises(SystemExit) as exit_info:
            bench.reusable(argparse.Namespace(**{**vars(ns), **change}), path)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and match in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# variance reduction: stratified / coupled λ̃ per step, iterate averaging of α(λ)


def test_stratified_draws_one_lambda_per_anchor():
    g = torch.Generator().manual_seed(0)
    for sampling in ("stratified", "coupled"):
        r = LambdaRange(1e-2, 1e1, sampling, 5, 1.0)
        for _ in range(200):
            strata = r.strata(g)
            assert len(strata) == 5
            for k, (lam, t) in enumerate(strata):  # anchor k's hat: [(k-1)/4, (k+1)/4]
                assert max(0.0, (k - 1) / 4) <= t <= min(1.0, (k + 1) / 4)
                assert lam == pytest.approx(r.value(t))
        # each step's K draws reach every anchor with 1/K of the step's weight, every step
        assert all(m == pytest.approx(0.2, abs=0.01) for m in r.anchor_mass(4000, g))
    r = LambdaRange(1e-2, 1e1, "stratified", 3, 0.0)
    assert [t for _, t in r.strata(g)] == [0.0, 0.5, 1.0]  # jitter 0: the anchors themselves


class _RowWise(torch.nn.Module):
    """A stand-in supernet without batch statistics: each row's logits depend on that row's
    input and mixing weights only, so a batch's loss is the mean of its rows' losses."""

    def __init__(self, n_edges: int, n_ops: int):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.x_map = torch.nn.Parameter(torch.randn(64, 10, generator=g))
        self.w_map = torch.nn.Parameter(torch.randn(2 * n_edges * n_ops, 10, generator=g))

    def forward(self, x, weights):
        w = torch.cat([weights["normal"], weights["reduce"]], dim=1).flatten(1)
        return x.flatten(1) @ self.x_map + w @ self.w_map


def test_stratified_and_coupled_losses_are_the_groups_losses():
    from nasforge.methods.darts_cc import group_sizes, hyperloss

    hyper = AlphaHypernet(len(PRIMITIVES), 2, anchors=5, learn_pivots=False)
    with torch.no_grad():
        for p in hyper.parameters():
            if p.requires_grad:
                p.normal_(0, 1, generator=torch.Generator().manual_seed(2))
    model = DartsCCModel(_RowWise(hyper.n_edges, len(PRIMITIVES)), hyper).train()
    model.tau, model.noise_seed = 0.7, 123
    table = {ct: torch.arange(hyper.n_edges * len(PRIMITIVES), dtype=torch.float64)
             .view(hyper.n_edges, -1) for ct in ("normal", "reduce")}
    strata = [(0.01, 0.0), (0.1, 0.3), (1.0, 0.55), (3.0, 0.8), (10.0, 1.0)]
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(7, 1, 8, 8, generator=g), torch.arange(7) % 10

    def single(lam, t, rows_x, rows_y, seed_generator):
        """The loss of ``rows`` at one λ (the reference path), Gumbel noise from the generator."""
        alphas = model.alphas(t)
        w = {ct: gumbel_weights(alphas[ct], rows_x.shape[0], model.tau, seed_generator)
             for ct in ("normal", "reduce")}
        ce = torch.nn.functional.cross_entropy(model.supernet(rows_x, w), rows_y, reduction="sum")
        return ce.detach(), (lam * expected_params(alphas, table) / 5.0).detach()

    # stratified: consecutive groups of 2, 2, 1, 1, 1 rows, one noise stream over them
    assert group_sizes(7, 5) == [2, 2, 1, 1, 1] and group_sizes(3, 5) == [1, 1, 1, 0, 0]
    model.strata = strata
    got = hyperloss(table, 5.0)(model, (x, y)).detach()
    gen, total, start = torch.Generator().manual_seed(123), 0.0, 0
    for (lam, t), n in zip(strata, group_sizes(7, 5)):
        ce, cx = single(lam, t, x[start:start + n], y[start:start + n], gen)
        total, start = total + ce / 7 + (n / 7) * cx, start + n
    assert float(got) == pytest.approx(float(total), rel=1e-6)
    # coupled: every group sees all 7 rows with the same noise (common random numbers)
    got = hyperloss(table, 5.0, coupled=True)(model, (x, y)).detach()
    total = 0.0
    for lam, t in strata:
        ce, cx = single(lam, t, x, y, torch.Generator().manual_seed(123))
        total = total + (ce / 7 + cx) / 5
    assert float(got) == pytest.approx(float(total), rel=1e-6) and not model.replicated
    # the gradient reaches every anchor in one step
    hyper.zero_grad()
    hyperloss(table, 5.0, coupled=True)(model, (x, y)).backward()
    grad = hyper.cells["normal"][0].anchors.grad
    assert all(float(grad[k].abs().sum()) > 0 for k in range(5))
    # no strata: the reference path, unchanged
    model.strata, model.lam, model.lam_tilde = None, 1.0, 0.55
    ce, cx = single(1.0, 0.55, x, y, torch.Generator().manual_seed(123))
    assert float(hyperloss(table, 5.0)(model, (x, y)).detach()) == pytest.approx(float(ce / 7 + cx),
                                                                        rel=1e-6)


def test_alpha_average_is_the_mean_of_the_iterates_and_resumes_exactly(tmp_path):
    from nasforge.methods.darts_cc import LambdaSchedule
    from nasforge.training import Callback

    class Iterates(Callback):  # after LambdaSchedule: the hypernetwork after every step
        def __init__(self) -> None:
            self.seen: list[tuple[int, list[torch.Tensor]]] = []

        def on_step_end(self, engine, loss: float, acc: float) -> None:
            self.seen.append((engine.epoch, [p.detach().clone()
                                             for p in engine.model.hyper.parameters()]))

    method = DartsCC(epochs=4, batch_size=4, order=1, pivots="fixed", complexity="relative",
                     lambda_min=1e-2, lambda_max=1e1, lambda_sampling="coupled", arch_lr=0.03,
                     warmup_epochs=1, alpha_average_epochs=2)
    model, engine, _, data = method.build(_context())
    iterates = Iterates()
    engine.callbacks.append(iterates)
    engine.fit(data, checkpoint=tmp_path / "full.pt")
    schedule = next(cb for cb in engine.callbacks if isinstance(cb, LambdaSchedule))
    tail = [ps for epoch, ps in iterates.seen if epoch >= 3]  # the last 2 of 4 epochs
    assert schedule.avg_count == len(tail) == 4
    averaged = schedule.averaged(model.hyper)
    for i, p in enumerate(averaged.parameters()):
        mean = torch.stack([ps[i].double() for ps in tail]).mean(0).float()
        assert torch.allclose(p, mean, atol=1e-7)
    assert not all(torch.equal(a, b) for a, b in zip(averaged.parameters(),
                                                     model.hyper.parameters()))
    # the history holds the averaged family from the first averaged epoch on
    hist = engine.state["history"]
    assert ["genotypes_avg" in h for h in hist] == [False, False, True, True]
    assert hist[-1]["averaged_steps"] == 4
    # killed after epoch 3's checkpoint (inside the averaging window), resumed: the same mean
    class Stop(Exception):
        pass

    class Die(Callback):
        def __init__(self, at: int | None) -> None:
            self.at = at

        def on_step_start(self, engine) -> None:
            if engine.epoch == self.at:
                raise Stop

    cut, engine_cut, _, data2 = method.build(_context())
    engine_cut.callbacks.insert(0, Die(4))
    with pytest.raises(Stop):
        engine_cut.fit(data2, checkpoint=tmp_path / "cut.pt")
    model2, engine2, _, data2 = method.build(_context())
    engine2.callbacks.insert(0, Die(None))
    engine2.fit(data2, checkpoint=tmp_path / "cut.pt", resume=True)
    schedule2 = next(cb for cb in engine2.callbacks if isinstance(cb, LambdaSchedule))
    assert schedule2.avg_count == 4
    for a, b in zip(schedule2.averaged(model2.hyper).parameters(), averaged.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(model2.hyper.parameters(), model.hyper.parameters()):
        assert torch.equal(a, b)


def test_variance_reduction_options_are_checked():
    for bad, match in [({"alpha_average_epochs": -1}, "alpha_average_epochs"),
                       ({"alpha_average_epochs": 1.5}, "alpha_average_epochs"),
                       ({"epochs": 5, "warmup_epochs": 2, "alpha_average_epochs": 4},
                        "at most epochs - warmup_epochs = 3"),
                       ({"lambda_sampling": "stratified", "lambda_classifier": True},
                        "lambda_classifier"),
                       ({"lambda_sampling": "pairs"}, "'stratified' or 'coupled'")]:
        with pytest.raises(ConfigError, match=match):
            registry.create("methods", "darts_cc", **bad)
    ref = registry.create("methods", "darts_cc")
    assert (ref.alpha_average_epochs, ref.lambda_sampling) == (0, "uniform")  # off by default
