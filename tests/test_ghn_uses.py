"""The ``ghn`` evaluator and the ``ghn_search`` method with a small untrained GHN (predictions
are arbitrary but deterministic), on digits (a task shipped with scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasforge import registry
from nasforge.core import Objective
from nasforge.data import load_task
from nasforge.errors import ConfigError
from nasforge.ghn.graph import PRIMITIVES
from nasforge.ghn.model import GHN, variant_config
from nasforge.methods import MethodContext, run_method
from nasforge.run.loop import Budget
from nasforge.run.store import Store
from nasforge.spaces.chain import ChainSpace


@pytest.fixture(scope="module")
def digits():
    return load_task("digits")


@pytest.fixture(scope="module")
def ghn_path(tmp_path_factory):
    torch.manual_seed(0)  # test set-up only: the GHN's own random init
    ghn = GHN(variant_config("ghn2", hid=16, primitives=PRIMITIVES, num_classes=10,
                             input_shape=(1, 8, 8)))
    return str(ghn.save(tmp_path_factory.mktemp("ghn") / "ghn.pt"))


def _space():
    return ChainSpace(input_shape=(1, 8, 8), features=(8, 16), kernels=(1, 3), max_conv=3)


def test_ghn_evaluator_scores_deterministically(digits, ghn_path):
    ev = registry.create("evaluators", "ghn", ghn=ghn_path)
    space = _space()
    arch = space.parse("[C(16,3,1,1,0), P(2,2,0,0), C(8,1,1,0,1), SM(10)]")
    a = ev.evaluate(arch, space, digits, seed=3)
    b = ev.evaluate(arch, space, digits, seed=3)
    assert a.status == "ok", a.reason
    assert set(a.metrics) == {"val_acc", "reward", "val_loss", "test_acc", "test_loss"}
    assert a.metrics == b.metrics and 0.0 <= a.metrics["val_acc"] <= 1.0
    assert a.cost["params"] > 0 and a.cost["predict_seconds"] > 0
    assert ev.metrics() >= set(a.metrics) | set(a.cost)
    prefixed = registry.create("evaluators", "ghn", ghn=ghn_path, metric_prefix="ghn_", test=False)
    r = prefixed.evaluate(arch, space, digits, seed=3)
    assert r.metrics == {"ghn_val_acc": a.metrics["val_acc"], "ghn_reward": a.metrics["val_acc"],
                         "ghn_val_loss": a.metrics["val_loss"]}


def test_ghn_evaluator_fills_every_parameter(digits, ghn_path):
    from nasforge.evaluators.ghn import fill_with_ghn, load_ghn
    from nasforge.evaluators.train import build_network

    space = _space()
    net = build_network(space, space.parse("[C(8,3,1,1,1), C(16,3,1,1,1), SM(10)]"), digits, seed=0)
    before = {k: v.clone() for k, v in net.named_parameters()}
    fill_with_ghn(load_ghn(ghn_path), net, digits)
    assert all(not torch.equal(before[k], v) for k, v in net.named_parameters())


def test_ghn_evaluator_failures(digits, ghn_path, tmp_path):
    with pytest.raises(ConfigError, match="option ghn"):
        registry.create("evaluators", "ghn")
    ev = registry.create("evaluators", "ghn", ghn=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="does not exist"):
        ev.validate(_space())
    assert ev.evaluate(_space().parse("[C(8,3,1,1,1), SM(10)]"), _space(), digits,
                       seed=0).status == "failed"
    from dataclasses import replace
    three = replace(digits, num_classes=3)
    r = registry.create("evaluators", "ghn", ghn=ghn_path).evaluate(
        _space().parse("[C(8,3,1,1,1), SM(10)]"), _space(), three, seed=0)
    assert r.status == "failed" and "10-class" in r.reason


class CountingEvaluator:
    """Stands in for ``train``: val_acc from a hash of the architecture, calls counted."""

    name = "counting"

    def __init__(self):
        self.calls = []

    def evaluate(self, arch, space, task, *, seed, workdir=None):
        from nasforge.core import TrialResult
        import zlib

        self.calls.append(str(arch))
        return TrialResult(metrics={"val_acc": (zlib.crc32(str(arch).encode()) % 1000) / 1000},
                           cost={"params": 1.0})

    def metrics(self):
        return None

    def validate(self, space):
        return None


def test_ghn_search_ranks_then_trains_top_k(digits, ghn_path):
    evaluator = CountingEvaluator()
    store = Store()
    ctx = MethodContext(task=digits, space=_space(), evaluator=evaluator,
                        objective=Objective("val_acc"), seed=2, store=store, budget=Budget(trials=1))
    method = registry.create("methods", "ghn_search", ghn=ghn_path, candidates=12, top_k=3)
    trials = run_method(method, ctx)
    rank = [t for t in trials if t.info.get("phase") == "rank"]
    train = [t for t in trials if t.info.get("phase") == "train"]
    assert len(rank) == 12 and len(train) == 3 and len(evaluator.calls) == 3
    assert len({str(t.arch) for t in rank}) == 12
    scores = sorted((-t.metrics["ghn_val_acc"], t.result.cost["params"], t.id) for t in rank if t.status == "ok")
    assert [t.info["ghn_trial"] for t in train] == [s[2] for s in scores[:3]]
    assert all("val_acc" not in t.metrics for t in rank)
    assert store.get_meta("ghn_search")["selected_trial"] == max(
        train, key=lambda t: t.metrics["val_acc"]).id
    # a second run on the same store reuses every trial
    again = CountingEvaluator()
    ctx2 = MethodContext(task=digits, space=_space(), evaluator=again, objective=Objective("val_acc"),
                         seed=2, store=store, budget=Budget(trials=1))
    run_method(registry.create("methods", "ghn_search", ghn=ghn_path, candidates=12, top_k=3), ctx2)
    assert again.calls == []
    with pytest.raises(ConfigError, match="top_k = 5 is more than candidates = 2"):
        registry.create("methods", "ghn_search", ghn=ghn_path, candidates=2, top_k=5)


def test_kshot_subset_and_compare(digits, ghn_path):
    from nasforge.evaluators.ghn import load_ghn
    from nasforge.evaluators.train import build_network
    from nasforge.ghn.uses import kshot_compare, kshot_subset

    x, y = kshot_subset(digits, 3, seed=1)
    assert torch.bincount(y, minlength=10).tolist() == [3] * 10
    x2, y2 = kshot_subset(digits, 3, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    space = _space()
    archs = ["[C(8,3,1,1,1), SM(10)]", "[C(16,3,1,1,0), SM(10)]"]
    models = [(a, lambda a=a: build_network(space, space.parse(a), digits, seed=0)) for a in archs]
    res = kshot_compare(load_ghn(ghn_path), models, digits, k=2, steps=6, batch_size=8)
    assert res.names == archs and res.steps == 6  # 3 batches of 8 per epoch
    assert all(len(v) == 2 for v in (res.predicted, res.random, res.predicted_start, res.random_start))
    s = res.summary()
    assert s["archs"] == 2 and 0 <= s["wins"] <= 2 and 0 <= s["predicted"] <= 1
    assert res.random != res.random_start  # the random baseline was trained


def test_property_prediction_and_targets(digits, ghn_path):
    from nasforge.evaluators.ghn import load_ghn
    from nasforge.evaluators.train import build_network
    from nasforge.ghn.uses import (convergence_epoch, graph_embeddings, kendall_tau,
                                   property_prediction)

    assert convergence_epoch([0.2, 0.5, 0.795, 0.8, 0.7]) == 3
    assert convergence_epoch([0.9, 0.1]) == 1 and convergence_epoch([]) == 0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)  # planted target: a smooth function of the first feature
    feats = rng.normal(size=(80, 5))
    target = np.tanh(feats[:, 0]) + 0.05 * rng.normal(size=80)
    for reg in ("svr", "ridge", "forest"):
        out = property_prediction(feats[:50], target[:50], feats[50:], target[50:], regressor=reg)
        assert out["tau"] > 0.6, reg
    with pytest.raises(ConfigError, match="regressor 'knn'"):
        property_prediction(feats[:5], target[:5], feats[5:], target[5:], regressor="knn")
    space = _space()
    nets = [build_network(space, space.parse(a), digits, seed=0)
            for a in ("[C(8,3,1,1,1), SM(10)]", "[C(16,1,1,0,1), P(2,2,0,0), SM(10)]")]
    emb = graph_embeddings(load_ghn(ghn_path), nets, (1, 8, 8))
    assert emb.shape == (2, 16) and not np.allclose(emb[0], emb[1])


def test_ghn_evaluator_steadier_score_on_validation_and_training_images(digits, ghn_path):
    from nasforge.evaluators.ghn import fill_with_ghn, load_ghn
    from nasforge.evaluators.train import build_network
    from nasforge.training import TrainConfig, evaluate_metrics

    space = ChainSpace(input_shape=(1, 8, 8), features=(8, 16), kernels=(1, 3), max_conv=3,
                       batch_norm=True)
    arch = space.parse("[C(16,3,1,1,1), C(8,1,1,0,1), SM(10)]")
    plain = registry.create("evaluators", "ghn", ghn=ghn_path).evaluate(arch, space, digits, seed=3)
    one = registry.create("evaluators", "ghn", ghn=ghn_path, train_images=50).evaluate(
        arch, space, digits, seed=3)
    two = registry.create("evaluators", "ghn", ghn=ghn_path, bn_draws=2, train_images=50).evaluate(
        arch, space, digits, seed=3)
    assert "score" not in plain.metrics and one.status == two.status == "ok"
    for r in (one, two):  # draw 0 is the plain evaluation
        assert {k: r.metrics[k] for k in plain.metrics} == plain.metrics
    net = build_network(space, arch, digits, seed=3)  # the same by hand: 180 val + 50 train images
    fill_with_ghn(load_ghn(ghn_path), net, digits, seed=3)
    net.eval()
    tr = evaluate_metrics(net, (digits.train[0][:50], digits.train[1][:50]), TrainConfig())
    n_val = len(digits.val[0])
    assert one.metrics["score"] == pytest.approx((n_val * plain.metrics["val_acc"] + 50 * tr["acc"])
                                                 / (n_val + 50))
    assert two.metrics["score_loss"] != one.metrics["score_loss"]  # a second BN draw counts
    with pytest.raises(ConfigError, match="bn_draws = 0"):
        registry.create("evaluators", "ghn", ghn=ghn_path, bn_draws=0)


def test_ghn_search_ranks_by_the_steadier_score(digits, ghn_path):
    evaluator = CountingEvaluator()
    ctx = MethodContext(task=digits, space=_space(), evaluator=evaluator,
                        objective=Objective("val_acc"), seed=2, store=Store(), budget=Budget(trials=1))
    method = registry.create("methods", "ghn_search", ghn=ghn_path, candidates=8, top_k=2,
                             bn_draws=2, train_images=40)
    trials = run_method(method, ctx)
    rank = [t for t in trials if t.info.get("phase") == "rank" and t.status == "ok"]
    train = [t for t in trials if t.info.get("phase") == "train"]
    keys = sorted((-t.metrics["ghn_score"], t.metrics["ghn_score_loss"], t.result.cost["params"], t.id)
                  for t in rank)
    assert [t.info["ghn_trial"] for t in train] == [k[3] for k in keys[:2]]
