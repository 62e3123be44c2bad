"""The computational graph of any ``nn.Module``, as a graph hypernetwork reads it (GHN-2).

``build_graph(model, example_input)`` runs the model once and returns a :class:`Graph` whose
nodes are operations and whose edges are data flow. As in GHN-2 (Knyazev et al., NeurIPS 2021):

- a node owns at most the parameters of one operation: **one node per convolution or linear
  weight**, its bias a separate ``bias`` node right after it; a batch / layer norm node owns its
  weight and bias together; a learned tensor added to the activations (a positional encoding) or
  concatenated to them (a class token) is a ``pos_enc`` node;
- parameter-free operations that matter for the architecture are nodes too: pooling, sums and
  concatenations of two or more tensors, global average pooling, attention, channel squeeze
  (a mean that keeps its dimensions, as in squeeze-and-excitation) and the input;
- everything else (activations, views, dropout, identity, scaling by constants, gating
  products) is removed and its edges rewired, so ``relu(conv(x))`` is one ``conv`` node.

Nodes are sorted in execution order (a topological order) and node 0 is the input. Every
parameter of the module is owned by exactly one node; a parameter the graph cannot represent
(an embedding, a recurrent layer, a transposed convolution, a weight shared by two operations,
a parameter the forward pass never uses) raises ``ArchitectureError`` naming it.

Operation types, :data:`PRIMITIVES` (GHN-2's 15 in GHN-2's order, then ``linear``):

=============  ===============================================================================
``conv``       ``nn.ConvNd`` (groups 1, dilation 1), or ``F.convNd`` with a free weight
``sep_conv``   grouped / depthwise convolution (groups > 1, dilation 1), as GHN-2
``dil_conv``   dilated convolution (dilation > 1, any groups), as GHN-2
``linear``     ``nn.Linear``, the projections of ``nn.MultiheadAttention``, a free matrix used by
               a matrix product or ``F.linear`` (GHN-2 files these under ``conv``; kept separate
               here so a hypernetwork can tell a classifier from a 1x1 convolution)
``bias``       a convolution's or linear layer's bias (a free 1-D tensor added to activations)
``bn``         ``nn.BatchNormNd`` (weight and bias; no parameters when not affine), and a free
               tensor multiplying the activations (layer scale), as a scale-only norm
``ln``         ``nn.LayerNorm``, ``nn.GroupNorm``, ``nn.InstanceNormNd``
``pos_enc``    a free tensor of 2+ dimensions added to the activations, or concatenated to them
``max_pool``   max pooling (adaptive too); ``avg_pool``: average pooling to more than 1x1
``glob_avg``   average pooling to 1x1 (``nn.AdaptiveAvgPool``), a mean without ``keepdim``
``cse``        a mean with ``keepdim=True`` (channel squeeze of squeeze-and-excitation)
``msa``        attention: ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``, or a
               softmax whose result is multiplied by a matrix
``sum``        addition of 2+ activations; ``concat``: concatenation / stacking of 2+ tensors
``input``      the model's input
=============  ===============================================================================

Two ways to trace, same result (tests check it): ``torch.fx`` (symbolic tracing, then one
forward pass to learn which values are tensors), and the autograd graph of one forward pass
(``grad_fn`` traversal, parameters matched by identity, as GHN-2's own code), which also works
for models fx cannot trace (data-dependent control flow). ``method="auto"`` first reads the graph
from the modules without running the model where every module is of a type whose forward is
known (the networks of the DARTS and NAS-Bench-201 spaces; ``ghn/symbolic.py``, 3-5x faster
than a trace and the same graph), then uses the autograd trace, 3-5x faster than fx on CPU, and
falls back to fx for models whose autograd graph misses part of the forward pass (a detached
branch). A free parameter is one whose owning module
is not one of the layer types above (a user's ``nn.Parameter`` attribute).
"""

from __future__ import annotations

import json
import math
import operator
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArchitectureError, ConfigError

#: operation types of graph nodes: GHN-2's 15 primitives in GHN-2's order, then ``linear``
PRIMITIVES: tuple[str, ...] = ("max_pool", "avg_pool", "sep_conv", "dil_conv", "conv", "msa", "cse",
                               "sum", "concat", "input", "bias", "bn", "ln", "pos_enc", "glob_avg",
                               "linear")
OP_INDEX = {op: i for i, op in enumerate(PRIMITIVES)}
#: parameter kinds a ``ParamRef`` may have
PARAM_KINDS = ("weight", "bias", "norm_weight", "norm_bias", "pos_enc")
WEIGHT_OPS = frozenset({"conv", "sep_conv", "dil_conv", "linear"})

GRAPH_FORMAT = "nasforge-ghn-graph/1"


@dataclass(frozen=True)
class ParamRef:
    """One parameter a node owns: its qualified name in ``model.named_parameters()``, shape, kind."""

    name: str
    shape: tuple[int, ...]
    kind: str

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))


