"""Evaluator ``train`` on a tiny two-decision space and sklearn digits."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Sequence

import pytest
import torch
from torch import nn

from nasforge import registry
from nasforge.core import Architecture, Network, SearchSpace, Task, TrialResult
from nasforge.data import load_task
from nasforge.errors import ArchitectureError, ConfigError
from nasforge.evaluators.train import HeadRegularizer, TrainEvaluator, build_network


def digits_task(seed: int = 0) -> Task:
    """The digits task from the project's own loader."""
    return load_task("digits", seed=seed)


TASK = digits_task()


@dataclass(frozen=True, eq=False)
class TinyArch(Architecture):
    kind: str
    width: int

    def __str__(self) -> str:
        return f"{self.kind}-{self.width}"


class EmitsNaN(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


class TinySpace(SearchSpace):
    """Decisions: kind (mlp / cnn), then width. ``pooled_head`` keeps the head's input 4-d."""

    name = "tiny"

    def __init__(self, *, emit_nan: bool = False, build_error: bool = False, max_width: int = 64,
                 pooled_head: bool = False):
        self.emit_nan, self.build_error = emit_nan, build_error
        self.max_width, self.pooled_head = max_width, pooled_head

    def parse(self, text: str) -> Architecture:
        kind, width = text.split("-")
        return TinyArch(kind, int(width))

    def choices(self, prefix: Sequence) -> list:
        return [["mlp", "cnn"], [8, 16, 128], []][len(prefix)]

    def to_decisions(self, arch: Architecture) -> tuple:
        return (arch.kind, arch.width)

    def from_decisions(self, decisions: Sequence) -> Architecture:
        return TinyArch(*decisions)

    def check(self, arch: Architecture, task: Task) -> None:
        if arch.width > self.max_width:
            raise ArchitectureError(f"width {arch.width} exceeds {self.max_width}")

    def build(self, arch: Architecture, task: Task) -> Network:
        if self.build_error:
            raise RuntimeError("the builder broke")
        w = arch.width
        if arch.kind == "mlp":
            encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, w), nn.ReLU())
            head = nn.Linear(w, task.num_classes)
        else:
            encoder = nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            head = (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, 10))
                    if self.pooled_head else nn.Sequential(nn.Flatten(), nn.Linear(w * 16, 10)))
        if self.emit_nan:
            encoder = nn.Sequential(encoder, EmitsNaN())
        return Network(encoder, head)


SPACE = TinySpace()
CNN = TinyArch("cnn", 16)


def test_trains_a_real_architecture_to_good_accuracy(tmp_path):
    evaluator = TrainEvaluator(epochs=12)
    result = evaluator.evaluate(CNN, SPACE, TASK, seed=0, workdir=tmp_path)
    assert result.status == "ok", result.reason
    m = result.metrics
    assert m["val_acc"] > 0.95 and m["test_acc"] > 0.93 and m["reward"] == m["val_acc"]
    assert m["val_acc"] >= m["final_val_acc"] and 1 <= m["best_epoch"] <= 12
    assert m["train_acc"] == result.curves["train_acc"][-1] and m["stopped_early"] == 0.0
    assert all(len(result.curves[k]) == 12 for k in ("train_acc", "val_acc", "train_loss"))
    assert result.cost["params"] == (16 * 9 + 16) + (256 * 10 + 10)
    assert result.cost["flops"] == 2 * (16 * 9 * 64 + 256 * 10)
    assert result.cost["epochs"] == 12 and result.cost["train_seconds"] > 0
    assert result.cost["latency_ms"] > 0
    # the saved weights are the best-validation model: rebuilt, loaded and tested they give test_acc
    net = evaluator.network(CNN, SPACE, TASK, seed=123)
    net.load_state_dict(torch.load(result.artifacts["model"], weights_only=True))
    from nasforge.training import evaluate
    assert evaluate(net, TASK.test)[0] == pytest.approx(m["test_acc"])
    assert TrialResult.from_dict(result.to_dict()) == result


def test_same_seed_same_metrics_other_seed_differs():
    evaluator = TrainEvaluator(epochs=3, measure_latency=False, dropout=0.2)
    arch = TinyArch("mlp", 16)
    a, b, c = (evaluator.evaluate(arch, SPACE, TASK, seed=s) for s in (7, 7, 8))
    assert a.metrics == b.metrics and a.curves == b.curves
    assert a.cost["params"] == c.cost["params"] and a.curves != c.curves


def test_global_rng_state_is_unchanged():
    state = torch.get_rng_state()
    result = TrainEvaluator(epochs=2, dropout=0.5, batch_norm_head=True).evaluate(
        TinyArch("mlp", 8), SPACE, TASK, seed=3)
    assert result.status == "ok" and torch.equal(torch.get_rng_state(), state)


