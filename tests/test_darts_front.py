"""DARTS / GDAS warm-up epochs (``warmup_epochs``), and benchmarks/darts_cc.py's front: Pareto
dominance against the random genotypes (validation and test), ``--rerun`` of DARTS / GDAS with the
random genotypes and the DARTS-CC family kept, and its input checks."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

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

ROOT = Path(__file__).resolve().parents[1]
OPS = ["max_pool_3x3", "skip_connect", "sep_conv_3x3"]


def benchmark_script(name: str):
    """A script of benchmarks/ imported as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_module():
    return benchmark_script("darts_cc")


@pytest.fixture(scope="module")
def digits():
    # digits cut to 48 training and 32 validation rows, so a search takes moments
    task = load_task("digits")
    return dataclasses.replace(task, train=(task.train[0][:48], task.train[1][:48]),
                               val=(task.val[0][:32], task.val[1][:32]))


def context(tmp_path, task):
    return MethodContext(task=task, space=DartsSpace(C=4, layers=3, nodes=2, ops=OPS),
                         evaluator=TrainEvaluator(epochs=1, measure_latency=False),
                         objective=Objective("val_acc"), seed=1, store=Store(tmp_path / "run.db"),
                         budget=Budget(trials=1), evaluator_name="train",
                         evaluator_options={"epochs": 1, "measure_latency": False},
                         work_dir=tmp_path / "method")


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_warmup_epochs_leave_alpha_at_its_initial_value(tmp_path, digits, name):
    ctx = context(tmp_path, digits)
    method = registry.create("methods", name, epochs=3, warmup_epochs=2, batch_size=16,
                             supernet_val=False, plots=False)
    initial = {t: torch.softmax(a.detach(), -1)
               for t, a in method.build(ctx).alphas.as_dict().items()}
    run_method(method, ctx)
    history = json.loads((ctx.work_dir / f"{name}_alphas.json").read_text())["history"]
    for entry in history[:2]:  # the two warm-up epochs: no architecture step, no arch loss
        assert entry["arch_loss"] is None
        for t in ("normal", "reduce"):
            assert torch.equal(torch.tensor(entry[t]), initial[t].float()) or \
                torch.allclose(torch.tensor(entry[t], dtype=torch.float64),
                               initial[t].double(), atol=0, rtol=1e-6)
    assert history[2]["arch_loss"] is not None  # epoch 3 steps α
    moved = max(abs(a - b) for row, row0 in zip(history[2]["normal"], initial["normal"].tolist())
                for a, b in zip(row, row0))
    assert moved > 1e-4
    assert ctx.store.get_meta(name)["warmup_epochs"] == 2


def test_warmup_epochs_default_and_checks():
    assert registry.create("methods", "darts").warmup_epochs == 0  # DARTS's schedule
    assert registry.create("methods", "gdas").warmup_epochs == 0
    for name in ("darts", "gdas"):
        for bad in (-1, 5, 6, 1.5):
            with pytest.raises(ConfigError, match="warmup_epochs"):
                registry.create("methods", name, epochs=5, warmup_epochs=bad)


def test_dominance_on_validation_and_test():
    bench = bench_module()
    point = [5000, 0.95, 0.93]  # [params, val_acc, test_acc]
    assert bench.dominates([4000, 0.95, 0.90], point)       # fewer parameters, same accuracy
    assert bench.dominates([5000, 0.96, 0.90], point)       # same parameters, more accurate
    assert not bench.dominates([5000, 0.95, 0.99], point)   # the same point: not dominated
    assert not bench.dominates([4000, 0.94, 0.99], point)   # smaller but less accurate
    assert not bench.dominates([6000, 0.99, 0.99], point)   # more accurate but larger
    assert bench.dominates([4000, 0.90, 0.93], point, metric=2)
    randoms = [[4000, 0.94, 0.94], [6000, 0.99, 0.99]]
    assert bench.on_or_above(point, randoms)
    assert not bench.on_or_above(point, randoms, metric=2)  # on test, 4000 / 0.94 dominates
    entry = {"random": randoms, "darts": [point, [7000, 0.98, 0.995]]}
    bench.verdicts(entry, "darts")
    assert entry["darts_on_or_above"] == [True, False]
    assert entry["darts_on_or_above_test"] == [False, True]