@dataclass
class Node:
    """One operation: a name, an op type from :data:`PRIMITIVES`, the module it comes from
    (qualified name, ``""`` for the root module, None for functional operations), the parameters
    it owns and a few attributes (``groups``, ``dilation``, ... when known)."""

    name: str
    op: str
    module: str | None = None
    params: list[ParamRef] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(c_out, c_in, k_h, k_w)`` of the node's main parameter, 0 where there is none.

        A conv weight ``(o, i, kh, kw)`` gives itself (1-D ``(o, i, k)`` gives ``(o, i, k, 1)``),
        a linear weight ``(o, i)`` gives ``(o, i, 1, 1)``, a bias or a norm ``(c,)`` gives
        ``(c, 0, 0, 0)``, a positional encoding its dimensions after dropping leading 1s.
        """
        if not self.params:
            return (0, 0, 0, 0)
        p = self.params[0]
        s = list(p.shape)
        if p.kind == "weight":
            if len(s) == 2:
                s += [1, 1]
            elif len(s) == 3:
                s += [1]
            elif len(s) > 4:  # 3-D convolutions: fold the extra kernel axes into k_w
                s = s[:3] + [int(math.prod(s[3:]))]
        else:
            while len(s) > 1 and s[0] == 1:
                s = s[1:]
        s = (s + [0, 0, 0, 0])[:4]
        return (int(s[0]), int(s[1]), int(s[2]), int(s[3]))


class Graph:
    """Operations of a model as a DAG: ``nodes`` in topological order (node 0 the input) and
    ``adj`` (``torch.bool [N, N]``, ``adj[i, j]``: an edge ``i -> j``; only ``i < j``)."""

    def __init__(self, nodes: Sequence[Node], adj: torch.Tensor | np.ndarray, *,
                 meta: Mapping[str, Any] | None = None):
        self.nodes = list(nodes)
        n = len(self.nodes)
        adj = torch.as_tensor(np.asarray(adj) if not isinstance(adj, torch.Tensor) else adj).to(torch.bool)
        if adj.shape != (n, n):
            raise ValueError(f"Graph: adjacency of shape {tuple(adj.shape)} for {n} nodes")
        if n and bool(torch.tril(adj).any()):
            raise ValueError("Graph: nodes must be in topological order (edges i -> j with i < j)")
        for node in self.nodes:
            if node.op not in OP_INDEX:
                raise ValueError(f"Graph: node {node.name!r} has op {node.op!r}; expected one of "
                                 f"{', '.join(PRIMITIVES)}")
        self.adj = adj
        self.meta = dict(meta or {})
        self._paths: dict[int, torch.Tensor] = {}

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_module(cls, model: nn.Module, example_input: Any = None, *, method: str = "auto",
                    allow_unused: bool = False) -> "Graph":
        """Same as :func:`build_graph`."""
        return build_graph(model, example_input, method=method, allow_unused=allow_unused)

    # -- views -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def edges(self) -> list[tuple[int, int]]:
        """Edges ``(i, j)`` sorted."""
        return [(int(i), int(j)) for i, j in torch.nonzero(self.adj).tolist()]

    def op_ids(self) -> torch.Tensor:
        """Each node's op type as an index into :data:`PRIMITIVES` (``LongTensor [N]``)."""
        return torch.tensor([OP_INDEX[n.op] for n in self.nodes], dtype=torch.long)

    def shapes(self) -> torch.Tensor:
        """``LongTensor [N, 4]`` of ``(c_out, c_in, k_h, k_w)`` per node (see ``Node.shape``)."""
        return torch.tensor([n.shape for n in self.nodes], dtype=torch.long).reshape(-1, 4)

    def param_nodes(self) -> list[int]:
        """Indices of the nodes that own parameters, in node order."""
        return [i for i, n in enumerate(self.nodes) if n.params]

    def params(self) -> list[tuple[int, ParamRef]]:
        """``(node index, ParamRef)`` for every parameter, in node order."""
        return [(i, p) for i, n in enumerate(self.nodes) for p in n.params]

    @property
    def n_params(self) -> int:
        """Number of parameter values the graph's nodes own (the model's parameter count)."""
        return sum(p.numel for n in self.nodes for p in n.params)

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op type (types that occur)."""
        counts: dict[str, int] = defaultdict(int)
        for n in self.nodes:
            counts[n.op] += 1
        return dict(counts)

    def predecessors(self, j: int) -> list[int]:
        return torch.nonzero(self.adj[:, j]).flatten().tolist()

    def successors(self, i: int) -> list[int]:
        return torch.nonzero(self.adj[i]).flatten().tolist()

    def shortest_paths(self, cutoff: int | None = None) -> torch.Tensor:
        """``int64 [N, N]``: ``d[i, j]`` the length of the shortest directed path ``i -> j`` when
        it is between 1 and ``cutoff`` (no limit when None), else 0 (unreachable or too far).

        GHN-2's virtual edges connect ``i`` and ``j`` with weight ``1 / d[i, j]`` for
        ``1 < d <= cutoff`` (50 in GHN-2). Computed once per graph, in O(N * E) vectorised steps.
        """
        if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 1):
            raise ConfigError(f"shortest_paths: cutoff={cutoff!r}; expected an integer >= 1 or None")
        if -1 not in self._paths:
            n = self.num_nodes
            big = np.iinfo(np.int64).max // 4
            dist = np.full((n, n), big, dtype=np.int64)  # dist[i, j] over sources i
            adj = self.adj.numpy()
            for j in range(n):  # topological order: all predecessors of j are final
                preds = np.nonzero(adj[:, j])[0]
                if len(preds):
                    col = dist[:, preds].min(axis=1) + 1
                    col[preds] = 1
                    dist[:, j] = np.minimum(col, big)
            dist[dist >= big] = 0
            self._paths[-1] = torch.from_numpy(dist)
        d = self._paths[-1]
        return d.clone() if cutoff is None else torch.where(d <= cutoff, d, torch.zeros_like(d))

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``from_dict`` gives the graph back)."""
        return {"format": GRAPH_FORMAT,
                "nodes": [{"name": n.name, "op": n.op, "module": n.module,
                           "params": [[p.name, list(p.shape), p.kind] for p in n.params],
                           "attrs": _jsonable(n.attrs)} for n in self.nodes],
                "edges": [list(e) for e in self.edges], "meta": _jsonable(self.meta)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Graph":
        if not isinstance(d, Mapping) or d.get("format") != GRAPH_FORMAT:
            raise ArchitectureError(f"not a nasforge GHN graph (expected format {GRAPH_FORMAT!r})")
        nodes = [Node(name=str(x["name"]), op=str(x["op"]), module=x.get("module"),
                      params=[ParamRef(str(p[0]), tuple(int(v) for v in p[1]), str(p[2]))
                              for p in x.get("params", [])],
                      attrs=dict(x.get("attrs", {}))) for x in d["nodes"]]
        adj = torch.zeros(len(nodes), len(nodes), dtype=torch.bool)
        for i, j in d["edges"]:
            adj[int(i), int(j)] = True
        return cls(nodes, adj, meta=d.get("meta"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.to_dict()["nodes"] == other.to_dict()["nodes"] \
            and torch.equal(self.adj, other.adj)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.op_counts().items()))
        return (f"Graph({self.num_nodes} nodes, {int(self.adj.sum())} edges, "
                f"{self.n_params:,} parameters; {counts})")

    def summary(self) -> str:
        """One line per node: index, op, name, parameter shapes, predecessors."""
        lines = []
        for i, n in enumerate(self.nodes):
            shapes = " ".join("x".join(map(str, p.shape)) for p in n.params)
            lines.append(f"{i:4d} {n.op:9s} {n.name}  [{shapes}]  <- {self.predecessors(i)}")
        return "\n".join(lines)

    # -- drawing -------------------------------------------------------------------------------
    def visualize(self, path: str, *, title: str | None = None, dpi: int = 110) -> str:
        """Draw the graph to a PNG: nodes in layers by depth from the input, coloured by op type
        (legend of the types present), edges as lines. Needs only matplotlib."""
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        n = self.num_nodes
        depth = [0] * n
        for j in range(n):
            preds = self.predecessors(j)
            depth[j] = 1 + max(depth[p] for p in preds) if preds else 0
        layers: dict[int, list[int]] = defaultdict(list)
        for i, d in enumerate(depth):
            layers[d].append(i)
        pos = {}
        width = max(len(v) for v in layers.values()) if layers else 1
        for d, members in layers.items():
            for k, i in enumerate(members):
                pos[i] = ((k - (len(members) - 1) / 2.0), -d)
        height = len(layers)
        fig, ax = plt.subplots(figsize=(min(4 + 1.2 * width, 40), min(2 + 0.45 * height, 200)))
        colour = dict(zip(PRIMITIVES, _COLOURS))
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection([[pos[i], pos[j]] for i, j in self.edges],
                                         colors="0.6", linewidths=0.6, zorder=1))
        for op in sorted(set(nd.op for nd in self.nodes), key=PRIMITIVES.index):
            idx = [i for i, nd in enumerate(self.nodes) if nd.op == op]
            ax.scatter([pos[i][0] for i in idx], [pos[i][1] for i in idx], s=90, color=colour[op],
                       edgecolors="k", linewidths=0.4, label=op, zorder=3)
        if n <= 120:
            for i, nd in enumerate(self.nodes):
                label = nd.name if len(nd.name) <= 28 else "..." + nd.name[-25:]
                ax.text(pos[i][0] + 0.12, pos[i][1], label, fontsize=6, va="center", zorder=4)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        ax.set_axis_off()
        ax.set_title(title or f"{n} nodes, {self.n_params:,} parameters", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        return path


_COLOURS = ("#1f77b4", "#aec7e8", "#2ca02c", "#98df8a", "#006400", "#d62728", "#ff9896", "#ff7f0e",
            "#9467bd", "#000000", "#8c564b", "#e377c2", "#f7b6d2", "#bcbd22", "#7f7f7f", "#17becf")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


# ---------------------------------------------------------------------------------------------
# the raw trace both front ends produce
#
# A raw op is one traced operation: a category (what it does), its inputs (other raw ops, with
# multiplicity), the parameters it consumes directly, an optional module name and attributes.
# Leaves are the input(s) ("input") and parameters ("param"). The lowering below turns raw ops
# into nodes the same way for both tracers, so both give the same graph.


@dataclass
class _Raw:
    key: Any
    cat: str
    inputs: list[int] = field(default_factory=list)
    params: list[str] = field(default_factory=list)  # qualified names (param leaves only)
    module: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM_BN = (nn.modules.batchnorm._BatchNorm,)
_NORM_LN = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_POOL_MAX = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
             nn.AdaptiveMaxPool3d)
