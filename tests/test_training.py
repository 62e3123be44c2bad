"""Training loop: learning, determinism, schedule, early stop, divergence, micro-batching; cost."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nasforge.cost import count_flops, count_params, measure_latency_ms
from nasforge.errors import ConfigError, DataError
from nasforge.data import load_task
from nasforge.training import (TrainConfig, TrainingDiverged, cosine_lr, evaluate, fit,
                               is_out_of_memory, predict_batches, resolve_device, train_step)


def digits_splits(seed: int = 0):
    """The digits task's (1, 8, 8) train / val / test splits (the project's own loader)."""
    task = load_task("digits", seed=seed)
    return [task.train, task.val, task.test]


TRAIN, VAL, TEST = digits_splits()


def mlp(seed: int = 0, hidden: int = 32, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, 10))


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


class LimitedMemory(nn.Module):
    """Wraps a model; raises an out-of-memory error for inputs of more than ``limit`` rows."""

    def __init__(self, inner: nn.Module, limit: int,
                 error: type[Exception] = torch.OutOfMemoryError,
                 message: str = "CUDA out of memory. Tried to allocate 2.00 GiB"):
        super().__init__()
        self.inner, self.limit, self.error, self.message = inner, limit, error, message
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise self.error(self.message)
        return self.inner(x)


# --------------------------------------------------------------------------------------------
# learning, determinism, RNG


def test_mlp_learns_digits():
    model = mlp()
    result = fit(model, TRAIN, VAL, TrainConfig(lr=1e-2, batch_size=64, epochs=15), seed=0)
    assert result.best_val_acc > 0.93
    assert evaluate(model, TEST)[0] > 0.9
    assert result.epochs_run == 15 and len(result.curves["val_acc"]) == 15
    assert result.curves["train_loss"][-1] < result.curves["train_loss"][0]
    assert not result.stopped_early and result.seconds > 0


def test_same_seed_same_training_and_global_rng_untouched():
    config = TrainConfig(lr=1e-2, batch_size=64, epochs=3)
    state = torch.get_rng_state()
    runs = []
    for seed in (5, 5, 6):
        model = mlp(dropout=0.3)
        torch.set_rng_state(state)
        curves = fit(model, TRAIN, VAL, config, seed=seed).curves
        assert torch.equal(torch.get_rng_state(), state)  # fit restores the global RNG
        runs.append((curves, params_of(model)))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert runs[0][0]["train_loss"] != runs[2][0]["train_loss"]  # another seed shuffles otherwise


def test_restore_best_loads_best_epoch_weights():
    model = mlp()
    config = TrainConfig(lr=3e-2, batch_size=32, epochs=6, cosine=False, restore_best=True)
    result = fit(model, TRAIN, VAL, config, seed=1)
    assert result.curves["val_acc"][result.best_epoch - 1] == result.best_val_acc
    assert evaluate(model, VAL)[0] == pytest.approx(result.best_val_acc)


def test_parameters_restricts_training_to_the_head():
    model = mlp()
    encoder_before = params_of(model[1])
    head_before = params_of(model[4])
    fit(model, TRAIN, None, TrainConfig(epochs=1), seed=0, parameters=model[4].parameters())
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, params_of(model[1])))
    assert not all(torch.equal(a, b) for a, b in zip(head_before, params_of(model[4])))


# --------------------------------------------------------------------------------------------
# schedule, early stop, time budget, divergence


def test_cosine_schedule_goes_from_lr_to_near_zero():
    result = fit(mlp(), TRAIN, None, TrainConfig(lr=0.05, batch_size=256, epochs=4), seed=0)
    lrs = result.curves["lr"]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.05 * 0.01
    assert cosine_lr(0.05, 0, 100) == 0.05 and cosine_lr(0.05, 50, 100) == pytest.approx(0.025)
    assert cosine_lr(0.05, 100, 100) == pytest.approx(0.0)
    flat = fit(mlp(), TRAIN, None, TrainConfig(lr=0.05, epochs=2, cosine=False), seed=0)
    assert flat.curves["lr"] == [0.05, 0.05]


def test_early_stop_below_threshold_only():
    stop = TrainConfig(epochs=5, early_stop_epoch=2, early_stop_threshold=1.01)
    result = fit(mlp(), TRAIN, VAL, stop, seed=0)
    assert result.stopped_early and result.epochs_run == 2 and len(result.curves["val_acc"]) == 2
    go_on = TrainConfig(epochs=3, early_stop_epoch=2, early_stop_threshold=0.0)
    result = fit(mlp(), TRAIN, VAL, go_on, seed=0)
    assert not result.stopped_early and result.epochs_run == 3
    with pytest.raises(ConfigError, match="validation"):
        fit(mlp(), TRAIN, None, stop, seed=0)


def test_max_seconds_stops_after_the_step_that_exceeds_it():
    result = fit(mlp(), TRAIN, VAL, TrainConfig(batch_size=8, epochs=50), seed=0, max_seconds=1e-9)
    assert result.timed_out and result.epochs_run == 1 and result.steps == 1
    assert len(result.curves["val_acc"]) == 1


class EmitsNaN(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tensor(float("nan"))


def test_nan_loss_raises_before_stepping():
    model = nn.Sequential(mlp(), EmitsNaN())
    before = params_of(model)
    with pytest.raises(TrainingDiverged, match="nan at epoch 1, step 1"):
        fit(model, TRAIN, VAL, TrainConfig(epochs=2), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(model)))


def test_exploding_lr_diverges():
    with pytest.raises(TrainingDiverged):
        fit(mlp(), TRAIN, VAL, TrainConfig(optimizer="sgd", lr=1e12, cosine=False, epochs=5),
            seed=0)


# --------------------------------------------------------------------------------------------
# micro-batching


def one_step(model: nn.Module, config: TrainConfig, rows: int = 24):
    """Parameters after one optimizer step on the first ``rows`` digits."""
    x, y = TRAIN[0][:rows].to(next(model.parameters()).dtype), TRAIN[1][:rows]
    result = fit(model, (x, y), None, config, seed=0)
    return params_of(model), result


@pytest.mark.parametrize("optimizer,dtype", [("sgd", torch.float32), ("adam", torch.float64)])
def test_oom_split_step_equals_full_batch_step(optimizer, dtype):
    config = TrainConfig(optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 1e-2,
                         weight_decay=1e-3, batch_size=24, epochs=1)
    full, _ = one_step(mlp(seed=3).to(dtype), config)
    limited = LimitedMemory(mlp(seed=3).to(dtype), limit=5)
    split, result = one_step(limited, config)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(full, split))
    assert not all(torch.equal(a, b) for a, b in zip(params_of(mlp(seed=3).to(dtype)), split))
    # 24 fails, 12 fails, 6 fails, then 3 fits: 8 chunks of 3 rows
    assert limited.sizes == [24, 12, 6] + [3] * 8
    assert result.chunk_size == 3


def test_chunk_size_is_kept_for_later_batches():
    limited = LimitedMemory(mlp(), limit=10)
    result = fit(limited, (TRAIN[0][:64], TRAIN[1][:64]), None,
                 TrainConfig(batch_size=32, epochs=2), seed=0)
    assert limited.sizes[:3] == [32, 16, 8]
    assert max(limited.sizes[3:]) == 8 and result.chunk_size == 8 and result.steps == 4


def test_forced_max_chunk_equals_full_batches():
    config = dict(optimizer="sgd", lr=0.05, batch_size=50, epochs=2)
    full = mlp(seed=4)
    fit(full, TRAIN, None, TrainConfig(**config), seed=2)
    capped = LimitedMemory(mlp(seed=4), limit=7)
    result = fit(capped, TRAIN, None, TrainConfig(**config, max_chunk=7), seed=2)
    assert max(capped.sizes) == 7 and result.chunk_size == 7
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5)
               for a, b in zip(params_of(full), params_of(capped)))


def test_other_errors_and_oom_at_one_row_propagate():
    with pytest.raises(ValueError, match="broken"):
        fit(LimitedMemory(mlp(), limit=0, error=ValueError, message="broken"), TRAIN, None,
            TrainConfig(epochs=1), seed=0)
    with pytest.raises(torch.OutOfMemoryError):
        fit(LimitedMemory(mlp(), limit=0), TRAIN, None, TrainConfig(epochs=1), seed=0)


def test_out_of_memory_recognised_by_message():
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20 MiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))
    limited = LimitedMemory(mlp(), limit=4, error=RuntimeError)
    sgd = torch.optim.SGD(limited.parameters(), lr=0.1)
    loss, acc, chunk = train_step(limited, sgd, TRAIN[0][:16], TRAIN[1][:16], chunk=16,
                                  device=torch.device("cpu"))
    assert chunk == 4 and math.isfinite(loss) and 0 <= acc <= 1


def test_predict_batches_splits_on_oom_and_restores_mode():
    model = mlp()
    expected = model.eval()(TEST[0]).detach()
    limited = LimitedMemory(model, limit=50).train()
    out = predict_batches(limited, TEST[0], batch_size=200)
    assert torch.allclose(out, expected, atol=1e-6) and limited.training
    assert limited.sizes[:3] == [200, 100, 50] and max(limited.sizes[2:]) == 50
    emb = predict_batches(lambda x: x.flatten(1)[:, :5], TEST[0], batch_size=7)
    assert torch.equal(emb, TEST[0].flatten(1)[:, :5])
    with pytest.raises(DataError):
        predict_batches(model, TEST[0][:0])


def test_batch_norm_model_with_single_row_remainder_trains():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Linear(16, 10))
    result = fit(model, (TRAIN[0][:17], TRAIN[1][:17]), None, TrainConfig(batch_size=8, epochs=2),
                 seed=0)
    assert result.steps == 4
    one_by_one = fit(mlp(), (TRAIN[0][:5], TRAIN[1][:5]), None, TrainConfig(batch_size=1, epochs=1),
                     seed=0)
    assert one_by_one.steps == 5


def test_dense_per_pixel_labels_give_accuracy_per_pixel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 4, 4, generator=g)
    y = (x[:, 0] > 0).long()  # segmentation: a label per pixel
    model = nn.Conv2d(1, 2, 1)
    result = fit(model, (x, y), (x, y), TrainConfig(lr=0.1, batch_size=16, epochs=10), seed=0)
    assert 0 <= min(result.curves["train_acc"]) and max(result.curves["train_acc"]) <= 1
    assert result.best_val_acc > 0.95


# --------------------------------------------------------------------------------------------
# validation of config and device


@pytest.mark.parametrize("bad", [dict(optimizer="rmsprop"), dict(lr=0), dict(lr=float("nan")),
                                 dict(batch_size=0), dict(epochs=0), dict(max_chunk=0),
                                 dict(weight_decay=-1), dict(momentum=1.0), dict(grad_clip=0),
                                 dict(nesterov=True, optimizer="adam"),
                                 dict(early_stop_epoch=2), dict(early_stop_epoch=30,
                                                                early_stop_threshold=0.5)])
def test_bad_config_is_refused(bad):
    key = next(iter(bad))
    with pytest.raises(ConfigError, match=key.split("_")[0]):
        TrainConfig(**bad)


def test_bad_device_and_data_are_refused():
    with pytest.raises(ConfigError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(DataError):
        fit(mlp(), (TRAIN[0][:5], TRAIN[1][:4]), None, TrainConfig(), seed=0)


def test_grad_clip_and_sgd_nesterov_train():
    config = TrainConfig(optimizer="sgd", nesterov=True, lr=0.05, grad_clip=1.0, epochs=3,
                         batch_size=32)
    assert fit(mlp(), TRAIN, VAL, config, seed=0).best_val_acc > 0.8


# --------------------------------------------------------------------------------------------
# cost


def test_params_flops_latency():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    assert count_params(model) == (4 * 9 + 4) + (144 * 10 + 10)
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 4 + 144 * 10 + 10
    # FLOPs = 2 per multiply-add: conv 4 filters x 9 taps x 36 positions, linear 144 x 10
    model.train()
    assert count_flops(model, (1, 8, 8)) == 2 * (4 * 9 * 36 + 144 * 10)
    assert model.training
    latency = measure_latency_ms(model, (1, 8, 8), repeats=5, warmup=1)
    assert 0 < latency < 1000 and model.training
    with pytest.raises(ConfigError):
        measure_latency_ms(model, (1, 8, 8), repeats=0)
