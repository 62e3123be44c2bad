"""The graph hypernetwork (GHN-2, Knyazev et al., NeurIPS 2021): predict every parameter of a
network from its computational graph in one forward pass.

Pipeline, for a batch of graphs (one per network):

1. **Node features**: an ``Embedding`` of the operation type plus a shape encoding: four
   ``hid/4``-wide embeddings of ``(c_out, c_in, k_h, k_w)`` of the node's main parameter over a
   fixed vocabulary (``CHANNEL_VOCAB``, ``SPATIAL_VOCAB``); an unseen size maps to the nearest
   value in the vocabulary, nodes without parameters (size 0) to a dummy index.
2. **Gated GNN** (``T = 1``): one forward sweep over the nodes in topological order, each node
   updated by a shared ``GRUCell`` from the sum of ``MLP(h_u)`` over its incoming edges, then a
   backward sweep in reverse order over outgoing edges. With **virtual edges** (GHN-2) a node
   also receives ``MLP_ve(h_u) / s(u, v)`` from every node ``u`` at shortest-path distance
   ``1 <= s <= ve_cutoff`` (as the reference, the mask includes the 1-hop edges). The reference
   updates nodes one at a time; a node's update only reads nodes that precede it, so all nodes
   of one *topological level* (longest path from a source, or to a sink in the backward sweep)
   are updated together here, which computes exactly the same states (a test checks it against
   a node-by-node implementation) in ``#levels`` instead of ``#nodes`` Python steps. The graphs
   of a meta-batch are merged into one block-diagonal graph, so they share the steps too.
   The ``mlp`` variant replaces message passing by a per-node MLP.
3. **LayerNorm** of the node states (GHN-2).
4. **Decoder**: a convolutional decoder emits a ``max_shape`` = ``(64, 64, 11, 11)`` tensor
   (``Linear(hid, 4 hid * 11 * 11)``, ReLU, 1x1 conv ``4 hid -> 8 hid``, ReLU, 1x1 conv
   ``8 hid -> 64 * 64``); it is sliced to the kernel size (the centre ``k_h x k_w`` positions;
   the 1x1 convolutions act per position, so only those are computed) and tiled along
   ``c_out``, ``c_in`` (and the kernel, for kernels above 11) and cropped to the requested
   shape. One-dimensional parameters come from an MLP ``hid -> 2 hid -> 2 * 64`` read as two
   rows (row 0: norm weights, row 1: biases), tiled and cropped. The classifier (the last
   two-dimensional weight of the graph) has its own weight and bias heads with
   ``num_classes`` outputs.
5. **Normalisation** (GHN-2): weights of two or more dimensions are scaled by
   ``sqrt(beta / fan_in)`` with ``fan_in = c_in * k_h * k_w`` and ``beta = 1`` for layers the
   reference treats as not followed by a ReLU (depthwise ``c_in = 1``, or ``k_h < k_w``), else
   ``beta = 2``; norm weights become ``2 sigmoid(0.5 w)`` (in ``[0, 2]``), biases
   ``tanh(0.2 b)`` (in ``[-1, 1]``); positional encodings are not scaled.

Variants (``GHNConfig.variant``; each switch can be overridden):

| variant | virtual edges | normalisation | LayerNorm | message passing | meta-batch (training) |
|---|---|---|---|---|---|
| ``ghn2`` | cutoff 50 | yes | yes | gated GNN | 8 |
| ``ghn1`` | none | no | no | gated GNN | 1 |
| ``mlp`` | none | no | no | per-node MLP | 1 |

``GHN(model)`` predicts and writes every parameter of ``model`` in place and then computes its
batch-norm running statistics on a few batches (running statistics are not predicted; GHN-2
evaluated with the statistics of the test batch itself, which makes a network's outputs depend
on the batch; estimating them once on training batches gives a normal eval-mode module).
``GHN.predict_params(model)`` returns the parameters as differentiable tensors for training
with ``torch.func.functional_call`` (see ``ghn/train.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, NasforgeError

FORMAT = "nasforge-ghn/1"
VARIANTS = ("ghn2", "ghn1", "mlp")

#: sizes the shape encoder knows; others map to the nearest (index 0 = "no parameter")
CHANNEL_VOCAB: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128,
    144, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 1024, 1536, 2048, 3072, 4096)
SPATIAL_VOCAB: tuple[int, ...] = tuple(range(1, 12)) + (13, 15, 17, 19, 21, 25, 31, 49, 64)

#: parameter kinds (``ParamRef.kind`` of the graph) decoded by the one-dimensional head
NORM_WEIGHT_KINDS = ("norm_weight",)
BIAS_KINDS = ("bias", "norm_bias")
UNSCALED_KINDS = ("pos_enc",)


@dataclass
class GHNConfig:
    """Everything that defines a GHN's structure (saved with its weights)."""

    variant: str = "ghn2"
    hid: int = 32
    max_shape: tuple[int, int, int, int] = (64, 64, 11, 11)
    num_classes: int = 10
    primitives: tuple[str, ...] = ()
    ve_cutoff: int = 50  # <= 1: no virtual edges
    normalize: bool = True
    layernorm: bool = True
    message_passing: bool = True
    out_gain: float | None = None  # decoder output multiplier; None: 10 with normalize, else 1
    input_shape: tuple[int, ...] | None = None  # the task's (C, H, W); example input for tracing
    task: str | None = None  # the task it was trained on (batch-norm statistics come from it)
    meta: dict[str, Any] = field(default_factory=dict)  # free-form (training options, figures)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"GHN variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if self.hid < 4 or self.hid % 4:
            raise ConfigError(f"GHN hid = {self.hid}; expected a multiple of 4, at least 4")
        self.max_shape = tuple(int(v) for v in self.max_shape)  # type: ignore[assignment]
        if len(self.max_shape) != 4 or min(self.max_shape) < 1:
            raise ConfigError(f"GHN max_shape = {self.max_shape}; expected 4 positive sizes")
        if self.num_classes < 1:
            raise ConfigError(f"GHN num_classes = {self.num_classes}; expected >= 1")
        self.primitives = tuple(self.primitives)
        if self.input_shape is not None:
            self.input_shape = tuple(int(v) for v in self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_shape"] = list(self.max_shape)
        d["primitives"] = list(self.primitives)
        d["input_shape"] = None if self.input_shape is None else list(self.input_shape)
        return d


def variant_config(variant: str = "ghn2", **overrides: Any) -> GHNConfig:
    """The config of a named variant (table in the module docstring), with ``overrides``."""
    if variant not in VARIANTS:
        raise ConfigError(f"GHN variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    base = dict(ve_cutoff=50, normalize=True, layernorm=True, message_passing=True) \
        if variant == "ghn2" else dict(ve_cutoff=1, normalize=False, layernorm=False,
                                       message_passing=variant != "mlp")
    base.update(overrides)
    if "primitives" not in base:
        from .graph import PRIMITIVES

        base["primitives"] = PRIMITIVES
    return GHNConfig(variant=variant, **base)


def default_meta_batch(variant: str) -> int:
    """Architectures per training step of a variant (GHN-2: 8, GHN-1 and MLP: 1)."""
    return 8 if variant == "ghn2" else 1


# ------------------------------------------------------------------------------------------------
# graphs as tensors


@dataclass
class ParamRequest:
    """One parameter to predict: the node that owns it, its qualified name, shape and kind."""

    node: int
    name: str
    shape: tuple[int, ...]
    kind: str


@dataclass
class GraphTensors:
    """A network's graph in the form the GHN reads: operation names (one per node, nodes in
    topological order), the main parameter's ``(c_out, c_in, k_h, k_w)`` per node (zeros for
    nodes without parameters), the adjacency ``adj[u, v]`` (edge u -> v) and the parameters."""

    ops: list[str]
    shapes: torch.Tensor  # [N, 4] long
    adj: torch.Tensor  # [N, N] bool
    params: list[ParamRequest]

    def __post_init__(self) -> None:
        n = len(self.ops)
        self.shapes = torch.as_tensor(self.shapes, dtype=torch.long).reshape(n, 4)
        self.adj = torch.as_tensor(self.adj).bool()
        if tuple(self.adj.shape) != (n, n):
            raise ValueError(f"adjacency of shape {tuple(self.adj.shape)} for {n} nodes")
        if torch.triu(self.adj.long(), 0).sum() != self.adj.long().sum():
            raise ValueError("graph nodes are not in topological order (an edge goes backwards)")
        self._dist: dict[int, torch.Tensor] = {}

    @property
    def num_nodes(self) -> int:
        return len(self.ops)

    @classmethod
    def from_graph(cls, graph: Any) -> "GraphTensors":
        """From a ``nasforge.ghn.graph.Graph`` (nodes, ``adj``, ``shapes()``)."""
        params = [ParamRequest(i, p.name, tuple(int(s) for s in p.shape), str(p.kind))
                  for i, node in enumerate(graph.nodes) for p in node.params]
        return cls(ops=[str(node.op) for node in graph.nodes], shapes=graph.shapes(),
                   adj=graph.adj, params=params)

    def distances(self, cutoff: int) -> torch.Tensor:
        """``d[u, v]`` = shortest directed path length from u to v if ``<= cutoff``, else 0."""
        if cutoff not in self._dist:
            from scipy.sparse import csr_matrix
            from scipy.sparse.csgraph import shortest_path

            d = shortest_path(csr_matrix(self.adj.numpy().astype(np.float64)), directed=True,
                              unweighted=True)
            d[~np.isfinite(d) | (d > cutoff)] = 0
            self._dist[cutoff] = torch.from_numpy(d.astype(np.int64))
        return self._dist[cutoff]

    def levels(self, reverse: bool = False) -> torch.Tensor:
        """Longest path from a source (``reverse``: to a sink) for every node, over real edges."""
        key = -1 if reverse else -2
        if key not in self._dist:
            a = self.adj.numpy()
            n = self.num_nodes
            src, dst = np.nonzero(a)  # edges src -> dst, src < dst
            lv = np.zeros(n, dtype=np.int64)
            if reverse:  # a node's level is 1 + the largest level of its successors
                order = np.argsort(-src, kind="stable")
                for u, v in zip(src[order].tolist(), dst[order].tolist()):
                    if lv[v] + 1 > lv[u]:
                        lv[u] = lv[v] + 1
            else:  # edges by increasing target: every predecessor is final before it is read
                order = np.argsort(dst, kind="stable")
                for u, v in zip(src[order].tolist(), dst[order].tolist()):
                    if lv[u] + 1 > lv[v]:
                        lv[v] = lv[u] + 1
            self._dist[key] = torch.from_numpy(lv)
        return self._dist[key]


def classifier_params(g: GraphTensors) -> tuple[int | None, int | None]:
    """Indices (in ``g.params``) of the classifier weight and bias: the two-dimensional weight
    of the last node in topological order that owns one, and the bias of the same module."""
    w_idx = None
    for i, p in enumerate(g.params):
        if p.kind == "weight" and len(p.shape) == 2 and (w_idx is None
                                                          or p.node >= g.params[w_idx].node):
            w_idx = i
    if w_idx is None:
        return None, None
    prefix = g.params[w_idx].name.rsplit(".", 1)[0]
    b_idx = next((i for i, p in enumerate(g.params)
                  if p.kind == "bias" and p.name.rsplit(".", 1)[0] == prefix), None)
    return w_idx, b_idx


# ------------------------------------------------------------------------------------------------
# building blocks


def _vocab_index(values: torch.Tensor, vocab: Sequence[int]) -> torch.Tensor:
    """Index (1-based) of the nearest vocabulary value; 0 for values <= 0 (no parameter)."""
    v = torch.tensor(vocab, dtype=torch.float64)
    mids = (v[1:] + v[:-1]) / 2
    idx = torch.bucketize(values.double(), mids, right=False) + 1
    return torch.where(values > 0, idx, torch.zeros_like(idx))


class ShapeEncoder(nn.Module):
    """Four ``hid/4`` embeddings of ``(c_out, c_in, k_h, k_w)``, concatenated."""

    def __init__(self, hid: int):
        super().__init__()
        self.channels = nn.Embedding(len(CHANNEL_VOCAB) + 1, hid // 4)
        self.spatial = nn.Embedding(len(SPATIAL_VOCAB) + 1, hid // 4)

    def forward(self, shapes: torch.Tensor) -> torch.Tensor:
        c = _vocab_index(shapes[:, :2], CHANNEL_VOCAB)
        s = _vocab_index(shapes[:, 2:], SPATIAL_VOCAB)
        return torch.cat([self.channels(c[:, 0]), self.channels(c[:, 1]),
                          self.spatial(s[:, 0]), self.spatial(s[:, 1])], dim=1)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class _Plan:
    """What the GNN needs of a (merged) graph, computed once without gradients.

    Per topological level (``fwd_levels`` / ``bwd_levels``: node indices), the rows of the
    level's nodes of the sweep's coefficient matrix, ``[adj | ve]`` (``[n_level, 2N]``; only
    ``adj`` without virtual edges; columns interleaved, ``2u + j``), so one level's messages
    are one product with the message buffer whose row ``2u + j`` holds ``MLP(h_u)`` (j = 0)
    or ``MLP_ve(h_u)`` (j = 1) (``[2N, hid]``), and the buffer rows to update."""

    adj_in: torch.Tensor  # [N, N] float: adj_in[v, u] = 1 for an edge u -> v
    ve_in: torch.Tensor | None  # [N, N] float: 1 / s(u, v) for 1 <= s <= cutoff
    fwd_levels: list[torch.Tensor]
    bwd_levels: list[torch.Tensor]
    fwd_coef: list[torch.Tensor] = field(default_factory=list)
    bwd_coef: list[torch.Tensor] = field(default_factory=list)
    fwd_rows: list[torch.Tensor] = field(default_factory=list)
    bwd_rows: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.adj_in.shape[0]
        k = 1 if self.ve_in is None else 2
        # columns interleaved by kind: column k u + j is kind j's message of node u
        fwd = self.adj_in if self.ve_in is None else torch.stack([self.adj_in, self.ve_in], 2)
        adj_out = self.adj_in.t()
        bwd = adj_out if self.ve_in is None else torch.stack([adj_out, self.ve_in.t()], 2)
        for levels, mat, coef, rows in ((self.fwd_levels, fwd, self.fwd_coef, self.fwd_rows),
                                        (self.bwd_levels, bwd, self.bwd_coef, self.bwd_rows)):
            if not levels:
                continue
            perm = torch.cat(levels)
            counts = [len(idx) for idx in levels]
            coef.extend(torch.split(mat.reshape(n, k * n).index_select(0, perm), counts))
            r = (k * perm[:, None] + torch.arange(k)).reshape(-1)
            rows.extend(torch.split(r, [k * c for c in counts]))


def _groups(levels: torch.Tensor) -> list[torch.Tensor]:
    order = torch.argsort(levels, stable=True)
    counts = torch.bincount(levels).tolist()
    return [g for g in torch.split(order, counts) if g.numel()]


class _GRUCell(nn.GRUCell):
    """``nn.GRUCell`` whose initialisation can draw from a generator (``seeded_module``)."""

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters(recurse=False):
            nn.init.uniform_(w, -stdv, stdv, generator=generator)


class GatedGNN(nn.Module):
    """GHN-2's gated graph network, ``T = 1``: forward then backward sweep, level-batched."""

    def __init__(self, hid: int, virtual_edges: bool):
        super().__init__()
        self.mlp = _mlp([hid, hid, hid])
        self.mlp_ve = _mlp([hid, hid, hid]) if virtual_edges else None
        self.gru = _GRUCell(hid, hid)

    def _fused(self, virtual: bool) -> tuple[torch.Tensor, ...]:
        """``MLP`` and ``MLP_ve`` as one two-layer map ``hid -> k hid`` (block-diagonal second
        layer): the same numbers in one call per level."""
        a, b = self.mlp[0], self.mlp[2]
        if not virtual or self.mlp_ve is None:
            return a.weight, a.bias, b.weight, b.bias
        c, d = self.mlp_ve[0], self.mlp_ve[2]
        return (torch.cat([a.weight, c.weight]), torch.cat([a.bias, c.bias]),
                torch.block_diag(b.weight, d.weight), torch.cat([b.bias, d.bias]))

    def _sweep(self, h: torch.Tensor, coefs: list[torch.Tensor], levels: list[torch.Tensor],
               rows: list[torch.Tensor], virtual: bool) -> torch.Tensor:
        w1, b1, w2, b2 = self._fused(virtual)
        k = w2.shape[0] // h.shape[1]
        gru = self.gru
        n, hid = h.shape

        def messages(x: torch.Tensor) -> torch.Tensor:  # [m, hid] -> [k m, hid], interleaved
            return F.linear(F.relu(F.linear(x, w1, b1)), w2, b2).view(k * x.shape[0], hid)

        buf = messages(h)
        last = len(levels) - 1
        if not torch.is_grad_enabled():
            # a node is updated once per sweep and its update reads its state before the sweep:
            # gather those states once, write the new ones once (same numbers, fewer calls)
            perm = torch.cat(levels)
            news = []
            for i, (old, coef, r) in enumerate(zip(h.index_select(0, perm).split(
                    [len(idx) for idx in levels]), coefs, rows)):
                new = torch.gru_cell(coef @ buf, old, gru.weight_ih, gru.weight_hh, gru.bias_ih,
                                     gru.bias_hh)
                news.append(new)
                if i < last:
                    buf.index_copy_(0, r, messages(new))
            return h.clone().index_copy_(0, perm, torch.cat(news))
        for i, (idx, coef, r) in enumerate(zip(levels, coefs, rows)):
            new = torch.gru_cell(coef @ buf, h.index_select(0, idx), gru.weight_ih,
                                 gru.weight_hh, gru.bias_ih, gru.bias_hh)
            h = h.index_copy(0, idx, new)
            if i < last:
                buf = buf.index_copy(0, r, messages(new))
        return h

    def forward(self, h: torch.Tensor, plan: _Plan) -> torch.Tensor:
        virtual = plan.ve_in is not None and self.mlp_ve is not None
        if plan.ve_in is not None and self.mlp_ve is None:
            raise ValueError("a plan with virtual edges for a GNN without them")
        h = self._sweep(h, plan.fwd_coef, plan.fwd_levels, plan.fwd_rows, virtual)
        return self._sweep(h, plan.bwd_coef, plan.bwd_levels, plan.bwd_rows, virtual)

    def forward_naive(self, h: torch.Tensor, plan: _Plan) -> torch.Tensor:
        """The reference's node-by-node update (for tests): same result, one node per step."""
        n = h.shape[0]
        for adj, ve, order in ((plan.adj_in, plan.ve_in, range(n)),
                               (plan.adj_in.t(), None if plan.ve_in is None else plan.ve_in.t(),
                                range(n - 1, -1, -1))):
            for v in order:
                m = adj[v] @ self.mlp(h)
                if ve is not None and self.mlp_ve is not None:
                    m = m + ve[v] @ self.mlp_ve(h)
                new = self.gru(m[None], h[v][None])[0]
                h = torch.cat([h[:v], new[None], h[v + 1:]])
        return h


class Decoder(nn.Module):
    """Emits any requested shape from node states (see the module docstring)."""

    def __init__(self, hid: int, max_shape: tuple[int, int, int, int], num_classes: int,
                 gain: float = 1.0):
        super().__init__()
        co, ci, kh, kw = max_shape
        self.max_shape, self.gain = max_shape, gain
        self.width = 4 * hid
        self.fc = nn.Linear(hid, self.width * kh * kw)
        self.conv1 = nn.Linear(self.width, 8 * hid)  # 1x1 convolutions act per position
        self.conv2 = nn.Linear(8 * hid, co * ci)
        self.head_1d = _mlp([hid, 2 * hid, 2 * co])
        self.class_weight = nn.Linear(co, num_classes)
        self.class_bias = nn.Linear(co, num_classes)

    def conv(self, h: torch.Tensor, kh: int, kw: int, co: int | None = None,
             ci: int | None = None) -> torch.Tensor:
        """``[P, hid]`` -> ``[P, co, ci, kh, kw]``: the centre ``kh x kw`` positions and the
        first ``co x ci`` channels of the ``max_shape`` output (each at most the maximum).

        Only what is kept is computed: the rows of ``fc`` for those positions and of ``conv2``
        for those channels (the 1x1 convolutions act per position), the same numbers as
        slicing the full output, for a fraction of the cost."""
        CO, CI = self.max_shape[:2]
        co, ci = co or CO, ci or CI
        w, b, w2, b2 = self._rows(kh, kw, co, ci)
        x = F.relu(F.linear(h, w, b))
        x = F.relu(self.conv1(x.view(h.shape[0], kh, kw, self.width)))
        x = F.linear(x, w2, b2) * self.gain  # [P, kh, kw, co * ci]
        return x.view(h.shape[0], kh, kw, co, ci).permute(0, 3, 4, 1, 2)

    def _rows(self, kh: int, kw: int, co: int, ci: int) -> tuple[torch.Tensor, ...]:
        """The kept rows of ``fc`` and ``conv2`` as contiguous matrices. Without gradients they
        are cached by size (the same tensors the slicing gives, copied once instead of once per
        call) until a weight changes in place (an optimizer step, ``load_state_dict``)."""
        CO, CI, KH, KW = self.max_shape
        params = (self.fc.weight, self.fc.bias, self.conv2.weight, self.conv2.bias)
        use_cache = not (torch.is_grad_enabled() and any(p.requires_grad for p in params))
        # tensors cached in inference mode may not be used where autograd records: key by it
        stamp = (tuple((p.data_ptr(), p._version) for p in params), torch.is_inference_mode_enabled())
        key = (kh, kw, co, ci)
        if use_cache:
            if getattr(self, "_rows_stamp", None) != stamp:
                self._rows_cache: dict[tuple[int, ...], tuple[torch.Tensor, ...]] = {}
                self._rows_stamp = stamp
            hit = self._rows_cache.get(key)
            if hit is not None:
                return hit
        r, c = (KH - kh) // 2, (KW - kw) // 2
        w = self.fc.weight.view(self.width, KH, KW, -1)[:, r:r + kh, c:c + kw]
        b = self.fc.bias.view(self.width, KH, KW)[:, r:r + kh, c:c + kw]
        rows = (w.permute(1, 2, 0, 3).reshape(kh * kw * self.width, -1),
                b.permute(1, 2, 0).reshape(-1),
                self.conv2.weight.view(CO, CI, -1)[:co, :ci].reshape(co * ci, -1),
                self.conv2.bias.view(CO, CI)[:co, :ci].reshape(-1))
        if use_cache:
            if len(self._rows_cache) >= 64:  # bounded: at most 64 sizes are kept
                self._rows_cache.clear()
            self._rows_cache[key] = tuple(t.detach() for t in rows)
        return rows

    def one_d(self, h: torch.Tensor) -> torch.Tensor:
        """``[P, hid]`` -> ``[P, 2, co]``: row 0 weights, row 1 biases."""
        return self.head_1d(h).view(h.shape[0], 2, self.max_shape[0])


def tile_crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Repeat ``x`` along every dimension until it covers ``shape``, then crop to it."""
    reps = [max(1, math.ceil(s / d)) for s, d in zip(shape, x.shape)]
    if any(r > 1 for r in reps):
        x = x.repeat(*reps)
    return x[tuple(slice(0, s) for s in shape)]


def canonical4(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """A weight shape of 2+ dimensions as ``(c_out, c_in, k_h, k_w)``."""
    s = [int(v) for v in shape]
    if len(s) == 2:
        return s[0], s[1], 1, 1
    if len(s) == 3:
        return s[0], s[1], s[2], 1
    return s[0], s[1], s[2], math.prod(s[3:])


def fan_in_beta(shape: Sequence[int]) -> tuple[int, float]:
    """GHN-2's fan-in and gain for a weight of 2+ dimensions: ``beta = 1`` for depthwise
    (``c_in = 1``) or ``k_h < k_w`` kernels, else 2."""
    co, ci, kh, kw = canonical4(shape)
    beta = 1.0 if len(shape) >= 4 and (ci == 1 or kh < kw) else 2.0
    return ci * kh * kw, beta


def normalize_param(w: torch.Tensor, kind: str, shape: Sequence[int] | None = None) -> torch.Tensor:
    """GHN-2's normalisation of one predicted parameter (see the module docstring); ``shape``
    (default ``w.shape``) is the parameter's own shape when ``w`` stacks several of them."""
    shape = tuple(w.shape) if shape is None else tuple(shape)
    if kind in UNSCALED_KINDS:
        return w
    if kind in NORM_WEIGHT_KINDS:
        return 2.0 * torch.sigmoid(0.5 * w)
    if kind in BIAS_KINDS:
        return torch.tanh(0.2 * w)
    if len(shape) >= 2:
        fan_in, beta = fan_in_beta(shape)
        return w * math.sqrt(beta / fan_in)
    return w


# ------------------------------------------------------------------------------------------------
# the hypernetwork


def _subgroups(jobs: Sequence[tuple[int, int, ParamRequest, bool]]
               ) -> dict[tuple[tuple[int, ...], str, bool], list[int]]:
    """Positions in ``jobs`` by (parameter shape, kind, classifier flag)."""
    out: dict[tuple[tuple[int, ...], str, bool], list[int]] = {}
    for j, (_, _, p, is_cls) in enumerate(jobs):
        out.setdefault((tuple(p.shape), p.kind, is_cls), []).append(j)
    return out


class GHN(nn.Module):
    """A graph hypernetwork: ``ghn(model)`` fills ``model``'s parameters (see module docstring)."""

    def __init__(self, config: GHNConfig):
        super().__init__()
        self.config = config
        hid = config.hid
        self.op_embed = nn.Embedding(len(config.primitives) + 1, hid)  # last: unknown op
        self.shape_enc = ShapeEncoder(hid)
        if config.message_passing:
            self.gnn: nn.Module = GatedGNN(hid, config.ve_cutoff > 1)
        else:
            self.gnn = _mlp([hid, hid, hid])
        self.ln = nn.LayerNorm(hid) if config.layernorm else None
        gain = config.out_gain if config.out_gain is not None else (10.0 if config.normalize else 1.0)
        self.decoder = Decoder(hid, config.max_shape, config.num_classes, gain)
        self._op_index = {name: i for i, name in enumerate(config.primitives)}
        self._bn_cache: dict[str, torch.Tensor] = {}

    # -- graphs -----------------------------------------------------------------------------------
    def graph_of(self, model: nn.Module, example_input: torch.Tensor | None = None) -> GraphTensors:
        """Trace ``model`` (``nasforge.ghn.graph.build_graph``) into the tensors the GHN reads."""
        from .graph import build_graph

        if example_input is None:
            if self.config.input_shape is None:
                raise ConfigError("this GHN has no input_shape; pass example_input=")
            example_input = torch.zeros(2, *self.config.input_shape)
        return GraphTensors.from_graph(build_graph(model, example_input))

    def _plan(self, graphs: Sequence[GraphTensors]) -> tuple[_Plan, torch.Tensor]:
        sizes = [g.num_nodes for g in graphs]
        n = sum(sizes)
        adj = torch.zeros(n, n)
        ve = torch.zeros(n, n) if self.config.ve_cutoff > 1 else None
        fwd, bwd = [], []
        off = 0
        for g in graphs:
            k = g.num_nodes
            adj[off:off + k, off:off + k] = g.adj.t().float()
            if ve is not None:
                d = g.distances(self.config.ve_cutoff).t().double()
                ve[off:off + k, off:off + k] = torch.where(d > 0, 1.0 / d.clamp(min=1),
                                                           torch.zeros_like(d)).float()
            fwd.append(g.levels())
            bwd.append(g.levels(reverse=True))
            off += k
        plan = _Plan(adj, ve, _groups(torch.cat(fwd)), _groups(torch.cat(bwd)))
        return plan, torch.tensor(sizes)

    def node_features(self, graphs: Sequence[GraphTensors]) -> torch.Tensor:
        unknown = len(self.config.primitives)
        ops = torch.tensor([self._op_index.get(op, unknown) for g in graphs for op in g.ops])
        shapes = torch.cat([g.shapes for g in graphs])
        return self.op_embed(ops) + self.shape_enc(shapes)

    def embed(self, graphs: Sequence[GraphTensors]) -> torch.Tensor:
        """Node states after message passing (and LayerNorm), all graphs stacked: ``[N, hid]``."""
        x = self.node_features(graphs)
        if self.config.message_passing:
            plan, _ = self._plan(graphs)
            h = self.gnn(x, plan)
        else:
            h = self.gnn(x)
        return self.ln(h) if self.ln is not None else h

    def graph_embedding(self, graph: GraphTensors) -> torch.Tensor:
        """The mean node state of one graph (GHN-2's property-prediction features)."""
        return self.embed([graph]).mean(0)

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, graphs: Sequence[GraphTensors], h: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Every requested parameter of every graph from the node states ``h``."""
        dec, cfg = self.decoder, self.config
        out: list[dict[str, torch.Tensor]] = [{} for _ in graphs]
        conv_jobs: dict[tuple[int, ...], list[tuple[int, int, ParamRequest, bool]]] = {}
        one_d_jobs: list[tuple[int, int, ParamRequest, bool]] = []
        CO, CI, KH, KW = cfg.max_shape
        off = 0
        for gi, g in enumerate(graphs):
            cls_w, cls_b = classifier_params(g)
            for pi, p in enumerate(g.params):
                row = off + p.node
                if len(p.shape) >= 2:
                    co, ci, kh, kw = canonical4(p.shape)
                    key = (1, 1, CO, min(ci, CI)) if pi == cls_w else \
                        (min(kh, KH), min(kw, KW), min(co, CO), min(ci, CI))
                    conv_jobs.setdefault(key, []).append((gi, row, p, pi == cls_w))
                else:
                    one_d_jobs.append((gi, row, p, pi == cls_b))
            off += g.num_nodes
        # one decoder call per kept size, then one tiling / normalisation per parameter shape
        for (kh, kw, co, ci), jobs in conv_jobs.items():
            ws = dec.conv(h[torch.tensor([j[1] for j in jobs])], kh, kw, co, ci)  # [P, co, ci, kh, kw]
            for (shape, kind, is_cls), js in _subgroups(jobs).items():
                w = ws if len(js) == len(jobs) else ws[torch.tensor(js)]
                if is_cls:  # [P, CO, ci] -> [P, classes, ci]
                    w = dec.class_weight(F.relu(w[:, :, :, 0, 0]).transpose(1, 2))
                    w = w.transpose(1, 2)[..., None, None]
                w = tile_crop(w, (len(js),) + canonical4(shape)).reshape(len(js), *shape)
                if cfg.normalize:
                    w = normalize_param(w, kind, shape)
                for j, wj in zip(js, w.unbind(0)):
                    out[jobs[j][0]][jobs[j][2].name] = wj
        if one_d_jobs:
            vs = dec.one_d(h[torch.tensor([j[1] for j in one_d_jobs])])  # [P, 2, co]
            for (shape, kind, is_cls), js in _subgroups(one_d_jobs).items():
                v = vs[torch.tensor(js), 1 if kind in BIAS_KINDS else 0]  # [p, co]
                if is_cls:
                    v = dec.class_bias(F.relu(v))
                n = int(np.prod(shape)) if len(shape) else 1
                v = tile_crop(v, (len(js), n)).reshape(len(js), *shape)
                if cfg.normalize:
                    v = normalize_param(v, kind, shape)
                for j, vj in zip(js, v.unbind(0)):
                    out[one_d_jobs[j][0]][one_d_jobs[j][2].name] = vj
        return out

    def predict(self, graphs: Sequence[GraphTensors]) -> list[dict[str, torch.Tensor]]:
        """Predicted parameters (differentiable tensors, by qualified name) for each graph."""
        if not graphs:
            return []
        return self.decode(graphs, self.embed(graphs))

    def predict_params(self, model: nn.Module, example_input: torch.Tensor | None = None
                       ) -> dict[str, torch.Tensor]:
        """``model``'s parameters as differentiable tensors (for ``functional_call``)."""
        return self.predict([self.graph_of(model, example_input)])[0]

    # -- filling a module -------------------------------------------------------------------------
    def __call__(self, model: nn.Module, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(model, nn.Module):
            return self.fill(model, *args, **kwargs)
        return super().__call__(model, *args, **kwargs)

    def forward(self, graphs: Sequence[GraphTensors]) -> list[dict[str, torch.Tensor]]:
        return self.predict(graphs)

    @torch.no_grad()
    def fill(self, model: nn.Module, *, example_input: torch.Tensor | None = None,
             bn_data: torch.Tensor | Iterable[torch.Tensor] | None = None, bn_batches: int = 4,
             batch_size: int = 64, graph: GraphTensors | None = None) -> nn.Module:
        """Predict and write every parameter of ``model`` in place, then estimate its batch-norm
        running statistics on ``bn_batches`` batches of ``bn_data`` (default: the GHN's task's
        training inputs; none if it has no task). Returns ``model`` (same training mode)."""
        g = graph if graph is not None else self.graph_of(model, example_input)
        with torch.inference_mode():  # the same numbers, less bookkeeping per operation
            params = self.predict([g])[0]
        write_params(model, params)
        estimate_bn_stats(model, self._bn_inputs(bn_data, bn_batches, batch_size))
        return model

    def _bn_inputs(self, data: Any, batches: int, batch_size: int) -> list[torch.Tensor]:
        if data is None:
            if self.config.task is None:
                return []
            if self.config.task not in self._bn_cache:
                from ..data import load_task

                x = load_task(self.config.task).train[0]
                gen = torch.Generator().manual_seed(0)
                self._bn_cache[self.config.task] = x[torch.randperm(x.shape[0], generator=gen)]
            data = self._bn_cache[self.config.task]
        if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], torch.Tensor) \
                and data[1].dtype == torch.long:
            data = data[0]
        if isinstance(data, torch.Tensor):
            return [data[i:i + batch_size] for i in range(0, min(len(data), batches * batch_size),
                                                           batch_size)]
        out = []
        for b in data:
            out.append(b[0] if isinstance(b, (tuple, list)) else b)
            if len(out) >= batches:
                break
        return out

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write config and weights (a temp file, then ``os.replace``); load with ``load``."""
        import os

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"format": FORMAT, "config": self.config.to_dict(),
                    "state_dict": self.state_dict()}, tmp)
        os.replace(tmp, path)
        return path

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def write_params(model: nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Copy predicted tensors into ``model``'s parameters; every parameter must be predicted."""
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(params))
    if missing:
        raise NasforgeError(f"the graph gives no prediction for {len(missing)} parameter(s) of "
                            f"the model: {', '.join(missing[:5])}")
    dst, src = [], []
    for name, p in own.items():
        v = params[name].detach()
        if v.dtype != p.dtype:
            v = v.to(p.dtype)
        dst.append(p)
        src.append(v if v.shape == p.shape else v.reshape(p.shape))
    with torch.no_grad():
        torch._foreach_copy_(dst, src)  # one call instead of one copy_ per parameter


@torch.no_grad()
def estimate_bn_stats(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Reset the running statistics of every batch-norm layer and re-estimate them as the
    plain average over ``batches`` (forward passes in training mode, nothing else changes)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    if not bns or not batches:
        return
    was_training = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m in bns:
            m.momentum = momenta[m]
        for m, t in was_training.items():
            m.train(t)


def load(path: str | Path) -> GHN:
    """A GHN saved by ``GHN.save`` (read with ``weights_only=True``), ready to call on models."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"GHN file {str(path)!r} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot read GHN file {str(path)!r} ({type(exc).__name__}); "
                          "expected a file written by `nasforge ghn train` or GHN.save") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(f"{str(path)!r} is not a nasforge GHN file (format {FORMAT})")
    ghn = GHN(GHNConfig(**blob["config"]))
    ghn.load_state_dict(blob["state_dict"])
    ghn.eval()
    return ghn


__all__ = ["GHN", "GHNConfig", "GraphTensors", "ParamRequest", "variant_config", "load",
           "write_params", "estimate_bn_stats", "tile_crop", "normalize_param", "fan_in_beta",
           "canonical4", "default_meta_batch", "VARIANTS", "CHANNEL_VOCAB", "SPATIAL_VOCAB"]
