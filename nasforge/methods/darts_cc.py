"""Method ``darts_cc``: one search, a family of architectures from large to small.

DARTS with structure complexity control (the DARTS-CC reference code; see ``docs/darts.md``,
section DARTS-CC). The architecture parameters are a function α(λ) of a complexity parameter
λ given by a hypernetwork (``nasforge.oneshot.dartscc``), and the supernet
(``nasforge.oneshot.supernet.SuperNet``) is trained with per-sample Gumbel-softmax weights:

1. **Search.** The run's training data is split into a weight half and an architecture half
   (``arch_fraction``; the run's validation split is not touched by the search). Every step
   draws λ log-uniformly in ``[lambda_min, lambda_max]`` (once per step, the same λ for both
   steps), takes an architecture step on an architecture batch with the loss
   ``CE + λ · Σ_cells Σ_edges Σ_ops softmax(α(λ̃))·#params(op)`` (``nasforge.oneshot.architect``:
   ``order: 2``, the default as in the reference, DARTS's unrolled step with the
   finite-difference Hessian-vector product divided by 2ε; or ``order: 1``, the gradient at the
   current weights, about half the cost), then a weight step on a weight
   batch, both with the per-sample Gumbel-softmax weights of α(λ̃) at temperature
   ``max(tau_min, 1 - tau_decay · epoch)``; the noise is drawn once per step (a seed), so every
   loss of the step sees the same noise. Weights: SGD (lr 0.025, momentum 0.9, weight decay
   3e-4, cosine per epoch to ``lr_min``, clipping 5); hypernetwork: Adam (lr 1e-3, betas (0.5,
   0.999), weight decay 1e-3) -- the reference's defaults. Training goes through the one engine
   with ``ctx.train``: everything is checkpointed after every epoch and resumes exactly after
   ``kill -9``. After every epoch α(λ̃) and the genotype at each λ̃ of ``lambdas`` are recorded.
2. **The family.** A genotype is derived at each λ̃ of ``lambdas`` (default 0, .25, .5, .75, 1;
   ``derive: argmax`` -- every edge its argmax operation, ``none`` allowed: DARTS-CC's small-data
   protocol -- or ``top2``, DARTS's rule) and trained from scratch by the run's evaluator (the
   "one-hot" fine-tuning), each a trial with info ``{"method": "darts_cc", "role": "family",
   "lambda": λ, "lambda_tilde": λ̃}``. The same genotype at two λ is trained once; the second
   trial copies the result (info ``same_as``).
3. **Random baseline** (``random_baseline: N``): N random genotypes of the same form, the i-th
   with a fraction ``i / (N - 1)`` of parameter-free operations (DARTS-CC's protocol), trained
   the same way (info ``role: random``, ``param_free_fraction``).

Model choice never looks at test data: the search uses only the training split, the trials are
scored by the evaluator on the validation split. Plots (``RUN_DIR/plots``, so in the report):
``darts_cc_params_vs_lambda.png``, ``darts_cc_acc_vs_params.png``, ``darts_cc_search.png``
(expected parameter count of α(λ̃) over the epochs). Store metadata ``darts_cc``: the family,
the α(λ̃) and genotypes per epoch, the search time.

Options beyond the reference's defaults (see ``docs/darts.md``): ``complexity: relative`` (the
complexity term divided by the cells' largest possible parameter count), ``pivots: fixed``
(α(λ̃) linear between its anchors), ``lambda_sampling: anchors`` (λ̃ drawn at an anchor of
α(λ̃) plus ``lambda_jitter`` times the anchors' spacing, clipped to [0, 1]: every anchor, the
family's ends included, gets the same share of the architecture gradient; the reference's
uniform λ̃ gives the end anchors half of an inner one's), ``warmup_epochs`` (the first epochs
train the weights only), ``arch_batch_size`` (the architecture steps' batch, by default
``batch_size``: a larger one averages the noise of the architecture gradient, which at few
steps decides the argmax of a nearly flat α), ``lambda_classifier`` (the reference's
λ-conditioned final classifier, ``LambdaLinear``, in the search); variance reduction of the
architecture gradient: ``lambda_sampling: stratified`` (every step one λ̃ per anchor, on
consecutive groups of the batch) or ``coupled`` (every step one λ̃ per anchor, each on a copy of
the whole batch with the same Gumbel noise: common random numbers, so neighbouring anchors
differ by their λ, not by their batches), and ``alpha_average_epochs`` (the family derived from
the mean of the hypernetwork's parameters over the architecture steps of the last epochs: tail
iterate averaging);
``configs/darts_cc_digits_cpu.yaml`` is the CPU-scale preset.

Budget: the method's trials are fixed by its options (family and random baseline); the run's
trial budget is not consulted.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import Trial
from ..errors import ConfigError
from ..oneshot.architect import Architect, Bilevel
from ..oneshot.dartscc import (CELL_TYPES, COMPLEXITY_UNITS, LambdaLinear, PARAMETER_FREE, AlphaHypernet, LambdaRange,
                               complexity_scale, expected_params, gumbel_weights,
                               temperature)
from ..oneshot.derive import derive
from ..oneshot.supernet import SuperNet
from ..registry import register
from ..spaces.darts import DartsSpace, Genotype
from ..training import Callback, Engine, TrainConfig, resolve_device, seeded_module
from .base import Method, MethodContext


class DartsCCModel(nn.Module):
    """The supernet and the α(λ) hypernetwork as one module (one state dict for the engine).

    In training mode ``forward`` mixes the operations with per-sample Gumbel-softmax weights of
    α(``lam_tilde``) at temperature ``tau``; the noise comes from a generator seeded
    ``noise_seed`` at every forward, so every loss of one step (the architecture step's, its
    finite differences at second order, the weight step's) sees the same noise for the same
    batch size. In eval mode the weights are ``softmax(α(eval_tilde))``. With a ``classifier``
    (``LambdaLinear``, option ``lambda_classifier``) the logits come from it at the same λ̃
    instead of the supernet's own classifier.

    ``strata`` (``lambda_sampling`` ``stratified`` / ``coupled``; ``None`` otherwise): one
    ``(λ, λ̃)`` per group; in training mode the batch's rows are split into ``len(strata)``
    consecutive groups of sizes ``group_sizes`` and group g is mixed with Gumbel weights of
    α(λ̃_g). With ``replicated`` set (``hyperloss`` of a ``coupled`` step: the batch repeated
    once per group), every group draws the same Gumbel noise (common random numbers).
    """

    def __init__(self, supernet: nn.Module, hyper: AlphaHypernet,
                 classifier: LambdaLinear | None = None):
        super().__init__()
        self.supernet, self.hyper, self.classifier = supernet, hyper, classifier
        self.lam, self.lam_tilde, self.eval_tilde, self.tau = 0.0, 0.0, 0.0, 1.0
        self.noise_seed = 0
        self.strata: list[tuple[float, float]] | None = None
        self.replicated = False

    def alphas(self, tilde: float | None = None) -> dict[str, torch.Tensor]:
        return self.hyper(self.lam_tilde if tilde is None else tilde)

    def derive(self, lam: float, lam_range: LambdaRange,
               mode: Literal["argmax", "top2"] = "argmax") -> Genotype:
        """The genotype of α(λ) for any ``lam`` in ``lam_range`` (not only the family's)."""
        with torch.no_grad():
            alphas = {ct: a.detach().cpu() for ct, a in self.hyper(lam_range.tilde(lam)).items()}
        return derive(alphas, self.supernet.op_names, mode)

    def mixing_weights(self, batch: int) -> dict[str, torch.Tensor]:
        if self.training:
            generator = torch.Generator().manual_seed(self.noise_seed)
            if not self.strata:
                alphas = self.alphas()
                return {ct: gumbel_weights(alphas[ct], batch, self.tau, generator)
                        for ct in CELL_TYPES}
            parts: dict[str, list[torch.Tensor]] = {ct: [] for ct in CELL_TYPES}
            for (_, t), n in zip(self.strata, group_sizes(batch, len(self.strata))):
                if n == 0:
                    continue
                if self.replicated:  # every replica of the batch sees the same noise
                    generator = torch.Generator().manual_seed(self.noise_seed)
                alphas = self.alphas(t)
                for ct in CELL_TYPES:
                    parts[ct].append(gumbel_weights(alphas[ct], n, self.tau, generator))
            return {ct: torch.cat(parts[ct], dim=0) for ct in CELL_TYPES}
        return {ct: F.softmax(a, dim=-1) for ct, a in self.alphas(self.eval_tilde).items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.mixing_weights(x.shape[0])
        if self.classifier is None:
            return self.supernet(x, weights)
        tilde = self.lam_tilde if self.training else self.eval_tilde
        return self.classifier(self.supernet.features(x, weights), tilde)


class LambdaSchedule(Callback):
    """Engine callback (before ``Bilevel``): λ and the Gumbel noise seed per step, the
    temperature per epoch, and after every epoch α(λ̃), its expected parameter count and the
    genotype at each λ̃ of the family in ``engine.state["history"]``.

    With ``alpha_average_epochs = k > 0`` it also sums the hypernetwork's parameters after every
    step of the last ``k`` epochs (each one follows an architecture step; the weight step does
    not move them), in float64, with the count: ``averaged()`` is their mean (tail / Polyak
    iterate averaging), checkpointed through ``state_dict``; the history then also holds the
    averaged family so far (``expected_params_avg``, ``genotypes_avg``)."""

    def __init__(self, method: "DartsCC", table: dict[str, torch.Tensor], ops: Sequence[str]):
        self.m, self.table, self.ops = method, table, list(ops)
        self.range = LambdaRange(method.lambda_min, method.lambda_max, method.lambda_sampling,
                                 method.anchors, method.lambda_jitter)
        self.stratified = method.lambda_sampling in ("stratified", "coupled")
        self.avg_sum: dict[str, torch.Tensor] = {}
        self.avg_count = 0

    def on_epoch_start(self, engine: Engine) -> None:
        engine.model.tau = temperature(engine.epoch - 1, self.m.tau_decay, self.m.tau_min)

    def on_step_start(self, engine: Engine) -> None:
        model = engine.model
        if self.stratified:
            model.strata = self.range.strata(engine.rng)
            model.lam, model.lam_tilde = model.strata[0]
        else:
            model.lam, model.lam_tilde = self.range.sample(engine.rng)
        model.noise_seed = int(torch.randint(2**62, (), generator=engine.rng))

    def averaging(self, epoch: int) -> bool:
        k = self.m.alpha_average_epochs
        return k > 0 and epoch > self.m.epochs - k

    def on_step_end(self, engine: Engine, loss: float, acc: float) -> None:
        if not self.averaging(engine.epoch):
            return
        with torch.no_grad():
            for name, p in engine.model.hyper.named_parameters():
                value = p.detach().to("cpu", torch.float64)
                if name in self.avg_sum:
                    self.avg_sum[name] += value
                else:
                    self.avg_sum[name] = value.clone()
        self.avg_count += 1

    def averaged(self, hyper: nn.Module) -> nn.Module | None:
        """A copy of ``hyper`` holding the mean of the summed iterates (``None`` before any)."""
        if not self.avg_count:
            return None
        import copy

        out = copy.deepcopy(hyper)
        with torch.no_grad():
            for name, p in out.named_parameters():
                p.copy_((self.avg_sum[name] / self.avg_count).to(p))
        return out

    def on_epoch_end(self, engine: Engine, logs: dict[str, float]) -> None:
        entry = snapshot(engine.model.hyper, self.m.lambdas, self.table, self.ops, self.m.derive,
                         epoch=engine.epoch, tau=engine.model.tau,
                         train_loss=logs.get("train_loss"))
        avg = self.averaged(engine.model.hyper)
        if avg is not None:
            more = snapshot(avg, self.m.lambdas, self.table, self.ops, self.m.derive)
            entry.update(expected_params_avg=more["expected_params"],
                         genotypes_avg=more["genotypes"], averaged_steps=self.avg_count)
        engine.state.setdefault("history", []).append(entry)

    def state_dict(self) -> dict[str, Any]:
        return {"avg_sum": {k: v.clone() for k, v in self.avg_sum.items()},
                "avg_count": self.avg_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.avg_sum = {k: v.clone() for k, v in state.get("avg_sum", {}).items()}
        self.avg_count = int(state.get("avg_count", 0))


def group_sizes(batch: int, groups: int) -> list[int]:
    """Sizes of ``groups`` consecutive groups of ``batch`` rows, the first ``batch % groups``
    one row larger (``numpy.array_split``'s)."""
    return [batch // groups + (1 if g < batch % groups else 0) for g in range(groups)]


def hyperloss(table: dict[str, torch.Tensor], scale: float = 1.0, coupled: bool = False
              ) -> Callable[[nn.Module, tuple], torch.Tensor]:
    """The architecture loss: cross-entropy plus λ times the expected parameter count divided
    by ``scale`` (1: the reference's raw count; ``complexity_scale(table, "relative")``).

    With ``model.strata`` (``lambda_sampling`` ``stratified``), the mean over the rows of each
    row's loss at its group's λ: ``CE + Σ_g (n_g / B) λ_g · expected_params(α(λ̃_g)) / scale``.
    ``coupled``: the batch is repeated once per group (every group sees the same rows and, via
    ``model.replicated``, the same Gumbel noise) and each group weighs ``1 / G``."""
    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        strata = model.strata if model.training else None
        if not strata:
            loss = F.cross_entropy(model(x), y)
            return loss + model.lam * expected_params(model.alphas(), table) / scale
        G = len(strata)
        if coupled:
            x, y = x.repeat(G, *([1] * (x.dim() - 1))), y.repeat(G)
            model.replicated = True
        try:
            loss = F.cross_entropy(model(x), y)
        finally:
            model.replicated = False
        for (lam, t), n in zip(strata, group_sizes(x.shape[0], G)):
            if n:
                loss = loss + (n / x.shape[0]) * lam * expected_params(model.alphas(t), table) / scale
        return loss
    return loss_fn


def snapshot(hyper: nn.Module, lambdas: Sequence[float], table: dict[str, torch.Tensor],
             ops: Sequence[str], mode: str, **extra: Any) -> dict[str, Any]:
    """softmax(α(λ̃)), its expected parameter count and genotype at each λ̃ (plain values) of
    the hypernetwork ``hyper`` (a ``DartsCCModel``'s ``hyper``, or its averaged copy)."""
    out: dict[str, Any] = {**extra, "weights": [], "expected_params": [], "genotypes": []}
    with torch.no_grad():
        for t in lambdas:
            alphas = {ct: a.detach().cpu() for ct, a in hyper(t).items()}
            out["weights"].append({ct: F.softmax(alphas[ct], -1).tolist() for ct in CELL_TYPES})
            out["expected_params"].append(float(expected_params(alphas, table)))
            out["genotypes"].append(str(derive(alphas, ops, mode)))
    return out


def random_genotypes(n: int, ops: Sequence[str], n_nodes: int, mode: str,
                     rng: np.random.Generator) -> list[tuple[Genotype, float]]:
    """DARTS-CC's random baseline: ``n`` genotypes, the i-th with a fraction ``i / (n - 1)`` of
    parameter-free operations (``none``, pools, ``skip_connect``) on its edges, the others drawn
    from the operations with parameters; ``argmax`` form (every edge, ``none`` edges then
    dropped as ``derive`` drops them) or ``top2`` form (two random inputs per node, no
    ``none``). Returns ``(genotype, fraction)`` pairs."""
    free = [op for op in ops if op in PARAMETER_FREE and (mode == "argmax" or op != "none")]
    paid = [op for op in ops if op not in PARAMETER_FREE]
    out = []
    for i in range(n):
        fraction = i / (n - 1) if n > 1 else 0.0
        cells = []
        for _ in CELL_TYPES:
            cells.append([list(range(j + 2)) if mode == "argmax"
                          else sorted(int(s) for s in rng.choice(j + 2, size=2, replace=False))
                          for j in range(n_nodes)])
        slots = sum(len(srcs) for cell in cells for srcs in cell)
        n_free = int(round(fraction * slots))
        if (n_free and not free) or (n_free < slots and not paid):
            raise ConfigError(f"darts_cc: random_baseline needs parameter-free and parameterised "
                              f"operations; the space's operations are {', '.join(ops)}")
        is_free = np.zeros(slots, dtype=bool)
        is_free[rng.permutation(slots)[:n_free]] = True
        k = 0
        built = []
        for cell in cells:
            nodes = []
            for srcs in cell:
                edges = []
                for src in srcs:
                    pool = free if is_free[k] else paid
                    edges.append((pool[int(rng.integers(len(pool)))], src))
                    k += 1
                kept = [e for e in edges if e[0] != "none"]  # as derive's argmax: none edges
                nodes.append(tuple(kept or edges[:1]))          # dropped, a zero node keeps one
            built.append(tuple(nodes))
        concat = tuple(range(2, n_nodes + 2))
        out.append((Genotype(built[0], concat, built[1], concat), fraction))
    return out


@register("methods", "darts_cc")
class DartsCC(Method):
    """DARTS-CC: α(λ) by a hypernetwork, one search, a family of genotypes across λ."""

    name = "darts_cc"

    def __init__(self, epochs: int = 50, batch_size: int = 64, arch_fraction: float = 0.5,
                 lambda_min: float = 1e-8, lambda_max: float = 1e-4,
                 lambdas: list[float] | None = None, derive: Literal["argmax", "top2"] = "argmax",
                 alpha: Literal["piecewise", "mlp"] = "piecewise", anchors: int = 5,
                 hidden: int = 16, order: int = 2, lr: float = 0.025, lr_min: float = 0.001,
                 momentum: float = 0.9, weight_decay: float = 3e-4, arch_lr: float = 1e-3,
                 arch_weight_decay: float = 1e-3, grad_clip: float = 5.0,
                 tau_decay: float = 0.016, tau_min: float = 0.1, random_baseline: int = 0,
                 complexity: Literal["params", "relative"] = "params",
                 pivots: Literal["learned", "fixed"] = "learned", lambda_classifier: bool = False,
                 lambda_sampling: Literal["uniform", "anchors", "stratified", "coupled"] = "uniform",
                 lambda_jitter: float = 1.0, warmup_epochs: int = 0,
                 arch_batch_size: int | None = None, alpha_average_epochs: int = 0,
                 plots: bool = True, device: str = "cpu"):
        def positive_int(key: str, value: Any, low: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"darts_cc: {key} = {value!r}; expected an integer >= {low}")

        positive_int("epochs", epochs)
        positive_int("batch_size", batch_size)
        positive_int("anchors", anchors, 2)
        positive_int("hidden", hidden)
        positive_int("random_baseline", random_baseline, 0)
        positive_int("warmup_epochs", warmup_epochs, 0)
        if arch_batch_size is not None:
            positive_int("arch_batch_size", arch_batch_size)
        positive_int("alpha_average_epochs", alpha_average_epochs, 0)
        if alpha_average_epochs > epochs - warmup_epochs:
            raise ConfigError(f"darts_cc: alpha_average_epochs = {alpha_average_epochs}; "
                              f"expected at most epochs - warmup_epochs = "
                              f"{epochs - warmup_epochs} (the epochs with architecture steps; "
                              "0: no averaging, the final α)")
        if warmup_epochs >= epochs:
            raise ConfigError(f"darts_cc: warmup_epochs = {warmup_epochs}; expected fewer than "
                              f"epochs = {epochs} (the architecture would never be trained)")
        if random_baseline == 1:
            raise ConfigError("darts_cc: random_baseline = 1; expected 0 (none) or >= 2 (the "
                              "i-th of N has a fraction i/(N-1) of parameter-free operations)")
        if order not in (1, 2) or isinstance(order, bool):
            raise ConfigError(f"darts_cc: order = {order!r}; expected 1 or 2")
        if not (isinstance(arch_fraction, (int, float)) and 0 < arch_fraction < 1):
            raise ConfigError(f"darts_cc: arch_fraction = {arch_fraction!r}; expected a number "
                              "in (0, 1)")
        try:  # validates the range, the sampling and its jitter
            LambdaRange(lambda_min, lambda_max, lambda_sampling, anchors, lambda_jitter)
        except ConfigError as exc:
            raise ConfigError(f"darts_cc: {exc} (options lambda_min, lambda_max, "
                              "lambda_sampling: uniform, anchors, stratified or coupled, "
                              "lambda_jitter)") from None
        if lambda_classifier is True and lambda_sampling in ("stratified", "coupled"):
            raise ConfigError(f"darts_cc: lambda_classifier with lambda_sampling = "
                              f"{lambda_sampling!r}; expected lambda_sampling uniform or anchors "
                              "(the λ-conditioned classifier takes one λ per batch)")
        lambdas = [0.0, 0.25, 0.5, 0.75, 1.0] if lambdas is None else list(lambdas)
        if not lambdas or any(isinstance(t, bool) or not isinstance(t, (int, float))
                              or not 0 <= t <= 1 for t in lambdas):
            raise ConfigError(f"darts_cc: lambdas = {lambdas!r}; expected normalised values "
                              "λ̃ in [0, 1] (0: lambda_min, 1: lambda_max)")
        if derive not in ("argmax", "top2"):
            raise ConfigError(f"darts_cc: derive = {derive!r}; expected 'argmax' or 'top2'")
        if complexity not in COMPLEXITY_UNITS:
            raise ConfigError(f"darts_cc: complexity = {complexity!r}; expected 'params' (the "
                              "reference's raw parameter count) or 'relative' (relative to the "
                              "cells' largest possible parameter count)")
        if pivots not in ("learned", "fixed"):
            raise ConfigError(f"darts_cc: pivots = {pivots!r}; expected 'learned' (the "
                              "reference's) or 'fixed' (linspace(0, 1, anchors))")
        if alpha not in ("piecewise", "mlp"):
            raise ConfigError(f"darts_cc: alpha = {alpha!r}; expected 'piecewise' or 'mlp'")
        for key, value in (("lr", lr), ("arch_lr", arch_lr), ("grad_clip", grad_clip)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"darts_cc: {key} = {value!r}; expected a number > 0")
        for key, value in (("lr_min", lr_min), ("weight_decay", weight_decay),
                           ("arch_weight_decay", arch_weight_decay), ("tau_decay", tau_decay)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"darts_cc: {key} = {value!r}; expected a number >= 0")
        if not 0 <= momentum < 1:
            raise ConfigError(f"darts_cc: momentum = {momentum!r}; expected a number in [0, 1)")
        if not (isinstance(tau_min, (int, float)) and 0 < tau_min <= 1):
            raise ConfigError(f"darts_cc: tau_min = {tau_min!r}; expected a number in (0, 1]")
        self.epochs, self.batch_size, self.arch_fraction = epochs, batch_size, float(arch_fraction)
        self.lambda_min, self.lambda_max = float(lambda_min), float(lambda_max)
        self.lambdas = [float(t) for t in lambdas]
        self.derive, self.alpha, self.anchors, self.hidden = derive, alpha, anchors, hidden
        self.order, self.lr, self.lr_min, self.momentum = order, float(lr), float(lr_min), momentum
        self.weight_decay, self.arch_lr = float(weight_decay), float(arch_lr)
        self.arch_weight_decay, self.grad_clip = float(arch_weight_decay), float(grad_clip)
        self.tau_decay, self.tau_min = float(tau_decay), float(tau_min)
        self.random_baseline, self.plots = random_baseline, plots
        self.complexity, self.pivots = complexity, pivots
        self.lambda_sampling, self.lambda_jitter = lambda_sampling, float(lambda_jitter)
        self.warmup_epochs = warmup_epochs
        self.arch_batch_size = batch_size if arch_batch_size is None else arch_batch_size
        self.alpha_average_epochs = alpha_average_epochs
        if not isinstance(lambda_classifier, bool):
            raise ConfigError(f"darts_cc: lambda_classifier = {lambda_classifier!r}; expected "
                              "true or false")
        self.lambda_classifier = lambda_classifier
        resolve_device(device)
        self.device = device

    # -- the search -------------------------------------------------------------------------------
    def build(self, ctx: MethodContext) -> tuple[DartsCCModel, Engine, dict[str, torch.Tensor],
                                                 tuple[torch.Tensor, torch.Tensor]]:
        """The model, the engine, the parameter table and the weight half of the data."""
        space = ctx.space
        if not isinstance(space, DartsSpace):
            raise ConfigError(f"darts_cc searches the darts space; the run's space is "
                              f"{getattr(space, 'name', type(space).__name__)!r} (use --space darts)")
        task = ctx.task
        if task is None or task.train is None:
            raise ConfigError("darts_cc needs a task with training data")
        supernet = seeded_module(lambda: SuperNet.from_space(space, task), ctx.seed)
        hyper = seeded_module(lambda: AlphaHypernet(len(space.ops), space.nodes, kind=self.alpha,
                                                    anchors=self.anchors, hidden=self.hidden,
                                                    learn_pivots=self.pivots == "learned"),
                              ctx.seed + 1)
        classifier = None
        if self.lambda_classifier:
            head = supernet.classifier
            classifier = seeded_module(lambda: LambdaLinear(
                head.in_features, head.out_features, self.anchors,
                learn_pivots=self.pivots == "learned"), ctx.seed + 2)
        model = DartsCCModel(supernet, hyper, classifier)
        # the network weights (SGD, the weight step): the supernet's, and the λ-conditioned
        # classifier's when there is one (the supernet's own classifier then gets no gradient)
        weight_params = [p for name, p in supernet.named_parameters()
                         if classifier is None or not name.startswith("classifier.")]
        if classifier is not None:
            weight_params += [p for p in classifier.parameters() if p.requires_grad]
        table = {ct: v.double() for ct, v in supernet.op_param_counts().items()}
        x, y = task.train
        perm = torch.from_numpy(ctx.rng(0xDA7C).permutation(x.shape[0]))
        n_arch = int(round(self.arch_fraction * x.shape[0]))
        if n_arch < 1 or n_arch >= x.shape[0]:
            raise ConfigError(f"darts_cc: arch_fraction = {self.arch_fraction} of {x.shape[0]} "
                              "training rows leaves one half empty")
        arch_idx, weight_idx = perm[:n_arch], perm[n_arch:]
        weights_opt = torch.optim.SGD(weight_params, lr=self.lr, momentum=self.momentum,
                                      weight_decay=self.weight_decay)
        arch_params = [p for p in hyper.parameters() if p.requires_grad]
        alpha_opt = torch.optim.Adam(arch_params, lr=self.arch_lr, betas=(0.5, 0.999),
                                     weight_decay=self.arch_weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(weights_opt, T_max=self.epochs,
                                                              eta_min=self.lr_min)
        architect = Architect(model, weight_params, arch_params,
                              hyperloss(table, complexity_scale(table, self.complexity),
                                        coupled=self.lambda_sampling == "coupled"),
                              order=self.order, weight_optimizer=weights_opt)
        callbacks = [LambdaSchedule(self, table, space.ops),
                     Bilevel(architect, (x[arch_idx], y[arch_idx]), self.arch_batch_size,
                             warmup=self.warmup_epochs)]
        config = TrainConfig(optimizer="sgd", lr=self.lr, momentum=self.momentum,
                             weight_decay=self.weight_decay, batch_size=self.batch_size,
                             epochs=self.epochs, cosine=False, grad_clip=self.grad_clip,
                             amp=False,
                             # whole batches of either step (an architecture batch split into
                             # chunks would repeat the step's Gumbel noise in every chunk, and
                             # split the λ groups of stratified sampling)
                             max_chunk=max(self.batch_size, self.arch_batch_size))
        engine = Engine(model, config, seed=ctx.seed, device=self.device,
                        optimizers={"weights": weights_opt, "alpha": alpha_opt},
                        step_optimizers=("weights",), schedulers={"weights": schedule},
                        callbacks=callbacks)
        return model, engine, table, (x[weight_idx], y[weight_idx])

    def search(self, ctx: MethodContext) -> dict[str, Any]:
        """Train the supernet and hypernetwork; derive the family and the random baseline."""
        model, engine, table, weight_data = self.build(ctx)
        cpu = time.process_time()
        result = ctx.train(engine, weight_data, None)
        cpu = time.process_time() - cpu
        space = ctx.space
        lam_range = LambdaRange(self.lambda_min, self.lambda_max)
        schedule = next(cb for cb in engine.callbacks if isinstance(cb, LambdaSchedule))
        averaged = schedule.averaged(model.hyper) if self.alpha_average_epochs else None
        if averaged is not None:  # the family (and model.derive) from the averaged iterates
            model.hyper.load_state_dict(averaged.state_dict())
        final = snapshot(model.hyper, self.lambdas, table, space.ops, self.derive)
        randoms = random_genotypes(self.random_baseline, space.ops, space.nodes, self.derive,
                                   ctx.rng(0xDA7D)) if self.random_baseline else []
        return {"lambdas": self.lambdas,
                "lambda_values": [lam_range.value(t) for t in self.lambdas],
                "derived": final["genotypes"], "expected_params": final["expected_params"],
                "random": [(str(g), f) for g, f in randoms],
                "history": engine.state.get("history", []),
                "arch_loss": engine.state.get("arch_loss", []),
                "search_seconds": result.seconds, "epochs": result.epochs_run,
                "search_cpu_seconds_this_process": cpu,
                "complexity": self.complexity, "lambda_sampling": self.lambda_sampling,
                "lambda_jitter": self.lambda_jitter, "warmup_epochs": self.warmup_epochs,
                "batch_size": self.batch_size, "arch_batch_size": self.arch_batch_size,
                "alpha_average_epochs": self.alpha_average_epochs,
                "averaged_steps": schedule.avg_count,
                "complexity_scale": complexity_scale(table, self.complexity),
                "order": self.order, "first_id": ctx.next_id(),
                "supernet_params": sum(p.numel() for p in model.supernet.parameters())}

    # -- the method -------------------------------------------------------------------------------
    def run(self, ctx: MethodContext) -> list[Trial]:
        loaded = ctx.load_state()
        if loaded is None or "derived" not in loaded[1]:
            state = self.search(ctx)
            ctx.save_state(self.epochs + 1, state)  # ids and genotypes fixed before any trial
        else:
            state = loaded[1]
        optional = ("search_cpu_seconds_this_process", "complexity", "complexity_scale",
                    "lambda_sampling", "lambda_jitter", "warmup_epochs", "batch_size",
                    "arch_batch_size", "alpha_average_epochs", "averaged_steps")
        ctx.store.set_meta(self.name, {k: state[k] for k in (
            "lambdas", "lambda_values", "derived", "expected_params", "random", "history",
            "search_seconds", "epochs", "order", "supernet_params", "arch_loss")
            + tuple(k for k in optional if k in state)})
        first = state["first_id"]
        proposals, copies, seen = [], [], {}
        for i, (t, lam, text) in enumerate(zip(state["lambdas"], state["lambda_values"],
                                              state["derived"])):
            info = {"method": self.name, "role": "family", "lambda": lam, "lambda_tilde": t}
            if text in seen:
                copies.append((first + i, text, {**info, "same_as": seen[text]}))
            else:
                seen[text] = first + i
                proposals.append((first + i, ctx.space.parse(text), info))
        base = first + len(state["lambdas"])
        for j, (text, fraction) in enumerate(state["random"]):
            proposals.append((base + j, ctx.space.parse(text),
                              {"method": self.name, "role": "random", "index": j,
                               "param_free_fraction": fraction}))
        done = {t.id: t for t in ctx.evaluate(proposals)}
        for tid, text, info in copies:
            source = done[info["same_as"]]
            done[tid] = ctx.record(tid, ctx.space.parse(text), source.result, info=info,
                                   started=time.time())
        trials = [done[tid] for tid in sorted(done)]
        if ctx.work_dir is not None and self.plots:
            try:
                write_plots(trials, state, Path(ctx.work_dir).parent / "plots",
                            ops=ctx.space.ops, n_nodes=ctx.space.nodes)
            except Exception as exc:  # a plot must never lose a finished run
                import warnings

                warnings.warn(f"darts_cc: plots not written: {type(exc).__name__}: {exc}")
        return trials


# --------------------------------------------------------------------------------------------
# plots


def _points(trials: Sequence[Trial], role: str) -> list[tuple[float, float, dict[str, Any]]]:
    out = []
    for t in trials:
        if t.info.get("role") == role and t.status == "ok" and "params" in t.result.cost:
            out.append((float(t.result.cost["params"]), float(t.result.metrics.get("val_acc",
                                                                                    math.nan)),
                        t.info))
    return out


def write_plots(trials: Sequence[Trial], state: dict[str, Any], plots_dir: Path,
                darts: Sequence[tuple[float, float]] = (), ops: Sequence[str] = (),
                n_nodes: int = 0) -> list[Path]:
    """Parameters against λ, validation accuracy against parameters (family, ``darts`` points
    ``(params, val_acc)``, random genotypes), the expected parameter count over the search,
    softmax(α(λ̃)) per edge over the epochs at the smallest and largest λ̃, and the family's
    cells drawn as graphs."""
    from ..oneshot.plots import _pyplot, plot_alpha_history, plot_genotype
    from ..oneshot.supernet import cell_edges
    from ..report.axes import log_axis
    from ..spaces.darts import parse_genotype

    plt = _pyplot()
    plots_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        paths.append(plots_dir / name)
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

    family = sorted(_points(trials, "family"), key=lambda p: p[2]["lambda"])
    randoms = _points(trials, "random")
    if family:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([p[2]["lambda"] for p in family], [p[0] for p in family], "o-", label="trained")
        log_axis(ax, "x")
        ax.set_xlabel("λ")
        ax.set_ylabel("parameters")
        ax.set_title("DARTS-CC: parameters of the derived network against λ")
        save(fig, "darts_cc_params_vs_lambda.png")
    if family or randoms:
        fig, ax = plt.subplots(figsize=(6, 4))
        if randoms:
            ax.scatter([p[0] for p in randoms], [p[1] for p in randoms], c="grey", marker="x",
                       label="random genotypes")
        if darts:
            ax.scatter([p[0] for p in darts], [p[1] for p in darts], c="tab:red", marker="s",
                       label="DARTS")
        if family:
            ax.plot([p[0] for p in family], [p[1] for p in family], "o-", c="tab:blue",
                    label="DARTS-CC family")
            for p in family:
                ax.annotate(f"λ̃={p[2]['lambda_tilde']:g}", (p[0], p[1]), fontsize=7)
        log_axis(ax, "x")
        ax.set_xlabel("parameters")
        ax.set_ylabel("validation accuracy")
        ax.legend(fontsize=8)
        save(fig, "darts_cc_acc_vs_params.png")
    history = state.get("history", [])
    if history:
        fig, ax = plt.subplots(figsize=(6, 4))
        epochs = [h["epoch"] for h in history]
        for i, t in enumerate(state["lambdas"]):
            ax.plot(epochs, [h["expected_params"][i] for h in history], label=f"λ̃={t:g}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("expected parameters of the cells")
        ax.set_title("DARTS-CC search: softmax(α(λ̃))-expected parameter count")
        ax.legend(fontsize=8)
        save(fig, "darts_cc_search.png")
        if ops and n_nodes:
            ends = sorted({0, len(state["lambdas"]) - 1})
            for i in ends:
                t = state["lambdas"][i]
                per_epoch = [{"epoch": h["epoch"], **h["weights"][i]} for h in history]
                paths += plot_alpha_history(per_epoch, ops, cell_edges(n_nodes),
                                            plots_dir / f"darts_cc_alphas_lt{t:g}",
                                            f"DARTS-CC λ̃={t:g}")
    drawn: set[str] = set()
    for t, text in zip(state["lambdas"], state["derived"]):
        if text not in drawn:
            drawn.add(text)
            paths.append(plot_genotype(parse_genotype(text), plots_dir / f"darts_cc_cell_lt{t:g}.png",
                                       f"DARTS-CC genotype at λ̃={t:g}"))
    return paths


__all__ = ["DartsCC", "DartsCCModel", "LambdaSchedule", "hyperloss", "random_genotypes",
           "snapshot", "write_plots"]