def test_nan_gives_failed_result_with_reason():
    result = TrainEvaluator(epochs=2).evaluate(CNN, TinySpace(emit_nan=True), TASK, seed=0)
    assert result.status == "failed" and "diverged" in result.reason and "nan" in result.reason
    assert result.cost["params"] > 0 and not result.metrics


def test_huge_lr_fails_rather_than_raises():
    result = TrainEvaluator(optimizer="sgd", lr=1e12, cosine=False, epochs=5).evaluate(
        TinyArch("mlp", 16), SPACE, TASK, seed=0)
    assert result.status == "failed" and "diverged" in result.reason


def test_build_errors_give_failed_results():
    evaluator = TrainEvaluator(epochs=1)
    broken = evaluator.evaluate(CNN, TinySpace(build_error=True), TASK, seed=0)
    assert broken.status == "failed" and "RuntimeError: the builder broke" in broken.reason
    too_wide = evaluator.evaluate(TinyArch("mlp", 128), SPACE, TASK, seed=0)
    assert too_wide.status == "failed" and "width 128 exceeds 64" in too_wide.reason


def test_early_stop_keeps_the_trial_ok_and_flags_it():
    result = TrainEvaluator(epochs=5, early_stop_epoch=1, early_stop_threshold=1.01).evaluate(
        TinyArch("mlp", 8), SPACE, TASK, seed=0)
    assert result.status == "ok" and result.metrics["stopped_early"] == 1.0
    assert result.cost["epochs"] == 1 and len(result.curves["val_acc"]) == 1


def test_head_regularizer_keeps_feature_shape_for_any_head():
    space = TinySpace(pooled_head=True)  # head pools a 4-d feature map itself
    net = build_network(space, CNN, TASK, seed=0, batch_norm_head=True, dropout=0.1)
    assert isinstance(net.head[0], HeadRegularizer)
    assert net.head[0].norm.num_features == 16 * 4 * 4
    assert net(TASK.test[0][:4]).shape == (4, 10)
    plain = build_network(space, CNN, TASK, seed=0)
    assert isinstance(plain.head[0], nn.AdaptiveAvgPool2d)
    # same seed -> the same initial weights for the shared part
    assert torch.equal(plain.encoder[0].weight, net.encoder[0].weight)
    for sp in (space, SPACE):
        result = TrainEvaluator(epochs=3, batch_norm_head=True, dropout=0.1).evaluate(
            CNN, sp, TASK, seed=0)
        assert result.status == "ok" and result.metrics["val_acc"] > (0.3 if sp is space else 0.9)


def test_registry_builds_and_validates_options():
    evaluator = registry.create("evaluators", "train", epochs=2, lr="0.01", max_chunk=16)
    assert isinstance(evaluator, TrainEvaluator) and evaluator.config.lr == 0.01
    assert pickle.loads(pickle.dumps(evaluator)).config == evaluator.config  # sent to workers
    assert evaluator.config.max_chunk == 16
    with pytest.raises(ConfigError, match="epochz"):
        registry.create("evaluators", "train", epochz=2)
    with pytest.raises(ConfigError, match="optimizer"):
        registry.create("evaluators", "train", optimizer="lbfgs")
    with pytest.raises(ConfigError, match="dropout"):
        TrainEvaluator(dropout=1.5)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            TrainEvaluator(device="cuda")


@pytest.mark.slow
def test_local_and_process_executors_give_identical_training_results():
    # real training (digits, a narrow chain space, 1 epoch) in this process and in a one-worker
    # pool. Torch's float sums depend on its thread count (1 here, see conftest; a worker used to
    # get one per core), so both executors must run every evaluation with the same count.
    from nasforge.core import Objective
    from nasforge.run.executors import LocalExecutor, ProcessExecutor
    from nasforge.run.loop import Budget, Search
    from nasforge.run.rundir import build_space
    from nasforge.run.store import Store

    space = build_space("chain", {"features": [16, 32], "max_conv": 3}, TASK)

    def run(executor):
        search = Search(space=space, strategy=registry.create("strategies", "random", seed=4),
                        evaluator=TrainEvaluator(epochs=1, measure_latency=False), task=TASK,
                        objective=Objective("val_acc"), seed=4, store=Store(), executor=executor)
        return [(str(t.arch), t.status, t.seed, t.metrics, t.result.curves)
                for t in search.run(Budget(trials=2))]

    threads = torch.get_num_threads()
    local = run(LocalExecutor())
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    pooled = run(ProcessExecutor(workers=1))
    assert all(status == "ok" for _, status, *_ in local)
    assert pooled == local  # every metric and per-epoch value, exactly
