"""Tabular evaluator and the synthetic NB201 table generator."""

import csv
import pickle
import time

import numpy as np
import pytest

from nasforge import registry
from nasforge.bench_tables import COLUMNS, connected, make_nb201_table, nb201_op_indices
from nasforge.core import Objective
from nasforge.errors import ConfigError, DataError
from nasforge.evaluators.table import TableEvaluator
from nasforge.spaces.nb201 import OPS, NB201Arch, NB201Space, all_cells

EXAMPLE = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
           "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return make_nb201_table(tmp_path_factory.mktemp("nb201") / "nb201.csv", seed=0)


@pytest.fixture(scope="module")
def rows(table):
    with open(table, newline="") as f:
        return {r["arch"]: r for r in csv.DictReader(f)}


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def full_evaluator(table, **kw):
    return registry.create("evaluators", "table", path=str(table), search_metric="cifar10-val",
                           report_metric="cifar10-test", cost_column="train_seconds", **kw)


# -- the generator -------------------------------------------------------------------------------


def test_generated_table_has_every_cell(table, rows):
    assert list(rows[EXAMPLE]) == list(COLUMNS)
    assert set(rows) == {str(c) for c in all_cells()}
    again = make_nb201_table(table.with_name("again.csv"), seed=0)
    assert again.read_text() == table.read_text()
    other = make_nb201_table(table.with_name("other.csv"), seed=1)
    assert other.read_text() != table.read_text()


def test_generated_table_is_structured(rows):
    idx = nb201_op_indices()
    val = np.array([float(rows[str(c)]["cifar10-val"]) for c in all_cells()])
    ok = connected(idx)
    assert val[~ok].max() < 15 < 50 < val[ok].min()  # disconnected cells are near chance
    assert 90 < val.max() <= 100
    conv3, none = OPS.index("nor_conv_3x3"), OPS.index("none")
    for edge in range(6):  # on every edge a 3x3 conv beats 'none' on average
        assert val[ok & (idx[:, edge] == conv3)].mean() > val[ok & (idx[:, edge] == none)].mean()
    test = np.array([float(rows[str(c)]["cifar10-test"]) for c in all_cells()])
    assert np.corrcoef(val, test)[0, 1] > 0.95
    seconds = np.array([float(rows[str(c)]["train_seconds"]) for c in all_cells()])
    assert seconds[(idx == conv3).sum(1) == 6].mean() > seconds[(idx == conv3).sum(1) == 0].mean()


def test_random_kind_has_no_structure(tmp_path):
    path = make_nb201_table(tmp_path / "r.csv", seed=0, kind="random", noise=0.0)
    with open(path, newline="") as f:
        val = {r["arch"]: float(r["cifar10-val"]) for r in csv.DictReader(f)}
    ok = connected(nb201_op_indices())
    values = np.array([val[str(c)] for c in all_cells()])
    assert values[~ok].mean() > 30  # chance-level scores are scattered over all cells
    with pytest.raises(ConfigError, match="kind"):
        make_nb201_table(tmp_path / "x.csv", seed=0, kind="smooth")  # type: ignore[arg-type]


# -- lookups -------------------------------------------------------------------------------------


def test_lookup_returns_table_values(table, rows):
    ev = full_evaluator(table)
    arch = NB201Space().parse(EXAMPLE)
    res = ev.evaluate(arch, NB201Space(), None, seed=0)
    row = rows[EXAMPLE]
    assert res.status == "ok"
    assert res.metrics["cifar10-val"] == res.metrics["search_metric"] == float(row["cifar10-val"])
    assert res.metrics["cifar10-test"] == res.metrics["report_metric"] == float(row["cifar10-test"])
    assert res.cost == {"train_seconds": float(row["train_seconds"]),
                        "simulated_seconds": float(row["train_seconds"])}
    assert Objective("cifar10-val").value(res) == float(row["cifar10-val"])
    assert ev.lookup(EXAMPLE)["cifar10-test"] == float(row["cifar10-test"])
    assert len(ev) == 15_625
    values = [float(r["cifar10-val"]) for r in rows.values()]
    assert ev.optimum("cifar10-val") == ev.optimum("search_metric") == max(values)
    assert ev.optimum("train_seconds", "min") == min(float(r["train_seconds"]) for r in rows.values())
    with pytest.raises(ConfigError, match="no loaded column 'acc'"):
        ev.optimum("acc")


def test_lookup_is_fast(table):
    ev = TableEvaluator(path=str(table), search_metric="cifar10-val")
    space = NB201Space()
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(10_000)]
    start = time.perf_counter()
    for i, arch in enumerate(archs):
        ev.evaluate(arch, space, None, seed=i)
    per_lookup = (time.perf_counter() - start) / len(archs)
    assert per_lookup < 50e-6, f"{per_lookup * 1e6:.1f} us per lookup"


