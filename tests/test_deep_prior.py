"""Evaluator ``deep_prior`` and the embedding export, on scikit-learn's digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasforge import registry
from nasforge.data import load_task
from nasforge.errors import ConfigError
from nasforge.evaluators import deep_prior as dp
from nasforge.evaluators.deep_prior import (INITS, DeepPriorEvaluator, cached_embedding,
                                            chunk_rows, deep_prior_network, init_weights)
from nasforge.export.embeddings import export_embedding, load_npz
from nasforge.run.rundir import build_space

TASK = load_task("digits")
SPACE = build_space("chain", {}, TASK)
DECENT = SPACE.parse("[C(64,3,1,1,1), C(64,3,1,1,1), P(2,2,0,0), C(64,3,1,1,1), SM(10)]")
SMALL = SPACE.parse("[C(16,3,1,1,1), P(2,2,0,0), C(16,3,1,1,1), SM(10)]")
FAST = dict(epochs=8, measure_latency=False)


def encoder_params(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.encoder.named_parameters()}


def test_decent_architecture_scores_well_above_chance():
    result = DeepPriorEvaluator().evaluate(DECENT, SPACE, TASK, seed=0)
    assert result.status == "ok", result.reason
    m, c = result.metrics, result.cost
    assert m["val_acc"] > 0.9 and m["test_acc"] > 0.9 and m["reward"] == m["val_acc"]
    assert m["val_acc"] >= m["final_val_acc"] and len(result.curves["val_acc"]) == DeepPriorEvaluator().config.epochs
    assert c["features"] == 64 * 4 * 4 and c["classifier_params"] == 1024 * 10 + 10
    assert c["encoder_params"] == (64 * 9 + 64) + 2 * (64 * 64 * 9 + 64)
    assert c["params"] == c["encoder_params"] + c["classifier_params"]
    assert c["flops"] > 0 and c["latency_ms"] > 0 and c["embed_seconds"] > 0
    assert c["train_seconds"] > 0 and c["embedding_cached"] == 0.0 and not result.artifacts


def test_same_seed_same_result_other_seed_differs_and_global_rng_untouched():
    state = torch.get_rng_state()
    ev = DeepPriorEvaluator(**FAST)
    a, b, c = (ev.evaluate(SMALL, SPACE, TASK, seed=s) for s in (3, 3, 4))
    assert a.metrics == b.metrics and a.curves == b.curves
    assert a.curves != c.curves
    assert torch.equal(torch.get_rng_state(), state)


def test_inits_differ_and_follow_their_scheme():
    embeddings = {}
    for init in INITS:
        emb = cached_embedding(SMALL, SPACE, TASK, seed=0, init=init)
        assert torch.isfinite(emb.train[0]).all()
        embeddings[init] = emb.train[0]
    for i, a in enumerate(INITS):
        for b in INITS[i + 1:]:
            assert not torch.allclose(embeddings[a], embeddings[b]), (a, b)
    conv = nn.Conv2d(64, 64, 3)
    init_weights(conv, "kaiming_normal", seed=1)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0
    init_weights(conv, "orthogonal", seed=1)
    w = conv.weight.reshape(64, -1)
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-4)
    with pytest.raises(ConfigError, match="init 'he'"):
        init_weights(conv, "he", seed=1)


def test_encoder_stays_frozen_and_unchanged(monkeypatch):
    built = []

    def spy(*args, **kwargs):
        net = deep_prior_network(*args, **kwargs)
        built.append((net, encoder_params(net)))
        return net

    monkeypatch.setattr(dp, "deep_prior_network", spy)
    ev = DeepPriorEvaluator(classifier="mlp", hidden=32, **FAST)
    result = ev.evaluate(SMALL, SPACE, TASK, seed=0)
    assert result.status == "ok", result.reason
    (net, before), = built
    assert not any(p.requires_grad for p in net.encoder.parameters())
    after = encoder_params(net)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert result.cost["classifier_params"] == 256 * 32 + 32 + 32 * 10 + 10


def test_head_classifier_uses_the_architectures_fc_layers():
    with_fc = SPACE.parse("[C(16,3,1,1,1), P(2,2,0,0), FC(32), SM(10)]")
    result = DeepPriorEvaluator(classifier="head", **FAST).evaluate(with_fc, SPACE, TASK, seed=0)
    assert result.status == "ok", result.reason
    assert result.cost["classifier_params"] == 256 * 32 + 32 + 32 * 10 + 10
    assert result.metrics["test_acc"] > 0.5


def test_batch_norm_is_added_calibrated_on_train_and_frozen():
    net = deep_prior_network(SMALL, SPACE, TASK, seed=0, batch_norm=True)
    norms = [m for m in net.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 and SPACE.batch_norm is False  # the run's space is not changed
    before = encoder_params(net)
    emb = dp.embed_task(net, TASK)
    assert not net.encoder.training
    assert all(torch.equal(before[k], v) for k, v in encoder_params(net).items())
    first = norms[0]
    assert first.num_batches_tracked > 0 and not torch.allclose(first.running_var, torch.ones(16))
    # calibrated statistics normalise the training split's first-layer output
    with torch.no_grad():
        conv_out = net.encoder[0][0](TASK.train[0])
    assert torch.allclose(first.running_mean, conv_out.mean((0, 2, 3)), atol=1e-4)
    assert emb["train"][0].shape == (TASK.sizes()["train"], 16 * 4 * 4)
    with pytest.raises(ConfigError, match="batch_norm option"):
        DeepPriorEvaluator(batch_norm=True).validate(_NoBatchNormSpace())


class _NoBatchNormSpace:
    name = "nobn"

    def options(self) -> dict:
        return {}


def test_embedding_chunks_follow_the_memory_cap():
    net = deep_prior_network(DECENT, SPACE, TASK, seed=0)
    per_row = 4 * (64 * 64 + 64 * 64)  # largest layer: 64x8x8 in and out
    assert chunk_rows(net.encoder, TASK.input_shape, 1.0) == 2**20 // per_row
    assert chunk_rows(net.encoder, TASK.input_shape, 1e-6) == 1
    small = cached_embedding(DECENT, SPACE, TASK, seed=0, memory_mb=0.05)
    large = cached_embedding(DECENT, SPACE, TASK, seed=0, memory_mb=512)
    assert torch.allclose(small.test[0], large.test[0], atol=1e-5)
    with pytest.raises(ConfigError, match="memory_mb"):
        DeepPriorEvaluator(memory_mb=0)


def test_cache_is_reused_and_keyed(tmp_path, monkeypatch):
    ev = DeepPriorEvaluator(keep_embeddings=True, **FAST)
    first = ev.evaluate(SMALL, SPACE, TASK, seed=5, workdir=tmp_path)
    path = Path(first.artifacts["embeddings"])
    assert path.parent == tmp_path and path.is_file() and first.cost["embedding_cached"] == 0.0

    def no_recompute(*args, **kwargs):
        raise AssertionError("the embedding was computed again")

    monkeypatch.setattr(dp, "embed_task", no_recompute)
    second = ev.evaluate(SMALL, SPACE, TASK, seed=5, workdir=tmp_path)
    assert second.status == "ok", second.reason
    assert second.cost["embedding_cached"] == 1.0 and second.metrics == first.metrics
    assert second.cost["embed_seconds"] == first.cost["embed_seconds"]
    # another init is another key: it must be computed (and fails here, as embed_task is patched)
    other = DeepPriorEvaluator(init="orthogonal", **FAST).evaluate(SMALL, SPACE, TASK, seed=5,
                                                                   workdir=tmp_path)
    assert other.status == "failed" and "computed again" in other.reason
    assert "embeddings" not in DeepPriorEvaluator(**FAST).evaluate(
        SMALL, SPACE, TASK, seed=5, workdir=tmp_path).artifacts


def test_failures_become_failed_results(monkeypatch):
    too_deep = SPACE.parse("[C(16,3,1,0,1), C(16,3,1,0,1), C(16,3,1,0,1), C(16,3,1,0,1), SM(10)]")
    result = DeepPriorEvaluator(**FAST).evaluate(too_deep, SPACE, TASK, seed=0)
    assert result.status == "failed" and "does not fit" in result.reason
    diverged = DeepPriorEvaluator(optimizer="sgd", lr=1e38, cosine=False, epochs=3,
                                  measure_latency=False).evaluate(SMALL, SPACE, TASK, seed=0)
    assert diverged.status == "failed" and "loss" in diverged.reason

    def nan_embedding(network, task, **kwargs):
        return {s: (torch.full((len(task.split(s)[1]), 4), math.nan), task.split(s)[1])
                for s in ("train", "val", "test")}

    monkeypatch.setattr(dp, "embed_task", nan_embedding)
    result = DeepPriorEvaluator(**FAST).evaluate(SMALL, SPACE, TASK, seed=0)
    assert result.status == "failed" and "NaN" in result.reason


def test_full_training_trains_the_encoder_through_the_train_evaluator(monkeypatch):
    built = []

    def spy(*args, **kwargs):
        net = deep_prior_network(*args, **kwargs)
        built.append((net, encoder_params(net)))
        return net

    monkeypatch.setattr(dp, "deep_prior_network", spy)
    ev = registry.create("evaluators", "deep_prior", full_training=True, epochs=2,
                         measure_latency=False)
    result = ev.evaluate(SMALL, SPACE, TASK, seed=0)
    assert result.status == "ok", result.reason
    assert "embed_seconds" not in result.cost and result.cost["epochs"] == 2
    (net, before), = built
    assert any(not torch.equal(before[k], v) for k, v in encoder_params(net).items())
    # the starting weights are the deep prior's: the frozen network of the same seed equals them
    frozen = deep_prior_network(SMALL, SPACE, TASK, seed=0)
    assert all(torch.equal(before[k], v) for k, v in encoder_params(frozen).items())


def test_options_are_validated_by_the_registry():
    with pytest.raises(ConfigError, match="init"):
        registry.create("evaluators", "deep_prior", init="he")
    with pytest.raises(ConfigError, match="classifier"):
        registry.create("evaluators", "deep_prior", classifier="svm")
    with pytest.raises(ConfigError, match="keep_embedding"):
        registry.create("evaluators", "deep_prior", keep_embedding=True)


def read_dataset_folder(root: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """What torchvision's DatasetFolder(root, numpy.load, extensions=('.npy',)) reads: class
    index = position of the folder name in sorted order; files sorted within a class."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    xs, ys, index = [], [], []
    for c, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix == ".npy":
                xs.append(np.load(f))
                ys.append(c)
                index.append(int(f.stem))
    return np.stack(xs), np.array(ys), index


