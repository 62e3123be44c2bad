"""Training loop: learning, determinism, schedule, early stop, divergence, micro-batching; cost."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

from pathlib import Path

import pytest
import torch
from torch import nn

from nasforge.cost import count_flops, count_params, measure_latency_ms
from nasforge.errors import ConfigError, DataError
from nasforge.data import load_task
from nasforge.training import (BatchStream, Callback, Criterion, Engine, TrainConfig,
                               TrainingDiverged, cosine_lr, evaluate, evaluate_metrics, fit,
                               is_out_of_memory, predict_batches, reset_parameters,
                               resolve_device, seeded_module, train_step)


def digits_splits(seed: int = 0):
    """The digits task's (1, 8, 8) train / val / test splits (the project's own loader)."""
    task = load_task("digits", seed=seed)
    return [task.train, task.val, task.test]


TRAIN, VAL, TEST = digits_splits()
SMALL = (TRAIN[0][:512], TRAIN[1][:512])  # for the resume tests, which train several times


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


# --------------------------------------------------------------------------------------------
# the engine: metrics by task kind


def test_classification_metrics_match_known_values():
    # 4 rows, 3 classes: predictions 0, 1, 1, 2 for labels 0, 1, 2, 2
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.9], [0.0, 1.0, 2.0]])
    y = torch.tensor([0, 1, 2, 2])
    m = Criterion(TrainConfig(top_k=(2,))).metrics(logits, y)
    assert m["acc"] == 0.75 and m["top2_acc"] == 1.0
    # F1 per class: 1, 2/3 (tp 1, fp 1), 2/3 (tp 1, fn 1) -> macro 7/9 (as sklearn's f1 macro)
    assert m["macro_f1"] == pytest.approx(7 / 9)
    assert m["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item())


def test_segmentation_pixel_accuracy_and_mean_iou_skip_the_ignore_index():
    # one 2x2 image, 2 classes; the last pixel is ignored (255)
    y = torch.tensor([[[0, 1], [1, 255]]])
    pred = torch.tensor([[[0, 1], [0, 0]]])
    logits = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float() * 5
    m = Criterion(TrainConfig(kind="segmentation", ignore_index=255)).metrics(logits, y)
    assert m["acc"] == pytest.approx(2 / 3)
    # class 0: tp 1, union 2 -> 1/2; class 1: tp 1, union 2 -> 1/2
    assert m["miou"] == pytest.approx(0.5)


def test_segmentation_training_learns_and_monitors_miou():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 6, 6, generator=g)
    y = (x[:, 0] > 0).long()
    y[:, 0, 0] = 7  # an ignored pixel per image, with a label no output has
    config = TrainConfig(kind="segmentation", ignore_index=7, lr=0.1, batch_size=16, epochs=8)
    result = fit(seeded_module(lambda: nn.Conv2d(1, 2, 1), 0), (x, y), (x, y), config, seed=0)
    assert result.monitor == "miou" and result.best_score == max(result.curves["val_miou"])
    assert result.best_score > 0.9 and result.best_metrics["acc"] > 0.95


def test_regression_minimises_mse_and_picks_the_lowest_epoch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    config = TrainConfig(kind="regression", lr=0.05, batch_size=32, epochs=30)
    model = seeded_module(lambda: nn.Linear(3, 1), 0)
    result = fit(model, (x, y), (x, y), config, seed=0)
    assert result.monitor == "mse" and result.best_score == min(result.curves["val_mse"])
    assert result.best_score < 1e-3 and math.isnan(result.best_val_acc)
    assert evaluate_metrics(model, (x, y), config)["mse"] < 1e-3


def test_label_smoothing_changes_training_loss_only():
    plain = fit(mlp(), TRAIN, VAL, TrainConfig(epochs=1, batch_size=64), seed=0)
    smooth = fit(mlp(), TRAIN, VAL, TrainConfig(epochs=1, batch_size=64, label_smoothing=0.2),
                 seed=0)
    # a smoothed target keeps the loss away from 0: its train loss is higher
    assert smooth.curves["train_loss"][0] > plain.curves["train_loss"][0]
    model = mlp()
    x, y = TRAIN[0][:64], TRAIN[1][:64]
    out = model(x)
    smoothed = Criterion(TrainConfig(label_smoothing=0.2)).loss(out, y)
    expected = 0.8 * nn.functional.cross_entropy(out, y) - 0.2 * out.log_softmax(1).mean(1).mean()
    assert smoothed.item() == pytest.approx(expected.item(), rel=1e-5)
    # validation loss is plain cross-entropy
    assert Criterion(TrainConfig(label_smoothing=0.2)).loss(out, y, training=False).item() == \
        pytest.approx(nn.functional.cross_entropy(out, y).item())


@pytest.mark.parametrize("bad", [dict(kind="detection"), dict(label_smoothing=1.0),
                                 dict(top_k=(0,)), dict(monitor="miou"),
                                 dict(kind="regression", label_smoothing=0.1)])
def test_bad_engine_options_are_refused(bad):
    with pytest.raises(ConfigError, match=next(iter(bad)).split("_")[0]):
        TrainConfig(**bad)


# --------------------------------------------------------------------------------------------
# the engine: optimizers, parameter groups, callbacks, clipping


def test_parameter_groups_get_their_own_learning_rates():
    model = mlp()
    frozen = params_of(model)
    groups = [{"params": model[1].parameters(), "lr": 0.0}, {"params": model[4].parameters()}]
    result = fit(model, TRAIN, None, TrainConfig(lr=1e-2, epochs=1, batch_size=64), seed=0,
                 parameters=groups)
    after = params_of(model)
    assert torch.equal(after[0], frozen[0]) and torch.equal(after[1], frozen[1])  # lr 0
    assert not torch.equal(after[2], frozen[2])
    assert result.curves["lr"][0] == 0.0  # the first group's rate


class Bilevel(Callback):
    """DARTS-like: before each weight step, one step of the 'alpha' optimizer on a val batch."""

    def __init__(self, val):
        self.val, self.steps, self.seen = val, 0, []

    def on_fit_start(self, engine):
        self.stream = engine.stream("val", self.val, batch_size=32)

    def on_step_start(self, engine):
        self.seen.append((engine.epoch, engine.step, engine.batch[0].shape[0]))
        engine.optimize(*self.stream.next(), optimizers=("alpha",))
        self.steps += 1

    def on_epoch_end(self, engine, logs):
        engine.state.setdefault("epochs", []).append(logs["train_loss"])

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def two_optimizer_engine(callbacks=(), seed=0, model=None):
    model = model or mlp()
    weights = torch.optim.SGD(model[1].parameters(), lr=0.05, momentum=0.9)
    alpha = torch.optim.Adam(model[4].parameters(), lr=1e-2)
    return model, Engine(model, TrainConfig(epochs=4, batch_size=128, grad_clip=5.0), seed=seed,
                         optimizers={"weights": weights, "alpha": alpha},
                         step_optimizers=("weights",), callbacks=list(callbacks))


def test_callback_runs_its_own_optimizer_step_on_validation_batches():
    before = params_of(mlp())
    cb = Bilevel(VAL)
    model, engine = two_optimizer_engine([cb])
    result = engine.fit(TRAIN, VAL)
    steps_per_epoch = math.ceil(TRAIN[0].shape[0] / 128)
    assert cb.steps == result.steps == 4 * steps_per_epoch
    assert cb.seen[0] == (1, 0, 128) and cb.seen[-1][:2] == (4, result.steps - 1)
    after = params_of(model)
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # both optimizers stepped
    assert len(engine.state["epochs"]) == 4 and result.best_val_acc > 0.8
    # without the callback only the 'weights' optimizer steps: the head stays as initialised
    model, engine = two_optimizer_engine()
    engine.fit(TRAIN, VAL)
    assert torch.equal(params_of(model)[2], before[2])


def test_callback_can_stop_training_and_see_counters():
    class StopAfterTwo(Callback):
        def on_epoch_end(self, engine, logs):
            engine.stop = engine.epoch == 2

    result = fit(mlp(), TRAIN, VAL, TrainConfig(epochs=5, batch_size=128), seed=0,
                 callbacks=[StopAfterTwo()])
    assert result.epochs_run == 2 and len(result.curves["val_acc"]) == 2


def test_grad_clip_bounds_the_update():
    # SGD without momentum: the update is lr * clipped gradient, so its norm is <= lr * clip
    model = mlp()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = TRAIN[0][:64], TRAIN[1][:64] * 0 + 3
    train_step(model, opt, x, y * 0 + 3, chunk=64, device=torch.device("cpu"), grad_clip=0.01)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-4)


def test_device_auto_resolves_to_an_available_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert fit(mlp(), TRAIN, VAL, TrainConfig(epochs=1), seed=0, device="auto").epochs_run == 1


# --------------------------------------------------------------------------------------------
# no global random state


def test_building_and_training_never_touch_the_global_rng():
    state = torch.get_rng_state()
    built = [seeded_module(lambda: mlp_body(0.3), 4) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    results = []
    for model, global_seed in zip(built, (1, 2)):
        torch.manual_seed(global_seed)  # a different global state must not change anything
        results.append((fit(model, TRAIN, VAL, TrainConfig(epochs=2, batch_size=64), seed=3).curves,
                        params_of(model)))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_seeded_module_equals_torch_default_init_under_manual_seed():
    torch.manual_seed(11)
    expected = mlp_body(0.0)
    got = seeded_module(lambda: mlp_body(0.0), 11)
    assert all(torch.equal(a, b) for a, b in zip(expected.state_dict().values(),
                                                 got.state_dict().values()))
    lstm = seeded_module(lambda: nn.LSTM(3, 4), 2)
    torch.manual_seed(2)
    assert all(torch.equal(a, b) for a, b in zip(nn.LSTM(3, 4).parameters(), lstm.parameters()))


def test_unknown_module_with_parameters_is_refused_with_its_name():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.alpha = nn.Parameter(torch.ones(3))

    with pytest.raises(ConfigError, match="Scale.*reset_parameters"):
        reset_parameters(nn.Sequential(Scale()), torch.Generator())
    # seeded_module falls back to a forked, seeded global RNG, says so, and keeps __init__'s values
    state = torch.get_rng_state()
    with pytest.warns(UserWarning, match="Scale.*reset_parameters"):
        built = seeded_module(lambda: nn.Sequential(Scale(), nn.Linear(3, 2)), 5)
    assert torch.equal(built[0].alpha, torch.ones(3))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(5)
    Scale()
    assert torch.equal(built[1].weight, nn.Linear(3, 2).weight)

    class Alpha(Scale):
        def reset_parameters(self, generator):
            nn.init.normal_(self.alpha, generator=generator)

    a = seeded_module(Alpha, 3)
    b = seeded_module(Alpha, 3)
    assert torch.equal(a.alpha, b.alpha) and not torch.equal(a.alpha, torch.ones(3))


def mlp_body(dropout: float) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(32, 10))


# --------------------------------------------------------------------------------------------
# checkpoints and exact resume


def resume_engine(seed=0):
    model = seeded_module(lambda: mlp_body(0.2), 9)
    cb = Bilevel(VAL)
    weights = torch.optim.SGD(model[1].parameters(), lr=0.05, momentum=0.9)
    alpha = torch.optim.Adam(model[4].parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(alpha, step_size=1, gamma=0.5)
    config = TrainConfig(epochs=4, batch_size=128, grad_clip=5.0, restore_best=True,
                         label_smoothing=0.1)
    engine = Engine(model, config, seed=seed, optimizers={"weights": weights, "alpha": alpha},
                    step_optimizers=("weights",), schedulers={"alpha": sched}, callbacks=[cb])
    return model, engine, cb


class Interrupt(Callback):
    def on_epoch_start(self, engine):
        if engine.epoch == 3:
            os._exit(0)  # the process dies (no clean-up) right after epoch 2's checkpoint


def test_resume_from_a_checkpoint_equals_training_straight(tmp_path):
    model, engine, cb = resume_engine()
    straight = engine.fit(SMALL, VAL)
    expected = params_of(model)

    path = tmp_path / "engine.pt"
    # the first half in another process, which dies after epoch 2
    script = textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_training as t
        model, engine, cb = t.resume_engine()
        engine.callbacks.append(t.Interrupt())
        engine.fit(t.SMALL, t.VAL, checkpoint={str(path)!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 2 and not saved["finished"]
    assert len(saved["result"]["curves"]["val_acc"]) == 2

    model2, engine2, cb2 = resume_engine()
    engine2.callbacks.append(Callback())  # the same number of callbacks as the first half
    resumed = engine2.fit(SMALL, VAL, checkpoint=path, resume=True)
    assert resumed.resumed_from_epoch == 2 and cb2.steps == straight.steps
    assert resumed.curves == straight.curves
    assert (resumed.best_epoch, resumed.best_val_acc) == (straight.best_epoch, straight.best_val_acc)
    assert all(torch.equal(a, b) for a, b in zip(params_of(model2), expected))
    # resuming a finished checkpoint trains nothing more and gives the same model
    model3, engine3, _ = resume_engine()
    engine3.callbacks.append(Callback())
    again = engine3.fit(SMALL, VAL, checkpoint=path, resume=True)
    assert again.curves == straight.curves and again.resumed_from_epoch == 4
    assert all(torch.equal(a, b) for a, b in zip(params_of(model3), expected))


def test_checkpoint_is_written_atomically_each_epoch_and_checked_on_resume(tmp_path):
    path = tmp_path / "ck.pt"
    epochs = []

    class Watch(Callback):
        def on_epoch_start(self, engine):
            if path.exists():
                epochs.append(torch.load(path, weights_only=True)["epoch"])

    fit(mlp(), TRAIN, VAL, TrainConfig(epochs=3, batch_size=256), seed=0, checkpoint=path,
        callbacks=[Watch()])
    assert epochs == [1, 2] and not (tmp_path / "ck.pt.tmp").exists()
    with pytest.raises(ConfigError, match="lr"):
        fit(mlp(), TRAIN, VAL, TrainConfig(epochs=3, batch_size=256, lr=0.5), seed=0,
            checkpoint=path, resume=True)
    with pytest.raises(ConfigError, match="seed"):
        fit(mlp(), TRAIN, VAL, TrainConfig(epochs=3, batch_size=256), seed=1, checkpoint=path,
            resume=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        fit(mlp(), TRAIN, VAL, TrainConfig(epochs=3, batch_size=256), seed=0, checkpoint=path,
            resume=True)


def test_batch_stream_cycles_through_every_row_and_restores():
    x = torch.arange(10).float().unsqueeze(1)
    stream = BatchStream((x, torch.arange(10)), batch_size=4, seed=0)
    first = torch.cat([stream.next()[1] for _ in range(3)])
    assert sorted(first.tolist()) == list(range(10))
    state = stream.state_dict()
    ahead = [stream.next()[1] for _ in range(4)]
    stream.load_state_dict(state)
    assert all(torch.equal(a, stream.next()[1]) for a in ahead)


def test_evaluators_never_seed_or_read_the_global_rng(monkeypatch):
    """Before the engine, building a network and training reseeded torch's global RNG (inside
    ``fork_rng``); now evaluators draw only from their own generators, so they run with every
    global seeding function disabled and give the same results as without that."""
    from nasforge.evaluators.deep_prior import DeepPriorEvaluator
    from nasforge.evaluators.train import TrainEvaluator
    from nasforge.run.rundir import build_space

    task = load_task("digits", seed=0)
    space = build_space("chain", {}, task)
    arch = space.parse("[C(16,3,1,1,1), P(2,2,0,0), SM(10)]")
    evaluators = [TrainEvaluator(epochs=1, dropout=0.3, measure_latency=False),
                  DeepPriorEvaluator(epochs=1, classifier="mlp", hidden=16,
                                     measure_latency=False)]
    expected = [ev.evaluate(arch, space, task, seed=3).metrics for ev in evaluators]

    def forbidden(*args, **kwargs):
        raise AssertionError("the global RNG was used")

    for name in ("manual_seed", "seed", "set_rng_state", "get_rng_state"):
        monkeypatch.setattr(torch, name, forbidden)
        monkeypatch.setattr(torch.random, name, forbidden)
    monkeypatch.setattr(torch.random, "fork_rng", forbidden)
    for ev, metrics in zip(evaluators, expected):
        result = ev.evaluate(arch, space, task, seed=3)
        assert result.status == "ok", result.reason
        assert result.metrics == metrics
