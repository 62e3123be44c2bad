"""The one training engine: every evaluator and every method trains through it.

Two ways in:

- ``fit(model, train, val, config, seed=...)`` trains a model on ``(x, y)`` tensors and returns a
  ``FitResult`` (what the ``train`` and ``deep_prior`` evaluators call).
- ``Engine(model, config, seed=..., ...)`` is the same loop as an object a method drives:
  several optimizers, callbacks, extra optimisation steps, checkpoints and exact resume.
  ``fit`` is ``Engine(...).fit(...)``.

What the engine does, by ``TrainConfig``:

- **Loss and metrics by task kind** (``config.kind``): ``classification`` (cross-entropy with
  optional ``label_smoothing``; metrics ``acc``, ``top{k}_acc`` for ``config.top_k``,
  ``macro_f1``, ``loss``), ``segmentation`` (per-pixel cross-entropy ignoring
  ``config.ignore_index``; ``acc`` = pixel accuracy, ``miou`` = mean IoU over the classes present
  in labels or predictions, ``loss``), ``regression`` (mean squared error; ``mse``, ``loss``),
  ``language`` (language modelling: outputs ``(N, T, vocab)`` for token targets ``(N, T)``,
  cross-entropy per token; ``ppl`` = exp of the mean token cross-entropy, ``acc`` = next-token
  accuracy, ``loss``; whole splits are scored chunk by chunk, never holding all outputs).
  Each kind monitors one validation metric (``acc``, ``miou``, ``mse``, ``ppl``;
  ``config.monitor`` overrides) for the best epoch, ``restore_best`` and DP-NAS early stopping.
- **Optimizers**: Adam / AdamW / SGD over the model's trainable parameters or over parameter
  groups (``parameters=[{"params": ..., "lr": ...}, ...]``), or any ``torch.optim`` optimizers
  given by name (``optimizers={"weights": ..., "alpha": ...}``); ``step_optimizers`` names those
  the training batches step (default: all), the others are stepped by callbacks. A per-step
  cosine schedule (``config.cosine``) anneals each group of the stepped optimizers from its
  initial learning rate; ``schedulers={"name": scheduler}`` are stepped at the end of each epoch
  (for a stepped optimizer, set ``cosine=False`` or the cosine overrides its scheduler).
- **Callbacks** (``Callback`` subclasses) at fit, epoch and step boundaries, with the engine as
  argument: ``engine.model``, ``engine.optimizers``, ``engine.schedulers``, ``engine.epoch``
  (1-based), ``engine.step`` (optimizer steps done), ``engine.batch`` (the current ``(x, y)``),
  ``engine.result`` (curves so far), ``engine.state`` (a dict saved in checkpoints),
  ``engine.rng`` (a seeded ``torch.Generator`` for the callback's own randomness) and
  ``engine.stop = True`` to end training after the current epoch.
  ``engine.optimize(x, y, optimizers=("alpha",), loss_fn=...)`` runs an extra optimisation step
  (micro-batching, mixed precision and clipping included), and ``engine.stream("val", data,
  batch_size)`` gives an endless, seeded, checkpointed sequence of batches (e.g. validation
  batches for a bilevel step).
- **Gradient clipping** (``grad_clip``, by global norm over the stepped optimizers' parameters),
  **label smoothing**, **device** ``cpu`` / ``cuda`` / ``cuda:N`` / ``auto`` and **mixed
  precision** on CUDA (``config.amp``: ``torch.autocast`` in float16 with a ``GradScaler``; CPU
  runs in float32). The CUDA path is written to the PyTorch AMP recipe but was not run in this
  project's tests (no GPU).
- **Checkpoints**: ``fit(..., checkpoint=path)`` writes after every epoch (temp file, then
  ``os.replace``) the model, optimizers, schedulers, grad scaler, generator states, epoch and
  step counters, curves, the best epoch's weights, early-stop state, callback and stream states;
  ``resume=True`` continues from that file exactly: the finished result equals an uninterrupted
  run's (weights and curves), in a new process with new objects.
- **Micro-batching**: when a batch does not fit in memory, it is split into chunks (the chunk
  size halves until it fits and is kept for the following batches). Each chunk's mean loss is
  weighted by ``chunk_rows / batch_rows`` and gradients are accumulated, so the optimizer step
  equals the full-batch step (up to float rounding) for models without batch norm; with batch
  norm, the batch statistics are each chunk's.
- **Early stopping** as DP-NAS does it: after ``early_stop_epoch`` epochs, stop if the monitored
  validation metric is below ``early_stop_threshold`` (above it for ``mse``).

Randomness comes only from local generators: shuffling from ``torch.Generator(seed)``, dropout
masks of ``nn.Dropout``/``Dropout1d/2d/3d`` modules from a generator seeded ``seed + 1`` (the
engine routes those modules to it while training), callbacks' draws from ``engine.rng``.
``seeded_module`` builds a module and initialises its parameters from a generator, so building
a network never reads or reseeds torch's global RNG. A model whose forward draws random numbers
by other means (``F.dropout`` called directly, ``torch.rand``) draws from the global RNG and is
then not reproducible; use ``nn.Dropout`` modules.

What a DARTS-style method calls (sketch)::

    class Bilevel(Callback):
        def on_fit_start(self, engine):
            self.val = engine.stream("val", val_data, batch_size=64)
        def on_step_start(self, engine):            # architecture step before the weight step
            x, y = self.val.next()
            engine.optimize(x, y, optimizers=("alpha",))

    engine = Engine(supernet, TrainConfig(epochs=50, grad_clip=5.0), seed=seed,
                    optimizers={"weights": sgd, "alpha": adam}, step_optimizers=("weights",),
                    callbacks=[Bilevel(), GumbelTemperature()])
    result = engine.fit(train, None, checkpoint=run_dir / "supernet.pt", resume=True)

ENAS follows the same pattern: a callback's ``on_step_start`` samples the architecture the shared
weights train on this step (``engine.model.use(controller.sample(engine.rng))``), and its
``on_epoch_end`` updates the controller on validation batches with
``engine.optimize(x, y, optimizers=("controller",), loss_fn=reinforce_loss)``, where
``reinforce_loss(model, x, y)`` returns ``(loss, None)``. A GDAS temperature schedule sets
``engine.model.tau`` in ``on_epoch_start``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, DataError

Data = tuple[torch.Tensor, torch.Tensor]
Kind = Literal["classification", "segmentation", "regression", "language"]
KINDS: tuple[str, ...] = ("classification", "segmentation", "regression", "language")
CHECKPOINT_VERSION = 1
M = TypeVar("M", bound=nn.Module)


class TrainingDiverged(RuntimeError):
    """The training or validation loss became NaN or infinite; evaluators record a failed trial."""

    def __init__(self, message: str, curves: dict[str, list[float]] | None = None):
        super().__init__(message)
        self.curves = curves or {}


@dataclass
class TrainConfig:
    """How the engine trains: optimizer, schedule, batch size, epochs, loss, early stop, precision.

    ``kind`` chooses loss and metrics (see the module docstring); ``monitor`` the validation
    metric that picks the best epoch (default per kind: ``acc``, ``miou``, ``mse``, ``ppl``).
    ``early_stop_epoch`` is 1-based: after that many epochs, training stops if the monitored
    validation metric is worse than ``early_stop_threshold`` (DP-NAS). ``max_chunk`` caps the
    micro-batch size (``None``: whole batches, split only when memory runs out).
    ``restore_best`` loads the weights of the best validation epoch back into the model when
    training ends. ``amp`` turns on mixed precision when the device is CUDA (ignored on CPU).
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
    kind: Kind = "classification"
    label_smoothing: float = 0.0
    top_k: tuple[int, ...] = ()
    ignore_index: int = -100
    monitor: str | None = None
    amp: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"optimizer {self.optimizer!r}; expected 'adam', 'adamw' or 'sgd'")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr = {self.lr!r}; expected a positive finite number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay = {self.weight_decay!r}; expected a number >= 0")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum = {self.momentum!r}; expected a number in [0, 1)")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("nesterov = True needs optimizer 'sgd' with momentum > 0")
        for key in ("batch_size", "epochs", "eval_batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} = {value!r}; expected an integer >= 1")
        if self.max_chunk is not None and not (isinstance(self.max_chunk, int)
                                               and self.max_chunk >= 1):
            raise ConfigError(f"max_chunk = {self.max_chunk!r}; expected None or an integer >= 1")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip = {self.grad_clip!r}; expected None or a number > 0")
        if self.kind not in KINDS:
            raise ConfigError(f"kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if not (isinstance(self.label_smoothing, (int, float))
                and 0 <= self.label_smoothing < 1):
            raise ConfigError(f"label_smoothing = {self.label_smoothing!r}; expected a number "
                              "in [0, 1)")
        if self.label_smoothing and self.kind == "regression":
            raise ConfigError("label_smoothing applies to classification and segmentation; "
                              "kind is 'regression'")
        self.top_k = tuple(self.top_k)
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.top_k):
            raise ConfigError(f"top_k = {self.top_k!r}; expected integers >= 1")
        if self.top_k and self.kind != "classification":
            raise ConfigError(f"top_k applies to classification; kind is {self.kind!r}")
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
            raise ConfigError(f"ignore_index = {self.ignore_index!r}; expected an integer")
        allowed = Criterion(self).metric_names()
        if self.monitor is not None and self.monitor not in allowed:
            raise ConfigError(f"monitor {self.monitor!r}; expected one of {', '.join(allowed)} "
                              f"for kind {self.kind!r}")
        if (self.early_stop_epoch is None) != (self.early_stop_threshold is None):
            raise ConfigError("early_stop_epoch and early_stop_threshold go together; "
                              f"got {self.early_stop_epoch!r} and {self.early_stop_threshold!r}")
        if self.early_stop_epoch is not None and not 1 <= self.early_stop_epoch <= self.epochs:
            raise ConfigError(f"early_stop_epoch = {self.early_stop_epoch!r}; "
                              f"expected an epoch in 1..{self.epochs}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def for_task(self, task_kind: str) -> "TrainConfig":
        """This config with the loss and metrics of a ``Task.kind``: ``segmentation`` tasks get
        ``kind="segmentation"``, ``language`` tasks ``kind="language"``, image and series tasks
        keep this config's kind."""
        if task_kind == "segmentation" and self.kind != "segmentation":
            return dataclasses.replace(self, kind="segmentation", top_k=())
        if task_kind == "language" and self.kind != "language":
            monitor = self.monitor if self.monitor in ("ppl", "acc", "loss") else None
            return dataclasses.replace(self, kind="language", top_k=(), monitor=monitor)
        return self


@dataclass
class FitResult:
    """What the engine measured. Curves hold one value per epoch run; val values NaN without val.

    ``best_val_acc`` / ``final_val_acc`` are the validation accuracy of the best / last epoch
    (NaN for regression); ``best_score`` the monitored metric at the best epoch and
    ``best_metrics`` / ``final_metrics`` every validation metric of those epochs.
    """

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
    monitor: str = "acc"
    best_score: float = math.nan
    best_metrics: dict[str, float] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from_epoch: int = 0


# --------------------------------------------------------------------------------------------
# loss and metrics by task kind


class Criterion:
    """Loss and metrics for ``config.kind``; see the module docstring for the metric names."""

    def __init__(self, config: TrainConfig):
        self.kind = config.kind
        self.label_smoothing = float(config.label_smoothing)
        self.top_k = tuple(config.top_k)
        self.ignore_index = int(config.ignore_index)
        default = {"classification": "acc", "segmentation": "miou", "regression": "mse",
                   "language": "ppl"}
        self.monitor = config.monitor or default[self.kind]
        self.maximize = self.monitor not in ("mse", "loss", "ppl")

    def metric_names(self) -> list[str]:
        if self.kind == "classification":
            return ["acc", *[f"top{k}_acc" for k in self.top_k], "macro_f1", "loss"]
        if self.kind == "segmentation":
            return ["acc", "miou", "loss"]
        if self.kind == "language":
            return ["ppl", "acc", "loss"]
        return ["mse", "loss"]

    def _regression_target(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if out.shape != y.shape:
            if out.numel() != y.numel():
                raise DataError(f"regression outputs of shape {tuple(out.shape)} do not match "
                                f"targets of shape {tuple(y.shape)}")
            return y.reshape(out.shape).to(out.dtype)
        return y.to(out.dtype)

    def loss(self, out: torch.Tensor, y: torch.Tensor, *, training: bool = True) -> torch.Tensor:
        """The mean loss of a batch (label smoothing only while training)."""
        smoothing = self.label_smoothing if training else 0.0
        if self.kind == "language":  # (N, T, vocab) against (N, T): mean over every token
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1),
                                   label_smoothing=smoothing)
        if self.kind == "classification":
            if smoothing:
                return F.cross_entropy(out, y, label_smoothing=smoothing)
            return F.cross_entropy(out, y)
        if self.kind == "segmentation":
            return F.cross_entropy(out, y, ignore_index=self.ignore_index,
                                   label_smoothing=smoothing)
        return F.mse_loss(out, self._regression_target(out, y))

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int] | None:
        """(correct predictions, labels counted) of a training batch; None for regression."""
        if self.kind == "classification":
            return (out.argmax(1) == y).sum(), y.numel()
        if self.kind == "language":
            return (out.argmax(-1) == y).sum(), y.numel()
        if self.kind == "segmentation":
            keep = y != self.ignore_index
            return ((out.argmax(1) == y) & keep).sum(), int(keep.sum())
        return None

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Every metric of the kind on whole-split outputs ``out`` (float) and targets ``y``."""
        y = y.to(out.device)
        if self.kind == "regression":
            mse = F.mse_loss(out, self._regression_target(out, y)).item()
            return {"mse": mse, "loss": mse}
        if self.kind == "language":
            return self.language_metrics(*self.language_sums(out, y))
        loss = self.loss(out, y, training=False).item()
        pred = out.argmax(1)
        classes = out.shape[1]
        if self.kind == "classification":
            result = {"acc": (pred == y).float().mean().item()}
            for k in self.top_k:
                top = out.topk(min(k, classes), dim=1).indices
                result[f"top{k}_acc"] = (top == y.unsqueeze(1)).any(1).float().mean().item()
            conf = confusion(pred, y, classes)
            tp = conf.diag().double()
            f1 = 2 * tp / (conf.sum(0) + conf.sum(1)).double().clamp_min(1)
            present = (conf.sum(0) + conf.sum(1)) > 0
            result["macro_f1"] = f1[present].mean().item() if present.any() else math.nan
            result["loss"] = loss
            return result
        keep = y != self.ignore_index
        labels = int(keep.sum())
        acc = ((pred == y) & keep).sum().item() / labels if labels else math.nan
        conf = confusion(pred[keep], y[keep], classes)
        union = conf.sum(0) + conf.sum(1) - conf.diag()
        present = union > 0
        iou = conf.diag().double()[present] / union[present].double()
        return {"acc": acc, "miou": iou.mean().item() if present.any() else math.nan,
                "loss": loss}


    @staticmethod
    def language_sums(out: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
        """(summed token cross-entropy, correct next tokens, tokens) of a chunk of outputs."""
        y = y.to(out.device)
        ce = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1),
                             reduction="sum").item()
        return ce, int((out.argmax(-1) == y).sum()), y.numel()

    @staticmethod
    def language_metrics(ce_sum: float, correct: int, tokens: int) -> dict[str, float]:
        """``ppl`` = exp(mean token cross-entropy), next-token ``acc`` and ``loss``."""
        loss = ce_sum / tokens
        return {"ppl": math.exp(loss) if loss < 700 else math.inf, "acc": correct / tokens,
                "loss": loss}


def split_metrics(model: nn.Module, data: Data, criterion: Criterion, *, batch_size: int,
                  device: torch.device, amp: bool = False) -> dict[str, float]:
    """Every metric of ``criterion.kind`` on a whole split; language models chunk by chunk."""
    if criterion.kind != "language":
        out = predict_batches(model, data[0], batch_size=batch_size, device=device,
                              amp=amp).float()
        return criterion.metrics(out, data[1])
    x, y = data
    if x.shape[0] == 0:
        raise DataError("cannot score an empty split; expected at least one row")
    ce, correct, tokens = 0.0, 0, 0
    for start in range(0, x.shape[0], batch_size):
        out = predict_batches(model, x[start:start + batch_size], batch_size=batch_size,
                              device=device, amp=amp)
        part = criterion.language_sums(out, y[start:start + batch_size])
        ce, correct, tokens = ce + part[0], correct + part[1], tokens + part[2]
    return criterion.language_metrics(ce, correct, tokens)


def confusion(pred: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """``classes x classes`` counts: row = true class, column = predicted class."""
    y, pred = y.reshape(-1).long(), pred.reshape(-1).long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(f"labels range over {int(y.min())}..{int(y.max())}; the model outputs "
                        f"{classes} classes")
    return torch.bincount(y * classes + pred, minlength=classes * classes).reshape(classes,
                                                                                   classes)


# --------------------------------------------------------------------------------------------
# devices, memory and generators


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
    """A ``torch.device`` for ``device`` (``auto``: CUDA when available, else CPU).

    ``ConfigError`` if it is malformed or not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r}; expected 'cpu', 'cuda', 'cuda:N' or 'auto'") \
            from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for but CUDA is not available; "
                              "use device 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r}; expected 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return dev


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _dropout_forward(module: nn.Dropout, generator: torch.Generator,
                     x: torch.Tensor) -> torch.Tensor:
    """``module``'s dropout with masks from ``generator`` (the same arithmetic as torch's CPU
    kernel, so a generator seeded like the global RNG gives the same masks)."""
    p = module.p
    if not module.training or p == 0:
        return x
    if p == 1:
        return x * 0
    if type(module) is nn.Dropout:
        shape = x.shape
    else:  # feature dropout: one draw per channel
        batched = x.dim() == {nn.Dropout1d: 3, nn.Dropout2d: 4, nn.Dropout3d: 5}[type(module)]
        lead = 2 if batched else 1
        shape = (*x.shape[:lead], *([1] * (x.dim() - lead)))
    noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - p,
                                                                           generator=generator)
    noise.div_(1 - p)
    return x * noise


