"""Evaluator ``zc``: training-free "zero-cost" proxies of an untrained network's quality.

Each proxy scores the network the space builds for an architecture, initialised from the trial
seed exactly as the ``train`` evaluator initialises it, using ONE minibatch of the task's
training split (``batch_size`` examples drawn by a generator seeded from the trial seed). No
weight is ever updated. Definitions, after Abdelfattah et al. (ICLR 2021, "Zero-Cost Proxies for
Lightweight NAS") and the papers they cite; "weights" are the weights of every convolution and
linear layer (biases and normalisation parameters are not scored):

- ``grad_norm``: sum over layers of the Euclidean norm of the gradient of the cross-entropy
  loss of the minibatch with respect to the layer's weight.
- ``snip`` (Lee et al., ICLR 2019): sum over all weights of ``|dL/dw * w|`` (the connection
  sensitivity), same loss.
- ``synflow`` (Tanaka et al., NeurIPS 2020): every BatchNorm is removed (replaced by the
  identity, as Abdelfattah et al. score it), every parameter is replaced by its absolute value,
  the network runs in float64 on a single all-ones input (the data is not used), ``R`` is the sum
  of its outputs and the score is the sum of ``|dR/dw * w|``. For a chain of bias-free linear
  layers it equals ``depth * R`` (synaptic flow is conserved layer by layer).
- ``jacob_cov`` (Mellor et al., 2020, first version of "Neural Architecture Search without
  Training"): the Jacobians ``J_i = d(sum_k f_k(x_i))/dx_i`` of the minibatch, their correlation
  matrix ``C`` (N x N) with eigenvalues ``l``, score ``-sum(log(l + 1e-5) + 1 / (l + 1e-5))``.
  Jacobians that do not vary across their entries (a network whose output ignores its input)
  have an undefined correlation; they count as perfectly correlated (1), the worst score.

Every score is reported so that **higher is better** (a strategy maximises it): metric ``zc``
and the same value under the proxy's name (``synflow``, ...). BatchNorm layers use the
minibatch's statistics (train mode, as at the start of training); dropout and drop-path are off,
so a score depends only on the architecture, the task and the seed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..core import Architecture, Evaluator, SearchSpace, Task, TrialResult, derive_seed
from ..cost import count_params
from ..errors import ArchitectureError, ConfigError, DataError
from ..registry import register
from ..training import resolve_device
from .train import build_network

PROXIES: tuple[str, ...] = ("grad_norm", "snip", "synflow", "jacob_cov")
Proxy = Literal["grad_norm", "snip", "synflow", "jacob_cov"]
JACOB_K = 1e-5
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCH_NORM = nn.modules.batchnorm._BatchNorm


def scored_weights(net: nn.Module) -> list[nn.Parameter]:
    """The weights a proxy scores: those of every convolution and linear layer, each once."""
    seen: set[int] = set()
    out = []
    for m in net.modules():
        if isinstance(m, _WEIGHTED) and m.weight.requires_grad and id(m.weight) not in seen:
            seen.add(id(m.weight))
            out.append(m.weight)
    return out


def minibatch(task: Task, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` training examples of ``task`` drawn without replacement from ``seed``."""
    x, y = task.train
    n = int(x.shape[0])
    if n == 0:
        raise DataError(f"task {task.name!r} has no training examples; zero-cost proxies need "
                        "one minibatch")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:batch_size]
    return x[idx], y[idx]


def _batch_statistics_mode(net: nn.Module) -> nn.Module:
    """Eval mode everywhere (no dropout / drop-path) except BatchNorm (minibatch statistics)."""
    net.eval()
    for m in net.modules():
        if isinstance(m, _BATCH_NORM):
            m.train()
    return net


def _loss_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    weights = scored_weights(net)
    _batch_statistics_mode(net)
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [(w.detach(), torch.zeros_like(w) if g is None else g.detach())
            for w, g in zip(weights, grads)]


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over conv / linear layers of ``||dL/dW||_2`` (cross-entropy on ``(x, y)``)."""
    return float(sum(g.double().norm() for _, g in _loss_gradients(net, x, y)))


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over conv / linear weights of ``|dL/dw * w|`` (cross-entropy on ``(x, y)``)."""
    return float(sum((g.double() * w.double()).abs().sum() for w, g in _loss_gradients(net, x, y)))


def remove_batch_norm(net: nn.Module) -> nn.Module:
    """Replace every BatchNorm module of ``net`` by the identity (in place); returns ``net``."""
    for name, child in list(net.named_children()):
        if isinstance(child, _BATCH_NORM):
            setattr(net, name, nn.Identity())
        else:
            remove_batch_norm(child)
    return net


def synflow(net: nn.Module, input_shape: Sequence[int]) -> float:
    """SynFlow of ``net`` (changed in place: BatchNorm removed, |parameters|, float64)."""
    remove_batch_norm(net)
    net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
        for b in net.buffers():
            if b.is_floating_point():
                b.abs_()
    weights = scored_weights(net)
    device = weights[0].device if weights else torch.device("cpu")
    ones = torch.ones(1, *input_shape, dtype=torch.float64, device=device)
    r = net(ones).sum()
    if not r.requires_grad:  # the output does not depend on any weight
        return 0.0
    grads = torch.autograd.grad(r, weights, allow_unused=True)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads)
                     if g is not None))