_POOL_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_POOL_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_NAMED_MODULES = _POOL_MAX + _POOL_AVG + _POOL_ADAPTIVE_AVG  # param-free nodes named after their module


def _conv_op(groups: int, dilation: Any) -> str:
    dil = dilation if isinstance(dilation, (tuple, list)) else (dilation,)
    if any(int(d) > 1 for d in dil):
        return "dil_conv"
    return "sep_conv" if int(groups) > 1 else "conv"


def _adaptive_avg_op(output_size: Any) -> str:
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
    return "glob_avg" if all(s is None or int(s) == 1 for s in sizes) else "avg_pool"


def _module_category(m: nn.Module, out_shape: Sequence[int] | None = None) -> tuple[str, dict]:
    """Category of a leaf module call."""
    if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return "unsupported", {}
    if isinstance(m, _CONV_TYPES):
        return "conv", {"groups": m.groups, "dilation": tuple(m.dilation),
                        "kernel": tuple(m.kernel_size), "stride": tuple(m.stride)}
    if isinstance(m, nn.Linear):
        return "linear", {}
    if isinstance(m, _NORM_BN):
        return "bn", {}
    if isinstance(m, _NORM_LN):
        return "ln", {}
    if isinstance(m, nn.MultiheadAttention):
        return "mha", {}
    if isinstance(m, _POOL_MAX):
        return "max_pool", {}
    if isinstance(m, _POOL_AVG):
        return "avg_pool", {}
    if isinstance(m, _POOL_ADAPTIVE_AVG):
        return _adaptive_avg_op(m.output_size), {}
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return "softmax", {}
    if any(True for _ in m.parameters(recurse=False)):
        return "unsupported", {}
    return "pass", {}


# ---------------------------------------------------------------------------------------------
# parameter roles


def _owner(mods: Mapping[str, nn.Module], qualname: str) -> tuple[str, str, nn.Module]:
    """``(module name, attribute, module)`` of a qualified parameter name (``mods``: the
    model's ``dict(named_modules())``)."""
    module_name, _, attr = qualname.rpartition(".")
    return module_name, attr, mods[module_name]


def _is_free_owner(m: nn.Module) -> bool:
    """A module whose parameters are not those of a layer type the graph knows."""
    return not isinstance(m, _CONV_TYPES + (nn.Linear, nn.MultiheadAttention) + _NORM_BN + _NORM_LN)


