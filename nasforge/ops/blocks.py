"""Convolution, pooling and residual blocks for 1-D (series) and 2-D (image) inputs.

Spaces build their networks from these so that a layer means the same thing in every space.
``dim`` is the number of spatial axes: 1 for ``(N, C, L)`` series, 2 for ``(N, C, H, W)`` images.
"""

from __future__ import annotations

from torch import Tensor, nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d}


def _check_dim(dim: int) -> int:
    if dim not in _CONV:
        raise ValueError(f"dim={dim!r}: expected 1 (series) or 2 (images)")
    return dim


def conv(dim: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
         padding: int = 0, bias: bool = True, *, dilation: int = 1, groups: int = 1) -> nn.Module:
    """A ``Conv1d`` or ``Conv2d`` (square kernel) for ``dim`` spatial axes.

    ``groups=in_channels`` gives a depthwise convolution (separable and dilated convolutions).
    """
    return _CONV[_check_dim(dim)](in_channels, out_channels, kernel_size, stride=stride,
                                  padding=padding, dilation=dilation, groups=groups, bias=bias)


def batch_norm(dim: int, channels: int, affine: bool = True) -> nn.Module:
    """A ``BatchNorm1d`` or ``BatchNorm2d`` over ``channels`` (``affine=False``: no scale, shift)."""
    return _BATCHNORM[_check_dim(dim)](channels, affine=affine)


def max_pool(dim: int, kernel_size: int, stride: int, padding: int = 0) -> nn.Module:
    """A ``MaxPool1d`` or ``MaxPool2d`` (without padding by default)."""
    return _MAXPOOL[_check_dim(dim)](kernel_size, stride=stride, padding=padding)


def avg_pool(dim: int, kernel_size: int, stride: int, padding: int = 0) -> nn.Module:
    """An ``AvgPool1d`` or ``AvgPool2d`` that averages over real inputs only (padding excluded)."""
    return _AVGPOOL[_check_dim(dim)](kernel_size, stride=stride, padding=padding,
                                     count_include_pad=False)


def output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Length of one spatial axis after a conv or pool (PyTorch's floor rule, dilation 1).

    May be zero or negative: callers use that to reject layers that do not fit.
    """
    return (size + 2 * padding - kernel_size) // stride + 1


class ConvBNReLU(nn.Sequential):
    """conv -> (BatchNorm) -> ReLU; the conv has a bias only without BatchNorm."""

    def __init__(self, dim: int, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0, use_batch_norm: bool = False):
        layers: list[nn.Module] = [conv(dim, in_channels, out_channels, kernel_size, stride,
                                        padding, bias=not use_batch_norm)]
        if use_batch_norm:
            layers.append(batch_norm(dim, out_channels))
        layers.append(nn.ReLU())
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two same-size 3x3 convolutions with a skip connection (ResNet basic block).

    ``relu(bn(conv3(relu(bn(conv3(x))))) + skip(x))``: the skip is the identity when channels
    and stride are unchanged, otherwise a 1x1 convolution with that stride (a projection).
    Only the first convolution is strided.
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, stride: int = 1,
                 use_batch_norm: bool = False):
        super().__init__()
        bias = not use_batch_norm
        self.conv1 = conv(dim, in_channels, out_channels, 3, stride, 1, bias=bias)
        self.bn1 = batch_norm(dim, out_channels) if use_batch_norm else nn.Identity()
        self.conv2 = conv(dim, out_channels, out_channels, 3, 1, 1, bias=bias)
        self.bn2 = batch_norm(dim, out_channels) if use_batch_norm else nn.Identity()
        self.relu = nn.ReLU()
        if in_channels == out_channels and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            proj = [conv(dim, in_channels, out_channels, 1, stride, 0, bias=bias)]
            if use_batch_norm:
                proj.append(batch_norm(dim, out_channels))
            self.shortcut = nn.Sequential(*proj)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))