def earlier_result(tmp_path, **args):
    base = {"target": "front", "task": "digits", "C": 4, "epochs": 8, "train_epochs": 10,
            "train_batch": 64, "random": 2, "derive": "argmax", "limit": 600, "batch": 32,
            "arch_lr": 0.03}
    entry = {"seed": 0, "random": [[2350, 0.86, 0.88], [7502, 0.967, 0.953]],
             "family": [[6778, 0.933, 0.958], [1982, 0.806, 0.816]],
             "params": [6778, 1982], "darts": [[9394, 0.95, 0.925]], "darts_genotype": ["x"],
             "darts_search_seconds": 1.0, "darts_cpu_seconds": 1.0,
             "gdas": [[10142, 0.961, 0.967]], "gdas_genotype": ["y"],
             "gdas_search_seconds": 1.0, "gdas_cpu_seconds": 1.0}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps({"args": {**base, **args}, "per_seed": [entry]}))
    ns = argparse.Namespace(**{**base, "oneshot_warmup": 0}, seeds=[0], skip=[], rerun=[],
                            reuse=path)
    return path, ns, entry


def test_reuse_checks_and_rerun_checks_only_the_random_genotypes(tmp_path, capsys):
    bench = bench_module()
    path, ns, entry = earlier_result(tmp_path)  # made before --oneshot-warmup: it ran 0
    assert bench.reusable(ns, path) == {0: entry}
    changed = argparse.Namespace(**{**vars(ns), "epochs": 10, "oneshot_warmup": 3})
    with pytest.raises(SystemExit) as exit_info:  # DARTS and GDAS would differ
        bench.reusable(changed, path)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "epochs = 8" in err and len(err.strip().splitlines()) == 1
    changed.rerun = ["darts"]  # they are searched again: only the random genotypes must match
    assert bench.reusable(changed, path) == {0: entry}
    changed.train_epochs = 20
    with pytest.raises(SystemExit):
        bench.reusable(changed, path)
    assert "train_epochs = 10" in capsys.readouterr().err


def test_front_rerun_keeps_random_and_family_and_searches_darts_again(tmp_path, monkeypatch):
    bench = bench_module()
    path, ns, entry = earlier_result(tmp_path)
    calls = []

    def fake_run(cfg, out):  # a DARTS run whose genotype has 5000 parameters, val 0.96
        calls.append((cfg["method"], cfg["method_options"], cfg["seed"]))
        result = SimpleNamespace(cost={"params": 5000.0},
                                 metrics={"val_acc": 0.96, "test_acc": 0.97})
        trial = SimpleNamespace(status="ok", result=result, info={"method": "darts"},
                                arch="Genotype(...)")
        return [trial], {"search_seconds": 2.0}, 3.0

    monkeypatch.setattr(bench, "run", fake_run)
    args = argparse.Namespace(**{**vars(ns), "epochs": 10, "oneshot_warmup": 3,
                                 "rerun": ["darts"]})
    out = tmp_path / "new.json"
    result = bench.front(args, out, {"args": {}})
    assert [c[0] for c in calls] == ["darts"] and calls[0][2] == 0  # only DARTS ran, seed 0
    assert calls[0][1]["warmup_epochs"] == 3 and calls[0][1]["epochs"] == 10
    e = result["per_seed"][0]
    assert e["random"] == entry["random"] and e["family"] == entry["family"]  # kept as they were
    assert e["darts"] == [[5000.0, 0.96, 0.97]] and e["darts_on_or_above"] == [True]
    assert e["darts_options"]["warmup_epochs"] == 3 and e["reused_from"] == str(path)
    assert e["gdas"] == entry["gdas"] and e["gdas_on_or_above"] == [False]  # reused, below
    assert e["gdas_on_or_above_test"] == [True]
    assert result["summary"]["darts_on_or_above"] == [[True]]
    assert result["reused_args"]["epochs"] == 8
    assert json.loads(out.read_text())["per_seed"][0]["darts"] == [[5000.0, 0.96, 0.97]]


def test_summary_gives_validation_and_test_verdicts_of_a_committed_result():
    # the 3-seed front of 2026-12-02 (benchmarks/results): DARTS's seed-2 genotype (9394
    # parameters, val 0.950, test 0.925) is dominated by a random one (7502, 0.967, 0.953)
    bench = bench_module()
    result = json.loads((ROOT / "benchmarks" / "results" /
                         "darts_cc_front_digits_anchors.json").read_text())
    rows = [line for line in bench.summary(result).splitlines() if "2350 0.861" in line
            or "3086 0.883" in line]
    assert "| 5/5 (3/5) | 8190, 0.961, 0.942 | yes (no) | 7726, 0.972, 0.969 | yes (yes) |" in rows[0]
    assert "| 5/5 (5/5) | 9394, 0.950, 0.925 | no (no) | 10142, 0.961, 0.967 | no (yes) |" in rows[1]