def test_export_layout_reads_back_and_reproduces_the_evaluator(tmp_path):
    ev = DeepPriorEvaluator(**FAST)
    out = export_embedding(SMALL, SPACE, TASK, tmp_path / "emb", seed=11, evaluator=ev)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["arch"] == str(SMALL) and meta["seed"] == 11 and meta["init"] == "kaiming_normal"
    assert meta["features"] == 16 * 4 * 4 and meta["sizes"] == TASK.sizes()
    splits = {}
    for split in ("train", "val", "test"):
        x, y = load_npz(out, split)
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert np.array_equal(y, TASK.split(split)[1].numpy())
        fx, fy, index = read_dataset_folder(out / split)
        order = np.argsort(index)
        assert np.array_equal(fx[order], x) and np.array_equal(fy[order], y)
        assert sorted(index) == list(range(len(y)))
        splits[split] = (torch.from_numpy(x), torch.from_numpy(y))
    # a classifier trained on the files equals the evaluator's for the same arch and seed
    from_files = ev.fit_classifier(splits, TASK.num_classes, seed=11)
    direct = ev.evaluate(SMALL, SPACE, TASK, seed=11)
    assert from_files.metrics == direct.metrics
    with pytest.raises(ConfigError, match="not empty"):
        export_embedding(SMALL, SPACE, TASK, out, seed=11, evaluator=ev)
    assert json.loads((out / "meta.json").read_text()) == meta  # nothing overwritten