def _role(mods: Mapping[str, nn.Module], qualname: str, shape: Sequence[int], raw: _Raw, position: int,
          opname: str) -> tuple[str, str]:
    """``(op, kind)`` of one parameter consumed by ``raw``; ``op`` may be ``pos_enc_source``."""
    module_name, attr, m = _owner(mods, qualname)
    def where() -> str:  # only formatted for an error message
        return f"parameter {qualname!r} (shape {tuple(shape)}) of {type(m).__name__} {module_name or '(root)'!r}"
    if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        raise ArchitectureError(f"ghn graph: cannot represent {where()}: transposed convolutions are "
                                "not among the operations a graph hypernetwork predicts")
    if isinstance(m, _CONV_TYPES):
        if attr == "weight":
            return _conv_op(m.groups, m.dilation), "weight"
        if attr == "bias":
            return "bias", "bias"
    elif isinstance(m, nn.Linear):
        if attr in ("weight", "bias"):
            return ("linear", "weight") if attr == "weight" else ("bias", "bias")
    elif isinstance(m, nn.MultiheadAttention):
        if attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return "linear", "weight"
        if attr == "in_proj_bias":
            return "bias", "bias"
        raise ArchitectureError(f"ghn graph: cannot represent {where()} (bias_k / bias_v of "
                                "nn.MultiheadAttention are not supported)")
    elif isinstance(m, _NORM_BN) or isinstance(m, _NORM_LN):
        op = "bn" if isinstance(m, _NORM_BN) else "ln"
        if attr in ("weight", "bias"):
            return op, "norm_" + attr
    elif _is_free_owner(m) and (type(m).__module__ or "").startswith("torch.nn") \
            and any(True for _ in m.parameters(recurse=False)):
        raise ArchitectureError(f"ghn graph: cannot represent {where()}: {type(m).__name__} is not "
                                "an operation a graph hypernetwork predicts (supported layers: conv, "
                                "linear, batch/layer/group norm, multi-head attention, free tensors "
                                "added, concatenated or multiplied)")
    # a free parameter: its role comes from the operation that consumes it
    nd = len(shape)
    cat = raw.cat
    if cat == "conv":
        if nd >= 3:
            return _conv_op(raw.attrs.get("groups", 1), raw.attrs.get("dilation", 1)), "weight"
        return "bias", "bias"
    if cat in ("matmul", "linear"):
        return ("linear", "weight") if nd >= 2 else ("bias", "bias")
    if cat == "add":
        return ("bias", "bias") if nd == 1 else ("pos_enc", "pos_enc")
    if cat == "cat":
        return "pos_enc_source", "pos_enc"
    if cat == "mul":
        return "bn", "norm_weight"
    if cat in ("bn", "ln"):
        return cat, "norm_weight" if position == 0 else "norm_bias"
    raise ArchitectureError(f"ghn graph: cannot represent {where()}: it is used by operation "
                            f"{opname!r}, which has no graph node type (free parameters may be "
                            "added, concatenated, multiplied, or used as conv / linear weights)")


# ---------------------------------------------------------------------------------------------
# lowering raw ops to nodes


def _lower(model: nn.Module, raws: list[_Raw], outputs: list[int], method: str,
           allow_unused: bool, named: tuple[dict, dict] | None = None) -> Graph:
    params, mods = named or _named(model)
    n = len(raws)
    # which raw ops the outputs depend on (fx keeps dead code; autograd never sees it)
    live = [False] * n
    stack = list(outputs)
    while stack:
        i = stack.pop()
        if not live[i]:
            live[i] = True
            stack.extend(raws[i].inputs)
    # data: depends on an input; param-derived: depends on parameters only; else constant
    kind = [""] * n
    carried: list[list[str]] = [[] for _ in range(n)]  # params a param-derived value carries
    for i, r in enumerate(raws):
        if r.cat == "input":
            kind[i] = "data"
        elif r.cat == "param":
            kind[i] = "param"
            carried[i] = list(r.params)
        else:
            data_in = [j for j in r.inputs if kind[j] == "data"]
            ps: list[str] = list(r.params)
            for j in r.inputs:
                if kind[j] == "param":
                    ps += [p for p in carried[j] if p not in ps]
            if data_in:
                kind[i] = "data"
                r.inputs = data_in
                r.params = list(dict.fromkeys(ps))
            elif ps:
                kind[i] = "param"
                carried[i] = list(dict.fromkeys(ps))
            else:
                kind[i] = "const"
    if not any(kind[o] == "data" for o in outputs):
        raise ArchitectureError("ghn graph: the model's output does not depend on its input")

    # lower each live data op to zero or more nodes; out_of[i] = the node carrying raw i's value
    nodes: list[tuple[Any, Node, list[int]]] = []  # (sort key, node, input node ids)
    out_of: dict[int, int] = {}
    owner: dict[str, str] = {}

    def add(key: Any, node: Node, inputs: list[int]) -> int:
        nodes.append((key, node, inputs))
        return len(nodes) - 1

    for i, r in enumerate(raws):
        if not live[i] or kind[i] != "data":
            continue
        ins = [out_of[j] for j in r.inputs]
        if r.cat == "input":
            out_of[i] = add((r.key, 0), Node(r.attrs.get("name", "input"), "input"), [])
            continue
        if r.cat == "unsupported":
            raise ArchitectureError(f"ghn graph: cannot represent {r.attrs.get('type', 'module')} "
                                    f"{r.module!r}: not an operation a graph hypernetwork "
                                    "predicts (supported layers: conv, linear, batch/layer/group "
                                    "norm, multi-head attention, free tensors added, concatenated "
                                    "or multiplied)")
        if r.cat == "mha":
            out_of[i] = _lower_mha(mods, r, ins, add, params, owner)
            continue
        for p in r.params:
            if p in owner:
                raise ArchitectureError(f"ghn graph: parameter {p!r} is used by two operations "
                                        f"({owner[p]} and {r.attrs.get('opname', r.cat)}); shared "
                                        "weights cannot be represented")
            owner[p] = str(r.attrs.get("opname", r.cat))
        if not r.params:
            op = r.cat if r.cat in OP_INDEX or r.cat in ("add", "cat", "softmax", "matmul") else "pass"
            if r.cat in ("bn", "ln"):
                op = r.cat  # a norm without affine parameters
            name = r.module if (r.module is not None and r.attrs.get("named")) else None
            out_of[i] = add((r.key, 0), Node(name or "", op, r.module if name else None,
                                             attrs=dict(r.attrs.get("node_attrs", {}))), ins)
            continue
        roles = [(p, *_role(mods, p, tuple(params[p].shape), r, k, str(r.attrs.get("opname", r.cat))))
                 for k, p in enumerate(r.params)]
        sources = [(p, op, kd) for p, op, kd in roles if op == "pos_enc_source"]
        weights = [(p, op, kd) for p, op, kd in roles if op in WEIGHT_OPS]
        norms = [(p, op, kd) for p, op, kd in roles if op in ("bn", "ln")]
        biases = [(p, op, kd) for p, op, kd in roles if op == "bias"]
        encs = [(p, op, kd) for p, op, kd in roles if op == "pos_enc"]
        sub = 0
        src_nodes = []
        for p, _, kd in sources:
            src_nodes.append(add((r.key, -1, sub), Node(p, "pos_enc", _owner(mods, p)[0],
                                                        [_ref(params, p, kd)]), []))
            sub += 1
        chain_in = ins
        last = None
        for p, op, kd in weights:
            attrs = _conv_attrs(_owner(mods, p)[2], r) if op != "linear" else {}
            last = add((r.key, sub), Node(p, op, _owner(mods, p)[0], [_ref(params, p, kd)], attrs),
                       chain_in)
            chain_in, sub = [last], sub + 1
        if norms:
            by_op: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for p, op, kd in norms:
                by_op[op].append((p, kd))
            for op, ps in by_op.items():
                ps.sort(key=lambda t: t[1] != "norm_weight")
                module = _owner(mods, ps[0][0])[0]
                name = module if not _is_free_owner(_owner(mods, ps[0][0])[2]) else ps[0][0]
                last = add((r.key, sub), Node(name, op, module, [_ref(params, p, kd) for p, kd in ps]),
                           chain_in)
                chain_in, sub = [last], sub + 1
        for p, op, kd in biases + encs:
            last = add((r.key, sub), Node(p, op, _owner(mods, p)[0], [_ref(params, p, kd)]), chain_in)
            chain_in, sub = [last], sub + 1
        if src_nodes:  # concatenation of activations and learned tensors
            out_of[i] = add((r.key, sub), Node("", "cat"), ins + src_nodes) if last is None else last
        else:
            assert last is not None
            out_of[i] = last

    unused = [p for p in params if p not in owner]
    if unused and not allow_unused:
        raise ArchitectureError(f"ghn graph: {len(unused)} parameter(s) are not used by the forward "
                                f"pass on the example input (eval mode), e.g. {unused[:3]}; a graph "
                                "hypernetwork could not predict them (pass allow_unused=True to "
                                "build the graph anyway)")
    return _finish(nodes, method, unused)