def jacobian_score(jacobians: np.ndarray) -> float:
    """Mellor et al.'s score of per-example Jacobians (rows): higher = less correlated."""
    j = np.asarray(jacobians, dtype=np.float64).reshape(len(jacobians), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(j)
    corr = np.atleast_2d(np.where(np.isfinite(corr), corr, 1.0))
    eig = np.clip(np.linalg.eigvalsh((corr + corr.T) / 2), 0.0, None)
    return float(-np.sum(np.log(eig + JACOB_K) + 1.0 / (eig + JACOB_K)))


def jacob_cov(net: nn.Module, x: torch.Tensor) -> float:
    """``jacobian_score`` of the input Jacobians of ``net`` on the minibatch ``x``."""
    _batch_statistics_mode(net)
    x = x.detach().clone().requires_grad_(True)
    out = net(x)
    if not out.requires_grad:
        return jacobian_score(np.zeros((x.shape[0], 1)))
    (jac,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    if jac is None:
        jac = torch.zeros_like(x)
    return jacobian_score(jac.reshape(x.shape[0], -1).cpu().numpy())


def proxy_score(proxy: str, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                input_shape: Sequence[int]) -> float:
    """The named proxy of ``net`` (which it may change: give it a fresh network)."""
    if proxy == "grad_norm":
        return grad_norm(net, x, y)
    if proxy == "snip":
        return snip(net, x, y)
    if proxy == "synflow":
        return synflow(net, input_shape)
    if proxy == "jacob_cov":
        return jacob_cov(net, x)
    raise ConfigError(f"zero-cost proxy {proxy!r}; expected one of {', '.join(PROXIES)}")


def check_proxies(names: Sequence[str]) -> list[str]:
    """``names`` if each is a known proxy, else one ``ConfigError`` naming the first bad one."""
    for name in names:
        if name not in PROXIES:
            raise ConfigError(f"zero-cost proxy {name!r}; expected one of {', '.join(PROXIES)}")
    return list(names)


def score_architecture(space: SearchSpace, arch: Architecture, task: Task, *, seed: int,
                       proxies: Sequence[str] = PROXIES, batch_size: int = 64,
                       device: str | torch.device = "cpu") -> dict[str, tuple[float, float]]:
    """``{proxy: (score, seconds)}`` for ``arch``; each proxy on its own freshly built network
    (seeded ``seed``, as the ``train`` evaluator builds it) and the same minibatch."""
    check_proxies(proxies)
    dev = resolve_device(device)
    x, y = minibatch(task, batch_size, derive_seed(seed, 1))
    x, y = x.to(dev), y.to(dev)
    out = {}
    for proxy in proxies:
        t0 = time.perf_counter()
        net = build_network(space, arch, task, seed=seed).to(dev)
        score = proxy_score(proxy, net, x, y, task.input_shape)
        out[proxy] = (score, time.perf_counter() - t0)
    return out


@register("evaluators", "zc")
class ZeroCostEvaluator(Evaluator):
    """A zero-cost proxy as the score (see the module docstring): ``proxy`` in ``grad_norm``,
    ``snip``, ``synflow``, ``jacob_cov``, on one minibatch of ``batch_size`` training examples.

    Metrics: ``zc`` and ``<proxy>`` (the same value, higher is better: use
    ``--objective max:zc``). Cost: ``params`` and ``zc_seconds`` (building and scoring).
    A network that cannot be built, or a score that is not finite, gives a ``failed`` result.
    """

    name = "zc"

    def __init__(self, *, proxy: Proxy = "synflow", batch_size: int = 64, device: str = "cpu"):
        check_proxies([proxy])
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
            raise ConfigError(f"zc: batch_size = {batch_size!r}; expected an integer >= 2")
        resolve_device(device)
        self.proxy, self.batch_size, self.device = proxy, batch_size, device

    def metrics(self) -> frozenset[str]:
        return frozenset({"zc", self.proxy, "params", "zc_seconds"})

    def evaluate(self, arch: Architecture, space: SearchSpace, task: Task, *, seed: int,
                 workdir: Path | None = None) -> TrialResult:
        """Score ``arch`` by the proxy from ``seed``; a ``failed`` result rather than raising."""
        try:
            params = float(count_params(build_network(space, arch, task, seed=seed)))
            ((score, seconds),) = score_architecture(
                space, arch, task, seed=seed, proxies=[self.proxy], batch_size=self.batch_size,
                device=self.device).values()
        except ArchitectureError as exc:
            return TrialResult.failed(f"architecture does not fit task {task.name!r}: {exc}")
        except Exception as exc:
            return TrialResult.failed(f"{self.proxy} failed: {type(exc).__name__}: {exc}")
        if not math.isfinite(score):
            return TrialResult.failed(f"{self.proxy} score is {score!r}; expected a finite number",
                                      cost={"params": params})
        return TrialResult(metrics={"zc": score, self.proxy: score},
                           cost={"params": params, "zc_seconds": seconds})


__all__ = ["ZeroCostEvaluator", "PROXIES", "grad_norm", "snip", "synflow", "jacob_cov",
           "jacobian_score", "proxy_score", "score_architecture", "minibatch", "scored_weights",
           "remove_batch_norm", "check_proxies"]
