"""Evaluator ``train``: build the architecture, train it with ``fit``, report accuracy and cost.

The network-building helpers here (``build_network``, ``add_head_regularizer``,
``feature_shape``) are shared with other evaluators (the deep-prior evaluator builds the same
network, freezes its encoder and probes it), so every evaluator initialises a given
architecture and seed identically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn

from ..core import Architecture, Evaluator, Network, SearchSpace, Task, TrialResult
from ..cost import count_flops, count_params, measure_latency_ms
from ..errors import ArchitectureError, ConfigError
from ..registry import register
from ..training import (Criterion, Engine, TrainConfig, TrainingDiverged, evaluate_metrics, fit,
                        resolve_device, seeded_module)


class HeadRegularizer(nn.Module):
    """Batch norm and / or dropout on the flattened encoder features; output keeps their shape."""

    def __init__(self, features: int, *, batch_norm: bool, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm1d(features) if batch_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.norm(torch.flatten(x, 1))).view_as(x)


def feature_shape(encoder: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of one encoder output (without the batch dimension), from a dry run in eval mode."""
    param = next(iter(encoder.parameters()), None)
    x = torch.zeros(2, *input_shape, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            return tuple(encoder(x).shape[1:])
    finally:
        encoder.train(was_training)


def add_head_regularizer(network: Network, input_shape: Sequence[int], *, batch_norm: bool = False,
                         dropout: float = 0.0) -> Network:
    """Put batch norm / dropout on the encoder features in front of ``network.head`` (in place)."""
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout = {dropout!r}; expected a probability in [0, 1)")
    if not batch_norm and dropout == 0:
        return network
    features = math.prod(feature_shape(network.encoder, input_shape))
    network.head = nn.Sequential(HeadRegularizer(features, batch_norm=batch_norm, dropout=dropout),
                                 network.head)
    return network


def build_network(space: SearchSpace, arch: Architecture, task: Task, *, seed: int,
                  batch_norm_head: bool = False, dropout: float = 0.0) -> Network:
    """``space``'s network for ``arch`` on ``task``, initialised from a generator seeded ``seed``.

    Built by ``training.seeded_module``: torch's global RNG is neither read nor reseeded, and the
    weights equal those of building under ``torch.manual_seed(seed)``.
    Raises ``ArchitectureError`` if ``arch`` does not fit ``task``.
    """
    space.check(arch, task)

    def factory() -> Network:
        network = space.build(arch, task)
        if batch_norm_head or dropout > 0:
            if not isinstance(network, Network):
                raise ArchitectureError(f"space {space.name!r} built a {type(network).__name__}, "
                                        "not a Network with encoder and head; batch_norm_head / "
                                        "dropout need one")
            add_head_regularizer(network, task.input_shape, batch_norm=batch_norm_head,
                                 dropout=dropout)
        return network

    return seeded_module(factory, seed)


def save_state_dict(model: nn.Module, path: Path) -> Path:
    """Write ``model``'s weights (on CPU) to ``path`` atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path


@register("evaluators", "train")
class TrainEvaluator(Evaluator):
    """Full training of each architecture (MetaQNN / DP-NAS style), scored on validation accuracy.

    Metrics: ``val_acc`` (best validation accuracy over the epochs; also ``reward``),
    ``final_val_acc``, ``train_acc`` / ``train_loss`` (last epoch, measured during training),
    ``test_acc`` / ``test_loss`` and ``best_epoch``. With ``restore_best`` (default) the weights of
    the best validation epoch are restored after training, so ``test_acc`` and the saved model are
    those of the model ``val_acc`` describes; otherwise they are the final model's.
    ``stopped_early`` is 1.0 when DP-NAS early stopping ended training: such a trial stays ``ok``
    (its low accuracy is a real measurement a strategy learns from), only shorter. ``timed_out``
    is 1.0 when ``max_seconds`` cut training short.
    Cost: ``params``, ``flops`` (FLOPs of one input, 2 per multiply-add), ``train_seconds``,
    ``epochs`` and ``latency_ms`` (batch of one, on ``device``; when ``measure_latency``).
    A build error, a diverged loss or any other exception gives a ``failed`` result.

    Training runs on ``nasforge.training``'s engine: the loss and metrics follow the task's kind
    (a ``segmentation`` task trains with per-pixel cross-entropy, picks the best epoch by mean
    IoU and adds ``val_miou`` / ``test_miou``; a ``language`` task picks it by perplexity and
    adds ``val_ppl`` / ``test_ppl``, ``val_acc`` being next-token accuracy); ``label_smoothing``,
    ``grad_clip``, ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``) and ``amp`` (mixed
    precision, CUDA only) pass through to it. Weights are initialised from a generator seeded by the trial seed; torch's
    global RNG is never used.

    ``aux_weight`` > 0 trains an auxiliary head when the network has one (a darts network built
    with ``auxiliary=true`` exposes ``model.aux_logits`` after a training-mode forward): the loss
    adds ``aux_weight`` times the task loss of the auxiliary logits (DARTS: 0.4). Default 0: off.

    The defaults (Adam, lr 3e-3, batch 64, 20 epochs, cosine) suit small data such as digits,
    where a small CNN reaches about 98% validation accuracy in under a second of CPU time.
    """

    name = "train"

    def __init__(self, *, optimizer: Literal["adam", "adamw", "sgd"] = "adam", lr: float = 3e-3,
                 weight_decay: float = 0.0, momentum: float = 0.9, nesterov: bool = False,
                 batch_size: int = 64, epochs: int = 20, cosine: bool = True,
                 batch_norm_head: bool = False, dropout: float = 0.0,
                 early_stop_epoch: int | None = None, early_stop_threshold: float | None = None,
                 max_chunk: int | None = None, grad_clip: float | None = None,
                 restore_best: bool = True, device: str = "cpu", measure_latency: bool = True,
                 max_seconds: float | None = None, label_smoothing: float = 0.0,
                 amp: bool = True, aux_weight: float = 0.0):
        self.config = TrainConfig(optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                                  momentum=momentum, nesterov=nesterov, batch_size=batch_size,
                                  epochs=epochs, cosine=cosine, early_stop_epoch=early_stop_epoch,
                                  early_stop_threshold=early_stop_threshold, max_chunk=max_chunk,
                                  grad_clip=grad_clip, restore_best=restore_best,
                                  label_smoothing=label_smoothing, amp=amp)
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout = {dropout!r}; expected a probability in [0, 1)")
        if isinstance(aux_weight, bool) or not isinstance(aux_weight, (int, float)) \
                or not (aux_weight >= 0 and math.isfinite(aux_weight)):
            raise ConfigError(f"aux_weight = {aux_weight!r}; expected a number >= 0 (DARTS: 0.4)")
        self.aux_weight = float(aux_weight)
        if max_seconds is not None and not max_seconds > 0:
            raise ConfigError(f"max_seconds = {max_seconds!r}; expected None or a number > 0")
        resolve_device(device)
        self.batch_norm_head = batch_norm_head
        self.dropout = dropout
        self.device = device
        self.measure_latency = measure_latency
        self.max_seconds = max_seconds

    #: metric and cost names of an ok result (objectives and constraints are checked against them)
    METRICS = frozenset({"val_acc", "reward", "final_val_acc", "train_acc", "train_loss", "test_acc",
                         "test_loss", "best_epoch", "stopped_early", "timed_out", "params", "flops",
                         "train_seconds", "epochs", "latency_ms"})

    def metrics(self) -> frozenset[str]:
        """Names of the metrics and cost keys an ok result carries (see the class docstring)."""
        return self.METRICS if self.measure_latency else self.METRICS - {"latency_ms"}

    def network(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int) -> Network:
        """The untrained network this evaluator trains; a saved ``model.pt`` loads into it."""
        return build_network(space, arch, task, seed=seed, batch_norm_head=self.batch_norm_head,
                             dropout=self.dropout)

    def evaluate(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
                 workdir: Path | None = None) -> TrialResult:
        """Train ``arch`` on ``task`` from ``seed``; a ``failed`` result rather than raising."""
        cost: dict[str, float] = {}
        try:
            net = self.network(arch, space, task, seed=seed)
        except ArchitectureError as exc:
            return TrialResult.failed(f"architecture does not fit task {task.name!r}: {exc}")
        except Exception as exc:
            return TrialResult.failed(f"building the network failed: {type(exc).__name__}: {exc}")
        stage = "measuring the network"
        try:
            cost["params"] = float(count_params(net))
            cost["flops"] = float(count_flops(net, task.input_shape))
            stage = "training"
            config = self.config.for_task(task.kind)
            if self.aux_weight > 0:
                engine = Engine(net, config, seed=seed, device=self.device,
                                loss_fn=auxiliary_task_loss(config, self.aux_weight))
                fitted = engine.fit(task.train, task.val, max_seconds=self.max_seconds)
            else:
                fitted = fit(net, task.train, task.val, config, seed=seed, device=self.device,
                             max_seconds=self.max_seconds)
            cost["train_seconds"] = fitted.seconds
            cost["epochs"] = float(fitted.epochs_run)
            stage = "testing"
            test = evaluate_metrics(net, task.test, config, device=self.device)
            test_acc, test_loss = test["acc"], test["loss"]
            if self.measure_latency:
                stage = "measuring latency"
                cost["latency_ms"] = measure_latency_ms(net, task.input_shape)
            curves = {k: list(fitted.curves[k]) for k in ("train_acc", "val_acc", "train_loss",
                                                         "val_loss")}
            metrics = {
                "val_acc": fitted.best_val_acc, "reward": fitted.best_val_acc,
                "final_val_acc": fitted.final_val_acc, "train_acc": curves["train_acc"][-1],
                "train_loss": curves["train_loss"][-1], "test_acc": test_acc,
                "test_loss": test_loss, "best_epoch": float(fitted.best_epoch),
                "stopped_early": float(fitted.stopped_early),
                "timed_out": float(fitted.timed_out),
            }
            if config.kind == "segmentation":  # the monitored metric, and its test value
                metrics["val_miou"] = fitted.best_metrics.get("miou", math.nan)
                metrics["test_miou"] = test["miou"]
            if config.kind == "language":  # perplexity picks the epoch; next-token acc as val_acc
                metrics["val_ppl"] = fitted.best_metrics.get("ppl", math.nan)
                metrics["test_ppl"] = test["ppl"]
            result = TrialResult(metrics=metrics, curves=curves, cost=cost)
            if workdir is not None:
                stage = "saving the model"
                result.artifacts["model"] = str(save_state_dict(net, Path(workdir) / "model.pt"))
            return result
        except TrainingDiverged as exc:
            return TrialResult.failed(f"training diverged: {exc}", cost=cost,
                                      curves={k: list(v) for k, v in exc.curves.items() if v})
        except Exception as exc:
            return TrialResult.failed(f"{stage} failed: {type(exc).__name__}: {exc}", cost=cost)


def auxiliary_task_loss(config: TrainConfig, weight: float):
    """An engine ``loss_fn``: the task loss of the logits plus ``weight`` times that of
    ``model.aux_logits`` when the model set them in this forward pass (else the task loss)."""
    criterion = Criterion(config)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        out = model(x)
        loss = criterion.loss(out, y)
        aux = getattr(model, "aux_logits", None)
        if aux is not None:
            loss = loss + weight * criterion.loss(aux, y)
        return loss, out

    return loss_fn


__all__ = ["TrainEvaluator", "auxiliary_task_loss", "build_network", "add_head_regularizer", "feature_shape",
           "HeadRegularizer", "save_state_dict"]