def _conv_attrs(m: nn.Module, r: _Raw) -> dict[str, Any]:
    if isinstance(m, _CONV_TYPES):
        return {"groups": int(m.groups), "dilation": [int(d) for d in m.dilation],
                "stride": [int(v) for v in m.stride]}
    attrs = r.attrs.get("node_attrs", {})
    dil = attrs.get("dilation", 1)
    return {"groups": int(attrs.get("groups", 1)),
            "dilation": [int(d) for d in (dil if isinstance(dil, (tuple, list)) else (dil,))]}


def _ref(params: Mapping[str, torch.Tensor], name: str, kind: str) -> ParamRef:
    return ParamRef(name, tuple(params[name].shape), kind)  # torch.Size holds ints


def _lower_mha(mods: Mapping[str, nn.Module], r: _Raw, ins: list[int], add: Any,
               params: Mapping[str, torch.Tensor], owner: dict[str, str]) -> int:
    """``nn.MultiheadAttention`` as fx sees it (one call): in-projection weight(s) -> bias ->
    msa -> out-projection weight -> bias, the same nodes the autograd trace finds."""
    m = mods[r.module or ""]
    assert isinstance(m, nn.MultiheadAttention)
    prefix = (r.module + ".") if r.module else ""
    if m.bias_k is not None or m.bias_v is not None:
        raise ArchitectureError(f"ghn graph: cannot represent nn.MultiheadAttention {r.module!r} "
                                "with add_bias_kv=True")
    for p in [q for q in params if q.startswith(prefix)]:
        if p in owner:
            raise ArchitectureError(f"ghn graph: parameter {p!r} is used by two operations; shared "
                                    "weights cannot be represented")
        owner[p] = f"attention {r.module}"
    sub = 0

    def node(name: str, op: str, kind: str, inputs: list[int]) -> int:
        nonlocal sub
        sub += 1
        return add((r.key, sub), Node(prefix + name, op, _owner(mods, prefix + name)[0],
                                      [_ref(params, prefix + name, kind)]), inputs)

    q, k, v = (ins + ins[-1:] * 3)[:3] if ins else ([], [], [])
    if m.in_proj_weight is not None:
        last = node("in_proj_weight", "linear", "weight", list(dict.fromkeys(ins)))
    else:
        ws = [node(f"{c}_proj_weight", "linear", "weight", [src])
              for c, src in zip("qkv", (q, k, v))]
        last = ws[-1] if len(ws) == 1 else ws  # type: ignore[assignment]
    chain = last if isinstance(last, list) else [last]
    if m.in_proj_bias is not None:
        chain = [node("in_proj_bias", "bias", "bias", chain)]
    sub += 1
    att = add((r.key, sub), Node("", "msa"), chain)
    last = node("out_proj.weight", "linear", "weight", [att])
    if m.out_proj.bias is not None:
        last = node("out_proj.bias", "bias", "bias", [last])
    return last


