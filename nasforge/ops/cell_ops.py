"""The operator grammar of POPNAS-style cells and the layers each operator builds (1-D and 2-D).

An operator is a short text (POPNASv3's grammar, the subset nasforge builds)::

    identity                 identity (a 1x1 conv-BN-act when the shape must change)
    3x3 conv   7 conv        conv -> BN -> act (``3x3:2dr conv``: dilation 2)
    3x3 dconv  7 dconv       depthwise-separable conv -> BN -> act (dilation as for conv)
    1x3-3x1 conv             two stacked conv-BN-act (the first carries the stride)
    2x2 maxpool  2 avgpool   pooling (+ 1x1 conv-BN-act when the channels change)
    lstm   gru               (series only) a recurrent layer over the time axis -> BN

Kernels are ``HxW`` for images and ``K`` for series (``kernel_dims`` tells which). Every layer
uses TensorFlow's ``same`` padding, so a stride-1 op keeps the size and a stride-2 op gives
``ceil(n / 2)``, whatever the kernel; padding is fixed at build time from the input size (the
networks are built for one task shape). A dilated conv, a recurrent layer in a reduction
position run at stride 1 and are followed by a 2x2 (2) max-pool, as in the reference code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArchitectureError
from .blocks import batch_norm, conv

MAX_KERNEL = 64
MAX_DILATION = 16

_KERNEL = r"\d+(?:x\d+)?"
_CONV = re.compile(rf"^(?P<k>{_KERNEL})(?::(?P<d>\d+)dr)? (?P<t>conv|dconv)$")
_STACK = re.compile(rf"^(?P<k1>{_KERNEL})-(?P<k2>{_KERNEL}) conv$")
_POOL = re.compile(rf"^(?P<k>{_KERNEL}) (?P<t>max|avg)pool$")

GRAMMAR = ("identity, 'K conv', 'K:Ddr conv', 'K dconv', 'K:Ddr dconv', 'K1-K2 conv', "
           "'K maxpool', 'K avgpool', lstm, gru (series only); K is HxW for images (3x3) and "
           "one number for series (7)")


@dataclass(frozen=True)
class OpSpec:
    """A parsed operator: ``kind`` (identity, conv, dconv, stack, maxpool, avgpool, lstm, gru),
    its kernels (one tuple per conv, one number per spatial axis), dilation and axes."""

    text: str
    kind: str
    kernels: tuple[tuple[int, ...], ...] = ()
    dilation: int = 1
    dims: int | None = None  # 1 or 2 spatial axes; None: any (identity)

    def __str__(self) -> str:
        return self.text


def _kernel(token: str, text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in token.split("x"))
    if any(not 1 <= v <= MAX_KERNEL for v in values):
        raise ArchitectureError(f"operator {text!r}: kernel {token!r} out of range; expected "
                                f"sizes from 1 to {MAX_KERNEL}")
    return values


def parse_op(text: str) -> OpSpec:
    """The ``OpSpec`` of an operator text; ``ArchitectureError`` naming the grammar if malformed."""
    if not isinstance(text, str):
        raise ArchitectureError(f"operator {text!r}: expected a text such as '3x3 conv'")
    if text in ("identity",):
        return OpSpec(text, "identity")
    if text in ("lstm", "gru"):
        return OpSpec(text, text, dims=1)
    m = _CONV.match(text)
    if m:
        k = _kernel(m["k"], text)
        d = int(m["d"]) if m["d"] else 1
        if not 1 <= d <= MAX_DILATION:
            raise ArchitectureError(f"operator {text!r}: dilation {d} out of range; expected "
                                    f"1 to {MAX_DILATION}")
        if m["d"] is not None and d == 1:
            raise ArchitectureError(f"operator {text!r}: write dilation 1 without ':1dr'")
        return OpSpec(text, m["t"], (k,), d, len(k))
    m = _STACK.match(text)
    if m:
        k1, k2 = _kernel(m["k1"], text), _kernel(m["k2"], text)
        if len(k1) != len(k2):
            raise ArchitectureError(f"operator {text!r}: the two kernels have different numbers "
                                    "of axes")
        return OpSpec(text, "stack", (k1, k2), 1, len(k1))
    m = _POOL.match(text)
    if m:
        k = _kernel(m["k"], text)
        return OpSpec(text, m["t"] + "pool", (k,), 1, len(k))
    raise ArchitectureError(f"unknown operator {text!r}; expected one of: {GRAMMAR}")


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's ``same`` rule: output ``ceil(size / stride)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class Pad(nn.Module):
    """Constant padding fixed at build time (``value`` -inf for max-pooling)."""

    def __init__(self, pads: Sequence[tuple[int, int]], value: float = 0.0):
        super().__init__()
        flat: list[int] = []
        for before, after in reversed(list(pads)):  # F.pad wants the last axis first
            flat += [before, after]
        self.pads = tuple(flat)
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not any(self.pads):
            return x
        return F.pad(x, self.pads, value=self.value)


def _pads(sizes: Sequence[int], kernel: Sequence[int], stride: int, dilation: int = 1
          ) -> list[tuple[int, int]]:
    return [same_padding(n, k, stride, dilation) for n, k in zip(sizes, kernel)]


def out_sizes(sizes: Sequence[int], stride: int) -> tuple[int, ...]:
    """Spatial sizes after a ``same`` op of ``stride``."""
    return tuple(-(-n // stride) for n in sizes)


class ConvBNAct(nn.Sequential):
    """same-pad -> conv (no bias) -> BN -> act; ``depthwise`` makes it separable (depthwise
    ``kernel`` conv, then a pointwise 1x1 conv)."""

    def __init__(self, dims: int, c_in: int, c_out: int, kernel: Sequence[int],
                 sizes: Sequence[int], stride: int = 1, dilation: int = 1,
                 depthwise: bool = False, act: bool = True):
        kernel = tuple(kernel)
        layers: list[nn.Module] = [Pad(_pads(sizes, kernel, stride, dilation))]
        if depthwise:
            layers += [conv(dims, c_in, c_in, kernel, stride, 0, bias=False, dilation=dilation,
                            groups=c_in),
                       conv(dims, c_in, c_out, 1, 1, 0, bias=False)]
        else:
            layers.append(conv(dims, c_in, c_out, kernel, stride, 0, bias=False,
                               dilation=dilation))
        layers.append(batch_norm(dims, c_out))
        if act:
            layers.append(nn.SiLU())
        super().__init__(*layers)


class SamePool(nn.Module):
    """Max or average pooling with ``same`` padding (padding never counted in an average)."""

    def __init__(self, dims: int, kind: str, kernel: Sequence[int], sizes: Sequence[int],
                 stride: int):
        super().__init__()
        kernel = tuple(kernel)
        self.max = kind == "maxpool"
        self.pad = Pad(_pads(sizes, kernel, stride), value=-math.inf if self.max else 0.0)
        cls = ({1: nn.MaxPool1d, 2: nn.MaxPool2d} if self.max else {1: nn.AvgPool1d, 2: nn.AvgPool2d})
        self.pool = cls[dims](kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.pad(x))
        if self.max or not any(self.pad.pads):
            return out
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        return out / self.pool(self.pad(ones))


class Recurrent(nn.Module):
    """An LSTM or GRU over the length axis of ``(N, C, L)``, all steps returned, then BN."""

    def __init__(self, kind: str, c_in: int, c_out: int):
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(c_in, c_out, batch_first=True)
        self.bn = batch_norm(1, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.transpose(1, 2))
        return self.bn(out.transpose(1, 2))


def build_op(spec: OpSpec, dims: int, c_in: int, c_out: int, sizes: Sequence[int],
             stride: int) -> nn.Module:
    """The layer of ``spec`` from ``c_in`` channels at ``sizes`` to ``c_out`` channels at
    ``out_sizes(sizes, stride)``."""
    if spec.dims is not None and spec.dims != dims:
        want = "HxW kernels (images)" if dims == 2 else "one-number kernels (series)"
        raise ArchitectureError(f"operator {spec.text!r} is {spec.dims}-D; this task needs {want}")
    ones = (1,) * dims
    if spec.kind == "identity":
        if stride == 1 and c_in == c_out:
            return nn.Identity()
        return ConvBNAct(dims, c_in, c_out, ones, sizes, stride)
    if spec.kind in ("maxpool", "avgpool"):
        pool = SamePool(dims, spec.kind, spec.kernels[0], sizes, stride)
        if c_in == c_out:
            return pool
        return nn.Sequential(pool, ConvBNAct(dims, c_in, c_out, ones, out_sizes(sizes, stride)))
    # dilated convs and recurrent layers cannot stride: stride 1, then a 2x2 max-pool
    post_pool = stride > 1 and (spec.dilation > 1 or spec.kind in ("lstm", "gru"))
    op_stride = 1 if post_pool else stride
    if spec.kind in ("lstm", "gru"):
        layer: nn.Module = Recurrent(spec.kind, c_in, c_out)
    elif spec.kind in ("conv", "dconv"):
        layer = ConvBNAct(dims, c_in, c_out, spec.kernels[0], sizes, op_stride, spec.dilation,
                          depthwise=spec.kind == "dconv")
    elif spec.kind == "stack":
        layer = nn.Sequential(
            ConvBNAct(dims, c_in, c_out, spec.kernels[0], sizes, op_stride),
            ConvBNAct(dims, c_out, c_out, spec.kernels[1], out_sizes(sizes, op_stride)))
    else:  # pragma: no cover - parse_op knows no other kind
        raise ArchitectureError(f"operator {spec.text!r}: kind {spec.kind!r} cannot be built")
    if post_pool:
        return nn.Sequential(layer, SamePool(dims, "maxpool", (2,) * dims, sizes, stride))
    return layer


__all__ = ["OpSpec", "parse_op", "build_op", "ConvBNAct", "SamePool", "Recurrent", "Pad",
           "same_padding", "out_sizes", "GRAMMAR"]
