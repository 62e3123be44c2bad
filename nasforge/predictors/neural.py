"""Neural predictors trained by the one engine (``nasforge.training``, regression kind).

``mlp_ensemble``: BANANAS (White et al., 2021): an ensemble of small MLPs on ``space.encode``,
each member from its own seed; the mean and the std across members are the prediction and its
uncertainty. ``gin``: a graph isomorphism network on ``space.graph`` (operations as nodes) with
sum pooling, as POPNASv3 predicts accuracy; an ensemble of them gives a std too.
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch import nn

from ..core import Architecture, SearchSpace
from ..errors import ConfigError
from ..registry import register
from ..training import TrainConfig, fit, predict_batches, seeded_module
from .base import Predictor, Standardizer


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} = {value!r}; expected an integer >= 1")
    return value


class _Ensemble(Predictor):
    """Shared training: standardised targets, ``members`` networks, each fit by the engine."""

    has_std = True

    def __init__(self, *, seed: int = 0, members: int = 5, epochs: int = 200, lr: float = 3e-3,
                 weight_decay: float = 1e-4, batch_size: int = 32, hidden: int = 64,
                 layers: int = 3, canonical: bool = True):
        super().__init__(seed=seed, canonical=canonical)
        self.members = _positive_int("members", members)
        self.hidden = _positive_int("hidden", hidden)
        self.layers = _positive_int("layers", layers)
        self.config = TrainConfig(optimizer="adamw", lr=lr, weight_decay=weight_decay,
                                  batch_size=_positive_int("batch_size", batch_size),
                                  epochs=_positive_int("epochs", epochs), cosine=True,
                                  kind="regression", amp=False)
        self._nets: list[nn.Module] = []

    @abc.abstractmethod
    def _inputs(self, archs: list[Architecture]) -> torch.Tensor:
        """The network input for ``archs`` (encodings or batched graphs)."""

    @abc.abstractmethod
    def _make(self, width: int) -> nn.Module:
        """A fresh member network for inputs of ``width`` features."""

    def _fit(self, archs: list[Architecture], y: np.ndarray, space: SearchSpace) -> None:
        self._scale = Standardizer(y)
        x = self._inputs(archs)
        t = torch.as_tensor(self._scale.forward(y), dtype=torch.float32).unsqueeze(1)
        width = x.shape[-1] - (x.shape[1] if x.dim() == 3 else 0)
        self._nets = []
        for m in range(self.members):
            member_seed = self.seed * 1000 + m
            net = seeded_module(lambda: self._make(width), member_seed)
            fit(net, (x, t), None, self.config, seed=member_seed)
            self._nets.append(net.eval())

    def _predict(self, archs: list[Architecture]) -> tuple[np.ndarray, np.ndarray]:
        x = self._inputs(archs)
        outs = np.stack([predict_batches(net, x).reshape(-1).numpy() for net in self._nets])
        outs = self._scale.inverse(outs.astype(np.float64))
        std = outs.std(axis=0) if len(self._nets) > 1 else np.zeros(outs.shape[1])
        return outs.mean(axis=0), std


def _mlp(width: int, hidden: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, 1))
    return nn.Sequential(*mods)


@register("predictors", "mlp_ensemble")
class MLPEnsemble(_Ensemble):
    """BANANAS: ``members`` MLPs (``layers`` x ``hidden``) on ``space.encode``; mean and std."""

    name = "mlp_ensemble"

    def _inputs(self, archs: list[Architecture]) -> torch.Tensor:
        return torch.from_numpy(self._encodings(archs))

    def _make(self, width: int) -> nn.Module:
        return _mlp(width, self.hidden, self.layers)


class GINNet(nn.Module):
    """GIN over packed graphs ``x = [A | node features | mask]`` of shape (B, n, n + f + 1).

    Each layer: ``h <- MLP((1 + eps) h + A^T h, A h)`` (messages from predecessors and from
    successors kept apart, since a cell's direction matters); sum pooling over real nodes; an MLP
    readout to one number.
    """

    def __init__(self, features: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Linear(features, hidden)
        self.eps = nn.Parameter(torch.zeros(layers))
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                          nn.ReLU())
            for _ in range(layers))
        self.readout = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def reset_parameters(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.eps.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        adj, feats = x[..., :n], x[..., n:-1]
        mask = x[..., -1:]
        h = self.embed(feats) * mask
        for eps, conv in zip(self.eps, self.convs):
            from_pred = adj.transpose(1, 2) @ h
            from_succ = adj @ h
            h = conv(torch.cat([(1 + eps) * h + from_pred, from_succ], dim=-1)) * mask
        return self.readout(h.sum(dim=1))


@register("predictors", "gin")
class GIN(_Ensemble):
    """Graph isomorphism network on ``space.graph(arch)`` (one-hot ops over ``space.op_vocab``),
    sum pooling; ``members`` networks give a mean and a std."""

    name = "gin"

    def __init__(self, *, seed: int = 0, members: int = 3, epochs: int = 200, lr: float = 3e-3,
                 weight_decay: float = 1e-4, batch_size: int = 32, hidden: int = 32,
                 layers: int = 3, canonical: bool = True):
        super().__init__(seed=seed, members=members, epochs=epochs, lr=lr,
                         weight_decay=weight_decay, batch_size=batch_size, hidden=hidden,
                         layers=layers, canonical=canonical)

    def _inputs(self, archs: list[Architecture]) -> torch.Tensor:
        assert self.space is not None
        vocab = self.space.op_vocab
        graphs = [self.space.graph(a) for a in archs]
        n = max(g.num_nodes for g in graphs)
        f = len(vocab)
        x = np.zeros((len(graphs), n, n + f + 1), dtype=np.float32)
        for i, g in enumerate(graphs):
            k = g.num_nodes
            x[i, :k, :k] = g.adjacency()
            x[i, :k, n:n + f] = g.one_hot(vocab)
            x[i, :k, -1] = 1.0
        return torch.from_numpy(x)

    def _make(self, width: int) -> nn.Module:
        return GINNet(width - 1, self.hidden, self.layers)
