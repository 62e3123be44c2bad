"""The LSTM predictor, proxy ranking with bootstrap intervals, and predictors-eval on a run.

tests/data/nb201_slice.csv: 300 real NAS-Bench-201 rows (see tests/test_predictors.py). The
chain targets and the planted nb201 target are generated; the run is a real (tiny) search on
digits.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nasforge import registry
from nasforge.errors import NasforgeError
from nasforge.predictors import evaluate as ev
from nasforge.predictors import kendall_tau
from nasforge.testing import main_in_process

SLICE = Path(__file__).parent / "data" / "nb201_slice.csv"


@pytest.fixture(scope="module")
def nb201():
    space = registry.create("spaces", "nb201")
    df = pd.read_csv(SLICE)
    return space, [space.parse(s) for s in df["arch"]], df["cifar100-val"].to_numpy()


def test_lstm_learns_planted_function(nb201):
    space, archs, _ = nb201
    w = np.random.default_rng(123).normal(size=space.encoding_size)
    y = np.array([space.encode(a) @ w for a in archs])
    # the planted function reads the raw encoding, so equivalent cells differ: canonical off
    p = registry.create("predictors", "lstm", seed=0, members=1, epochs=40, canonical=False)
    p.fit(archs[:120], y[:120], space)
    tau = kendall_tau(p.predict(archs[150:]), y[150:])
    assert tau > 0.4, tau  # an untrained or shuffled model gives about 0


def test_lstm_variable_length_sequences_and_std():
    # chain architectures have 2 to 7 decisions; target: how many convolutions (generated)
    space = registry.create("spaces", "chain", min_conv=1, max_conv=5)
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(120)))
    y = np.array([sum(str(d).startswith("('C'") for d in space.to_decisions(a)) for a in archs],
                 dtype=float)
    assert len(set(len(space.to_decisions(a)) for a in archs)) > 2
    p = registry.create("predictors", "lstm", seed=1, members=2, epochs=40)
    p.fit(archs[:80], y[:80], space)
    mean, std = p.predict(archs[80:], return_std=True)
    assert kendall_tau(mean, y[80:]) > 0.5
    assert std.shape == mean.shape and (std > 0).all()


def test_lstm_same_seed_same_predictions(nb201):
    space, archs, y = nb201
    a = registry.create("predictors", "lstm", seed=3, members=1, epochs=3).fit(archs[:40], y[:40],
                                                                                space)
    b = registry.create("predictors", "lstm", seed=3, members=1, epochs=3).fit(archs[:40], y[:40],
                                                                                space)
    c = registry.create("predictors", "lstm", seed=4, members=1, epochs=3).fit(archs[:40], y[:40],
                                                                                space)
    assert np.array_equal(a.predict(archs[40:60]), b.predict(archs[40:60]))
    assert not np.array_equal(a.predict(archs[40:60]), c.predict(archs[40:60]))
    with pytest.raises(NasforgeError, match="embed"):
        registry.create("predictors", "lstm", embed=0)


def test_rank_scores_bootstrap():
    y = np.arange(20.0)
    perfect = ev.rank_scores(y * 3 + 1, y, resamples=50)
    for key in ("tau", "tau_lo", "tau_hi"):
        assert perfect[key] == pytest.approx(1.0)
    assert perfect["rho"] == pytest.approx(1.0) and perfect["n"] == 20
    noise = np.random.default_rng(0).normal(size=20)
    r = ev.rank_scores(y + 8 * noise, y, resamples=100)
    assert r["tau_lo"] < r["tau"] < r["tau_hi"] and r["tau_hi"] - r["tau_lo"] > 0.1
    assert ev.rank_scores(y + 8 * noise, y, resamples=100) == r  # seeded: same intervals
    with pytest.raises(NasforgeError, match="equal counts"):
        ev.rank_scores([1, 2], [1, 2])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A finished 6-trial random search on digits (real data, 1 epoch each, small networks)."""
    from nasforge.config import load_config
    from nasforge.run.rundir import Run

    out = tmp_path_factory.mktemp("runs") / "r"
    cfg = load_config(None, {"budget": 6, "seed": 2,
                             "evaluator_options": {"epochs": 1, "measure_latency": False},
                             "space_options": {"features": [8, 16], "min_conv": 1,
                                               "max_conv": 2}})
    with Run.create(cfg, out) as run:
        run.search()
    return out


def _cli(args):
    return main_in_process(*args)


@pytest.mark.slow
def test_predictors_eval_on_run_with_proxies(digits_run, tmp_path, capsys):
    from nasforge.evaluators.zero_cost import score_architecture
    from nasforge.run.rundir import open_rows

    out = tmp_path / "cv"
    rc = _cli(["predictors-eval", "--run", str(digits_run), "--metric", "val_acc",
               "--predictors", "svr,params", "--folds", "2", "--seeds", "1",
               "--proxies", "all", "--bootstrap", "50", "--proxy-batch", "16", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = pd.read_csv(out / "rows.csv")
    assert set(rows["predictor"]) == {"svr", "params"} and len(rows) == 4  # 2 folds each
    px = pd.read_csv(out / "proxies.csv").set_index("proxy")
    assert list(px.index) == ["grad_norm", "snip", "synflow", "jacob_cov", "params", "flops"]
    assert (px["n"] == 6).all() and px["tau"].between(-1, 1).all()
    assert (px["tau_lo"] <= px["tau_hi"]).all()
    # the proxies score each trial's own initialisation: recompute one trial's by hand
    trials, cfg = open_rows(digits_run)
    from nasforge.data import load_task
    from nasforge.run.rundir import build_space

    task = load_task(cfg["task"], seed=cfg["seed"])
    space = build_space(cfg["space"], cfg["space_options"], task)
    ok = [t for t in trials if t["status"] == "ok"]
    y = [t["metrics"]["val_acc"] for t in ok]
    snips = [score_architecture(space, space.parse(t["arch"]), task, seed=t["seed"],
                                proxies=["snip"], batch_size=16)["snip"][0] for t in ok]
    assert px.loc["snip", "tau"] == pytest.approx(kendall_tau(snips, y))
    params = [t["cost"]["params"] for t in ok]
    assert px.loc["params", "tau"] == pytest.approx(kendall_tau(params, y))


@pytest.mark.slow
def test_predictors_eval_time_targets_and_refusals(digits_run, tmp_path, capsys):
    for metric in ("train_seconds", "wall_seconds"):
        out = tmp_path / metric
        assert _cli(["predictors-eval", "--run", str(digits_run), "--metric", metric,
                     "--predictors", "svr", "--folds", "2", "--seeds", "1",
                     "--out", str(out)]) == 0, capsys.readouterr().err
        rows = pd.read_csv(out / "rows.csv")
        assert len(rows) == 2 and rows["tau"].between(-1, 1).all()
    capsys.readouterr()
    assert _cli(["predictors-eval", "--run", str(digits_run), "--metric", "val_acc",
                 "--proxies", "fisher", "--out", str(tmp_path / "x")]) == 2
    assert "'fisher'" in capsys.readouterr().err
    assert _cli(["predictors-eval", "--table", str(SLICE), "--proxies", "snip",
                 "--out", str(tmp_path / "y")]) == 2
    assert "--run" in capsys.readouterr().err
    assert _cli(["predictors-eval", "--run", str(digits_run), "--metric", "nope",
                 "--predictors", "svr", "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "wall_seconds" in err