def test_noise_is_seeded_by_the_trial_seed(table, rows):
    ev = full_evaluator(table, noise=0.5)
    space = NB201Space()
    arch = space.parse(EXAMPLE)
    a = ev.evaluate(arch, space, None, seed=7).metrics
    b = ev.evaluate(arch, space, None, seed=7).metrics
    c = ev.evaluate(arch, space, None, seed=8).metrics
    assert a == b and a["cifar10-val"] != c["cifar10-val"]
    assert a["cifar10-test"] == float(rows[EXAMPLE]["cifar10-test"])  # report metric untouched
    clean = float(rows[EXAMPLE]["cifar10-val"])
    noisy = [ev.evaluate(arch, space, None, seed=s).metrics["cifar10-val"] - clean for s in range(400)]
    assert abs(np.mean(noisy)) < 0.1 and 0.4 < np.std(noisy) < 0.6
    other = space.parse(EXAMPLE.replace("skip_connect~2", "none~2"))  # same seed, other arch
    shift = (ev.evaluate(other, space, None, seed=7).metrics["cifar10-val"]
             - float(rows[str(other)]["cifar10-val"]))
    assert shift != pytest.approx(a["cifar10-val"] - clean)


def test_missing_arch_fails_the_trial(tmp_path):
    path = write(tmp_path / "t.csv", ["arch,acc", f"{EXAMPLE},0.9"])
    ev = TableEvaluator(path=path, search_metric="acc")
    other = NB201Arch(("none",) * 6)
    res = ev.evaluate(other, NB201Space(), None, seed=0)
    assert res.status == "failed" and str(other) in res.reason
    assert Objective("acc").value(res) is None


def test_empty_value_fails_the_trial(tmp_path):
    path = write(tmp_path / "t.csv", ["arch,acc,test", f"{EXAMPLE},,0.8"])
    res = TableEvaluator(path=path, search_metric="acc", report_metric="test").evaluate(
        NB201Space().parse(EXAMPLE), NB201Space(), None, seed=0)
    assert res.status == "failed" and "'acc'" in res.reason


def test_pickle_is_light_and_reloads(table):
    ev = full_evaluator(table, space="nb201")
    blob = pickle.dumps(ev)
    assert len(blob) < 2_000  # the index is not shipped to workers
    clone = pickle.loads(blob)
    arch = NB201Space().parse(EXAMPLE)
    assert clone.evaluate(arch, None, None, seed=3).metrics == ev.evaluate(arch, None, None, seed=3).metrics


def test_parquet_is_read(tmp_path, table):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.read_csv(table).head(50)
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    ev = TableEvaluator(path=str(path), search_metric="cifar10-val", space="nb201")
    res = ev.evaluate(NB201Space().parse(frame["arch"][3]), None, None, seed=0)
    assert res.metrics["cifar10-val"] == pytest.approx(frame["cifar10-val"][3])


# -- bad input, refused at construction --------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        TableEvaluator(path=str(tmp_path / "nope.csv"), search_metric="acc")


def test_no_arch_column(tmp_path):
    path = write(tmp_path / "t.csv", ["genotype,acc", f"{EXAMPLE},0.9"])
    with pytest.raises(DataError, match="no 'arch' column.*genotype, acc"):
        TableEvaluator(path=path, search_metric="acc")


@pytest.mark.parametrize("option", ["search_metric", "report_metric", "cost_column"])
def test_missing_metric_column_lists_the_columns(tmp_path, option):
    path = write(tmp_path / "t.csv", ["arch,val_acc,test_acc,secs", f"{EXAMPLE},0.9,0.8,10"])
    kw = {"search_metric": "val_acc", option: "accuracy"}
    with pytest.raises(ConfigError, match=f"{option}='accuracy'.*available columns: val_acc, test_acc, secs"):
        TableEvaluator(path=path, **kw)


def test_non_numeric_value_names_row_and_value(tmp_path):
    other = str(NB201Arch(("none",) * 6))
    path = write(tmp_path / "t.csv", ["arch,acc", f"{EXAMPLE},0.9", f"{other},high"])
    with pytest.raises(DataError, match=r"data row 2 .*'acc' has non-numeric value 'high'"):
        TableEvaluator(path=path, search_metric="acc")


def test_bad_arch_text_names_the_first_bad_row(tmp_path):
    bad = EXAMPLE.replace("nor_conv_1x1", "x").replace("avg_pool_3x3~1", "conv_7x7~1")
    path = write(tmp_path / "t.csv", ["arch,acc", f"{EXAMPLE},0.9", f"{bad},0.8", "|x~0|,0.7"])
    ev = TableEvaluator(path=path, search_metric="acc")  # no space given: not checked yet
    with pytest.raises(DataError, match=r"data row 2: arch .*conv_7x7.*not a valid nb201"):
        ev.validate(NB201Space())
    with pytest.raises(DataError, match="data row 2"):
        TableEvaluator(path=path, search_metric="acc", space="nb201")


def test_duplicate_and_ragged_rows(tmp_path):
    path = write(tmp_path / "d.csv", ["arch,acc", f"{EXAMPLE},0.9", f"{EXAMPLE},0.8"])
    with pytest.raises(DataError, match="data rows 1 and 2"):
        TableEvaluator(path=path, search_metric="acc")
    path = write(tmp_path / "r.csv", ["arch,acc", f"{EXAMPLE},0.9,extra"])
    with pytest.raises(DataError, match="data row 1: 3 fields"):
        TableEvaluator(path=path, search_metric="acc")
    path = write(tmp_path / "e.csv", ["arch,acc"])
    with pytest.raises(DataError, match="no rows"):
        TableEvaluator(path=path, search_metric="acc")


def test_bad_options(table):
    with pytest.raises(ConfigError, match="noise"):
        TableEvaluator(path=str(table), search_metric="cifar10-val", noise=-1.0)
    with pytest.raises(ConfigError, match="unknown space"):
        TableEvaluator(path=str(table), search_metric="cifar10-val", space="nb101")
