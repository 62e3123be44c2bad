"""Weight-sharing models for ENAS (Pham et al. 2018) and random search with weight sharing.

A shared model holds every operation of its space once; ``use(arch)`` picks the architecture
the next forward passes run, and only that architecture's operations compute (and so only they
get gradients). Two architectures that choose the same operation at the same place use the same
parameter tensor.

- ``enas_macro``: :class:`MacroSupernet`, the macro space's encoder holding all six operations
  per layer (``nasforge.spaces.enas_macro.MacroEncoder``), and a linear head.
- ``darts`` (ENAS micro): :class:`DartsShared`, the DARTS supernet of
  ``nasforge.oneshot.supernet`` driven with the one-hot weights of a genotype (zero-weight
  operations are not computed).

Other spaces plug in with :func:`register_shared` (the recurrent cell space does). Scores with
shared weights use batch statistics in batch norm (the running averages of a supernet mix every
architecture it trained) without changing the running averages: :func:`shared_accuracy`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..core import Architecture, SearchSpace, Task
from ..errors import ConfigError

SharedBuilder = Callable[[SearchSpace, Task], nn.Module]
_BUILDERS: dict[str, SharedBuilder] = {}


def register_shared(space_name: str, builder: SharedBuilder) -> None:
    """Make ``shared_model`` build ``builder(space, task)`` for spaces named ``space_name``; the
    module must have ``use(arch)`` and ``forward(x) -> logits``."""
    _BUILDERS[space_name] = builder


def shared_model(space: SearchSpace, task: Task) -> nn.Module:
    """The weight-sharing model of ``space`` for ``task`` (``ConfigError`` for other spaces)."""
    builder = _BUILDERS.get(space.name)
    if builder is None:
        raise ConfigError(f"space {space.name!r} has no weight-sharing model; ENAS supports "
                          f"{', '.join(sorted(_BUILDERS))}")
    return builder(space, task)


class MacroSupernet(nn.Module):
    """Every macro operation at every layer, one head; runs the architecture given to ``use``."""

    def __init__(self, space: Any, task: Task):
        super().__init__()
        from ..spaces.enas_macro import MACRO_OPS, MacroEncoder

        self.space = space
        self.encoder = MacroEncoder(space.dim(task), task.input_shape[0], space.channels,
                                    [MACRO_OPS] * space.layers)
        self.head = nn.Linear(self.encoder.out_channels, task.num_classes)

    def use(self, arch: Architecture) -> None:
        self.encoder.use(self.space._check(arch))

    def op(self, layer: int, name: str) -> nn.Module:
        """The shared module of operation ``name`` at ``layer``."""
        return self.encoder.layer_ops[layer][name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class DartsShared(nn.Module):
    """ENAS micro: the DARTS supernet (``nasforge.oneshot.supernet``) run with the one-hot
    weights of the sampled genotype, so only the genotype's operations compute."""

    def __init__(self, space: Any, task: Task):
        super().__init__()
        from .supernet import SuperNet

        self.space = space
        self.supernet = SuperNet.from_space(space, task)
        self.weights: dict[str, torch.Tensor] | None = None

    def use(self, arch: Architecture) -> None:
        self.weights = self.supernet.weights_for(self.space._check(arch))

    def op(self, cell: int, edge: tuple[int, int], name: str) -> nn.Module:
        """The shared module of operation ``name`` on ``edge`` (node state, input state) of
        cell number ``cell``."""
        e = self.supernet.edges.index(edge)
        return self.supernet.cells[cell].edges[e].ops[self.supernet.op_names.index(name)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            raise RuntimeError("darts: no genotype set; call use(genotype) first")
        return self.supernet(x, self.weights)


register_shared("enas_macro", MacroSupernet)
register_shared("darts", DartsShared)


def _recurrent(space: Any, task: Task) -> nn.Module:
    from .enas_rnn import RecurrentSupernet  # the recurrent cell space's supernet (its own module)

    return RecurrentSupernet(space, task)


register_shared("enas_rnn", _recurrent)


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Batch norm normalises with each batch's statistics and leaves its running averages as
    they are (momentum 0); no gradients. The model's mode and momenta are restored after."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    was_training = model.training
    try:
        model.train()
        for m in norms:
            m.momentum = 0.0
        with torch.no_grad():
            yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)


def shared_accuracy(model: nn.Module, arch: Architecture, data: tuple[torch.Tensor, torch.Tensor],
                    *, batch_size: int = 256) -> float:
    """Accuracy of ``arch`` on ``data`` with the shared weights (batch statistics, see above);
    next-token accuracy for language models."""
    x, y = data
    if x.shape[0] == 0:
        raise ConfigError("shared_accuracy: no data to score on")
    device = next(model.parameters()).device
    model.use(arch)
    correct = 0
    bounds = list(range(0, x.shape[0], batch_size)) + [x.shape[0]]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]  # batch statistics need more than one row: join a last single row
    with batch_statistics(model):
        for a, b in zip(bounds[:-1], bounds[1:]):
            xb, yb = x[a:b].to(device), y[a:b].to(device)
            correct += int((model(xb).argmax(-1) == yb).sum())  # (B, C), or (B, T, vocab)
    return correct / y.numel()


__all__ = ["register_shared", "shared_model", "MacroSupernet", "DartsShared", "batch_statistics",
           "shared_accuracy"]
