"""Evaluator ``deep_prior``: a frozen random-weight encoder, a classifier trained on its output.

DP-NAS (Mundt, Pliushch and Ramesh, CVPR-W 2021) scores an architecture without training its
convolutions: the encoder keeps random weights (a *deep prior*), the train / val / test splits
are passed through it once, and only a linear classifier is trained on that fixed embedding. The
best validation accuracy of the classifier is the search's reward.

How it works here:

- ``deep_prior_network`` builds the space's network (``build_network``, as the train evaluator
  does), re-initialises every conv / linear weight of the encoder with ``init`` from a local
  generator seeded by the trial seed (biases zero) and freezes it (``requires_grad=False``, eval
  mode).
- ``cached_embedding`` computes the flattened encoder output of the three splits in chunks sized
  to ``memory_mb`` and caches it in ``cache_dir/embedding-<key>.pt``; the key covers the
  architecture, space options, task, seed, init and batch norm, so a second evaluation with the
  same cache directory only loads it. The evaluator's cache directory is the trial's ``workdir``,
  which the run deletes after the trial unless trials are kept; ``keep_embeddings`` records the
  cache file in ``result.artifacts["embeddings"]`` (in a run, together with ``keep_trials: true``,
  or the file is gone after the trial). Without a workdir the embedding stays in
  memory (a cache in a temporary directory removed at the end of the same call could never be
  read), except with ``keep_embeddings``, which writes it to a new temporary directory it keeps.
- ``fit_classifier`` trains the classifier on the cached embedding with ``training.fit``.

Batch norm. DP-NAS's ``--batch-norm`` puts BatchNorm after each random convolution. A frozen
BatchNorm in eval mode with fresh running statistics is the identity, so here its statistics are
*calibrated* once on the training split (a cumulative average over chunks, in train mode, without
gradients) and then frozen; its affine parameters stay 1 and 0. The space's own ``batch_norm``
option decides whether the layers are built at all: the evaluator's ``batch_norm=True`` rebuilds
a space that has the option turned off with it on (a copy; the run's space is unchanged), and never
removes BatchNorm a space builds. Either way, every BatchNorm of the frozen encoder is calibrated
on the training split. The same rule holds with ``full_training``, where the BatchNorm layers
are trained as usual.

``full_training=True`` turns this into a conventional NAS evaluator: the encoder (initialised as
above) is trained together with the head through the train evaluator's code path
(``TrainEvaluator``), with this evaluator's training options.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import nn

from ..core import Architecture, Evaluator, Network, SearchSpace, Task, TrialResult, derive_seed
from ..cost import count_flops, count_params, measure_latency_ms
from ..errors import ArchitectureError, ConfigError
from ..registry import register
from ..training import (Data, FitResult, TrainConfig, TrainingDiverged, evaluate, fit,
                        predict_batches, resolve_device, seeded_module)
from .train import TrainEvaluator, build_network, feature_shape

Init = Literal["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal"]
INITS: tuple[str, ...] = ("kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform",
                          "orthogonal")
Classifier = Literal["linear", "mlp", "head"]
SPLITS = ("train", "val", "test")
CACHE_VERSION = 1
# classifier training defaults (see DeepPriorEvaluator): the linear probe's were chosen on
# validation accuracy by benchmarks/probe_defaults.py; the others are the former defaults
LINEAR_PROBE_LR, LINEAR_PROBE_EPOCHS = 0.1, 30
OTHER_LR, OTHER_EPOCHS = 3e-3, 15

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCH_NORM = nn.modules.batchnorm._BatchNorm


# --------------------------------------------------------------------------------------------
# the frozen random encoder


def init_weights(module: nn.Module, init: str, seed: int) -> nn.Module:
    """Re-initialise each conv / linear weight of ``module`` by ``init`` from ``seed``; biases 0."""
    if init not in INITS:
        raise ConfigError(f"init {init!r}; expected one of {', '.join(INITS)}")
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in module.modules():
            if not isinstance(m, _WEIGHTED):
                continue
            w = m.weight
            target = w if w.device.type == "cpu" else torch.empty_like(w, device="cpu")
            if init == "kaiming_normal":
                nn.init.kaiming_normal_(target, nonlinearity="relu", generator=generator)
            elif init == "kaiming_uniform":
                nn.init.kaiming_uniform_(target, nonlinearity="relu", generator=generator)
            elif init == "xavier_normal":
                nn.init.xavier_normal_(target, generator=generator)
            elif init == "xavier_uniform":
                nn.init.xavier_uniform_(target, generator=generator)
            else:
                nn.init.orthogonal_(target, generator=generator)
            if target is not w:
                w.copy_(target)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        for m in module.modules():
            if isinstance(m, _BATCH_NORM):
                m.reset_parameters()
    return module


def freeze(module: nn.Module) -> nn.Module:
    """No gradients and eval mode for every parameter of ``module`` (in place)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


