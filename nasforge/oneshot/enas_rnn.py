"""The shared-weight supernet of the ENAS recurrent cell space (``nasforge.spaces.enas_rnn``).

One ``(hidden, 2 * hidden)`` matrix per (source node, node) pair, plus node 1's input and state
matrices, the embedding / head of the task: every cell of the space is a sub-network, and a
forward pass with a sampled cell reads (and a backward pass updates) only that cell's matrices.
ENAS trains these weights with cells sampled by the controller, one per minibatch::

    supernet = seeded_module(lambda: RecurrentSupernet(space, task), seed)
    loss = supernet.loss((x, y), arch)          # or: supernet.use(arch); engine.optimize(x, y)
    metrics = supernet.evaluate(task.val, arch)  # shared-weight score of one cell

Parameter names equal those of the standalone network ``space.build(arch, task)``, so
``net.load_state_dict(supernet.cell_state_dict(arch))`` gives the cell its shared weights.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from ..core import Architecture, Network, Task
from ..errors import ConfigError
from ..spaces.enas_rnn import EnasRnnSpace, RnnCellArch, task_layout
from ..training import Criterion, TrainConfig, split_metrics


class RecurrentSupernet(Network):
    """Every cell of ``space`` on ``task`` with shared weights (see the module docstring).

    ``forward(x, arch)`` runs the cell ``arch`` (or the one set by ``use``); ``loss(batch,
    arch)`` is the task's loss (cross-entropy of classes, or of next tokens for language
    modelling); ``evaluate(data, arch)`` every metric of the task kind (``acc`` / ``ppl``).
    ``shared_lr`` is the SGD learning rate ``enas`` trains it with unless told otherwise: on
    MNIST-1D, 0.05 leaves it near chance after 6 epochs (0.11-0.27 for 8 random cells), 0.2
    trains it (0.27-0.57 after 20 epochs), 0.5 diverges.
    """

    shared_lr = 0.2

    def __init__(self, space: EnasRnnSpace, task: Task):
        if not isinstance(space, EnasRnnSpace):
            raise ConfigError(f"RecurrentSupernet needs the enas_rnn space; got {space.name!r}")
        layout = task_layout(task)
        net = space.network(task, None, space.all_pairs)
        super().__init__(net.encoder, net.head)
        self.space = space
        self.config = TrainConfig(kind="language" if layout == "language" else "classification")
        self.criterion = Criterion(self.config)
        self.arch: RnnCellArch | None = None

    def use(self, arch: Architecture) -> None:
        """The cell plain ``forward(x)`` calls run from now on (the engine calls ``model(x)``)."""
        self.arch = self.space._check(arch)

    def forward(self, x: torch.Tensor, arch: Architecture | None = None) -> torch.Tensor:
        cell = self.arch if arch is None else self.space._check(arch)
        if cell is None:
            raise ConfigError("RecurrentSupernet: no cell to run; pass arch or call use(arch)")
        return self.head(self.encoder(x, cell))

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor],
             arch: Architecture | None = None) -> torch.Tensor:
        """The mean training loss of ``batch = (x, y)`` with the cell ``arch``."""
        x, y = batch
        return self.criterion.loss(self(x, arch), y)

    @torch.no_grad()
    def evaluate(self, data: tuple[torch.Tensor, torch.Tensor], arch: Architecture, *,
                 batch_size: int = 512) -> dict[str, float]:
        """Metrics of the cell ``arch`` with the shared weights on ``data`` (eval mode)."""
        cell = self.space._check(arch)
        was = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            return split_metrics(lambda x: self(x, cell), data, self.criterion,  # type: ignore[arg-type]
                                 batch_size=batch_size, device=device)
        finally:
            self.train(was)

    def weights(self) -> Iterator[nn.Parameter]:
        """The shared weights (every parameter: there are no architecture parameters)."""
        return self.parameters()

    def cell_state_dict(self, arch: Architecture) -> dict[str, torch.Tensor]:
        """The shared weights the standalone network of ``arch`` holds, under its names."""
        cell = self.space._check(arch)
        own = {f"w_{i}_{j}" for i, j in cell.pairs()}
        out = {}
        for name, value in self.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("w_") and leaf not in ("w_x", "w_h") and leaf not in own:
                continue
            out[name] = value
        return out


__all__ = ["RecurrentSupernet"]