def _finish(nodes: list[tuple[Any, Node, list[int]]], method: str, unused: list[str]) -> Graph:
    """Decide sums / concats / attention, drop pass-through nodes, sort, name, build the matrix."""
    succ: dict[int, list[int]] = defaultdict(list)
    for j, (_, _, ins) in enumerate(nodes):
        for i in ins:
            succ[i].append(j)
    ops = []
    for j, (_, nd, ins) in enumerate(nodes):
        op = nd.op
        if op in ("add", "cat"):
            op = ("sum" if op == "add" else "concat") if len(ins) >= 2 else "pass"
        ops.append(op)
    for j, (_, nd, _) in enumerate(nodes):  # a softmax feeding a matrix product is attention
        if ops[j] == "softmax":
            ops[j] = "pass"
            stack, seen = list(succ[j]), set()
            while stack:
                k = stack.pop()
                if k in seen:
                    continue
                seen.add(k)
                if ops[k] == "matmul":
                    ops[j] = "msa"
                    break
                if ops[k] in ("pass", "softmax"):
                    stack.extend(succ[k])
    ops = [("pass" if op == "matmul" else op) for op in ops]
    order = sorted(range(len(nodes)), key=lambda j: _sortable(nodes[j][0]))
    effective: dict[int, list[int]] = {}
    kept: list[int] = []
    for j in order:
        ins: list[int] = []
        for i in nodes[j][2]:
            ins += effective[i] if ops[i] == "pass" else [i]
        effective[j] = list(dict.fromkeys(ins))
        if ops[j] != "pass":
            kept.append(j)
    index = {j: k for k, j in enumerate(kept)}
    counts: dict[str, int] = defaultdict(int)
    out_nodes = []
    for j in kept:
        nd = nodes[j][1]
        nd.op = ops[j]
        if not nd.name:
            nd.name = f"{nd.op}{counts[nd.op]}" if nd.op != "input" else "input"
            counts[nd.op] += 1
        out_nodes.append(nd)
    src = [index[i] for j in kept for i in effective[j]]
    dst = [index[j] for j in kept for _ in effective[j]]
    adj = torch.zeros(len(kept), len(kept), dtype=torch.bool)
    adj[src, dst] = True
    if not out_nodes or out_nodes[0].op != "input":
        raise ArchitectureError("ghn graph: no input node was found (is the output independent "
                                "of the input?)")
    meta: dict[str, Any] = {"method": method}
    if unused:
        meta["unused_params"] = unused
    return Graph(out_nodes, adj, meta=meta)


def _sortable(key: Any) -> tuple:
    return tuple(key) if isinstance(key, tuple) else (key,)


# ---------------------------------------------------------------------------------------------
# front end 1: torch.fx

_FX_ADD = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__"}
_FX_CAT = {torch.cat, torch.concat, torch.stack, "cat"}
_FX_MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__"}
_FX_MATMUL = {operator.matmul, torch.matmul, torch.mm, torch.bmm, torch.einsum, torch.baddbmm,
              torch.addmm, "matmul", "mm", "bmm", "__matmul__"}
_FX_SOFTMAX = {F.softmax, torch.softmax, F.log_softmax, torch.log_softmax, "softmax", "log_softmax"}
_FX_CONV = {F.conv1d, F.conv2d, F.conv3d}
_FX_MAXPOOL = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d,
               F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.max_pool1d, torch.max_pool2d}
_FX_AVGPOOL = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, torch.avg_pool1d}
_FX_ADAPTIVE_AVG = {F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
                    torch.adaptive_avg_pool1d}
_FX_MEAN = {torch.mean, "mean"}
_FX_NORM = {F.batch_norm: "bn", F.layer_norm: "ln", F.group_norm: "ln", F.instance_norm: "ln"}


def _fx_func_category(target: Any, args: tuple, kwargs: dict, node: Any) -> tuple[str, dict]:
    def has(s: set) -> bool:
        try:
            return target in s
        except TypeError:
            return False
    if has(_FX_ADD):
        return "add", {}
    if has(_FX_CAT):
        return "cat", {}
    if has(_FX_MUL):
        return "mul", {}
    if has(_FX_MATMUL) or target is F.linear:
        return ("linear" if target is F.linear else "matmul"), {}
    if has(_FX_SOFTMAX):
        return "softmax", {}
    if target is F.scaled_dot_product_attention:
        return "msa", {}
    if has(_FX_CONV):
        stride, padding, dilation, groups = (list(args[3:7]) + [None] * 4)[:4]
        dilation = kwargs.get("dilation", dilation if dilation is not None else 1)
        groups = kwargs.get("groups", groups if groups is not None else 1)
        return "conv", {"groups": groups, "dilation": dilation}
    if has(_FX_MAXPOOL):
        return "max_pool", {}
    if has(_FX_AVGPOOL):
        return "avg_pool", {}
    if has(_FX_ADAPTIVE_AVG):
        out = kwargs.get("output_size", args[1] if len(args) > 1 else 1)
        return _adaptive_avg_op(out), {}
    if has(_FX_MEAN):
        keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        return ("cse" if keepdim else "glob_avg"), {}
    norm = _FX_NORM.get(target) if callable(target) else None
    if norm is not None:
        return norm, {}
    return "pass", {}


