"""The one training loop every evaluator uses: full training, linear probes, fine-tuning.

``fit`` trains a model with cross-entropy on ``(x, y)`` tensors: seeded shuffling (a local
``torch.Generator``), Adam / AdamW / SGD, a per-step cosine schedule, DP-NAS early stopping and
automatic micro-batching. ``evaluate`` and ``predict_batches`` run chunked inference (the latter
also computes embeddings for cached linear probes).

Micro-batching: when a batch does not fit in memory, the batch is split into chunks (the chunk
size halves until it fits and is kept for the following batches). Each chunk's mean loss is
weighted by ``chunk_rows / batch_rows`` and gradients are accumulated, so the optimizer step equals
the full-batch step exactly (up to float rounding) for models without batch norm. With batch norm,
the batch statistics (and running estimates) are those of each chunk, not of the whole batch.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, DataError

Data = tuple[torch.Tensor, torch.Tensor]


class TrainingDiverged(RuntimeError):
    """The training or validation loss became NaN or infinite; evaluators record a failed trial."""

    def __init__(self, message: str, curves: dict[str, list[float]] | None = None):
        super().__init__(message)
        self.curves = curves or {}


@dataclass
class TrainConfig:
    """How ``fit`` trains: optimizer, schedule, batch size, epochs, early stop, micro-batch cap.

    ``early_stop_epoch`` is 1-based: after that many epochs, training stops if the validation
    accuracy is below ``early_stop_threshold`` (DP-NAS). ``max_chunk`` caps the micro-batch size
    (``None``: whole batches, split only when memory runs out). ``restore_best`` loads the weights
    of the epoch with the best validation accuracy back into the model when training ends.
    """

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    batch_size: int = 128
    epochs: int = 20
    cosine: bool = True
    early_stop_epoch: int | None = None
    early_stop_threshold: float | None = None
    max_chunk: int | None = None
    grad_clip: float | None = None
    restore_best: bool = False
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"optimizer {self.optimizer!r}; expected 'adam', 'adamw' or 'sgd'")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr = {self.lr!r}; expected a positive finite number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay = {self.weight_decay!r}; expected a number >= 0")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum = {self.momentum!r}; expected a number in [0, 1)")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("nesterov = True needs optimizer 'sgd' with momentum > 0")
        for key in ("batch_size", "epochs", "eval_batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} = {value!r}; expected an integer >= 1")
        if self.max_chunk is not None and not (isinstance(self.max_chunk, int)
                                               and self.max_chunk >= 1):
            raise ConfigError(f"max_chunk = {self.max_chunk!r}; expected None or an integer >= 1")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip = {self.grad_clip!r}; expected None or a number > 0")
        if (self.early_stop_epoch is None) != (self.early_stop_threshold is None):
            raise ConfigError("early_stop_epoch and early_stop_threshold go together; "
                              f"got {self.early_stop_epoch!r} and {self.early_stop_threshold!r}")
        if self.early_stop_epoch is not None and not 1 <= self.early_stop_epoch <= self.epochs:
            raise ConfigError(f"early_stop_epoch = {self.early_stop_epoch!r}; "
                              f"expected an epoch in 1..{self.epochs}")


@dataclass
class FitResult:
    """What ``fit`` measured. Curves hold one value per epoch run; val values NaN without val."""

    curves: dict[str, list[float]] = field(default_factory=dict)
    best_val_acc: float = math.nan
    best_epoch: int = 0
    final_val_acc: float = math.nan
    epochs_run: int = 0
    steps: int = 0
    stopped_early: bool = False
    timed_out: bool = False
    chunk_size: int | None = None
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# memory


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an out-of-memory error from any device allocator."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def resolve_device(device: str | torch.device) -> torch.device:
    """A ``torch.device`` for ``device``; ``ConfigError`` if it is malformed or not available."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for but CUDA is not available; "
                              "use device 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    return dev


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global RNG for the block (dropout, init) and restore its state afterwards."""
    dev = torch.device(device)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] \
        if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------
# inference


def predict_batches(model_or_fn: nn.Module | Callable[[torch.Tensor], torch.Tensor],
                    x: torch.Tensor, *, batch_size: int = 512, device: str | torch.device = "cpu",
                    out_device: str | torch.device = "cpu") -> torch.Tensor:
    """Outputs of ``model_or_fn`` on ``x`` in chunks, without gradients (a module in eval mode).

    The chunk halves when memory runs out. Outputs are concatenated on ``out_device``.
    """
    if x.shape[0] == 0:
        raise DataError("predict_batches got an empty tensor; expected at least one row")
    if batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size!r}; expected an integer >= 1")
    dev = torch.device(device)
    module = model_or_fn if isinstance(model_or_fn, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    outputs: list[torch.Tensor] = []
    start, size = 0, batch_size
    try:
        with torch.no_grad():
            while start < x.shape[0]:
                oom = False
                try:
                    out = model_or_fn(x[start:start + size].to(dev))
                except Exception as exc:
                    if not is_out_of_memory(exc) or size == 1:
                        raise
                    oom = True
                if oom:
                    _release_memory(dev)
                    size //= 2
                    continue
                outputs.append(out.to(out_device))
                start += size
    finally:
        if module is not None:
            module.train(was_training)
    return torch.cat(outputs)


def evaluate(model: nn.Module, data: Data, *, batch_size: int = 512,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """Accuracy (fraction) and mean cross-entropy of ``model`` on ``data = (x, y)``."""
    x, y = data
    logits = predict_batches(model, x, batch_size=batch_size, device=device).float()
    y = y.to(logits.device)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return acc, loss


# --------------------------------------------------------------------------------------------
# training


def make_optimizer(params: Iterable[torch.Tensor], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over ``params``."""
    params = list(params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """The cosine-annealed learning rate at ``step`` (0-based) of ``total_steps``; 0 at the end."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _accumulate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int,
                device: torch.device) -> tuple[float, float]:
    """Forward and backward one batch in chunks; returns (mean loss, accuracy)."""
    n = x.shape[0]
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    labels = 0
    for start in range(0, n, chunk):
        xb = x[start:start + chunk].to(device, non_blocking=True)
        yb = y[start:start + chunk].to(device, non_blocking=True)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        (loss * (yb.shape[0] / n)).backward()
        loss_sum += loss.detach() * yb.shape[0]
        correct += (out.detach().argmax(1) == yb).sum()
        labels += yb.numel()  # one label per row, or per pixel for segmentation
    return (loss_sum / n).item(), correct.item() / labels


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, *, chunk: int, device: torch.device,
               grad_clip: float | None = None,
               params: list[torch.Tensor] | None = None) -> tuple[float, float, int]:
    """One optimizer step on the batch ``(x, y)``, split into chunks of at most ``chunk`` rows.

    Returns (mean loss, accuracy, chunk cap for the next batches): the cap halves on
    out-of-memory errors. Raises ``TrainingDiverged`` (before stepping) on a non-finite loss.
    """
    while True:
        size = max(1, min(chunk, x.shape[0]))
        optimizer.zero_grad(set_to_none=True)
        oom = False
        try:
            loss, acc = _accumulate(model, x, y, size, device)
        except Exception as exc:
            if not is_out_of_memory(exc) or size == 1:
                raise
            oom = True
        if oom:  # outside the except block, so the traceback's tensors are already freed
            optimizer.zero_grad(set_to_none=True)
            _release_memory(device)
            chunk = size // 2
            continue
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training loss is {loss}")
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters() if params is None else params, grad_clip)
        optimizer.step()
        return loss, acc, chunk


def fit(model: nn.Module, train: Data, val: Data | None, config: TrainConfig, *, seed: int,
        device: str | torch.device = "cpu", parameters: Iterable[torch.Tensor] | None = None,
        max_seconds: float | None = None) -> FitResult:
    """Train ``model`` (moved to ``device``) with cross-entropy on ``train``; score it on ``val``.

    ``seed`` fixes the shuffling (a local generator) and the global RNG draws inside the loop
    (dropout), whose state is restored afterwards. ``parameters`` restricts what is optimized
    (default: every parameter that requires grad). ``max_seconds`` ends training after the step
    that exceeds it (the epoch is still scored). Raises ``TrainingDiverged`` on a NaN/inf loss.
    A last batch of a single row is skipped each epoch (batch norm cannot train on one row).
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config is a {type(config).__name__}; expected a TrainConfig")
    x, y = train
    n = x.shape[0]
    if n == 0 or y.shape[0] != n:
        raise DataError(f"training data has {n} inputs and {y.shape[0]} labels; expected the same "
                        "positive number")
    if config.early_stop_epoch is not None and val is None:
        raise ConfigError("early stopping needs validation data; val is None")
    dev = resolve_device(device)
    model.to(dev)
    params = [p for p in (parameters if parameters is not None else model.parameters())
              if p.requires_grad]
    if not params:
        raise ConfigError("fit got no trainable parameters (all have requires_grad=False)")
    optimizer = make_optimizer(params, config)
    generator = torch.Generator().manual_seed(seed)
    starts = list(range(0, n, config.batch_size))
    if config.batch_size > 1 and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()  # a last batch of one row: batch norm cannot train on it
    steps_per_epoch = len(starts)
    total_steps = steps_per_epoch * config.epochs
    chunk = config.max_chunk or config.batch_size
    result = FitResult(curves={k: [] for k in ("train_loss", "train_acc", "val_loss", "val_acc",
                                               "lr")})
    curves = result.curves
    best_state: dict[str, torch.Tensor] | None = None
    start_time = time.perf_counter()

    with seeded(seed + 1, dev):
        model.train()
        for epoch in range(1, config.epochs + 1):
            perm = torch.randperm(n, generator=generator).to(x.device)
            loss_sum, correct, seen, lr = 0.0, 0.0, 0, config.lr
            for b in starts:
                idx = perm[b:b + config.batch_size]
                if config.cosine:
                    lr = cosine_lr(config.lr, result.steps, total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                try:
                    loss, acc, chunk = train_step(model, optimizer, x[idx], y[idx], chunk=chunk,
                                                  device=dev, grad_clip=config.grad_clip,
                                                  params=params)
                except TrainingDiverged as exc:
                    raise TrainingDiverged(f"{exc} at epoch {epoch}, step {result.steps + 1}",
                                           curves) from None
                result.steps += 1
                loss_sum += loss * idx.shape[0]
                correct += acc * idx.shape[0]
                seen += idx.shape[0]
                if max_seconds is not None and time.perf_counter() - start_time > max_seconds:
                    result.timed_out = True
                    break
            curves["train_loss"].append(loss_sum / seen)
            curves["train_acc"].append(correct / seen)
            curves["lr"].append(lr)
            result.epochs_run = epoch
            if val is not None:
                val_acc, val_loss = evaluate(model, val, batch_size=config.eval_batch_size,
                                             device=dev)
                if not math.isfinite(val_loss):
                    raise TrainingDiverged(f"validation loss is {val_loss} at epoch {epoch}",
                                           curves)
                curves["val_acc"].append(val_acc)
                curves["val_loss"].append(val_loss)
                if not val_acc <= result.best_val_acc:  # first epoch (NaN) or an improvement
                    result.best_val_acc, result.best_epoch = val_acc, epoch
                    if config.restore_best:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                result.final_val_acc = val_acc
                if (epoch == config.early_stop_epoch
                        and val_acc < float(config.early_stop_threshold)):  # type: ignore[arg-type]
                    result.stopped_early = True
                    break
            if result.timed_out:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.chunk_size = min(chunk, config.batch_size)
    result.seconds = time.perf_counter() - start_time
    return result


__all__ = ["TrainConfig", "FitResult", "TrainingDiverged", "fit", "evaluate", "predict_batches",
           "train_step", "make_optimizer", "cosine_lr", "resolve_device", "seeded",
           "is_out_of_memory"]