@contextmanager
def dropout_from(model: nn.Module, generator: torch.Generator) -> Iterator[None]:
    """Inside the block, ``model``'s dropout modules draw their masks from ``generator``."""
    patched = [m for m in model.modules() if type(m) in _DROPOUTS]
    for m in patched:
        m.forward = (lambda mod: lambda x: _dropout_forward(mod, generator, x))(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


# --------------------------------------------------------------------------------------------
# building modules without global random state


def _fan_in_bias(weight: torch.Tensor, bias: torch.Tensor | None,
                 generator: torch.Generator) -> None:
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(bias, -bound, bound, generator=generator)


def _unknown_modules(module: nn.Module) -> list[str]:
    """Names of submodules with parameters or buffers of their own that ``reset_parameters``
    does not know how to initialise from a generator."""
    known = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase,
             nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.RNNBase, nn.PReLU)
    return [f"{name or '<root>'} ({type(m).__name__})" for name, m in module.named_modules()
            if (any(True for _ in m.parameters(recurse=False))
                or any(True for _ in m.buffers(recurse=False)))
            and not isinstance(m, known)
            and "generator" not in _parameters_of(getattr(m, "reset_parameters", None))]


def reset_parameters(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialise every parameter and buffer of ``module`` as torch's defaults do, drawing from
    ``generator`` in module order (so ``Generator(seed)`` gives what ``torch.manual_seed(seed)``
    and building the module would have given, for modules built in registration order).

    Linear, convolutions, batch / layer / group / instance norm, embeddings and RNN/LSTM/GRU are
    known; a module of another type that holds parameters or buffers of its own must define
    ``reset_parameters(generator=...)``, or ``ConfigError`` names it.
    """
    with torch.no_grad():
        for name, m in module.named_modules():
            own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
            if not own:
                continue
            if isinstance(m, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)):
                _fan_in_bias(m.weight, m.bias, generator)
            elif isinstance(m, nn.modules.batchnorm._NormBase):
                m.reset_parameters()
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                m.reset_parameters()
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, generator=generator)
                if m.padding_idx is not None:
                    m.weight[m.padding_idx].fill_(0)
            elif isinstance(m, nn.RNNBase):
                stdv = 1.0 / math.sqrt(m.hidden_size) if m.hidden_size > 0 else 0
                for w in m.parameters(recurse=False):
                    nn.init.uniform_(w, -stdv, stdv, generator=generator)
            elif isinstance(m, nn.PReLU):
                m.reset_parameters()
            elif "generator" in _parameters_of(getattr(m, "reset_parameters", None)):
                m.reset_parameters(generator=generator)
            else:
                raise ConfigError(
                    f"module {name or type(m).__name__!r} ({type(m).__name__}) holds parameters "
                    "or buffers nasforge cannot initialise from a generator; give it a method "
                    "reset_parameters(self, generator) that draws only from that generator")
    return module


def _parameters_of(fn: Callable | None) -> tuple[str, ...]:
    if fn is None:
        return ()
    import inspect
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return ()


_WARNED: set[str] = set()


def seeded_module(factory: Callable[[], M], seed: int) -> M:
    """``factory()``'s module with parameters initialised from a generator seeded ``seed``.

    The module is built on the meta device (no memory, no random draws), moved to the CPU and
    initialised by ``reset_parameters``: torch's global RNG is neither read nor reseeded, and
    the values equal those of building under ``torch.manual_seed(seed)``. If the factory cannot
    run on the meta device, it runs on the CPU inside ``fork_rng`` (global state restored) and
    every parameter is re-drawn from the generator all the same.

    Compatibility path: a module holding parameters or buffers of a type ``reset_parameters``
    does not know, and without ``reset_parameters(generator)``, cannot be rebuilt from a
    generator; the factory then runs on the CPU under a forked global RNG seeded ``seed``
    (restored afterwards, so deterministic, but not safe with other threads drawing at the same
    time) and a warning names the module. Give such modules ``reset_parameters(self, generator)``.
    """
    seed = int(seed)
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.device("meta"):
            module = factory()
    except (NotImplementedError, RuntimeError):  # an operation the meta device lacks
        module = None
    if module is None or any(isinstance(v, torch.Tensor) and v.is_meta
                             for m in module.modules() for v in vars(m).values()):
        # (a plain tensor attribute, not a buffer, would stay on the meta device)
        with torch.random.fork_rng(devices=[]):
            module = factory()
    unknown = _unknown_modules(module)
    if unknown:
        key = ", ".join(sorted({u.split(" (")[-1] for u in unknown}))
        if key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(f"seeded_module: {', '.join(unknown[:3])} hold parameters or buffers "
                          "nasforge cannot initialise from a generator; built under a forked, "
                          "seeded global RNG instead. Give the module a method "
                          "reset_parameters(self, generator).", stacklevel=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return factory()
    if any(p.is_meta for p in module.parameters()) or any(b.is_meta for b in module.buffers()):
        module = module.to_empty(device="cpu")
    return reset_parameters(module, generator)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# inference


def predict_batches(model_or_fn: nn.Module | Callable[[torch.Tensor], torch.Tensor],
                    x: torch.Tensor, *, batch_size: int = 512, device: str | torch.device = "cpu",
                    out_device: str | torch.device = "cpu", amp: bool = False) -> torch.Tensor:
    """Outputs of ``model_or_fn`` on ``x`` in chunks, without gradients (a module in eval mode).

    The chunk halves when memory runs out. Outputs are concatenated on ``out_device``. ``amp``
    runs the forward under float16 autocast on CUDA (ignored on CPU).
    """
    if x.shape[0] == 0:
        raise DataError("predict_batches got an empty tensor; expected at least one row")
    if batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size!r}; expected an integer >= 1")
    dev = resolve_device(device) if device == "auto" else torch.device(device)
    module = model_or_fn if isinstance(model_or_fn, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    outputs: list[torch.Tensor] = []
    start, size = 0, batch_size
    try:
        with torch.no_grad(), _autocast(dev, amp):
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


def evaluate_metrics(model: nn.Module, data: Data, config: TrainConfig | None = None, *,
                     device: str | torch.device = "cpu") -> dict[str, float]:
    """Every metric of ``config.kind`` (default: classification) of ``model`` on ``data``."""
    config = config or TrainConfig()
    return split_metrics(model, data, Criterion(config), batch_size=config.eval_batch_size,
                         device=resolve_device(device), amp=config.amp)


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


# --------------------------------------------------------------------------------------------
# one optimisation step


def make_optimizer(params: Iterable[torch.Tensor] | Iterable[dict],
                   config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over ``params`` (tensors or parameter-group dicts)."""
    params = list(params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """The cosine-annealed learning rate at ``step`` (0-based) of ``total_steps``; 0 at the end."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _accumulate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int,
                device: torch.device, criterion: Criterion, loss_fn: LossFn | None,
                scaler: torch.amp.GradScaler | None, amp: bool) -> tuple[float, float]:
    """Forward and backward one batch in chunks; returns (mean loss, accuracy or NaN)."""
    n = x.shape[0]
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    labels = 0
    for start in range(0, n, chunk):
        xb = x[start:start + chunk].to(device, non_blocking=True)
        yb = y[start:start + chunk].to(device, non_blocking=True)
        with _autocast(device, amp):
            if loss_fn is None:
                out = model(xb)
                loss = criterion.loss(out, yb)
            else:
                loss, out = loss_fn(model, xb, yb)
        weighted = loss * (yb.shape[0] / n)
        (scaler.scale(weighted) if scaler is not None else weighted).backward()
        loss_sum += loss.detach().float() * yb.shape[0]
        counted = criterion.correct(out.detach(), yb) if out is not None else None
        if counted is not None:
            correct += counted[0]
            labels += counted[1]  # one label per row, or per (non-ignored) pixel
    return (loss_sum / n).item(), (correct.item() / labels if labels else math.nan)


def optimizer_step(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                   x: torch.Tensor, y: torch.Tensor, *, chunk: int, device: torch.device,
                   criterion: Criterion, grad_clip: float | None = None,
                   params: Sequence[torch.Tensor] | None = None, loss_fn: LossFn | None = None,
                   scaler: torch.amp.GradScaler | None = None,
                   amp: bool = False) -> tuple[float, float, int]:
    """One step of ``optimizers`` on the batch ``(x, y)``, split into chunks of ``chunk`` rows.

    Returns (mean loss, accuracy, chunk cap for the next batches): the cap halves on
    out-of-memory errors. Raises ``TrainingDiverged`` (before stepping) on a non-finite loss.
    ``loss_fn(model, x, y) -> (loss, outputs or None)`` replaces the criterion's loss.
    """
    while True:
        size = max(1, min(chunk, x.shape[0]))
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        oom = False
        try:
            loss, acc = _accumulate(model, x, y, size, device, criterion, loss_fn, scaler, amp)
        except Exception as exc:
            if not is_out_of_memory(exc) or size == 1:
                raise
            oom = True
        if oom:  # outside the except block, so the traceback's tensors are already freed
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            _release_memory(device)
            chunk = size // 2
            continue
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training loss is {loss}")
        if grad_clip is not None:
            if scaler is not None:
                for opt in optimizers:
                    scaler.unscale_(opt)
            if params is None:
                params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, grad_clip)
        for opt in optimizers:
            if scaler is not None:
                scaler.step(opt)
            else:
                opt.step()
        if scaler is not None:
            scaler.update()
        return loss, acc, chunk


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, *, chunk: int, device: torch.device,
               grad_clip: float | None = None,
               params: list[torch.Tensor] | None = None,
               config: TrainConfig | None = None) -> tuple[float, float, int]:
    """One optimizer step with cross-entropy (or ``config``'s loss); see ``optimizer_step``."""
    return optimizer_step(model, [optimizer], x, y, chunk=chunk, device=device,
                          criterion=Criterion(config or TrainConfig()), grad_clip=grad_clip,
                          params=params if params is not None else list(model.parameters()))


# --------------------------------------------------------------------------------------------
# the engine


class Callback:
    """Hooks the engine calls; override what you need. Each receives the engine (see the module
    docstring for what it exposes). ``state_dict`` / ``load_state_dict`` put a callback's state
    in the engine's checkpoints (tensors, numbers, strings, lists and dicts of them)."""

    def on_fit_start(self, engine: "Engine") -> None: ...
    def on_epoch_start(self, engine: "Engine") -> None: ...
    def on_step_start(self, engine: "Engine") -> None: ...
    def on_step_end(self, engine: "Engine", loss: float, acc: float) -> None: ...
    def on_epoch_end(self, engine: "Engine", logs: dict[str, float]) -> None: ...
    def on_fit_end(self, engine: "Engine") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class BatchStream:
    """Endless shuffled batches of ``data``: a new permutation from its own generator each pass.

    ``next()`` gives the next ``(x, y)`` batch (a pass's last, shorter batch included). Its
    state (generator, permutation, position) is saved in the engine's checkpoints.
    """

    def __init__(self, data: Data, batch_size: int, seed: int):
        if data[0].shape[0] == 0 or data[0].shape[0] != data[1].shape[0]:
            raise DataError(f"stream data has {data[0].shape[0]} inputs and {data[1].shape[0]} "
                            "labels; expected the same positive number")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size = {batch_size!r}; expected an integer >= 1")
        self.data, self.batch_size = data, batch_size
        self.generator = torch.Generator().manual_seed(int(seed))
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def next(self) -> Data:
        n = self.data[0].shape[0]
        if self.perm is None or self.pos >= n:
            self.perm, self.pos = torch.randperm(n, generator=self.generator), 0
        idx = self.perm[self.pos:self.pos + self.batch_size].to(self.data[0].device)
        self.pos += self.batch_size
        return self.data[0][idx], self.data[1][idx]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.pos = state["perm"], int(state["pos"])


class Engine:
    """The training loop as an object: ``fit`` trains; methods drive it through callbacks,
    ``optimize``, ``stream``, checkpoints. See the module docstring."""

    def __init__(self, model: nn.Module, config: TrainConfig, *, seed: int,
                 device: str | torch.device = "cpu",
                 parameters: Iterable[torch.Tensor] | Iterable[dict] | None = None,
                 optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
                 step_optimizers: Sequence[str] | None = None,
                 schedulers: Mapping[str, Any] | None = None,
                 callbacks: Sequence[Callback] = (), loss_fn: LossFn | None = None):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config is a {type(config).__name__}; expected a TrainConfig")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed = {seed!r}; expected an integer")
        self.config, self.seed = config, seed
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.criterion = Criterion(config)
        self.loss_fn = loss_fn
        if optimizers is None:
            if parameters is None:
                groups: list = [p for p in model.parameters() if p.requires_grad]
            else:
                groups = list(parameters)
                if groups and isinstance(groups[0], dict):
                    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]}
                              for g in groups]
                    groups = [g for g in groups if g["params"]]
                else:
                    groups = [p for p in groups if p.requires_grad]
            if not groups:
                raise ConfigError("the engine got no trainable parameters (all have "
                                  "requires_grad=False)")
            optimizers = {"model": make_optimizer(groups, config)}
        elif parameters is not None:
            raise ConfigError("give parameters or optimizers, not both")
        self.optimizers: dict[str, torch.optim.Optimizer] = dict(optimizers)
        if not self.optimizers:
            raise ConfigError("optimizers is empty; expected at least one optimizer")
        names = list(self.optimizers) if step_optimizers is None else list(step_optimizers)
        unknown = [n for n in names if n not in self.optimizers]
        if unknown:
            raise ConfigError(f"step_optimizers names {unknown}; the optimizers are "
                              f"{sorted(self.optimizers)}")
        self.step_optimizers = names
        self.schedulers = dict(schedulers or {})
        self.callbacks = list(callbacks)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.generator = torch.Generator().manual_seed(seed)         # shuffling
        self.dropout_generator = _generator(seed + 1, self.device)     # dropout masks
        self.rng = torch.Generator().manual_seed(seed + 2)            # callbacks' own draws
        self.streams: dict[str, BatchStream] = {}
        self.state: dict[str, Any] = {}
        self.epoch = 0
        self.step = 0
        self.batch: Data | None = None
        self.stop = False
        self.lr = config.lr
        self.chunk = config.max_chunk or config.batch_size
        self.result = FitResult(monitor=self.criterion.monitor)
        self.best_state: dict[str, torch.Tensor] | None = None
        self._finished = False
        self._dropout_routed = False
        self._n_train: int | None = None

    # -- pieces callbacks use ---------------------------------------------------------------------
    def optimize(self, x: torch.Tensor, y: torch.Tensor, *,
                 optimizers: Sequence[str] | None = None,
                 loss_fn: LossFn | None = None) -> tuple[float, float]:
        """One optimisation step of the named optimizers (default: ``step_optimizers``) on a
        batch; returns (loss, accuracy). Gradients of other parameters are left as computed."""
        names = self.step_optimizers if optimizers is None else list(optimizers)
        unknown = [n for n in names if n not in self.optimizers]
        if unknown:
            raise ConfigError(f"optimizers {unknown} unknown; expected some of "
                              f"{sorted(self.optimizers)}")
        opts = [self.optimizers[n] for n in names]
        params = [p for opt in opts for g in opt.param_groups for p in g["params"]]
        routed = nullcontext() if self._dropout_routed else \
            dropout_from(self.model, self.dropout_generator)
        with routed:
            loss, acc, self.chunk = optimizer_step(
                self.model, opts, x, y, chunk=self.chunk, device=self.device,
                criterion=self.criterion, grad_clip=self.config.grad_clip, params=params,
                loss_fn=loss_fn if loss_fn is not None else self.loss_fn, scaler=self.scaler,
                amp=self.amp)
        return loss, acc

    def stream(self, name: str, data: Data, batch_size: int) -> BatchStream:
        """The named endless batch stream over ``data`` (created once, then reused; its seed
        derives from the engine's seed and the name; its position is checkpointed)."""
        if name not in self.streams:
            seed = int.from_bytes(name.encode()[:4].ljust(4, b"\0"), "little")
            stream = BatchStream(data, batch_size, seed=(self.seed * 1_000_003 + seed) % 2**63)
            pending = self.state.get("_streams", {}).pop(name, None)
            if pending is not None:
                stream.load_state_dict(pending)
            self.streams[name] = stream
        return self.streams[name]

    def evaluate(self, data: Data) -> dict[str, float]:
        """Every metric of the task kind on ``data`` (eval mode, no gradients)."""
        return split_metrics(self.model, data, self.criterion,
                             batch_size=self.config.eval_batch_size, device=self.device,
                             amp=self.amp)

    def set_lr(self, step: int, total_steps: int) -> None:
        """Cosine learning rate of the stepped optimizers' groups at ``step``."""
        for name in self.step_optimizers:
            for group in self.optimizers[name].param_groups:
                group["lr"] = cosine_lr(group["initial_lr"], step, total_steps)
        self.lr = self.optimizers[self.step_optimizers[0]].param_groups[0]["lr"]

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, train: Data, val: Data | None = None, *, max_seconds: float | None = None,
            checkpoint: str | Path | None = None, resume: bool = False) -> FitResult:
        """Train on ``train`` for ``config.epochs`` epochs, scoring ``val`` after each.

        ``checkpoint``: a file written after every epoch. ``resume``: continue from that file
        when it exists (``ConfigError`` when it was written with another config or data size).
        ``max_seconds`` ends training after the step that exceeds it (the epoch is still
        scored). A last batch of a single row is skipped each epoch (batch norm cannot train
        on one row). Raises ``TrainingDiverged`` on a NaN/inf loss.
        """
        config = self.config
        x, y = train
        n = x.shape[0]
        if n == 0 or y.shape[0] != n:
            raise DataError(f"training data has {n} inputs and {y.shape[0]} labels; expected "
                            "the same positive number")
        if config.early_stop_epoch is not None and val is None:
            raise ConfigError("early stopping needs validation data; val is None")
        if resume and checkpoint is None:
            raise ConfigError("resume = True needs a checkpoint path")
        path = Path(checkpoint) if checkpoint is not None else None
        starts = list(range(0, n, config.batch_size))
        if config.batch_size > 1 and len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()  # a last batch of one row: batch norm cannot train on it
        total_steps = len(starts) * config.epochs
        if not self.result.curves:
            names = ["train_loss", "train_acc", "val_loss", "val_acc", "lr"]
            names += [f"val_{m}" for m in self.criterion.metric_names()
                      if f"val_{m}" not in names]
            self.result.curves = {k: [] for k in names}
        self._n_train = n
        if resume and path is not None and path.exists():
            self.load_checkpoint(path, n_train=n)
        result = self.result
        curves = result.curves
        start_time = time.perf_counter() - result.seconds

        self.model.train()
        if not self._finished:
            for cb in self.callbacks:
                cb.on_fit_start(self)
        with dropout_from(self.model, self.dropout_generator):
            self._dropout_routed = True
            try:
                self._epochs(train, val, starts, total_steps, start_time, max_seconds, path)
            finally:
                self._dropout_routed = False
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        result.chunk_size = min(self.chunk, config.batch_size)
        result.seconds = time.perf_counter() - start_time
        return result

    def _epochs(self, train: Data, val: Data | None, starts: list[int], total_steps: int,
                start_time: float, max_seconds: float | None, path: Path | None) -> None:
        config, result, curves = self.config, self.result, self.result.curves
        x, y = train
        n = x.shape[0]
        while not self._finished and self.epoch < config.epochs:
            self.epoch += 1
            epoch = self.epoch
            for cb in self.callbacks:
                cb.on_epoch_start(self)
            perm = torch.randperm(n, generator=self.generator).to(x.device)
            loss_sum, correct, seen = 0.0, 0.0, 0
            self.lr = self.optimizers[self.step_optimizers[0]].param_groups[0]["lr"]
            for b in starts:
                idx = perm[b:b + config.batch_size]
                if config.cosine:
                    self.set_lr(self.step, total_steps)
                self.batch = (x[idx], y[idx])
                try:
                    for cb in self.callbacks:
                        cb.on_step_start(self)
                    loss, acc = self.optimize(*self.batch)
                except TrainingDiverged as exc:
                    raise TrainingDiverged(f"{exc} at epoch {epoch}, step {self.step + 1}",
                                           curves) from None
                self.step += 1
                result.steps = self.step
                loss_sum += loss * idx.shape[0]
                correct += acc * idx.shape[0]
                seen += idx.shape[0]
                for cb in self.callbacks:
                    cb.on_step_end(self, loss, acc)
                if max_seconds is not None and time.perf_counter() - start_time > max_seconds:
                    result.timed_out = True
                    break
            self.batch = None
            logs = {"train_loss": loss_sum / seen, "train_acc": correct / seen, "lr": self.lr}
            curves["train_loss"].append(logs["train_loss"])
            curves["train_acc"].append(logs["train_acc"])
            curves["lr"].append(self.lr)
            result.epochs_run = epoch
            if val is not None:
                self._validate(val, epoch, logs)
            for scheduler in self.schedulers.values():
                scheduler.step()
            for cb in self.callbacks:
                cb.on_epoch_end(self, logs)
            if result.stopped_early or result.timed_out or self.stop \
                    or epoch == config.epochs:
                self._finished = True
            result.seconds = time.perf_counter() - start_time
            if path is not None:
                self.save_checkpoint(path)

    def _validate(self, val: Data, epoch: int, logs: dict[str, float]) -> None:
        result, curves = self.result, self.result.curves
        metrics = self.evaluate(val)
        if not math.isfinite(metrics["loss"]):
            raise TrainingDiverged(f"validation loss is {metrics['loss']} at epoch {epoch}",
                                   curves)
        for name, value in metrics.items():
            curves[f"val_{name}"].append(value)
            logs[f"val_{name}"] = value
        score = metrics[self.criterion.monitor]
        better = (not score <= result.best_score) if self.criterion.maximize \
            else (not score >= result.best_score)
        if better:  # first epoch (NaN) or an improvement
            result.best_score, result.best_epoch = score, epoch
            result.best_val_acc = metrics.get("acc", math.nan)
            result.best_metrics = dict(metrics)
            if self.config.restore_best:
                self.best_state = {k: v.detach().clone()
                                   for k, v in self.model.state_dict().items()}
        result.final_val_acc = metrics.get("acc", math.nan)
        result.final_metrics = dict(metrics)
        threshold = self.config.early_stop_threshold
        if epoch == self.config.early_stop_epoch and threshold is not None:
            worse = score < threshold if self.criterion.maximize else score > threshold
            result.stopped_early = bool(worse)

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (tensors, numbers, strings, lists and dicts)."""
        r = self.result
        streams = {k: s.state_dict() for k, s in self.streams.items()}
        streams.update({k: v for k, v in self.state.get("_streams", {}).items()
                        if k not in streams})
        return {
            "version": CHECKPOINT_VERSION, "config": self.config.to_json(), "seed": self.seed,
            "n_train": self._n_train,
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "generator": self.generator.get_state(),
            "dropout_generator": self.dropout_generator.get_state(),
            "rng": self.rng.get_state(),
            "streams": streams,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "state": {k: v for k, v in self.state.items() if k != "_streams"},
            "epoch": self.epoch, "step": self.step, "chunk": self.chunk, "lr": self.lr,
            "stop": self.stop, "finished": self._finished, "best_state": self.best_state,
            "result": {
                "curves": r.curves, "best_val_acc": r.best_val_acc, "best_epoch": r.best_epoch,
                "final_val_acc": r.final_val_acc, "epochs_run": r.epochs_run, "steps": r.steps,
                "stopped_early": r.stopped_early, "timed_out": r.timed_out,
                "seconds": r.seconds, "best_score": r.best_score,
                "best_metrics": r.best_metrics, "final_metrics": r.final_metrics},
        }

    def load_state_dict(self, state: dict[str, Any], *, n_train: int | None = None) -> None:
        """Restore what ``state_dict`` saved; ``ConfigError`` if the config or seed differ."""
        saved = json.loads(state["config"])
        current = json.loads(self.config.to_json())
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            raise ConfigError("the checkpoint was written with another training config ("
                              + ", ".join(f"{k}: {saved.get(k)!r} then, {current.get(k)!r} now"
                                          for k in changed) + "); resume with the same config")
        if state["seed"] != self.seed:
            raise ConfigError(f"the checkpoint was written with seed {state['seed']}; this "
                              f"engine has seed {self.seed}")
        if n_train is not None and state.get("n_train") not in (None, n_train):
            raise ConfigError(f"the checkpoint was written for {state['n_train']} training rows; "
                              f"got {n_train}")
        if sorted(state["optimizers"]) != sorted(self.optimizers):
            raise ConfigError(f"the checkpoint holds optimizers {sorted(state['optimizers'])}; "
                              f"this engine has {sorted(self.optimizers)}")
        self.model.load_state_dict(state["model"])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            if k in state["schedulers"]:
                s.load_state_dict(state["schedulers"][k])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        try:
            self.dropout_generator.set_state(state["dropout_generator"])
        except RuntimeError:  # saved on another device type: masks restart, not bit-exact
            self.dropout_generator.manual_seed(self.seed + 1)
        self.rng.set_state(state["rng"])
        pending = dict(state["streams"])
        for k, s in self.streams.items():
            if k in pending:
                s.load_state_dict(pending.pop(k))
        self.state = dict(state["state"])
        if pending:
            self.state["_streams"] = pending  # applied when the stream is created
        if len(state["callbacks"]) != len(self.callbacks):
            raise ConfigError(f"the checkpoint holds {len(state['callbacks'])} callback states; "
                              f"this engine has {len(self.callbacks)} callbacks")
        for cb, cb_state in zip(self.callbacks, state["callbacks"]):
            cb.load_state_dict(cb_state)
        self.epoch, self.step, self.chunk = state["epoch"], state["step"], state["chunk"]
        self.lr, self.stop, self._finished = state["lr"], state["stop"], state["finished"]
        self.best_state = state["best_state"]
        r = state["result"]
        self.result = FitResult(
            curves={k: list(v) for k, v in r["curves"].items()}, best_val_acc=r["best_val_acc"],
            best_epoch=r["best_epoch"], final_val_acc=r["final_val_acc"],
            epochs_run=r["epochs_run"], steps=r["steps"], stopped_early=r["stopped_early"],
            timed_out=r["timed_out"], seconds=r["seconds"], monitor=self.criterion.monitor,
            best_score=r["best_score"], best_metrics=dict(r["best_metrics"]),
            final_metrics=dict(r["final_metrics"]), resumed_from_epoch=state["epoch"])

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write ``state_dict()`` to ``path`` atomically (a temp file, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: str | Path, *, n_train: int | None = None) -> None:
        """Restore the engine from a file ``save_checkpoint`` wrote."""
        try:
            # on the CPU: generator states must be CPU tensors; load_state_dict moves the rest
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: "
                              f"{exc}") from None
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(f"{str(path)!r} is not a nasforge training checkpoint "
                              f"(version {CHECKPOINT_VERSION})")
        self.load_state_dict(state, n_train=n_train)


def fit(model: nn.Module, train: Data, val: Data | None, config: TrainConfig, *, seed: int,
        device: str | torch.device = "cpu",
        parameters: Iterable[torch.Tensor] | Iterable[dict] | None = None,
        max_seconds: float | None = None, callbacks: Sequence[Callback] = (),
        checkpoint: str | Path | None = None, resume: bool = False) -> FitResult:
    """Train ``model`` (moved to ``device``) on ``train`` with the loss of ``config.kind``;
    score it on ``val`` after each epoch. ``Engine(...).fit(...)``: see ``Engine.fit``.

    ``seed`` fixes the shuffling and the dropout masks (local generators). ``parameters``
    restricts what is optimized (tensors or parameter groups; default: every parameter that
    requires grad).
    """
    engine = Engine(model, config, seed=seed, device=device, parameters=parameters,
                    callbacks=callbacks)
    return engine.fit(train, val, max_seconds=max_seconds, checkpoint=checkpoint, resume=resume)


__all__ = ["TrainConfig", "FitResult", "TrainingDiverged", "Engine", "Callback", "BatchStream",
           "Criterion", "split_metrics", "fit", "evaluate", "evaluate_metrics", "predict_batches", "train_step",
           "optimizer_step", "make_optimizer", "cosine_lr", "resolve_device", "seeded_module",
           "reset_parameters", "dropout_from", "confusion", "is_out_of_memory", "KINDS"]
