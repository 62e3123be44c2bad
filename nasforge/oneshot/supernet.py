"""The DARTS mixed-operation supernet (2-D images and 1-D series) and its architecture parameters.

Every edge of a cell holds all candidate operations of the search space; its output is the sum of
the operations' outputs weighted by that edge's row of the architecture weights. DARTS mixes with
``softmax(alpha)``, GDAS with a hard Gumbel sample, ENAS with the one-hot weights of a sampled
genotype, DARTS-CC with per-sample Gumbel-softmax weights: the supernet only takes the weights.

Shared interface (other one-shot methods code against these names):

- ``SuperNet(ops, C, layers, n_classes, in_channels, dims=2, n_nodes=4, stem_multiplier=3)``,
  ``SuperNet.from_space(space, task)``: the DARTS search network (stem, ``layers`` cells with
  reductions at ``layers // 3`` and ``2 * layers // 3``, global pooling, linear classifier).
- ``forward(x, weights)`` with ``weights = {"normal": W, "reduce": W}``, ``W`` of shape ``[E, K]``
  (shared by the batch) or ``[B, E, K]`` (one row per sample), ``E`` edges, ``K`` operations. An
  operation (or a whole edge) whose weight is exactly zero for every sample is not computed, so
  one-hot weights run only the chosen operations; gradients still reach the weights (build hard
  weights as ``hard - soft.detach() + soft`` for a straight-through estimator: the zeros stay
  exactly zero).
- ``edges``: ``(node, input)`` per edge index, both *state numbers* (states 0 and 1 are the cell
  inputs, intermediate node ``j`` is state ``j + 2``): node 2 has edges from 0 and 1, node 3 from
  0, 1, 2, ...; 14 edges for 4 nodes. ``op_names``: the ``K`` operations, in weight order.
- ``op_param_counts()``: per cell type, an ``[E, K]`` tensor of the parameters each operation
  on each edge has in the derived network, summed over all cells of that type, so
  ``sum((softmax(alpha[t]) * counts[t]).sum() for t in counts)`` is DARTS-CC's expected parameter
  count of the cells. ``cell_op_param_counts()`` gives the per-cell tensors.
- ``weights_for(genotype)``: the one-hot weights of a genotype of the darts space.
- ``Alphas``: the architecture parameters (``softmax()``, ``gumbel(tau, hard, generator)``).

The layers are the DARTS search network's: operations from ``nasforge.ops.darts_ops`` with
``affine=False`` batch norm, pooling followed by a non-affine batch norm, cell inputs
preprocessed by ``FactorizedReduce`` after a reduction and ReLU-1x1 conv-BN otherwise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ArchitectureError, ConfigError
from ..ops.blocks import batch_norm, conv
from ..ops.darts_ops import OPS, FactorizedReduce, ReLUConvBN, make_op
from ..spaces.darts import check_input_size, reduction_positions

if TYPE_CHECKING:  # pragma: no cover
    from ..core import Task
    from ..spaces.darts import DartsSpace, Genotype

CELL_TYPES: tuple[str, str] = ("normal", "reduce")


def cell_edges(n_nodes: int) -> list[tuple[int, int]]:
    """``(node, input)`` state numbers of every edge of a cell with ``n_nodes`` nodes, in the
    DARTS order: node 2's edges from states 0 and 1, then node 3's from 0, 1, 2, ..."""
    return [(j + 2, src) for j in range(n_nodes) for src in range(j + 2)]


def num_edges(n_nodes: int) -> int:
    """Edges of a cell with ``n_nodes`` intermediate nodes (14 for 4)."""
    return n_nodes * (n_nodes + 3) // 2


def _search_op(name: str, dim: int, c: int, stride: int) -> nn.Module:
    """One candidate operation as the DARTS search network has it (non-affine BN after pools)."""
    op = make_op(name, dim, c, stride, affine=False)
    if "pool" in name:
        op = nn.Sequential(op, batch_norm(dim, c, affine=False))
    return op


class MixedEdge(nn.Module):
    """Every candidate operation on one edge; ``forward(x, w, active)`` sums ``w_k * op_k(x)``
    over the operations listed in ``active``."""

    def __init__(self, ops: Sequence[str], dim: int, c: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList(_search_op(name, dim, c, stride) for name in ops)

    def forward(self, x: Tensor, w: Tensor, active: Sequence[int]) -> Tensor:
        out = None
        for k in active:
            wk = w[..., k]
            if wk.dim() == 1:  # one weight per sample
                wk = wk.view(-1, *([1] * (x.dim() - 1)))
            h = wk * self.ops[k](x)
            out = h if out is None else out + h
        return out  # type: ignore[return-value]


class SearchCell(nn.Module):
    """A cell of the supernet: preprocess the two inputs, mix every edge, concatenate the nodes."""

    def __init__(self, ops: Sequence[str], dim: int, n_nodes: int, c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction, self.n_nodes, self.c = reduction, n_nodes, c
        self.preprocess0: nn.Module = (FactorizedReduce(dim, c_pp, c, affine=False) if reduction_prev
                                       else ReLUConvBN(dim, c_pp, c, 1, affine=False))
        self.preprocess1 = ReLUConvBN(dim, c_p, c, 1, affine=False)
        self.edges = nn.ModuleList(MixedEdge(ops, dim, c, 2 if reduction and src < 2 else 1)
                                   for _, src in cell_edges(n_nodes))

    def forward(self, s0: Tensor, s1: Tensor, w: Tensor, active: Sequence[Sequence[int]]) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for j in range(self.n_nodes):
            total = None
            for src in range(j + 2):
                if active[e]:
                    h = self.edges[e](states[src], w[..., e, :], active[e])
                    total = h if total is None else total + h
                e += 1
            if total is None:  # no edge into this node is active: the node is zero
                size = [(s + 1) // 2 if self.reduction else s for s in states[0].shape[2:]]
                total = states[0].new_zeros(states[0].shape[0], self.c, *size)
            states.append(total)
        return torch.cat(states[2:], dim=1)


class SuperNet(nn.Module):
    """The DARTS search network over ``ops``; see the module docstring for the interface."""

    def __init__(self, ops: Sequence[str], C: int, layers: int, n_classes: int, in_channels: int,
                 dims: int = 2, n_nodes: int = 4, stem_multiplier: int = 3):
        super().__init__()
        ops = list(ops)
        unknown = [op for op in ops if op not in OPS]
        if not ops or unknown or len(set(ops)) != len(ops):
            raise ConfigError(f"supernet: ops={ops!r}; expected distinct names from {', '.join(OPS)}")
        if dims == 1 and "conv_7x1_1x7" in ops:
            raise ConfigError("supernet: conv_7x1_1x7 has no 1-D form for series inputs")
        for key, value in (("C", C), ("layers", layers), ("n_classes", n_classes),
                           ("in_channels", in_channels), ("n_nodes", n_nodes),
                           ("stem_multiplier", stem_multiplier)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"supernet: {key}={value!r}; expected an integer >= 1")
        if dims not in (1, 2):
            raise ConfigError(f"supernet: dims={dims!r}; expected 1 (series) or 2 (images)")
        self.op_names: tuple[str, ...] = tuple(ops)
        self.C, self.layers, self.n_classes, self.in_channels = C, layers, n_classes, in_channels
        self.dims, self.n_nodes, self.stem_multiplier = dims, n_nodes, stem_multiplier
        self.edges: list[tuple[int, int]] = cell_edges(n_nodes)
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(conv(dims, in_channels, c_curr, 3, padding=1, bias=False),
                                  batch_norm(dims, c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        reductions = reduction_positions(layers)
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            self.cells.append(SearchCell(ops, dims, n_nodes, c_pp, c_p, c_curr, reduction,
                                         reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, n_nodes * c_curr
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, n_classes)

    @classmethod
    def from_space(cls, space: "DartsSpace", task: "Task", *, C: int | None = None,
                   layers: int | None = None, ops: Sequence[str] | None = None) -> "SuperNet":
        """The supernet of a darts space (its ``ops``, ``C``, ``layers``, ``nodes``,
        ``stem_multiplier``; ``C`` / ``layers`` / ``ops`` overridable) for ``task``'s inputs."""
        shape = tuple(task.input_shape)
        if task.kind not in ("image", "series") or len(shape) != {"image": 3, "series": 2}.get(task.kind):
            raise ArchitectureError(f"supernet: needs an image task (C, H, W) or a series task "
                                    f"(C, L); task {task.name!r} has kind {task.kind!r} and input "
                                    f"shape {shape}")
        layers = space.layers if layers is None else layers
        check_input_size(shape, layers)
        return cls(list(space.ops if ops is None else ops), space.C if C is None else C, layers,
                   task.num_classes, shape[0], dims=len(shape) - 1, n_nodes=space.nodes,
                   stem_multiplier=space.stem_multiplier)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        return len(self.op_names)

    # -- forward ----------------------------------------------------------------------------------
    def _check_weights(self, weights: Mapping[str, Tensor]) -> dict[str, list[list[int]]]:
        """The active operations of every edge, per cell type (one host sync per cell type)."""
        active = {}
        for t in CELL_TYPES:
            if t not in weights:
                raise ConfigError(f"supernet: weights lack {t!r}; expected keys {CELL_TYPES}")
            w = weights[t]
            if w.dim() not in (2, 3) or tuple(w.shape[-2:]) != (self.num_edges, self.num_ops):
                raise ConfigError(f"supernet: weights[{t!r}] has shape {tuple(w.shape)}; expected "
                                  f"[{self.num_edges}, {self.num_ops}] or [B, {self.num_edges}, "
                                  f"{self.num_ops}]")
            nonzero = w.detach() != 0
            if w.dim() == 3:
                nonzero = nonzero.any(0)
            active[t] = [[k for k, on in enumerate(row) if on] for row in nonzero.tolist()]
        return active

    def features(self, x: Tensor, weights: Mapping[str, Tensor]) -> Tensor:
        """The pooled features before the classifier."""
        active = self._check_weights(weights)
        for t in CELL_TYPES:
            w = weights[t]
            if w.dim() == 3 and w.shape[0] != x.shape[0]:
                raise ConfigError(f"supernet: weights[{t!r}] has {w.shape[0]} samples; the batch "
                                  f"has {x.shape[0]}")
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            t = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, weights[t], active[t])
        return torch.flatten(self.pool(s1), 1)

    def forward(self, x: Tensor, weights: Mapping[str, Tensor]) -> Tensor:
        """Logits of ``x`` with architecture weights ``weights`` (see the module docstring)."""
        return self.classifier(self.features(x, weights))

    # -- what DARTS-CC, ENAS and derivation need ----------------------------------------------------
    def cell_op_param_counts(self) -> list[tuple[str, Tensor]]:
        """Per cell (in network order): its type and an ``[E, K]`` tensor of the parameters of
        each operation on each edge as the derived network builds it (affine batch norm)."""
        cache: dict[tuple[str, int, int], int] = {}

        def count(name: str, c: int, stride: int) -> int:
            key = (name, c, stride)
            if key not in cache:
                with torch.device("meta"):
                    op = make_op(name, self.dims, c, stride, affine=True)
                cache[key] = sum(p.numel() for p in op.parameters())
            return cache[key]

        out = []
        for cell in self.cells:
            counts = torch.tensor([[float(count(name, cell.c, 2 if cell.reduction and src < 2 else 1))
                                    for name in self.op_names] for _, src in self.edges])
            out.append(("reduce" if cell.reduction else "normal", counts))
        return out

    def op_param_counts(self) -> dict[str, Tensor]:
        """Per cell type, ``[E, K]`` parameter counts summed over every cell of that type (see
        ``cell_op_param_counts``); a type with no cell in this network gives zeros."""
        totals = {t: torch.zeros(self.num_edges, self.num_ops) for t in CELL_TYPES}
        for t, counts in self.cell_op_param_counts():
            totals[t] += counts
        return totals

    def weights_for(self, genotype: "Genotype") -> dict[str, Tensor]:
        """The one-hot ``[E, K]`` weights of ``genotype`` (edges it does not use all zero).

        ``ArchitectureError`` when the genotype has another number of nodes, concatenates
        other states, or uses an operation outside ``op_names``.
        """
        index = {e: i for i, e in enumerate(self.edges)}
        out = {}
        for t in CELL_TYPES:
            nodes, concat = genotype.cell(t == "reduce")
            if len(nodes) != self.n_nodes or tuple(concat) != tuple(range(2, self.n_nodes + 2)):
                raise ArchitectureError(
                    f"supernet: the genotype's {t} cell has {len(nodes)} nodes concatenating "
                    f"{list(concat)}; this supernet has {self.n_nodes} nodes, all concatenated")
            w = torch.zeros(self.num_edges, self.num_ops)
            for j, node_edges in enumerate(nodes):
                for op, src in node_edges:
                    if op not in self.op_names:
                        raise ArchitectureError(f"supernet: the genotype uses {op!r}; this "
                                                f"supernet's operations are {', '.join(self.op_names)}")
                    w[index[(j + 2, src)], self.op_names.index(op)] = 1.0
            out[t] = w
        return out


