"""Cost of a network: parameter count, FLOPs of one forward pass, and inference latency."""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ConfigError


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _dtype_of(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on a batch of one input of ``input_shape`` (eval mode).

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-add of
    convolutions and matrix products (halve it for MACs); element-wise ops, pooling, norms and
    activations are not counted, nor are biases.
    """
    x = torch.zeros(1, *input_shape, device=_device_of(model), dtype=_dtype_of(model))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def measure_latency_ms(model: nn.Module, input_shape: Sequence[int], *, batch: int = 1,
                       repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of a forward pass, in eval mode without grad, on the model's device."""
    if repeats < 1 or warmup < 0 or batch < 1:
        raise ConfigError(f"batch={batch}, repeats={repeats}, warmup={warmup}; "
                         "expected batch >= 1, repeats >= 1, warmup >= 0")
    device = _device_of(model)
    x = torch.zeros(batch, *input_shape, device=device, dtype=_dtype_of(model))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return float(statistics.median(times))


__all__ = ["count_params", "count_flops", "measure_latency_ms"]
