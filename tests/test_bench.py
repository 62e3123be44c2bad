"""`nasforge bench` on a generated NB201 table: outputs, reproducibility, bad input."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from nasforge.bench import BenchConfig, best_so_far, run_bench
from nasforge.bench_tables import make_nb201_table, nb201_op_indices
from nasforge.spaces.nb201 import OPS, cell_text
from nasforge.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    # a generated table: metrics depend on the cell's operations, plus noise
    return make_nb201_table(tmp_path_factory.mktemp("tables") / "nb201.csv", seed=0)


def config(table, **kw):
    base = dict(space="nb201", evaluator=f"table:{table}", search_metric="cifar10-val",
                report_metric="cifar10-test", strategies=["random", "evolution"], seeds=3,
                budget=30, workers=1)
    base.update(kw)
    return BenchConfig(**base)


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_bench_writes_summary_curves_and_plot(table, tmp_path):
    res = run_bench(config(table), tmp_path / "a")
    summary = read(tmp_path / "a" / "summary.csv")
    assert list(summary[0]) == ["strategy", "seed", "evaluations", "best_search_metric", "best_report_metric"]
    assert len(summary) == 6 and {r["strategy"] for r in summary} == {"random", "evolution"}
    assert all(int(r["evaluations"]) == 30 for r in summary)
    curves = read(tmp_path / "a" / "curves.csv")
    assert len(curves) == 6 * 30
    run0 = [float(r["best_search_metric"]) for r in curves if r["strategy"] == "random" and r["seed"] == "0"]
    assert run0 == sorted(run0)  # best so far never decreases
    assert (tmp_path / "a" / "regret.png").stat().st_size > 1000
    assert {row["strategy"] for row in res["table"]} == {"random", "evolution"}
    # regret is measured against the table's known optimum, read here from the file itself
    rows = read(table)
    assert res["optimum"] == max(float(r["cifar10-val"]) for r in rows)
    # reproducible row by row from the seeds, also with parallel workers
    run_bench(config(table, workers=2), tmp_path / "b")
    assert read(tmp_path / "b" / "summary.csv") == summary


def test_local_search_finds_planted_optimum(tmp_path):
    # a planted table over every NB201 cell: the search metric counts 3x3 conv edges, so the
    # all-conv cell is the unique optimum (6) and every other cell has a better neighbour; local
    # search climbs there in at most 1 + 6 * 24 evaluations. The report column tags each cell.
    path = tmp_path / "planted.csv"
    conv = OPS.index("nor_conv_3x3")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "score", "tag"])
        for i, idx in enumerate(nb201_op_indices()):
            w.writerow([cell_text([OPS[k] for k in idx]), int((idx == conv).sum()), i])
    best_tag = max(i for i, idx in enumerate(nb201_op_indices()) if (idx == conv).all())
    cfg = BenchConfig(space="nb201", evaluator=f"table:{path}", search_metric="score",
                      report_metric="tag", strategies=["local"], seeds=3, budget=145, workers=1)
    res = run_bench(cfg, tmp_path / "out")
    assert res["optimum"] == 6.0
    for row in read(tmp_path / "out" / "summary.csv"):
        assert float(row["best_search_metric"]) == 6.0
        assert int(float(row["best_report_metric"])) == best_tag  # the report of the found cell
    final = [r for r in read(tmp_path / "out" / "curves.csv") if r["evaluation"] == "145"]
    assert len(final) == 3 and all(float(r["best_search_metric"]) == 6.0 for r in final)


def test_best_so_far_tracks_report_of_best():
    curve, report = best_so_far([0.5, None, 0.7, 0.6], [0.4, None, 0.65, 0.9], "max")
    assert curve == [0.5, 0.5, 0.7, 0.7] and report == [0.4, 0.4, 0.65, 0.65]


def test_cost_budget_in_simulated_seconds(table, tmp_path):
    run_bench(config(table, budget=None, cost_budget=20_000.0, cost_column="train_seconds",
                     strategies=["random"], seeds=1), tmp_path / "c")
    spent = [float(r["simulated_seconds"]) for r in read(tmp_path / "c" / "curves.csv")]
    assert spent[-2] < 20_000.0 <= spent[-1]
    # a cost budget without a cost column cannot end: refused instead of running forever
    with pytest.raises(Exception, match="cost"):
        run_bench(config(table, budget=None, cost_budget=100.0, strategies=["random"], seeds=1,
                         workers=1), tmp_path / "e")


@pytest.mark.parametrize("kw, error, match", [
    ({"strategies": ["random", "genetic"]}, ConfigError, "unknown strategy 'genetic'"),
    ({"search_metric": "imagenet-val"}, Exception, "imagenet-val"),
    ({"seeds": 0}, ConfigError, "seeds"),
    ({"strategies": []}, ConfigError, "empty"),
])
def test_bad_input_refused_before_work(table, tmp_path, kw, error, match):
    with pytest.raises(error, match=match):
        run_bench(config(table, **kw), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_bad_tables_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("cell,acc\nx,1\n")
    with pytest.raises((ConfigError, DataError), match="arch"):
        run_bench(config(bad), tmp_path / "y")
    unparsable = tmp_path / "unparsable.csv"
    unparsable.write_text("arch,cifar10-val,cifar10-test\n|nor_conv_3x3~0|+|bogus~0|,1,1\n")
    with pytest.raises((ConfigError, DataError), match="row"):
        run_bench(config(unparsable), tmp_path / "z")


def test_existing_results_not_overwritten(table, tmp_path):
    run_bench(config(table, strategies=["random"], seeds=1, budget=5), tmp_path / "d")
    before = (tmp_path / "d" / "summary.csv").read_text()
    with pytest.raises(ConfigError, match="already holds"):
        run_bench(config(table, strategies=["random"], seeds=2, budget=5), tmp_path / "d")
    assert (tmp_path / "d" / "summary.csv").read_text() == before


@pytest.mark.slow
def test_bench_cli(table, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nasforge", "bench", "--space", "nb201",
                           "--evaluator", f"table:{table}", "--search-metric", "cifar10-val",
                           "--report-metric", "cifar10-test", "--strategies", "random,local",
                           "--budget", "10", "--seeds", "2", "--workers", "1", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "random" in proc.stdout and "local" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "nasforge", "bench", "--space", "nb201",
                          "--evaluator", f"table:{table}", "--search-metric", "nope",
                          "--strategies", "random", "--out", str(tmp_path / "p")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_training_evaluator_needs_a_task(tmp_path):
    # digits (shipped with scikit-learn), a narrow chain space, one epoch: a real training bench
    cfg = BenchConfig(space="chain", evaluator="train", search_metric="val_acc",
                      report_metric="test_acc", strategies=["random"], seeds=2, budget=2,
                      workers=1, space_options={"features": [16], "max_conv": 3},
                      evaluator_options={"epochs": 1, "measure_latency": False})
    with pytest.raises(ConfigError, match="needs a task.*--task"):
        run_bench(cfg, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    cfg.task = "digits"
    res = run_bench(cfg, tmp_path / "digits")
    summary = read(tmp_path / "digits" / "summary.csv")
    assert [int(r["evaluations"]) for r in summary] == [2, 2]
    for row in res["table"]:  # every trial trained: finite accuracies well above chance (0.1)
        assert 0.3 < row["search_mean"] <= 1.0 and 0.3 < row["report_mean"] <= 1.0


def test_repeats_reuse_evaluates_fewer_times_on_a_table(table, tmp_path, monkeypatch, capsys):
    # local search on the NB201 table proposes cells it already had (equal canonical_key):
    # with reuse those trials take the earlier result and the table is read fewer times; every
    # trial still counts towards the budget
    from nasforge.evaluators.table import TableEvaluator
    from nasforge.testing import main_in_process

    calls = []
    lookup = TableEvaluator.evaluate
    monkeypatch.setattr(TableEvaluator, "evaluate",
                        lambda self, *a, **k: calls.append(1) or lookup(self, *a, **k))
    counts, out = {}, {}
    for repeats in ("evaluate", "reuse"):
        calls.clear()
        res = run_bench(config(table, strategies=["local"], seeds=2, budget=40, repeats=repeats),
                        tmp_path / repeats)
        counts[repeats] = len(calls)
        out[repeats] = res["summary"]
    assert counts["evaluate"] == 80 and [r["evaluations"] for r in out["reuse"]] == [40, 40]
    reused = [r["reused"] for r in out["reuse"]]
    assert min(reused) > 0 and counts["reuse"] == 80 - sum(reused)
    assert "reused" not in out["evaluate"][0]  # the default's summary.csv is unchanged
    assert list(read(tmp_path / "reuse" / "summary.csv")[0])[-1] == "reused"
    assert len(read(tmp_path / "reuse" / "curves.csv")) == 80
    # the CLI: --repeats passed to each search, and the same message as `nasforge search`
    args = ["bench", "--space", "nb201", "--evaluator", f"table:{table}", "--search-metric",
            "cifar10-val", "--strategies", "local", "--budget", "40", "--seeds", "1",
            "--workers", "1"]
    capsys.readouterr()
    assert main_in_process(*args, "--repeats", "reuse", "--out", str(tmp_path / "cli")) == 0
    assert (f"repeats reuse: {reused[0]} of 40 trials took an earlier result"
            in capsys.readouterr().out.replace("\n", " "))
    assert read(tmp_path / "cli" / "summary.csv")[0]["reused"] == str(reused[0])
    assert main_in_process(*args, "--repeats", "again", "--out", str(tmp_path / "bad")) == 2
    err = capsys.readouterr().err
    assert "repeats = 'again'; expected one of evaluate, reuse (evaluate: train a repeated" in \
        err.replace("\n", " ") and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match=r"^repeats = 'Reuse'; expected one of evaluate, reuse"):
        run_bench(config(table, repeats="Reuse"), tmp_path / "bad")