class Alphas(nn.Module):
    """Architecture parameters: one ``[E, K]`` matrix per cell type (``normal``, ``reduce``).

    Zeros unless a ``generator`` is given; ``reset_parameters(generator)`` initialises as DARTS
    does, ``1e-3 * randn``, so ``training.seeded_module`` builds it without global random state.
    """

    def __init__(self, n_edges: int, n_ops: int, generator: torch.Generator | None = None):
        super().__init__()
        if n_edges < 1 or n_ops < 1:
            raise ConfigError(f"alphas: {n_edges} edges x {n_ops} operations; expected >= 1 each")
        self.normal = nn.Parameter(torch.zeros(n_edges, n_ops))
        self.reduce = nn.Parameter(torch.zeros(n_edges, n_ops))
        if generator is not None:
            self.reset_parameters(generator)

    @classmethod
    def like(cls, supernet: SuperNet, generator: torch.Generator | None = None) -> "Alphas":
        """Alphas shaped for ``supernet`` (zeros, or DARTS's init drawn from ``generator``)."""
        return cls(supernet.num_edges, supernet.num_ops, generator)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """DARTS's initialisation, ``1e-3 * randn``, drawn from ``generator``."""
        with torch.no_grad():
            for p in (self.normal, self.reduce):
                if p.is_meta:
                    continue
                p.copy_(1e-3 * torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device))

    def as_dict(self) -> dict[str, Tensor]:
        """The raw α per cell type (the parameters themselves)."""
        return {"normal": self.normal, "reduce": self.reduce}

    def softmax(self) -> dict[str, Tensor]:
        """DARTS's weights: softmax over the operations of each edge."""
        return {t: F.softmax(p, dim=-1) for t, p in self.as_dict().items()}

    def gumbel(self, tau: float, hard: bool = True, generator: torch.Generator | None = None,
               samples: int | None = None) -> dict[str, Tensor]:
        """Gumbel-softmax weights at temperature ``tau``, noise from ``generator``.

        ``samples=None``: one draw per edge shared by the batch (``[E, K]``, GDAS); ``samples=B``:
        one draw per sample (``[B, E, K]``, DARTS-CC). ``hard``: one-hot in the forward pass with
        the soft sample's gradient (``hard - soft.detach() + soft``; the zeros are exact, so the
        supernet computes only the sampled operation of each edge).
        """
        if not (isinstance(tau, (int, float)) and tau > 0 and math.isfinite(tau)):
            raise ConfigError(f"gumbel temperature tau = {tau!r}; expected a number > 0")
        out = {}
        for t, p in self.as_dict().items():
            shape = tuple(p.shape) if samples is None else (samples, *p.shape)
            u = torch.rand(shape, generator=generator, dtype=p.dtype).to(p.device)
            noise = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
            soft = F.softmax((F.log_softmax(p, dim=-1) + noise) / tau, dim=-1)
            if hard:
                one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
                out[t] = one_hot - soft.detach() + soft
            else:
                out[t] = soft
        return out


__all__ = ["SuperNet", "Alphas", "MixedEdge", "SearchCell", "cell_edges", "num_edges", "CELL_TYPES"]