@lru_cache(maxsize=16)
def _rebuilt_space(cls: type, options_json: str) -> SearchSpace:
    return cls(**json.loads(options_json))


def space_with_batch_norm(space: SearchSpace) -> SearchSpace:
    """``space`` itself if it already builds BatchNorm, else a copy with its ``batch_norm`` on.

    ``ConfigError`` for a space without a ``batch_norm`` option.
    """
    options = space.options()
    if "batch_norm" not in options:
        raise ConfigError(f"deep_prior: batch_norm = True needs a space with a batch_norm option; "
                          f"space {space.name!r} has none (its BatchNorm layers, if any, are "
                          "calibrated anyway)")
    if options["batch_norm"]:
        return space
    options = {**options, "batch_norm": True}
    return _rebuilt_space(type(space), json.dumps(options, sort_keys=True))


def deep_prior_network(arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
                       init: str = "kaiming_normal", batch_norm: bool = False,
                       frozen: bool = True) -> Network:
    """``arch``'s network with its encoder re-initialised by ``init`` from ``seed`` (and frozen).

    ``ArchitectureError`` if ``arch`` does not fit ``task``.
    """
    if batch_norm:
        space = space_with_batch_norm(space)
    network = build_network(space, arch, task, seed=seed)
    if not isinstance(network, Network):
        raise ArchitectureError(f"space {space.name!r} built a {type(network).__name__}, not a "
                                "Network with encoder and head; a deep prior needs the encoder")
    init_weights(network.encoder, init, seed)
    if frozen:
        freeze(network.encoder)
    return network


