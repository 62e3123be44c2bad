"""Multi-objective runs end to end through the CLI (on a generated NB201 table, for speed), and
the exact NB201 parameter counts the table search uses. The CLI's ``main`` runs in this process
(``main_in_process``): a subprocess per command would add only a Python and torch start-up."""

from __future__ import annotations

import json
import sqlite3

import pytest

from nasforge.testing import main_in_process

from nasforge.bench_tables import add_params_column, make_nb201_table, nb201_params
from nasforge.pareto import dominates


def nasforge(capsys, *args: str, check: bool = True) -> tuple[int, str, str]:
    """The CLI in this process: exit status, stdout, stderr (status 0 required with ``check``)."""
    capsys.readouterr()
    code = main_in_process(*args)
    out, err = capsys.readouterr()
    assert code == 0 or not check, f"nasforge {' '.join(args)} exited {code}:\n{out}\n{err}"
    return code, out, err


ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
MIXED = "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"


def test_nb201_params_match_the_benchmark_and_built_networks():
    import torch

    from nasforge.core import Task
    from nasforge.cost import count_params
    from nasforge.spaces.nb201 import NB201Space

    counts = nb201_params([ALL_3X3, NONE, MIXED])
    # NAS-Bench-201's CIFAR-10 networks range from 0.073 to 1.53 million parameters
    assert counts[NONE] == 73306 and counts[ALL_3X3] == 1531546
    empty = torch.zeros(0)
    task = Task("t", "image", (3, 32, 32), 10, (empty, empty), (empty, empty), (empty, empty))
    space = NB201Space()
    assert counts[MIXED] == count_params(space.build(space.parse(MIXED), task))


@pytest.mark.slow
def test_pareto_search_writes_front_plots_and_refuses_unknown_metrics(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a generated table (structured accuracies) with exact parameter counts
    table = add_params_column(make_nb201_table(tmp_path / "t.csv", seed=0), tmp_path / "tp.csv")
    common = ["--space", "nb201", "--evaluator", f"table:{table}", "-o",
              "evaluator.search_metric=cifar10-val", "-o", "evaluator.report_metric=cifar10-test",
              "-o", "evaluator.cost_columns=[params]", "--quiet"]
    nasforge(capsys, "search", *common, "--strategy", "evolution", "--objective", "max:cifar10-val",
             "--objective", "min:params", "--constraint", "params<=1200000", "--budget", "20",
             "-o", "strategy.population_size=8", "--out", "run")
    run = tmp_path / "run"
    for name in ("plots/pareto.png", "plots/hypervolume.png", "best/front.json", "best/arch.txt"):
        assert (run / name).is_file(), name
    front = json.loads((run / "best" / "front.json").read_text())
    members = front["members"]
    assert members and front["objectives"] == ["max:cifar10-val", "min:params"]
    pts = [(m["objectives"]["cifar10-val"], -m["objectives"]["params"]) for m in members]
    assert not any(dominates(p, q) for p in pts for q in pts)
    assert all(m["objectives"]["params"] <= 1200000 for m in members)
    for m in members:
        assert (run / "best" / m["dir"] / "arch.txt").read_text().strip() == m["arch"]
    chosen = max(members, key=lambda m: (m["objectives"]["cifar10-val"], -m["objectives"]["params"]))
    assert front["chosen"] == chosen["trial"]
    assert (run / "best" / "arch.txt").read_text().strip() == chosen["arch"]
    # every trial is recorded, including those that break the constraint
    con = sqlite3.connect(run / "run.db")
    assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 20
    con.close()
    summary = json.loads(nasforge(capsys, "trials", "run", "--pareto", "--json")[1])
    assert sorted(m["trial"] for m in summary["front"]) == sorted(m["trial"] for m in members)
    hv = summary["hypervolume"]
    assert 0 < hv["normalised"] <= 1 and set(hv["reference"]) == {"cifar10-val", "params"}
    header = (run / "trials.csv").read_text().splitlines()[0].split(",")
    assert "pareto" in header and "feasible" in header
    # a misspelt metric is refused before anything is created
    code, _, err = nasforge(capsys, "search", *common, "--objective", "max:cifar10-vall",
                            "--out", "bad", check=False)
    assert code == 2 and "'cifar10-vall' is not reported" in err
    assert "Traceback" not in err and not (tmp_path / "bad").exists()
    code, _, err = nasforge(capsys, "search", *common, "--constraint", "params=<5", "--out", "bad",
                            check=False)
    assert code == 2 and "params=<5" in err and "Traceback" not in err
