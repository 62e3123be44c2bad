"""The DARTS cell operations (Liu et al., ICLR 2019) for 1-D series and 2-D images.

Each operation maps ``C`` channels to ``C`` channels; with ``stride=2`` (the edges leaving a
reduction cell's inputs) it halves every spatial axis, rounding up, so odd sizes work too.
The layer structure, and so the parameter count, is that of the DARTS code's ``operations.py``:

- ``sep_conv_KxK``: (ReLU, depthwise KxK, pointwise 1x1, BN) twice; only the first is strided.
- ``dil_conv_KxK``: ReLU, depthwise KxK with dilation 2, pointwise 1x1, BN.
- ``max_pool_3x3`` / ``avg_pool_3x3``: padded 3x3 pooling (the average ignores the padding).
- ``skip_connect``: the identity, or ``FactorizedReduce`` when strided.
- ``none``: zeros (strided like the other edges).
- ``conv_7x1_1x7``: ReLU, 1x7 and 7x1 convolutions, BN (2-D only; used by AmoebaNet).
- ``conv_1x1`` / ``conv_3x3`` / ``conv_5x5``: ReLU, a plain KxK convolution, BN (the dense
  convolutions of DeepNets-1M's operation pool, for the GHN architecture generator).

``affine=False`` drops the BN scale and shift, as the DARTS supernet does. ``dim`` is the number
of spatial axes: 1 for ``(N, C, L)``, 2 for ``(N, C, H, W)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import avg_pool, batch_norm, conv, max_pool

#: the eight candidate operations of the DARTS search space, in the DARTS code's order
PRIMITIVES: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                               "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


class Zero(nn.Module):
    """The ``none`` operation: zeros shaped like the (strided) output of the other edges."""

    def __init__(self, dim: int, stride: int = 1):
        super().__init__()
        self.dim, self.stride = dim, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        index = (slice(None), slice(None)) + (slice(None, None, self.stride),) * self.dim
        return x[index].mul(0.0)


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv (no bias) -> BN: the DARTS cell-input preprocessing and auxiliary layers."""

    def __init__(self, dim: int, c_in: int, c_out: int, kernel: int, stride: int = 1,
                 padding: int = 0, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False),
                         conv(dim, c_in, c_out, kernel, stride, padding, bias=False),
                         batch_norm(dim, c_out, affine))


class DilConv(nn.Sequential):
    """ReLU -> depthwise dilated conv -> pointwise conv -> BN."""

    def __init__(self, dim: int, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False),
                         conv(dim, c_in, c_in, kernel, stride, padding, bias=False,
                              dilation=dilation, groups=c_in),
                         conv(dim, c_in, c_out, 1, bias=False),
                         batch_norm(dim, c_out, affine))


class SepConv(nn.Sequential):
    """Two depthwise-separable convolutions (ReLU, depthwise, pointwise, BN); the first strided."""

    def __init__(self, dim: int, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True):
        super().__init__(DilConv(dim, c_in, c_in, kernel, stride, padding, 1, affine),
                         DilConv(dim, c_in, c_out, kernel, 1, padding, 1, affine))


class FactorizedReduce(nn.Module):
    """Halve every spatial axis with two strided 1x1 convolutions, one shifted by a pixel.

    The two halves of the output channels come from the even and the odd positions, so no input
    position is skipped entirely. The shifted path is zero-padded at the end of each axis, so both
    paths have ``ceil(size / 2)`` positions for odd sizes as well (the DARTS code needs even
    sizes); for even sizes the result is exactly the DARTS code's.
    """

    def __init__(self, dim: int, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.dim = dim
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = conv(dim, c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = conv(dim, c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = batch_norm(dim, c_out, affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1) * self.dim)[(slice(None), slice(None)) + (slice(1, None),) * self.dim]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Conv7x1_1x7(nn.Sequential):
    """ReLU -> 1x7 conv -> 7x1 conv -> BN (a factorised 7x7 convolution, images only)."""

    def __init__(self, c: int, stride: int, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c, c, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
                         nn.Conv2d(c, c, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
                         nn.BatchNorm2d(c, affine=affine))


def _skip(dim: int, c: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(dim, c, c, affine)


def _conv_7x1_1x7(dim: int, c: int, stride: int, affine: bool) -> nn.Module:
    if dim != 2:
        raise ValueError("conv_7x1_1x7 is a factorised 2-D convolution; it has no 1-D form "
                         "(use sep_conv_7x7 for series)")
    return Conv7x1_1x7(c, stride, affine)


OpFactory = Callable[[int, int, int, bool], nn.Module]

#: name -> factory(dim, channels, stride, affine); the DARTS primitives and the extra operations
#: of the NASNet and AmoebaNet cells
OPS: dict[str, OpFactory] = {
    "none": lambda dim, c, stride, affine: Zero(dim, stride),
    "max_pool_3x3": lambda dim, c, stride, affine: max_pool(dim, 3, stride, padding=1),
    "avg_pool_3x3": lambda dim, c, stride, affine: avg_pool(dim, 3, stride, padding=1),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda dim, c, stride, affine: SepConv(dim, c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda dim, c, stride, affine: SepConv(dim, c, c, 5, stride, 2, affine),
    "sep_conv_7x7": lambda dim, c, stride, affine: SepConv(dim, c, c, 7, stride, 3, affine),
    "dil_conv_3x3": lambda dim, c, stride, affine: DilConv(dim, c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda dim, c, stride, affine: DilConv(dim, c, c, 5, stride, 4, 2, affine),
    "conv_7x1_1x7": _conv_7x1_1x7,
    "conv_1x1": lambda dim, c, stride, affine: ReLUConvBN(dim, c, c, 1, stride, 0, affine),
    "conv_3x3": lambda dim, c, stride, affine: ReLUConvBN(dim, c, c, 3, stride, 1, affine),
    "conv_5x5": lambda dim, c, stride, affine: ReLUConvBN(dim, c, c, 5, stride, 2, affine),
}

#: operations without parameters (their output is not a learned function of the input)
PARAMETER_FREE: frozenset[str] = frozenset({"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"})


def make_op(name: str, dim: int, channels: int, stride: int = 1, affine: bool = True) -> nn.Module:
    """One DARTS operation on ``channels`` channels; ``stride`` 1 or 2."""
    try:
        factory = OPS[name]
    except KeyError:
        raise ValueError(f"unknown DARTS operation {name!r}; expected one of "
                         f"{', '.join(OPS)}") from None
    if stride not in (1, 2):
        raise ValueError(f"stride={stride!r}; expected 1 or 2")
    return factory(dim, channels, stride, affine)


class DropPath(nn.Module):
    """Drop-path: in training, zero each sample's output with probability ``p`` and scale the
    kept ones by ``1 / (1 - p)``; the identity in eval mode or with ``p = 0``.

    The per-sample mask is an ``nn.Dropout`` applied to ones, so the training engine draws it
    from its seeded dropout generator (``training.dropout_from``) and runs are reproducible.
    ``p`` may change between steps (DARTS ramps it linearly over the epochs).
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(p)

    @property
    def p(self) -> float:
        return self.dropout.p

    @p.setter
    def p(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"drop-path probability {value!r}; expected a number in [0, 1)")
        self.dropout.p = float(value)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.dropout.p == 0.0:
            return x
        mask = self.dropout(torch.ones((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype,
                                       device=x.device))
        return x * mask


__all__ = ["PRIMITIVES", "OPS", "PARAMETER_FREE", "make_op", "DropPath", "Zero", "ReLUConvBN",
           "DilConv", "SepConv", "FactorizedReduce", "Conv7x1_1x7"]