@pytest.mark.parametrize("argv, message", [
    (["--rerun", "darts"], "--rerun darts needs `front --reuse FILE`"),
    (["--epochs", "3", "--oneshot-warmup", "3"], "--oneshot-warmup 3"),
])
def test_benchmark_refuses_bad_rerun_options(tmp_path, monkeypatch, capsys, argv, message):
    bench = bench_module()
    monkeypatch.setattr(sys, "argv", ["darts_cc.py", "front", "--out", str(tmp_path / "x.json"),
                                      *argv])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_cpu_presets_match_the_darts_cc_preset_and_the_benchmark(name):
    # configs/<name>_digits_cpu.yaml: the search length and warm-up of the DARTS-CC preset and
    # of benchmarks/darts_cc.py front's defaults for DARTS and GDAS
    from nasforge.config import load_config

    preset = load_config(ROOT / "configs" / f"{name}_digits_cpu.yaml")
    cc = load_config(ROOT / "configs" / "darts_cc_digits_cpu.yaml")
    method = registry.create("methods", name, **preset.method_options)
    # since the DARTS-CC preset's second revision (20 epochs of which 10 warm-up, batch 128) the
    # two share the architecture learning rate and the number of weight steps: 100 on the 629
    # weight rows of digits (10 x 10 batches of 64, 20 x 5 batches of 128)
    steps = [o["epochs"] * math.ceil(629 / o["batch_size"])
             for o in (preset.method_options, cc.method_options)]
    assert steps == [100, 100] and method.arch_lr == cc.method_options["arch_lr"]
    assert method.derive == "top2" and preset.space_options == cc.space_options
    options = bench_module().one_shot_options(argparse.Namespace(
        epochs=method.epochs, batch=64, arch_lr=0.03, oneshot_warmup=3))[name]
    options.pop("plots")  # the benchmark draws its own
    assert {k: getattr(method, k) for k in options} == options


def retrain_module():
    return benchmark_script("front_retrain")


def test_retrain_regenerates_the_fronts_random_genotypes():
    # benchmarks/front_retrain.py draws a seed's random genotypes again as the darts_cc method
    # did (rng(seed, 0xDA7D)); their parameter counts are those of the committed 3-seed front
    import numpy as np

    from nasforge.core import derive_seed
    from nasforge.cost import count_params
    from nasforge.data import load_task
    from nasforge.methods.darts_cc import random_genotypes

    result = json.loads((ROOT / "benchmarks" / "results" /
                         "darts_cc_front_digits_anchors.json").read_text())
    space = DartsSpace(C=4, layers=3, nodes=4, allow_none=True)
    task = load_task("digits", limit=600)
    drawn = random_genotypes(10, space.ops, 4, "argmax",
                             np.random.default_rng(derive_seed(2, 0xDA7D)))
    params = [count_params(space.build(g, task)) for g, _ in drawn]
    assert params == [int(p[0]) for p in result["per_seed"][2]["random"]]
    assert params[7] == 7502  # the random genotype that beat DARTS's seed-2 genotype


@pytest.mark.parametrize("argv, message", [
    (["--seed", "7"], "no entry for seed 7"),
    (["--train-seeds", "1"], "--train-seeds 1"),
    (["--also", "missing.json"], "not a readable JSON file"),
])
def test_retrain_refuses_bad_input(tmp_path, monkeypatch, capsys, argv, message):
    front = str(ROOT / "benchmarks" / "results" / "darts_cc_front_digits_anchors.json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["front_retrain.py", "--front", front,
                                      "--out", str(tmp_path / "x.json"), *argv])
    with pytest.raises(SystemExit) as exit_info:
        retrain_module().main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def run_retrain(monkeypatch, tmp_path, argv):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["front_retrain.py", *argv])
    retrain_module().main()


def test_retrain_reuse_takes_earlier_rows_without_training(tmp_path, monkeypatch, capsys):
    # every genotype of seed 0 (random, DARTS, GDAS) is in the committed 5-seed retrain result,
    # so --reuse trains nothing and gives back the same rows and verdicts
    from nasforge.evaluators.train import TrainEvaluator

    def no_training(*args, **kwargs):
        raise AssertionError("trained a genotype that --reuse holds")

    monkeypatch.setattr(TrainEvaluator, "evaluate", no_training)
    results = ROOT / "benchmarks" / "results"
    earlier = json.loads((results / "front_retrain_digits_seed0.json").read_text())
    out = tmp_path / "again.json"
    run_retrain(monkeypatch, tmp_path, [
        "--front", str(results / "darts_cc_front_digits_oneshot_w3.json"),
        "--also", str(results / "darts_cc_front_digits_anchors.json"), "--seed", "0",
        "--reuse", str(results / "front_retrain_digits_seed0.json"), "--out", str(out)])
    again = json.loads(out.read_text())
    assert [(r["label"], r["val"], r["test"]) for r in again["rows"]] == \
        [(r["label"], r["val"], r["test"]) for r in earlier["rows"]]
    assert all(r["reused_from"].endswith("front_retrain_digits_seed0.json")
               for r in again["rows"])
    assert again["mean_front"] == earlier["mean_front"]
    # the preset's DARTS genotype: 0.963 mean, below the 10,834-parameter random's 0.964
    assert again["mean_front"]["darts@darts_cc_front_digits_oneshot_w3"] == \
        {"val": False, "test": True}


