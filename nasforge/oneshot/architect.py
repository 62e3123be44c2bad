"""The bilevel architecture step of DARTS: first order, and second order with the unrolled weights.

DARTS (Liu et al. 2019) minimises the validation loss over α with the weights w trained on the
training loss. The architecture gradient is taken at

- **first order**: the current weights, ``∇α L_val(w, α)``;
- **second order**: the weights after one virtual SGD step,
  ``w' = w − ξ (μ·m + ∇w L_train(w, α) + wd·w)`` (``ξ`` the weights' current learning rate, ``μ``
  their momentum, ``m`` the optimizer's momentum buffer, ``wd`` their weight decay: the step the
  weight optimizer is about to take), giving
  ``∇α L_val(w', α) − ξ ∇²α,w L_train(w, α) · ∇w' L_val(w', α)``.
  The Hessian-vector product is the central finite difference
  ``(∇α L_train(w⁺, α) − ∇α L_train(w⁻, α)) / (2ε)``, ``w± = w ± ε ∇w' L_val(w', α)``,
  ``ε = 0.01 / ‖∇w' L_val(w', α)‖``, as in the DARTS code. (pt.darts writes ``(p − n) / 2.*eps``,
  which Python reads as ``(p − n)·ε/2``: the correction scaled by ε² instead of 1/(2ε), so almost
  gone. ``tests/test_oneshot_architect.py`` checks this step against an exact autograd
  Hessian-vector product and shows that the ε/2 scaling fails the same check.)

The loss is a callable ``loss_fn(model, batch) -> loss`` (``batch = (x, y)``), so a method can
pass its own hyper-loss (DARTS-CC: cross-entropy plus λ times the expected parameter count).
The weights are restored exactly after the virtual steps, batch-norm running statistics included.

``Bilevel`` is the training-engine callback that takes one architecture step on a batch of the
architecture half of the data before each weight step (``engine.batch`` is the weights' batch).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..training import Callback

Batch = tuple[Tensor, Tensor]
ArchLoss = Callable[[nn.Module, Batch], Tensor]


def _grads(loss: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


class Architect:
    """Computes the architecture gradient of ``loss_fn`` at first or second order.

    ``model``: the module ``loss_fn`` runs; ``weights`` / ``alphas``: its network weights and its
    architecture parameters. ``weight_optimizer``: the weights' optimizer (SGD), whose momentum
    buffers, momentum and weight decay the virtual step uses (second order only).
    After each second-order ``gradient`` call, ``last`` holds its parts: ``direct``
    (``∇α L_val(w', α)``), ``hvp`` (the finite-difference Hessian-vector product), ``eps``, ``xi``
    and ``val_loss`` (``L_val(w', α)``).
    """

    def __init__(self, model: nn.Module, weights: Sequence[Tensor], alphas: Sequence[Tensor],
                 loss_fn: ArchLoss, *, order: int = 1,
                 weight_optimizer: torch.optim.Optimizer | None = None, r: float = 0.01):
        if order not in (1, 2):
            raise ConfigError(f"architect: order = {order!r}; expected 1 or 2")
        self.model, self.loss_fn, self.order, self.r = model, loss_fn, order, float(r)
        self.weights = [p for p in weights]
        self.alphas = [p for p in alphas]
        if not self.alphas:
            raise ConfigError("architect: no architecture parameters")
        self.weight_optimizer = weight_optimizer
        self.last: dict[str, Any] = {}

    def _device(self, batch: Batch) -> Batch:
        device = self.alphas[0].device
        return batch[0].to(device), batch[1].to(device)

    def _step_terms(self) -> tuple[list[Tensor], float, float]:
        """The momentum buffers (zeros when none yet), momentum and weight decay of the weights."""
        opt = self.weight_optimizer
        momentum = weight_decay = 0.0
        if opt is not None:
            group = opt.param_groups[0]
            momentum, weight_decay = float(group.get("momentum", 0.0)), float(group.get("weight_decay", 0.0))
        bufs = []
        for p in self.weights:
            state = opt.state.get(p, {}) if opt is not None else {}
            buf = state.get("momentum_buffer")
            bufs.append(torch.zeros_like(p) if buf is None else buf.detach())
        return bufs, momentum, weight_decay

    def gradient(self, train: Batch, val: Batch, xi: float) -> list[Tensor]:
        """The architecture gradient (one tensor per α parameter); ``xi`` is the weights'
        learning rate of the virtual step (second order; ignored at first order)."""
        val = self._device(val)
        if self.order == 1:
            return _grads(self.loss_fn(self.model, val), self.alphas)
        train = self._device(train)
        saved_w = [p.detach().clone() for p in self.weights]
        saved_b = [b.detach().clone() for b in self.model.buffers()]
        try:
            bufs, momentum, wd = self._step_terms()
            g = _grads(self.loss_fn(self.model, train), self.weights)
            with torch.no_grad():  # the unrolled weights w'
                for p, w, m, gp in zip(self.weights, saved_w, bufs, g):
                    p.copy_(w - xi * (momentum * m + gp + wd * w))
            val_loss = self.loss_fn(self.model, val)
            grads = _grads(val_loss, self.alphas + self.weights)
            direct, dw = grads[:len(self.alphas)], grads[len(self.alphas):]
            norm = torch.sqrt(sum((d.double() ** 2).sum() for d in dw))  # type: ignore[arg-type]
            eps = self.r / float(norm) if float(norm) > 0 else 0.0
            hvp = [torch.zeros_like(a) for a in self.alphas]
            if eps > 0:
                sides = []
                for sign in (1.0, -1.0):
                    with torch.no_grad():
                        for p, w, d in zip(self.weights, saved_w, dw):
                            p.copy_(w + sign * eps * d)
                    sides.append(_grads(self.loss_fn(self.model, train), self.alphas))
                hvp = [(gp - gn) / (2 * eps) for gp, gn in zip(*sides)]
        finally:
            with torch.no_grad():
                for p, w in zip(self.weights, saved_w):
                    p.copy_(w)
                for b, s in zip(self.model.buffers(), saved_b):
                    b.copy_(s)
        self.last = {"direct": [d.detach() for d in direct], "hvp": [h.detach() for h in hvp],
                     "eps": eps, "xi": float(xi), "val_loss": float(val_loss.detach())}
        return [d - xi * h for d, h in zip(direct, hvp)]


def gradient_loss(alphas: Sequence[Tensor], grads: Sequence[Tensor]):
    """An engine ``loss_fn`` whose gradient with respect to ``alphas`` is ``grads`` (so the
    engine's ``optimize`` applies a gradient computed elsewhere, with its clipping and steps)."""
    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, None]:
        return sum((a * g.detach()).sum() for a, g in zip(alphas, grads)), None  # type: ignore[return-value]
    return loss_fn


class Bilevel(Callback):
    """Engine callback: before each weight step, one architecture step on the next batch of
    ``arch_data`` (an endless, seeded, checkpointed stream), with optimizer ``alpha_optimizer``.

    First order steps ``loss_fn`` through ``engine.optimize``; second order computes the
    unrolled gradient with ``architect`` (the weights' learning rate of this step as ξ) and
    applies it through ``engine.optimize`` too. The mean architecture loss of each epoch (at the
    weights the gradient was taken at: ``w`` at first order, ``w'`` at second) goes to
    ``engine.state["arch_loss"]`` (one value per epoch) and to the epoch's logs.

    ``warmup``: the first ``warmup`` epochs take no architecture step (the weights train alone,
    mixed by α at its initial value) and record ``None`` as their architecture loss; 0 (DARTS's
    and GDAS's own schedule) steps α from the first batch on.
    """

    def __init__(self, architect: Architect, arch_data: Batch, batch_size: int, *,
                 alpha_optimizer: str = "alpha", weight_optimizer: str = "weights",
                 warmup: int = 0):
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigError(f"warmup = {warmup!r}; expected an integer >= 0 (epochs)")
        self.architect, self.arch_data, self.batch_size = architect, arch_data, batch_size
        self.alpha_optimizer, self.weight_optimizer = alpha_optimizer, weight_optimizer
        self.warmup = warmup
        self._sum, self._n = 0.0, 0

    def on_fit_start(self, engine: Any) -> None:
        self.stream = engine.stream("architecture", self.arch_data, self.batch_size)

    def on_epoch_start(self, engine: Any) -> None:
        self._sum, self._n = 0.0, 0

    def on_step_start(self, engine: Any) -> None:
        if engine.epoch <= self.warmup:
            return
        x, y = self.stream.next()
        arch = self.architect
        if arch.order == 1:
            loss, _ = engine.optimize(x, y, optimizers=(self.alpha_optimizer,),
                                      loss_fn=lambda model, xb, yb: (arch.loss_fn(model, (xb, yb)), None))
        else:
            xi = engine.optimizers[self.weight_optimizer].param_groups[0]["lr"]
            grads = arch.gradient(engine.batch, (x, y), xi)
            engine.optimize(x, y, optimizers=(self.alpha_optimizer,),
                            loss_fn=gradient_loss(arch.alphas, grads))
            loss = arch.last["val_loss"]
        self._sum += float(loss)
        self._n += 1

    def on_epoch_end(self, engine: Any, logs: dict[str, float]) -> None:
        if engine.epoch <= self.warmup:
            engine.state.setdefault("arch_loss", []).append(None)
            return
        value = self._sum / max(1, self._n)
        engine.state.setdefault("arch_loss", []).append(value)
        logs["arch_loss"] = value


__all__ = ["Architect", "Bilevel", "gradient_loss"]