def chunk_rows(encoder: nn.Module, input_shape: Sequence[int], memory_mb: float) -> int:
    """Rows per embedding chunk so that the largest layer's input plus output fits ``memory_mb``."""
    if not (math.isfinite(memory_mb) and memory_mb > 0):
        raise ConfigError(f"memory_mb = {memory_mb!r}; expected a number > 0")
    peak = [math.prod(input_shape)]

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            size_in = sum(t[0].numel() for t in inputs if isinstance(t, torch.Tensor))
            peak.append(size_in + output[0].numel())

    leaves = [m for m in encoder.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    param = next(iter(encoder.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            encoder(torch.zeros(2, *input_shape, device=device))
    finally:
        encoder.train(was_training)
        for h in handles:
            h.remove()
    per_row = 4 * max(peak)  # float32 bytes
    return max(1, int(memory_mb * 2**20 // per_row))


def calibrate_batch_norm(encoder: nn.Module, x: torch.Tensor, *, chunk: int,
                         device: str | torch.device = "cpu") -> int:
    """Estimate the running statistics of ``encoder``'s BatchNorm layers on ``x``, then eval mode.

    A cumulative average over chunks of ``chunk`` rows (a last chunk of one row is skipped:
    batch statistics need two). Returns the number of BatchNorm layers calibrated.
    """
    norms = [m for m in encoder.modules() if isinstance(m, _BATCH_NORM)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    encoder.train()
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], chunk):
                rows = x[start:start + chunk]
                if rows.shape[0] > 1 or start == 0:
                    encoder(rows.to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        encoder.eval()
    return len(norms)


def embed_task(network: Network, task: Task, *, memory_mb: float = 512.0,
               device: str | torch.device = "cpu") -> dict[str, Data]:
    """The flattened encoder output of the train / val / test splits (float32 on CPU).

    BatchNorm layers of the encoder are calibrated on the training split first.
    """
    dev = resolve_device(device)
    encoder = network.encoder.to(dev)
    chunk = chunk_rows(encoder, task.input_shape, memory_mb)
    calibrate_batch_norm(encoder, task.train[0], chunk=chunk, device=dev)
    encoder.eval()

    def features(x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(encoder(x), 1).float()

    out: dict[str, Data] = {}
    for split in SPLITS:
        x, y = task.split(split)
        out[split] = (predict_batches(features, x, batch_size=chunk, device=dev).contiguous(),
                      y.to("cpu", torch.long))
    return out


# --------------------------------------------------------------------------------------------
# the cache


@dataclass
class Embedding:
    """A deep prior's embedding of a task's splits, computed once and cached on disk.

    ``seconds`` is the time the embedding took to compute (also when it was loaded), ``cached``
    whether this call loaded it rather than computing it, ``path`` the cache file (None when
    no cache directory was given).
    """

    train: Data
    val: Data
    test: Data
    feature_shape: tuple[int, ...]
    key: dict[str, Any]
    seconds: float
    cached: bool = False
    load_seconds: float = 0.0
    path: Path | None = None

    @property
    def features(self) -> int:
        return int(self.train[0].shape[1])

    def split(self, name: str) -> Data:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, name)


def task_fingerprint(task: Task) -> str:
    """A short hash of a task's data (shapes, a sample of rows and sums), for cache keys."""
    h = hashlib.sha256()
    h.update(json.dumps([task.name, list(task.input_shape), task.num_classes]).encode())
    for split in SPLITS:
        x, y = task.split(split)
        h.update(repr((tuple(x.shape), tuple(y.shape))).encode())
        step = max(1, x.shape[0] // 256)
        h.update(x[::step].detach().cpu().contiguous().numpy().tobytes())
        h.update(y.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr(float(x.sum(dtype=torch.float64))).encode())
    return h.hexdigest()[:16]


def embedding_key(arch: Architecture, space: SearchSpace, task: Task, *, seed: int, init: str,
                  batch_norm: bool) -> dict[str, Any]:
    """What determines an embedding: architecture, space options, task data, seed, init, BN."""
    return {"version": CACHE_VERSION, "arch": str(arch), "space": space.name,
            "space_options": json.loads(json.dumps(space.options(), sort_keys=True, default=str)),
            "task": task.name, "task_fingerprint": task_fingerprint(task), "seed": int(seed),
            "init": init, "batch_norm": bool(batch_norm)}


def cache_path(cache_dir: str | Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"embedding-{digest}.pt"


def _load_cache(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        payload = torch.load(path, weights_only=True)
    except Exception:  # a truncated or foreign file is recomputed, not trusted
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    return payload


def cached_embedding(arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
                     init: str = "kaiming_normal", batch_norm: bool = False,
                     memory_mb: float = 512.0, device: str | torch.device = "cpu",
                     cache_dir: str | Path | None = None,
                     network: Network | None = None) -> Embedding:
    """The deep prior embedding of ``task`` for ``(arch, seed, init, batch_norm)``.

    Loaded from ``cache_dir`` when a matching cache file is there, otherwise computed (from
    ``network`` if given: it must be ``deep_prior_network`` of the same arguments) and, with a
    ``cache_dir``, saved there atomically. ``ArchitectureError`` if ``arch`` does not fit.
    """
    if init not in INITS:
        raise ConfigError(f"init {init!r}; expected one of {', '.join(INITS)}")
    key = embedding_key(arch, space, task, seed=seed, init=init, batch_norm=batch_norm)
    path = cache_path(cache_dir, key) if cache_dir is not None else None
    if path is not None and path.is_file():
        start = time.perf_counter()
        payload = _load_cache(path, key)
        if payload is not None:
            splits = {s: (payload[s][0], payload[s][1]) for s in SPLITS}
            return Embedding(**splits, feature_shape=tuple(payload["feature_shape"]), key=key,
                             seconds=float(payload["seconds"]), cached=True,
                             load_seconds=time.perf_counter() - start, path=path)
    if network is None:
        network = deep_prior_network(arch, space, task, seed=seed, init=init,
                                     batch_norm=batch_norm)
    start = time.perf_counter()
    splits = embed_task(network, task, memory_mb=memory_mb, device=device)
    seconds = time.perf_counter() - start
    shape = feature_shape(network.encoder, task.input_shape)
    emb = Embedding(**splits, feature_shape=shape, key=key, seconds=seconds, path=path)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"key": key, "feature_shape": list(shape), "seconds": seconds,
                    **{s: [splits[s][0], splits[s][1]] for s in SPLITS}}, tmp)
        os.replace(tmp, path)
    return emb


# --------------------------------------------------------------------------------------------
# the classifier


def make_classifier(kind: str, features: int, num_classes: int, *, hidden: int = 256,
                    seed: int) -> nn.Module:
    """A linear or one-hidden-layer MLP classifier on ``features`` inputs, seeded by ``seed``."""
    if kind == "linear":
        return seeded_module(lambda: nn.Linear(features, num_classes), int(seed))
    if kind == "mlp":
        return seeded_module(lambda: nn.Sequential(nn.Linear(features, hidden), nn.ReLU(),
                                                   nn.Linear(hidden, num_classes)), int(seed))
    raise ConfigError(f"classifier {kind!r}; expected 'linear', 'mlp' or 'head'")


@dataclass
class ProbeResult:
    """A classifier trained on an embedding: the module, what ``fit`` measured, and test scores."""

    classifier: nn.Module
    fitted: FitResult
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)


@register("evaluators", "deep_prior")
class DeepPriorEvaluator(Evaluator):
    """DP-NAS: score an architecture by a classifier trained on its frozen random encoder's output.

    Metrics, like the train evaluator's: ``val_acc`` (best validation accuracy of the classifier,
    the DP-NAS reward; also ``reward``), ``final_val_acc``, ``train_acc`` / ``train_loss`` (last
    epoch), ``test_acc`` / ``test_loss`` (of the best validation epoch with ``restore_best``),
    ``best_epoch``, ``stopped_early``; per-epoch ``curves``. Cost: ``params`` (encoder and
    classifier), ``encoder_params``, ``classifier_params``, ``flops`` (one input through encoder
    and classifier), ``embed_seconds`` (computing the embedding; the time of the original
    computation when it came from the cache), ``embedding_cached`` (1.0 when loaded),
    ``train_seconds`` (the classifier), ``epochs``, ``features`` and ``latency_ms``.

    Options: ``init`` (encoder weight init, seeded by the trial seed), ``batch_norm`` (see the
    module docstring), ``classifier`` (``linear``; ``mlp`` with ``hidden`` units; ``head``: the
    architecture's own head, e.g. its FC layers), the classifier's training options (defaults
    after DP-NAS: Adam, batch 128, cosine schedule; for the ``linear`` classifier lr 0.1 and 30
    epochs, chosen on validation accuracy by ``benchmarks/probe_defaults.py``: over 8 sampled
    digits architectures x 2 seeds and lr 1e-3 .. 0.3 x 5 .. 60 epochs, the fewest epochs within
    0.005 of the best mean validation accuracy, 0.925 against 0.930 at 60 epochs and 0.837 for
    the former lr 3e-3 with 15 epochs; for ``mlp``, ``head`` and ``full_training``, whose deeper
    networks lr 0.1 would not train, lr 3e-3 and 15 epochs as before),
    ``memory_mb`` (sizes the embedding chunks), ``keep_embeddings`` and ``full_training`` (the
    network trained end to end with its own head and these training options; ``classifier``,
    ``hidden``, ``memory_mb`` and ``keep_embeddings`` then do not apply).
    A build error, a non-finite embedding or a diverged classifier gives a ``failed`` result.
    """

    name = "deep_prior"

    def __init__(self, *, init: Init = "kaiming_normal", batch_norm: bool = False,
                 classifier: Classifier = "linear", hidden: int = 256,
                 optimizer: Literal["adam", "adamw", "sgd"] = "adam", lr: float | None = None,
                 weight_decay: float = 0.0, momentum: float = 0.9, batch_size: int = 128,
                 epochs: int | None = None, cosine: bool = True, early_stop_epoch: int | None = None,
                 early_stop_threshold: float | None = None, restore_best: bool = True,
                 memory_mb: float = 512.0, keep_embeddings: bool = False,
                 full_training: bool = False, device: str = "cpu", measure_latency: bool = True):
        if init not in INITS:
            raise ConfigError(f"init {init!r}; expected one of {', '.join(INITS)}")
        if classifier not in ("linear", "mlp", "head"):
            raise ConfigError(f"classifier {classifier!r}; expected 'linear', 'mlp' or 'head'")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ConfigError(f"hidden = {hidden!r}; expected an integer >= 1")
        if not (isinstance(memory_mb, (int, float)) and math.isfinite(memory_mb) and memory_mb > 0):
            raise ConfigError(f"memory_mb = {memory_mb!r}; expected a number > 0")
        linear = classifier == "linear" and not full_training
        if lr is None:
            lr = LINEAR_PROBE_LR if linear else OTHER_LR
        if epochs is None:
            epochs = LINEAR_PROBE_EPOCHS if linear else OTHER_EPOCHS
        self.config = TrainConfig(optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                                  momentum=momentum, batch_size=batch_size, epochs=epochs,
                                  cosine=cosine, early_stop_epoch=early_stop_epoch,
                                  early_stop_threshold=early_stop_threshold,
                                  restore_best=restore_best)
        resolve_device(device)
        self.init, self.batch_norm = init, bool(batch_norm)
        self.classifier, self.hidden = classifier, hidden
        self.memory_mb = float(memory_mb)
        self.keep_embeddings, self.full_training = keep_embeddings, full_training
        self.device, self.measure_latency = device, measure_latency

    #: metric and cost names of an ok result (objectives and constraints are checked against them)
    METRICS = frozenset({"val_acc", "reward", "final_val_acc", "train_acc", "train_loss", "test_acc",
                         "test_loss", "best_epoch", "stopped_early", "embed_seconds",
                         "embedding_cached", "features", "train_seconds", "epochs",
                         "encoder_params", "classifier_params", "params", "flops", "latency_ms"})

    def metrics(self) -> frozenset[str]:
        """Names of the metrics and cost keys an ok result carries (see the class docstring)."""
        if self.full_training:
            return _FullTraining(self).metrics()
        return self.METRICS if self.measure_latency else self.METRICS - {"latency_ms"}

    def validate(self, space: SearchSpace) -> None:
        """Refuse, before a run starts, a ``batch_norm`` the space cannot build."""
        if self.batch_norm:
            space_with_batch_norm(space)

    # -- pieces the experiments and the export reuse ----------------------------------------------
    def network(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int) -> Network:
        """The network whose encoder is this evaluator's deep prior for ``seed`` (frozen)."""
        return deep_prior_network(arch, space, task, seed=seed, init=self.init,
                                  batch_norm=self.batch_norm, frozen=not self.full_training)

    def embedding(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
                  cache_dir: str | Path | None = None,
                  network: Network | None = None) -> Embedding:
        """``cached_embedding`` with this evaluator's init, batch norm, memory cap and device."""
        return cached_embedding(arch, space, task, seed=seed, init=self.init,
                                batch_norm=self.batch_norm, memory_mb=self.memory_mb,
                                device=self.device, cache_dir=cache_dir, network=network)

    def new_classifier(self, features: int, num_classes: int, *, seed: int,
                       head: nn.Module | None = None,
                       feature_shape: Sequence[int] | None = None) -> nn.Module:
        """The untrained classifier for a trial seed (``head``: the architecture's own head)."""
        probe_seed = derive_seed(seed, 1)
        if self.classifier == "head":
            if head is None:
                raise ConfigError("classifier 'head' needs the architecture's head")
            if feature_shape is not None and len(feature_shape) > 1:
                return nn.Sequential(nn.Unflatten(1, tuple(feature_shape)), head)
            return head
        return make_classifier(self.classifier, features, num_classes, hidden=self.hidden,
                               seed=probe_seed)

    def fit_classifier(self, data: dict[str, Data] | Embedding, num_classes: int, *, seed: int,
                       head: nn.Module | None = None,
                       feature_shape: Sequence[int] | None = None) -> ProbeResult:
        """Train the classifier on embedded ``train`` / ``val`` and test it on ``test``.

        Deterministic for a seed: the same embedding and seed give the same accuracies, whether
        the embedding comes from the cache, the evaluator or files written by the export.
        """
        splits = {s: data.split(s) if isinstance(data, Embedding) else data[s] for s in SPLITS}
        features = int(splits["train"][0].shape[1])
        model = self.new_classifier(features, num_classes, seed=seed, head=head,
                                    feature_shape=feature_shape)
        fitted = fit(model, splits["train"], splits["val"], self.config,
                     seed=derive_seed(seed, 2), device=self.device)
        test_acc, test_loss = evaluate(model, splits["test"],
                                       batch_size=self.config.eval_batch_size, device=self.device)
        curves = {k: list(fitted.curves[k]) for k in ("train_acc", "val_acc", "train_loss",
                                                     "val_loss")}
        metrics = {
            "val_acc": fitted.best_val_acc, "reward": fitted.best_val_acc,
            "final_val_acc": fitted.final_val_acc, "train_acc": curves["train_acc"][-1],
            "train_loss": curves["train_loss"][-1], "test_acc": test_acc, "test_loss": test_loss,
            "best_epoch": float(fitted.best_epoch), "stopped_early": float(fitted.stopped_early),
        }
        return ProbeResult(model, fitted, metrics, curves)

    # -- the evaluator ----------------------------------------------------------------------------
    def evaluate(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
                 workdir: Path | None = None) -> TrialResult:
        """Embed ``task`` with ``arch``'s random encoder and train the classifier on it."""
        if self.full_training:
            return _FullTraining(self).evaluate(arch, space, task, seed=seed, workdir=workdir)
        try:
            net = self.network(arch, space, task, seed=seed)
        except (ArchitectureError, ConfigError) as exc:
            return TrialResult.failed(f"architecture does not fit task {task.name!r}: {exc}")
        except Exception as exc:
            return TrialResult.failed(f"building the network failed: {type(exc).__name__}: {exc}")
        cache_dir: Path | None = None
        if workdir is not None:
            cache_dir = Path(workdir)
        elif self.keep_embeddings:  # kept on request: a folder that outlives the call
            cache_dir = Path(tempfile.mkdtemp(prefix="nasforge-embedding-"))
        return self._evaluate(arch, space, task, net, seed=seed, cache_dir=cache_dir)

    def probe(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
              init_seed: int | None = None, cache_dir: str | Path | None = None,
              network: Network | None = None) -> tuple[Embedding, ProbeResult]:
        """Embed ``task`` with the encoder of ``init_seed`` (default ``seed``) and train the
        classifier from ``seed``: the two halves of a deep-prior evaluation, which the weight
        lottery varies separately. Raises on failure (``evaluate`` turns that into a result)."""
        init_seed = seed if init_seed is None else init_seed
        emb = self.embedding(arch, space, task, seed=init_seed, cache_dir=cache_dir,
                             network=network)
        for split in SPLITS:
            if not torch.isfinite(emb.split(split)[0]).all():
                raise TrainingDiverged(f"the random encoder's {split} embedding holds NaN or inf "
                                       "values (activations overflow); try another init or "
                                       "batch_norm")
        head = None
        if self.classifier == "head":
            head = build_network(space, arch, task, seed=derive_seed(seed, 1)).head
        probe = self.fit_classifier(emb, int(task.num_classes), seed=seed, head=head,
                                    feature_shape=emb.feature_shape)
        return emb, probe

    def _evaluate(self, arch: Architecture, space: SearchSpace, task: Task, net: Network, *,
                  seed: int, cache_dir: Path | None) -> TrialResult:
        cost: dict[str, float] = {}
        try:
            emb, probe = self.probe(arch, space, task, seed=seed, cache_dir=cache_dir, network=net)
        except TrainingDiverged as exc:
            return TrialResult.failed(f"deep prior failed: {exc}",
                                      curves={k: list(v) for k, v in exc.curves.items() if v})
        except Exception as exc:
            return TrialResult.failed(f"deep prior evaluation failed: {type(exc).__name__}: {exc}")
        cost["embed_seconds"] = emb.seconds
        cost["embedding_cached"] = float(emb.cached)
        cost["features"] = float(emb.features)
        cost["train_seconds"] = probe.fitted.seconds
        cost["epochs"] = float(probe.fitted.epochs_run)
        try:
            whole = nn.Sequential(net.encoder, nn.Flatten(), probe.classifier).to(self.device)
            cost["encoder_params"] = float(count_params(net.encoder))
            cost["classifier_params"] = float(count_params(probe.classifier))
            cost["params"] = cost["encoder_params"] + cost["classifier_params"]
            cost["flops"] = float(count_flops(whole, task.input_shape))
            if self.measure_latency:
                cost["latency_ms"] = measure_latency_ms(whole, task.input_shape)
        except Exception as exc:
            return TrialResult.failed(f"measuring the network failed: {type(exc).__name__}: {exc}",
                                      cost=cost)
        result = TrialResult(metrics=probe.metrics, curves=probe.curves, cost=cost)
        if self.keep_embeddings and emb.path is not None:
            result.artifacts["embeddings"] = str(emb.path)
        return result


class _FullTraining(TrainEvaluator):
    """The train evaluator on the deep prior's initialisation: encoder and head both trained."""

    def __init__(self, owner: DeepPriorEvaluator):
        c = owner.config
        super().__init__(optimizer=c.optimizer, lr=c.lr, weight_decay=c.weight_decay,
                         momentum=c.momentum, batch_size=c.batch_size, epochs=c.epochs,
                         cosine=c.cosine, early_stop_epoch=c.early_stop_epoch,
                         early_stop_threshold=c.early_stop_threshold,
                         restore_best=c.restore_best, device=owner.device,
                         measure_latency=owner.measure_latency)
        self.owner = owner

    def network(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int) -> Network:
        return self.owner.network(arch, space, task, seed=seed)


__all__ = ["DeepPriorEvaluator", "Embedding", "ProbeResult", "INITS", "cached_embedding",
           "deep_prior_network", "embed_task", "init_weights", "freeze", "calibrate_batch_norm",
           "chunk_rows", "embedding_key", "make_classifier", "space_with_batch_norm",
           "task_fingerprint"]
