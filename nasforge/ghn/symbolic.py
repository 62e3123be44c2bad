"""The graph of a network built from known layers, read from its modules without running it.

Tracing (``graph.py``) runs the model once: for a DARTS network of nasforge's default space that
forward pass is ~1,000 module calls, most of the time ``build_graph`` takes. The networks of the
DARTS and NAS-Bench-201 spaces (and the GHN generator's variants of them) are made of a handful of
module types whose forward code is known, so their raw trace -- the operations the autograd
trace would record, in the order it records them -- can be written down from the module tree
instead. It goes through the same lowering as the traces (``graph._lower``), so the graph is the
one tracing gives, node for node and edge for edge (``tests/test_ghn_symbolic.py`` checks this on
random architectures of both spaces, images and series, with and without batch norm).

What is covered, by exact type: ``nn.Conv1d`` / ``Conv2d`` (zero padding), ``nn.BatchNorm1d`` /
``2d``, ``nn.Linear``, max / average / adaptive-average pooling (1-D, 2-D), ``nn.ReLU``,
``nn.Identity``, ``nn.Dropout``, ``nn.Flatten``; by forward function: ``nn.Sequential`` and its
subclasses that keep its forward, ``Network``, the DARTS encoder, cell, operations
(``FactorizedReduce``, ``Zero``, ``DropPath``), and the NAS-Bench-201 cell, reduction block and
``Zero``. Shapes are propagated (channels and spatial sizes), so an input the network would
reject is noticed. Anything else -- another module type, a forward or backward hook, several
inputs, a non-float input, a shape that does not fit, a module in training mode -- raises
:class:`Unsupported`, and ``build_graph`` traces the model as before.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .graph import _module_category, _Raw


class Unsupported(Exception):
    """The model (or its input) is outside what this reader covers: trace it instead."""


class _Val:
    """A traced value: the raw op that computes it and its shape without the batch axis."""

    __slots__ = ("raw", "shape")

    def __init__(self, raw: int, shape: tuple[int, ...]):
        self.raw, self.shape = raw, shape


class _Reader:
    def __init__(self, named: tuple[Mapping[str, nn.Parameter], Mapping[str, nn.Module]]):
        params, mods = named
        self.param_name = {id(p): name for name, p in params.items()}
        self.module_name = {}
        for name, m in mods.items():
            self.module_name.setdefault(id(m), name)
        self.raws: list[_Raw] = []

    def emit(self, cat: str, inputs: Sequence[_Val], shape: tuple[int, ...], *,
             params: Sequence[torch.Tensor | None] = (), module: nn.Module | None = None,
             attrs: dict[str, Any] | None = None) -> _Val:
        names = []
        for p in params:
            if p is None:
                continue
            name = self.param_name.get(id(p))
            if name is None:
                raise Unsupported("a parameter not in named_parameters()")
            names.append(name)
        raw = _Raw((len(self.raws),), cat, [v.raw for v in inputs], names, attrs=dict(attrs or {}))
        if module is not None:
            raw.module, raw.attrs["named"] = self.module_name[id(module)], True
        self.raws.append(raw)
        return _Val(len(self.raws) - 1, shape)

    def call(self, m: nn.Module, *args: Any) -> Any:
        handler = _LEAVES.get(type(m)) or _COMPOSITES.get(getattr(type(m), "forward", None))
        if handler is None:
            raise Unsupported(f"module type {type(m).__name__}")
        if m.training:
            raise Unsupported("a module in training mode")
        return handler(self, m, *args)


# ---------------------------------------------------------------------------------------------
# shapes


def _pair(v: Any, dim: int) -> tuple[int, ...]:
    t = tuple(v) if isinstance(v, (tuple, list)) else (v,) * dim
    if len(t) != dim or not all(isinstance(x, int) for x in t):
        raise Unsupported(f"a size {v!r}")
    return t


def _spatial(x: _Val, dim: int) -> tuple[int, ...]:
    if len(x.shape) != dim + 1:
        raise Unsupported(f"a {len(x.shape) + 1}-D input to a {dim}-D layer")
    return x.shape[1:]


def _window(sizes: Sequence[int], kernel: Any, stride: Any, padding: Any, dilation: Any,
            ceil_mode: bool, dim: int) -> tuple[int, ...]:
    """Output sizes of a convolution / pooling window (PyTorch's rules)."""
    k, s = _pair(kernel, dim), _pair(stride if stride not in (None, ()) else kernel, dim)
    p, d = _pair(padding, dim), _pair(dilation, dim)
    out = []
    for n, kk, ss, pp, dd in zip(sizes, k, s, p, d):
        span = n + 2 * pp - dd * (kk - 1) - 1
        o = (-(-span // ss) if ceil_mode else span // ss) + 1
        if ceil_mode and (o - 1) * ss >= n + pp:
            o -= 1
        if o < 1 or span < 0:
            raise Unsupported("a window larger than its input")
        out.append(o)
    return tuple(out)


def _same(*vals: _Val) -> tuple[int, ...]:
    if any(v.shape != vals[0].shape for v in vals):
        raise Unsupported("a sum of tensors of different shapes")
    return vals[0].shape


# ---------------------------------------------------------------------------------------------
# torch.nn layers (exact types)


def _conv(r: _Reader, m: Any, x: _Val) -> _Val:
    dim = len(m.kernel_size)
    sizes = _spatial(x, dim)
    if m.padding_mode != "zeros" or isinstance(m.padding, str) or x.shape[0] != m.in_channels:
        raise Unsupported("a convolution the reader does not cover")
    out = _window(sizes, m.kernel_size, m.stride, m.padding, m.dilation, False, dim)
    return r.emit("conv", [x], (m.out_channels, *out), params=(m.weight, m.bias),
                  attrs={"node_attrs": {"groups": int(m.groups), "dilation": tuple(m.dilation)}})


def _bn(r: _Reader, m: Any, x: _Val) -> _Val:
    if x.shape[0] != m.num_features or len(x.shape) not in {nn.BatchNorm1d: (1, 2),
                                                            nn.BatchNorm2d: (3,)}[type(m)]:
        raise Unsupported("a batch norm of another width")
    return r.emit("bn", [x], x.shape, params=(m.weight, m.bias))


def _linear(r: _Reader, m: Any, x: _Val) -> _Val:
    if x.shape != (m.in_features,):
        raise Unsupported("a linear layer on another width")
    return r.emit("linear", [x], (m.out_features,), params=(m.weight, m.bias))


def _pool(r: _Reader, m: Any, x: _Val) -> _Val:
    dim = 2 if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) else 1
    sizes = _spatial(x, dim)
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        if m.return_indices:
            raise Unsupported("max pooling returning indices")
        out = _window(sizes, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, dim)
    else:
        out = _window(sizes, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode, dim)
    return r.emit(_module_category(m)[0], [x], (x.shape[0], *out), module=m)


def _adaptive(r: _Reader, m: Any, x: _Val) -> _Val:
    dim = 2 if isinstance(m, nn.AdaptiveAvgPool2d) else 1
    sizes = _spatial(x, dim)
    target = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,) * dim
    if len(target) != dim:
        raise Unsupported("an adaptive pooling size")
    out = tuple(s if t is None else int(t) for s, t in zip(sizes, target))
    return r.emit(_module_category(m)[0], [x], (x.shape[0], *out), module=m)


def _identity(r: _Reader, m: Any, x: _Val) -> _Val:
    return x


def _flatten(r: _Reader, m: Any, x: _Val) -> _Val:
    if (m.start_dim, m.end_dim) != (1, -1):
        raise Unsupported("a flatten of other axes")
    return _flat(x)


def _flat(x: _Val) -> _Val:  # torch.flatten(x, 1): a view (autograd: a pass-through op)
    return _Val(x.raw, (math.prod(x.shape),))


# ---------------------------------------------------------------------------------------------
# composite modules (by forward function)


def _sequential(r: _Reader, m: nn.Sequential, x: _Val) -> _Val:
    for child in m._modules.values():
        x = r.call(child, x)
    return x


def _network(r: _Reader, m: Any, x: _Val) -> _Val:
    return r.call(m.head, r.call(m.encoder, x))


def _darts_encoder(r: _Reader, m: Any, x: _Val) -> _Val:  # eval mode: no drop-path, no aux head
    s0 = s1 = r.call(m.stem, x)
    for cell in m.cells:
        s0, s1 = s1, r.call(cell, s0, s1, None)
    return _flat(r.call(m.pool, s1))


def _darts_cell(r: _Reader, m: Any, s0: _Val, s1: _Val, drop: Any = None) -> _Val:
    states = [r.call(m.preprocess0, s0), r.call(m.preprocess1, s1)]
    for sources, ops in zip(m.inputs, m.ops):
        total = None
        for src, op in zip(sources, ops):
            h = r.call(op, states[src])
            total = h if total is None else r.emit("add", [total, h], _same(total, h))
        if total is None:
            raise Unsupported("a cell node without edges")
        states.append(total)
    parts = [states[i] for i in m.concat]
    return _cat(r, parts)


def _cat(r: _Reader, parts: Sequence[_Val]) -> _Val:
    if not parts or any(p.shape[1:] != parts[0].shape[1:] for p in parts):
        raise Unsupported("a concatenation of different sizes")
    return r.emit("cat", parts, (sum(p.shape[0] for p in parts), *parts[0].shape[1:]))


def _factorized_reduce(r: _Reader, m: Any, x: _Val) -> _Val:
    x = r.call(m.relu, x)  # the shifted copy (pad, slice) keeps the size: pass-through ops
    return r.call(m.bn, _cat(r, [r.call(m.conv_1, x), r.call(m.conv_2, x)]))


def _darts_zero(r: _Reader, m: Any, x: _Val) -> _Val:
    sizes = _spatial(x, m.dim)
    if m.stride != 1:
        sizes = tuple(-(-s // m.stride) for s in sizes)
    return r.emit("mul", [x], (x.shape[0], *sizes))


def _zero(r: _Reader, m: Any, x: _Val) -> _Val:
    return r.emit("mul", [x], x.shape)


def _nb201_cell(r: _Reader, m: Any, x: _Val) -> _Val:
    nodes = [x]
    k = 0
    for target in (1, 2, 3):
        total = r.call(m.edges[k], nodes[0])
        for source in range(1, target):
            h = r.call(m.edges[k + source], nodes[source])
            total = r.emit("add", [total, h], _same(total, h))
        k += target
        nodes.append(total)
    return nodes[3]


def _nb201_reduction(r: _Reader, m: Any, x: _Val) -> _Val:
    a = r.call(m.shortcut, x)
    b = r.call(m.conv_b, r.call(m.conv_a, x))
    return r.emit("add", [a, b], _same(a, b))


_LEAVES: dict[type, Callable[..., _Val]] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.BatchNorm1d: _bn, nn.BatchNorm2d: _bn,
    nn.Linear: _linear, nn.MaxPool1d: _pool, nn.MaxPool2d: _pool, nn.AvgPool1d: _pool,
    nn.AvgPool2d: _pool, nn.AdaptiveAvgPool1d: _adaptive, nn.AdaptiveAvgPool2d: _adaptive,
    nn.ReLU: _identity, nn.Identity: _identity, nn.Dropout: _identity, nn.Flatten: _flatten,
}
_COMPOSITES: dict[Any, Callable[..., Any]] = {}


def _composites() -> dict[Any, Callable[..., Any]]:
    if not _COMPOSITES:  # imported here: the spaces do not depend on the GHN
        from ..core import Network
        from ..ops import darts_ops
        from ..spaces import darts, nb201

        _COMPOSITES.update({
            nn.Sequential.forward: _sequential, Network.forward: _network,
            darts.DartsEncoder.forward: _darts_encoder, darts.DartsCell.forward: _darts_cell,
            darts_ops.FactorizedReduce.forward: _factorized_reduce,
            darts_ops.Zero.forward: _darts_zero, darts_ops.DropPath.forward: _identity,
            nb201.Cell.forward: _nb201_cell, nb201.ResidualReduction.forward: _nb201_reduction,
            nb201.Zero.forward: _zero,
        })
    return _COMPOSITES


def _hooked(mods: Mapping[str, nn.Module]) -> bool:
    from torch.nn.modules import module as _m

    if (_m._global_forward_hooks or _m._global_forward_pre_hooks or _m._global_backward_hooks
            or _m._global_backward_pre_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
               or m._backward_pre_hooks for m in mods.values())


def read_raw(model: nn.Module, inputs: Sequence[torch.Tensor],
             named: tuple[Mapping[str, nn.Parameter], Mapping[str, nn.Module]]
             ) -> tuple[list[_Raw], list[int]]:
    """The raw trace of ``model`` (in eval mode) on ``inputs``, as ``graph._autograd_raw``
    would record it, read from the modules; :class:`Unsupported` where it cannot be."""
    _composites()
    if len(inputs) != 1 or not inputs[0].is_floating_point() or inputs[0].dim() < 2:
        raise Unsupported("not one floating-point input with a batch axis")
    if _hooked(named[1]):
        raise Unsupported("a module with hooks")
    r = _Reader(named)
    x = inputs[0]
    r.raws.append(_Raw((-1, 0), "input", attrs={"name": "input"}))
    out = r.call(model, _Val(0, tuple(int(s) for s in x.shape[1:])))
    if not isinstance(out, _Val):
        raise Unsupported("an output that is not one tensor")
    return r.raws, [out.raw]


__all__ = ["Unsupported", "read_raw"]