@pytest.mark.parametrize("change, message", [
    ({"train_epochs": 5}, "trained with train_epochs = 5, --front with 10"),
    ({"limit": None}, "trained with limit = None"),
    ({"seed": 1}, "made for seed 1, this run retrains seed 0"),
    ({"train_seeds": [1, 2, 3, 4, 5]}, "expected this run's first training seeds"),
    ({"rows": None}, "not a front_retrain.py result"),
])
def test_retrain_reuse_refuses_other_training(tmp_path, monkeypatch, capsys, change, message):
    # a reused result made with other training settings (edited copies of the committed one)
    # stops the run with one line and exit 2, before anything is written
    results = ROOT / "benchmarks" / "results"
    earlier = json.loads((results / "front_retrain_digits_seed0.json").read_text())
    for key, value in change.items():
        if key in earlier["front_args"]:
            earlier["front_args"][key] = value
        elif key == "seed":
            earlier["args"]["seed"] = value
        elif value is None:
            del earlier[key]
        else:
            earlier[key] = value
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    with pytest.raises(SystemExit) as exit_info:
        run_retrain(monkeypatch, tmp_path, [
            "--front", str(results / "darts_cc_front_digits_oneshot_w3.json"), "--seed", "0",
            "--reuse", str(tmp_path / "earlier.json"), "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_darts_cc_benchmark_defaults_are_the_cpu_preset():
    # benchmarks/darts_cc.py family's defaults run configs/darts_cc_digits_cpu.yaml's search
    from nasforge.config import load_config

    bench = bench_module()
    preset = load_config(ROOT / "configs" / "darts_cc_digits_cpu.yaml").method_options
    options = bench.darts_cc_options(argparse.Namespace(**bench.main_defaults()))
    options.pop("plots")  # the benchmark draws its own
    # the preset's Gumbel schedule is written as decay and floor: 1 -> 0.2 over the search
    assert options.pop("tau_decay") == pytest.approx(preset["tau_decay"])
    assert {k: preset.get(k, registry.create("methods", "darts_cc").__dict__.get(k))
            for k in options} == options


def test_retrain_verdicts_mean_front_and_paired_95():
    # hand-made rows (3 training seeds each): "close" is below a smaller random genotype's mean
    # by 0.01 but the paired differences (0.03, -0.02, 0.02) leave 0 inside the 95% interval;
    # "far" is below it by 0.1 on every seed (interval excludes 0); "big" has more accuracy
    # than every random genotype
    judge = retrain_module().judge
    rows = [
        {"label": "random0", "params": 100, "val": [0.90, 0.92, 0.94], "test": [0.9, 0.9, 0.9]},
        {"label": "random1", "params": 300, "val": [0.95, 0.95, 0.95], "test": [0.9, 0.9, 0.9]},
        {"label": "close", "params": 150, "val": [0.87, 0.94, 0.92], "test": [0.9, 0.9, 0.9]},
        {"label": "far", "params": 150, "val": [0.80, 0.82, 0.84], "test": [0.9, 0.9, 0.9]},
        {"label": "family0.0", "params": 400, "val": [0.97, 0.96, 0.98], "test": [0.9, 0.9, 0.9]},
    ]
    for r in rows:
        r["val_mean"] = sum(r["val"]) / 3
        r["test_mean"] = sum(r["test"]) / 3
    v = judge(rows)
    assert v["mean_front"]["close"]["val"] is False
    assert v["front_95"]["close"]["val"]["ok"] is True
    assert v["mean_front"]["far"]["val"] is False
    assert v["front_95"]["far"]["val"] == {
        "ok": False, "dominated_by": ["random0"],
        "closest": v["front_95"]["far"]["val"]["closest"]}
    closest = v["front_95"]["far"]["val"]["closest"]
    assert closest["label"] == "random0" and math.isclose(closest["margin"], 0.1)
    # t(0.975, 2) = 4.303, sd of the differences 0 -> a zero-width interval at 0.1
    assert math.isclose(closest["interval"][0], 0.1) and math.isclose(closest["interval"][1], 0.1)
    # on test the family member ties random0's 0.9 with more parameters: dominated on the means,
    # not at 95% (every paired difference is 0)
    assert v["family_on_or_above"] == {"val": 1, "test": 0, "of": 1}
    assert v["family_front_95"] == {"val": 1, "test": 1, "of": 1}
