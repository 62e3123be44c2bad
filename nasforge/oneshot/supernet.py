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

Computation: the parameters live in those modules (``cells[i].edges[e].ops[k]``, the state dict
is the per-edge one), but a cell computes all edges leaving one state together, since they
apply the same operations to the same tensor: ReLU and pooling once, each edge's depthwise and
pointwise kernels composed into one dense kernel and all edges' kernels run as one convolution,
the second half of separable convolutions as one grouped convolution and one batched matrix
product, one batch-norm call over all edges' channels (running statistics written back to each
module), and one weighted product per operation. The result equals the per-edge sum
``sum_k w_k * op_k(x)`` to float rounding, gradients and running statistics included
(``tests/test_supernet_batched.py``); at C = 4 on 8x8 inputs a forward/backward step costs about
half the CPU time of the per-edge loop (``benchmarks/supernet_step.py``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import conv_dims
from ..errors import ArchitectureError, ConfigError
from ..ops.blocks import batch_norm, conv
from ..ops.darts_ops import OPS, DilConv, FactorizedReduce, ReLUConvBN, SepConv, Zero, make_op
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
    """Every candidate operation on one edge (``ops[k]`` is operation ``k``). The cell computes
    the edges together (see ``SearchCell``); the modules hold the parameters and BN statistics."""

    def __init__(self, ops: Sequence[str], dim: int, c: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList(_search_op(name, dim, c, stride) for name in ops)


_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
_Norm = nn.modules.batchnorm._BatchNorm


def _conv_units(op: nn.Module) -> list[nn.Sequential] | None:
    """The (ReLU, convolution(s), BN) units of a convolutional DARTS operation: two for a
    separable convolution, one for a dilated convolution or ``ReLUConvBN``; None otherwise."""
    if isinstance(op, SepConv):
        return [op[0], op[1]]
    if isinstance(op, (DilConv, ReLUConvBN)):
        return [op]
    return None


def _kind(op: nn.Module) -> str:
    """How ``SearchCell`` computes operation ``op`` for several edges at once."""
    if isinstance(op, Zero):
        return "zero"  # contributes exact zeros: skipped
    if isinstance(op, nn.Identity):
        return "identity"
    if isinstance(op, FactorizedReduce):
        return "reduce"
    if (isinstance(op, nn.Sequential) and len(op) == 2 and isinstance(op[0], _POOLS)
            and isinstance(op[1], _Norm)):
        return "pool"
    if _conv_units(op) is not None:
        return "conv"
    return "module"  # anything else: each edge's module on its own


def _batch_norm(x: Tensor, norms: Sequence[nn.Module]) -> Tensor:
    """``norms[i]`` applied to the ``i``-th block of channels of ``x`` in one call; running
    statistics and batch counters updated as each module's own forward would update them."""
    if len(norms) == 1:
        return norms[0](x)
    first = norms[0]
    sizes = [n.num_features for n in norms]
    same = all(n.training == first.training and n.momentum == first.momentum and n.eps == first.eps
               and n.affine == first.affine and n.track_running_stats == first.track_running_stats
               for n in norms)
    if not same or first.momentum is None:  # per-module factors: each module on its own block
        return torch.cat([n(part) for n, part in zip(norms, x.split(sizes, 1))], 1)
    stats = first.running_mean is not None
    mean = torch.cat([n.running_mean for n in norms]) if stats else None
    var = torch.cat([n.running_var for n in norms]) if stats else None
    update = first.training and stats
    if update:
        for n in norms:
            if n.num_batches_tracked is not None:
                n.num_batches_tracked.add_(1)
    weight = torch.cat([n.weight for n in norms]) if first.affine else None
    bias = torch.cat([n.bias for n in norms]) if first.affine else None
    out = F.batch_norm(x, mean, var, weight, bias, first.training or not stats, first.momentum,
                       first.eps)
    if update:  # F.batch_norm updated the concatenated copies: write them back
        with torch.no_grad():
            for n, m, v in zip(norms, mean.split(sizes), var.split(sizes)):  # type: ignore[union-attr]
                n.running_mean.copy_(m)
                n.running_var.copy_(v)
    return out


def _conv(dim: int) -> Callable[..., Tensor]:
    """``F.conv1d`` or ``F.conv2d``."""
    return F.conv1d if dim == 1 else F.conv2d


def _conv_unit(h: Tensor, units: Sequence[nn.Sequential], shared: bool, dim: int) -> Tensor:
    """One (ReLU, convolution(s), BN) unit of each of ``m`` edges on ReLU'd input ``h``.

    ``shared``: ``h`` is ``[B, C_in, ...]``, the same for every edge; the depthwise and pointwise
    convolutions of each edge are composed into one dense kernel (``pw[o, c] * dw[c]``), and all
    edges' kernels run as one convolution with ``m * C_out`` outputs (measured faster on CPU
    than the separate convolutions for several edges, slower for one edge at C = 16, where the
    dense kernel has C times the work). Otherwise (or ``m = 1``) ``h`` is ``[B, m * C_in, ...]``
    (edge-major): one grouped depthwise convolution and one batched matrix product for the
    pointwise ones. Returns ``[B, m * C_out, ...]`` after the BNs.
    """
    m = len(units)
    convs = [list(u)[1:-1] for u in units]
    spatial = convs[0][0]
    opts = {"stride": spatial.stride, "padding": spatial.padding, "dilation": spatial.dilation}
    conv_fn = _conv(dim)
    if len(convs[0]) == 1:  # ReLUConvBN: one dense convolution per edge
        weight = torch.cat([c[0].weight for c in convs])
        out = conv_fn(h, weight, groups=1 if shared else m, **opts)
    else:  # depthwise then pointwise
        dw = torch.stack([c[0].weight for c in convs])  # [m, C_in, 1, *k]
        pw = torch.stack([c[1].weight.flatten(1) for c in convs])  # [m, C_out, C_in]
        c_in, c_out = dw.shape[1], pw.shape[1]
        if shared and m > 1:
            kernel = pw.view(m, c_out, c_in, *([1] * dim)) * dw.transpose(1, 2)
            out = conv_fn(h, kernel.reshape(m * c_out, c_in, *dw.shape[3:]), **opts)
        else:
            y = conv_fn(h, dw.reshape(m * c_in, 1, *dw.shape[3:]), groups=m * c_in, **opts)
            size = y.shape[2:]
            y = torch.matmul(pw, y.reshape(y.shape[0], m, c_in, -1))  # [B, m, C_out, L]
            out = y.reshape(y.shape[0], m * c_out, *size)
    return _batch_norm(out, [u[-1] for u in units])


def _factorized_reduce(r: Tensor, ops: Sequence[FactorizedReduce]) -> Tensor:
    """``FactorizedReduce`` of ``m`` edges on the shared ReLU'd input ``r``: ``[B, m * C, ...]``."""
    dim, m = ops[0].dim, len(ops)
    conv_fn = _conv(dim)
    shifted = F.pad(r, (0, 1) * dim)[(slice(None), slice(None)) + (slice(1, None),) * dim]
    a = conv_fn(r, torch.cat([op.conv_1.weight for op in ops]), stride=2)
    b = conv_fn(shifted, torch.cat([op.conv_2.weight for op in ops]), stride=2)
    size = a.shape[2:]
    out = torch.cat([a.reshape(a.shape[0], m, -1, *size), b.reshape(b.shape[0], m, -1, *size)], 2)
    return _batch_norm(out.reshape(out.shape[0], -1, *size), [op.bn for op in ops])


class SearchCell(nn.Module):
    """A cell of the supernet: preprocess the two inputs, mix every edge, concatenate the nodes.

    The edges are computed by input state: every edge leaving state ``j`` applies the same
    operations to the same tensor, so each operation runs once for all of them (one convolution
    with every edge's kernels, the pooling once, one BN call over all edges' channels) and the
    weighted sum is one product per operation. Only active operations are computed (see
    ``SuperNet``); ``none`` is never computed (its output is zero).
    """

    def __init__(self, ops: Sequence[str], dim: int, n_nodes: int, c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction, self.n_nodes, self.c, self.dim = reduction, n_nodes, c, dim
        self.preprocess0: nn.Module = (FactorizedReduce(dim, c_pp, c, affine=False) if reduction_prev
                                       else ReLUConvBN(dim, c_pp, c, 1, affine=False))
        self.preprocess1 = ReLUConvBN(dim, c_p, c, 1, affine=False)
        self.edges = nn.ModuleList(MixedEdge(ops, dim, c, 2 if reduction and src < 2 else 1)
                                   for _, src in cell_edges(n_nodes))
        # per input state: its outgoing edges (edge index, node state), and each operation's kind
        self._out: list[list[tuple[int, int]]] = [
            [(e, node) for e, (node, s) in enumerate(cell_edges(n_nodes)) if s == src]
            for src in range(n_nodes + 1)]
        self._kinds = [[_kind(op) for op in self.edges[out[0][0]].ops] for out in self._out]

    def _from_state(self, x: Tensor, src: int, w: Tensor, active: Sequence[Sequence[int]]
                    ) -> list[Tensor | None]:
        """The mixed output of each edge leaving state ``src`` (None: nothing computed)."""
        out_edges = self._out[src]
        n, batch, ones = len(out_edges), x.shape[0], [1] * (self.dim + 1)
        relu: Tensor | None = None
        total: Tensor | None = None  # [B, n, C, ...]: the operations active on every edge
        partial: list[Tensor | None] = [None] * n  # the others, edge by edge
        for k, kind in enumerate(self._kinds[src]):
            pos = [i for i, (e, _) in enumerate(out_edges) if k in active[e]]
            if not pos or kind == "zero":
                continue
            ops = [self.edges[out_edges[i][0]].ops[k] for i in pos]
            m = len(pos)
            if kind in ("conv", "reduce") and relu is None:
                relu = F.relu(x)
            if kind == "identity":
                y = x.unsqueeze(1)
            elif kind == "pool":
                pooled = ops[0][0](x)
                y = _batch_norm(pooled.repeat(1, m, *ones[1:]) if m > 1 else pooled,
                                [op[1] for op in ops])
            elif kind == "reduce":
                y = _factorized_reduce(relu, ops)  # type: ignore[arg-type]
            elif kind == "conv":
                units = [_conv_units(op) for op in ops]
                y = _conv_unit(relu, [u[0] for u in units], True, self.dim)  # type: ignore[index]
                for depth in range(1, len(units[0])):  # type: ignore[arg-type]
                    y = _conv_unit(F.relu(y), [u[depth] for u in units], False, self.dim)  # type: ignore[index]
            else:
                y = torch.cat([op(x) for op in ops], 1)
            if kind != "identity":
                y = y.reshape(batch, m, -1, *y.shape[2:])
            wk = w[..., [out_edges[i][0] for i in pos], k]  # [m] or [B, m]
            term = y * wk.reshape(-1 if w.dim() == 3 else 1, m, *ones)
            if m == n:
                total = term if total is None else total + term
            else:
                for j, i in enumerate(pos):
                    h = term[:, j]
                    partial[i] = h if partial[i] is None else partial[i] + h
        if total is None:
            return partial
        return [total[:, i] if h is None else total[:, i] + h for i, h in enumerate(partial)]

    def forward(self, s0: Tensor, s1: Tensor, w: Tensor, active: Sequence[Sequence[int]]) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        totals: list[Tensor | None] = [None] * self.n_nodes
        for src in range(self.n_nodes + 1):
            mixed = self._from_state(states[src], src, w, active)
            for (_, node), h in zip(self._out[src], mixed):
                if h is not None:
                    totals[node - 2] = h if totals[node - 2] is None else totals[node - 2] + h
            if src >= 1:  # every edge into state src + 1 is summed: it is the next state
                total = totals[src - 1]
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
        dims = conv_dims(task, "supernet")
        shape = tuple(task.input_shape)
        layers = space.layers if layers is None else layers
        check_input_size(shape, layers)
        return cls(list(space.ops if ops is None else ops), space.C if C is None else C, layers,
                   task.num_classes, shape[0], dims=dims, n_nodes=space.nodes,
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


def reference_forward(net: SuperNet, x: Tensor, weights: Mapping[str, Tensor]) -> Tensor:
    """``net``'s logits computed edge by edge, operation by operation (``sum_k w_k * op_k(x)``
    with each module's own forward, zero-weight operations skipped): the definition the batched
    cells are tested against and the baseline of ``benchmarks/supernet_step.py``; slow."""
    active = net._check_weights(weights)
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        t = "reduce" if cell.reduction else "normal"
        w = weights[t]
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        e = 0
        for _ in range(cell.n_nodes):
            total = None
            for src in range(len(states)):
                for k in active[t][e]:
                    wk = w[..., e, k]
                    if wk.dim() == 1:  # one weight per sample
                        wk = wk.view(-1, *([1] * (x.dim() - 1)))
                    h = wk * cell.edges[e].ops[k](states[src])
                    total = h if total is None else total + h
                e += 1
            if total is None:
                size = [(s + 1) // 2 if cell.reduction else s for s in states[0].shape[2:]]
                total = states[0].new_zeros(states[0].shape[0], cell.c, *size)
            states.append(total)
        s0, s1 = s1, torch.cat(states[2:], dim=1)
    return net.classifier(torch.flatten(net.pool(s1), 1))


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


__all__ = ["SuperNet", "Alphas", "MixedEdge", "SearchCell", "cell_edges", "num_edges", "CELL_TYPES",
           "reference_forward"]