class _Tracer(torch.fx.Tracer):
    """Stops at torch.nn layers without sub-modules (and at ``nn.MultiheadAttention``); traces
    through containers and torch.nn blocks such as ``nn.TransformerEncoderLayer``."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, nn.MultiheadAttention):
            return True
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return (type(m).__module__ or "").startswith("torch.nn") and not any(True for _ in m.children())


def _fx_raw(model: nn.Module, inputs: list[torch.Tensor]) -> tuple[list[_Raw], list[int]]:
    from torch.fx.passes.shape_prop import ShapeProp

    tracer = _Tracer()
    graph = tracer.trace(model)
    gm = torch.fx.GraphModule(tracer.root, graph)
    placeholders = [nd for nd in graph.nodes if nd.op == "placeholder"]
    if len(placeholders) < len(inputs):
        raise ArchitectureError(f"ghn graph: the model takes {len(placeholders)} inputs; "
                                f"{len(inputs)} example inputs were given")
    ShapeProp(gm).propagate(*inputs)
    params = dict(model.named_parameters())
    raws: list[_Raw] = []
    index: dict[Any, int] = {}
    outputs: list[int] = []

    def tensor_valued(nd: Any) -> bool:
        return "tensor_meta" in nd.meta

    def arg_nodes(args: Any) -> list[Any]:
        found: list[Any] = []
        torch.fx.node.map_arg(args, found.append)
        return found

    for k, nd in enumerate(graph.nodes):
        if nd.op == "output":
            outputs = [index[a] for a in arg_nodes(nd.args) if a in index]
            continue
        ins = [index[a] for a in arg_nodes((nd.args, nd.kwargs)) if a in index]
        if nd.op == "placeholder":
            pos = placeholders.index(nd)
            if pos >= len(inputs):
                continue
            raws.append(_Raw(k, "input", attrs={"name": "input" if pos == 0 else f"input{pos}"}))
        elif nd.op == "get_attr":
            if nd.target in params:
                raws.append(_Raw(k, "param", params=[nd.target]))
            else:
                continue  # buffers and constants
        elif not tensor_valued(nd):
            continue  # sizes, shapes, python values
        elif nd.op == "call_module":
            m = gm.get_submodule(nd.target)
            cat, attrs = _module_category(m)
            own = [f"{nd.target}.{name}" for name, _ in m.named_parameters()]
            attrs = {"node_attrs": attrs, "opname": f"{type(m).__name__} {nd.target!r}",
                     "type": type(m).__name__, "named": isinstance(m, _NAMED_MODULES)}
            raws.append(_Raw(k, cat, ins, own if cat != "mha" else [], nd.target, attrs))
        else:  # call_function / call_method
            cat, attrs = _fx_func_category(nd.target, nd.args, nd.kwargs, nd)
            name = getattr(nd.target, "__name__", str(nd.target))
            raw = _Raw(k, cat, ins, attrs={"opname": name, **attrs})
            if cat == "conv":
                raw.attrs["node_attrs"] = {"groups": attrs["groups"], "dilation": attrs["dilation"]}
            raws.append(raw)
        index[nd] = len(raws) - 1
    return raws, outputs


# ---------------------------------------------------------------------------------------------
# front end 2: the autograd graph

_AG_CATEGORIES = (  # (substring of the grad_fn class name, category), first match wins
    ("ScaledDotProduct", "msa"), ("Convolution", "conv"), ("BatchNorm", "bn"),
    ("NativeLayerNorm", "ln"), ("NativeGroupNorm", "ln"), ("AdaptiveMaxPool", "max_pool"),
    ("MaxPool", "max_pool"), ("AdaptiveAvgPool", "adaptive_avg"), ("AvgPool", "avg_pool"),
    ("Mean", "mean"), ("LogSoftmax", "softmax"), ("Softmax", "softmax"), ("Addmm", "matmul"),
    ("Baddbmm", "matmul"), ("Bmm", "matmul"), ("MmBackward", "matmul"), ("MvBackward", "matmul"),
    ("AddBackward", "add"), ("CatBackward", "cat"), ("StackBackward", "cat"),
    ("MulBackward", "mul"), ("Embedding", "unsupported_fn"),
)


_AG_BY_NAME: dict[str, str] = {}  # grad_fn class name -> category (the scan below, memoised)


def _ag_base_category(name: str) -> str:
    cat = _AG_BY_NAME.get(name)
    if cat is None:
        cat = next((c for sub, c in _AG_CATEGORIES if sub in name), "pass")
        _AG_BY_NAME[name] = cat
    return cat


def _ag_category(fn: Any, hooked: tuple[str, nn.Module] | None) -> tuple[str, dict]:
    cat = _ag_base_category(type(fn).__name__)
    if hooked is not None and isinstance(hooked[1], _NAMED_MODULES) and cat in (
            "max_pool", "avg_pool", "adaptive_avg", "mean"):
        return _module_category(hooked[1])[0], {}
    if cat == "adaptive_avg":
        return "glob_avg", {}
    if cat == "mean":
        return ("cse" if bool(getattr(fn, "_saved_keepdim", False)) else "glob_avg"), {}
    if cat == "conv":
        return "conv", {"groups": int(getattr(fn, "_saved_groups", 1)),
                        "dilation": tuple(getattr(fn, "_saved_dilation", (1,)))}
    return cat, {}


def _named(model: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, nn.Module]]:
    """``(dict(named_parameters()), dict(named_modules()))``, computed once per trace."""
    return dict(model.named_parameters()), dict(model.named_modules())


def _autograd_raw(model: nn.Module, inputs: list[torch.Tensor],
                  named_: tuple[dict, dict] | None = None) -> tuple[list[_Raw], list[int]]:
    named, mods = named_ or _named(model)
    by_id = {id(p): name for name, p in named.items()}
    input_ids = {id(x): k for k, x in enumerate(inputs)}
    hooked: dict[int, tuple[Any, str, nn.Module]] = {}

    def hook(name: str):
        def fn(m: nn.Module, args: Any, out: Any) -> None:
            if not isinstance(out, torch.Tensor) or out.grad_fn is None:
                return
            g = out.grad_fn  # 1-D pooling is 2-D pooling between an unsqueeze and a squeeze
            for _ in range(4):
                if _ag_base_category(type(g).__name__) != "pass":
                    break
                nxt = [f for f, _ in g.next_functions if f is not None]
                if len(nxt) != 1:
                    break
                g = nxt[0]
            if _ag_base_category(type(g).__name__) != "pass" and id(g) not in hooked:
                hooked[id(g)] = (g, name, m)
        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in mods.items()
               if isinstance(m, _NAMED_MODULES)]
    flags = {name: p.requires_grad for name, p in named.items()}
    try:
        for p in named.values():
            p.requires_grad_(True)
        with torch.enable_grad():
            out = model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for name, p in named.items():
            p.requires_grad_(flags[name])
    roots = [t.grad_fn for t in _tensors(out) if t.grad_fn is not None]
    # collect the autograd nodes reachable from the outputs
    seen: dict[int, Any] = {}
    nexts: dict[int, list[Any]] = {}  # next_functions builds new tuples each time: read it once
    keys: dict[int, int] = {}
    stack = list(roots)
    while stack:
        fn = stack.pop()
        i = id(fn)
        if i in seen:
            continue
        seen[i] = fn
        acc = type(fn).__name__ == "AccumulateGrad"
        keys[i] = -1 if acc else int(fn._sequence_nr())
        nxt = [] if acc else [f for f, _ in fn.next_functions if f is not None]
        nexts[i] = nxt
        stack.extend(nxt)

    def key(fn: Any) -> int:
        return keys[id(fn)]

    order = sorted(seen.values(), key=lambda f: (keys[id(f)], id(f) if keys[id(f)] < 0 else 0))
    raws: list[_Raw] = []
    index: dict[int, int] = {}
    for fn in order:
        if keys[id(fn)] < 0:
            var = fn.variable
            if id(var) in input_ids:
                pos = input_ids[id(var)]
                raws.append(_Raw((-1, pos), "input",
                                 attrs={"name": "input" if pos == 0 else f"input{pos}"}))
            elif id(var) in by_id:
                raws.append(_Raw((-1, 0), "param", params=[by_id[id(var)]]))
            else:
                continue
        else:
            ins = [index[id(nxt)] for nxt in nexts[id(fn)] if id(nxt) in index]
            h = hooked.get(id(fn))
            cat, attrs = _ag_category(fn, (h[1], h[2]) if h else None)
            raw = _Raw((key(fn),), cat, ins, attrs={"opname": type(fn).__name__, **attrs})
            if cat == "conv":
                raw.attrs["node_attrs"] = attrs
            if h is not None:
                raw.module, raw.attrs["named"] = h[1], True
            raws.append(raw)
        index[id(fn)] = len(raws) - 1
    outputs = [index[id(fn)] for fn in roots if id(fn) in index]
    return raws, outputs


def _tensors(out: Any) -> Iterable[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, Mapping):
        for v in out.values():
            yield from _tensors(v)
    elif isinstance(out, (list, tuple)):
        for v in out:
            yield from _tensors(v)


# ---------------------------------------------------------------------------------------------
# the entry point


def example_input_for(shape: Sequence[int], batch: int = 1) -> torch.Tensor:
    """A fixed random input of ``(batch, *shape)`` (seed 0; no global random state touched)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn((batch, *[int(s) for s in shape]), generator=gen)


def _trace_fx(model: nn.Module, inputs: list[torch.Tensor], allow_unused: bool,
              named: tuple[dict, dict] | None = None) -> Graph:
    try:
        with torch.no_grad():
            raws, outs = _fx_raw(model, [x.detach() for x in inputs])
    except ArchitectureError:
        raise
    except Exception as exc:
        raise ArchitectureError(f"ghn graph: torch.fx cannot trace {type(model).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return _lower(model, raws, outs, "fx", allow_unused, named)


def _trace_autograd(model: nn.Module, inputs: list[torch.Tensor], allow_unused: bool,
                    named: tuple[dict, dict] | None = None) -> Graph:
    named = named or _named(model)
    raws, outs = _autograd_raw(model, inputs, named)
    return _lower(model, raws, outs, "autograd", allow_unused, named)


def build_graph(model: nn.Module, example_input: Any = None, *, method: str = "auto",
                allow_unused: bool = False) -> Graph:
    """The :class:`Graph` of ``model`` traced on ``example_input``.

    ``example_input``: a tensor with a batch dimension, a tuple of tensors, or an input shape
    without the batch dimension (``(3, 32, 32)``; a fixed random batch of 1 is used).
    ``method``: ``"fx"``, ``"autograd"``, ``"symbolic"`` or ``"auto"``: the graph read from
    the modules without running the model (``ghn/symbolic.py``: networks of known module types,
    such as those of the DARTS and NAS-Bench-201 spaces), else the autograd trace (GHN-2's own
    way, and 3-5x faster than fx on CPU), then fx when autograd fails (a branch computed without
    gradients, a detached tensor); all give the same graph where they work. The model runs in eval mode (restored afterwards); nothing in it changes.
    ``allow_unused``: accept parameters the forward pass does not use (listed in
    ``graph.meta["unused_params"]``) instead of raising.
    """
    if not isinstance(model, nn.Module):
        raise ArchitectureError(f"ghn graph: expected an nn.Module, got {type(model).__name__}")
    if method not in ("auto", "fx", "autograd", "symbolic"):
        raise ConfigError(f"ghn graph: method={method!r}; expected auto, symbolic, fx or autograd")
    if example_input is None:
        raise ConfigError("ghn graph: an example input (a tensor or an input shape such as "
                          "(3, 32, 32)) is needed to trace the model")
    if isinstance(example_input, torch.Tensor):
        inputs = [example_input]
    elif isinstance(example_input, (tuple, list)) and example_input and all(
            isinstance(v, int) and not isinstance(v, bool) for v in example_input):
        inputs = [example_input_for(example_input)]
    elif isinstance(example_input, (tuple, list)) and example_input and all(
            isinstance(v, torch.Tensor) for v in example_input):
        inputs = list(example_input)
    else:
        raise ConfigError(f"ghn graph: example input {example_input!r:.80}; expected a tensor, a "
                          "tuple of tensors or an input shape of integers")
    # a caller's torch.inference_mode() would hide the autograd graph (and make the example
    # input an inference tensor): the graph is built outside it
    with torch.inference_mode(False):
        return _build(model, inputs, method, allow_unused)


def _build(model: nn.Module, inputs: list[torch.Tensor], method: str, allow_unused: bool
           ) -> Graph:
    inputs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    named = _named(model)
    restore = _to_eval(model, named[1])
    try:
        if method in ("auto", "symbolic"):
            from .symbolic import Unsupported, read_raw

            try:
                raws, outs = read_raw(model, inputs, named)
            except Unsupported as exc:
                if method == "symbolic":
                    raise ArchitectureError(f"ghn graph: method='symbolic' does not cover "
                                            f"{type(model).__name__}: {exc}") from None
            else:
                return _lower(model, raws, outs, "symbolic", allow_unused, named)
        if method == "autograd":
            return _trace_autograd(model, inputs, allow_unused, named)
        if method == "fx":
            return _trace_fx(model, inputs, allow_unused, named)
        try:
            return _trace_autograd(model, inputs, allow_unused, named)
        except Exception as first:  # e.g. a branch run without gradients: fx sees it
            try:
                return _trace_fx(model, inputs, allow_unused, named)
            except Exception:
                if isinstance(first, ArchitectureError):
                    raise first from None
                raise ArchitectureError(f"ghn graph: cannot trace {type(model).__name__}: "
                                        f"{first}") from None
    finally:
        restore()


def _to_eval(model: nn.Module, mods: Mapping[str, nn.Module]) -> Any:
    """Put ``model`` in eval mode; returns a function restoring the former mode.

    Where no module overrides ``train``, the flags are set directly (``Module.train`` goes
    through ``__setattr__`` for each of a DARTS network's ~1,000 modules: several ms) and
    restored module by module; otherwise ``model.eval()`` / ``model.train(was_training)``."""
    if any(type(m).train is not nn.Module.train for m in mods.values()):
        was_training = model.training
        model.eval()
        return lambda: model.train(was_training)
    changed = [m for m in mods.values() if m.training]
    for m in changed:
        m.__dict__["training"] = False

    def restore() -> None:
        for m in changed:
            m.__dict__["training"] = True
    return restore


__all__ = ["PRIMITIVES", "OP_INDEX", "PARAM_KINDS", "ParamRef", "Node", "Graph", "build_graph",
           "example_input_for"]
