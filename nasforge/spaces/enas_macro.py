"""The ENAS macro space (Pham et al., ICML 2018, section 2.3): a chain of layers, each one
operation, with skip connections to any earlier layer.

The network: a stem (3x3 conv, BN) gives node 0; layer ``i`` (0-based) reads node ``i`` (the
previous layer's output, or the stem) and outputs node ``i + 1``::

    node[i + 1] = BN(op_i(node[i]) + sum(node[j] for j in skips_i))      skips_i within 0..i-1

so layer ``i`` has ``i`` skip decisions, one per node before its input (as in ENAS, where the
input itself is always read and the skip bits index the layers before it). Operations (ENAS's
six): ``conv_3x3`` / ``conv_5x5`` (conv, BN, ReLU), ``sep_conv_3x3`` / ``sep_conv_5x5``
(depthwise conv, pointwise conv, BN, ReLU), ``max_pool_3x3`` / ``avg_pool_3x3`` (stride 1).
After layers ``L//3 - 1`` and ``2 * (L//3) - 1`` (ENAS's pool layers; none after the last layer)
every node so far is halved spatially and its channels doubled by a factorized reduction, so
later skips still match in shape. Global average pooling and a linear layer end the network.

The text lists the layers, separated by `` | ``; each is its operation followed by ``+j`` for
every node ``j`` it adds (ascending)::

    conv_3x3 | sep_conv_5x5 +0 | max_pool_3x3 | conv_5x5 +0 +2

Sequential view: per layer, the operation (``str``), then one decision per earlier node
``j = 0 .. i-1``: ``1`` (add node ``j``) or ``0``; ``L + L (L - 1) / 2`` decisions. Images
``(C, H, W)`` and series ``(C, L)`` (the same operations with 1-D kernels).

Defaults are CPU-sized (6 layers, 16 channels); ENAS searched with 12 layers of 36 channels and
trained the final network with 24 layers of 96 channels (``layers=24, channels=96``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Sequence

import numpy as np
import torch
from torch import nn

from ..core import (Architecture, Decision, Network, SearchSpace, Task, TextArchitecture,
                    conv_dims)
from ..errors import ArchitectureError, ConfigError, quote_text
from ..ops.blocks import avg_pool, batch_norm, conv, max_pool
from ..ops.darts_ops import FactorizedReduce
from ..registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..graph import ArchGraph

#: ENAS's six macro operations
MACRO_OPS: tuple[str, ...] = ("conv_3x3", "conv_5x5", "sep_conv_3x3", "sep_conv_5x5",
                              "max_pool_3x3", "avg_pool_3x3")
MAX_LAYERS = 64
MAX_CHANNELS = 1024


@dataclass(frozen=True, eq=False)
class MacroArch(TextArchitecture):
    """A macro architecture: ``ops[i]`` and ``skips[i]`` (ascending nodes ``< i``) per layer."""

    ops: tuple[str, ...]
    skips: tuple[tuple[int, ...], ...]
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ops = tuple(str(o) for o in self.ops)
        skips = tuple(tuple(int(j) for j in s) for s in self.skips)
        if not ops:
            raise ArchitectureError("enas_macro: an architecture has at least one layer")
        if len(skips) != len(ops):
            raise ArchitectureError(f"enas_macro: {len(ops)} operations but {len(skips)} skip lists")
        for i, (op, s) in enumerate(zip(ops, skips)):
            if op not in MACRO_OPS:
                raise ArchitectureError(f"enas_macro: layer {i} has unknown operation {op!r}; "
                                        f"expected one of {', '.join(MACRO_OPS)}")
            if list(s) != sorted(set(s)) or any(not 0 <= j < i for j in s):
                raise ArchitectureError(
                    f"enas_macro: layer {i} adds nodes {list(s)}; expected distinct ascending "
                    f"nodes from 0 to {i - 1} (layer {i} reads node {i} itself)")
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "skips", skips)
        text = " | ".join(" ".join([op, *(f"+{j}" for j in s)]) for op, s in zip(ops, skips))
        object.__setattr__(self, "_text", text)

    @property
    def layers(self) -> int:
        return len(self.ops)


_SKIP = re.compile(r"\+(\d{1,4})")


def parse_macro(text: str) -> MacroArch:
    """Parse the space's text strictly; errors name the layer and the bad token."""
    if not isinstance(text, str):
        raise ArchitectureError(f"enas_macro: expected an architecture text, got "
                                f"{type(text).__name__}")
    if not text.strip():
        raise ArchitectureError("enas_macro: empty architecture text; expected layers like "
                                "'conv_3x3 | sep_conv_5x5 +0'")
    ops, skips = [], []
    for i, part in enumerate(text.split("|")):
        tokens = part.split()
        if not tokens:
            raise ArchitectureError(f"enas_macro: layer {i} of {quote_text(text)} is empty")
        op, rest = tokens[0], tokens[1:]
        if op not in MACRO_OPS:
            raise ArchitectureError(f"enas_macro: layer {i} of {quote_text(text)}: unknown operation "
                                    f"{quote_text(op)}; expected one of {', '.join(MACRO_OPS)}")
        nodes = []
        for token in rest:
            m = _SKIP.fullmatch(token)
            if m is None:
                raise ArchitectureError(f"enas_macro: layer {i} of {quote_text(text)}: {quote_text(token)} "
                                        "is not a skip '+j' (j an earlier node number)")
            nodes.append(int(m.group(1)))
        ops.append(op)
        skips.append(tuple(nodes))
    arch = MacroArch(tuple(ops), tuple(skips))
    if str(arch) != " | ".join(" ".join(p.split()) for p in text.split("|")):
        # e.g. '+1 +0': the text must be canonical for the round trip to hold
        raise ArchitectureError(f"enas_macro: {quote_text(text)} is not in canonical form; expected "
                                f"{quote_text(str(arch))}")
    return arch


def reduction_layers(layers: int) -> tuple[int, ...]:
    """Layers after which every node is reduced (ENAS's pool layers), never the last layer."""
    d = layers // 3
    return tuple(sorted({p for p in (d - 1, 2 * d - 1) if 0 <= p < layers - 1}))


# --------------------------------------------------------------------------------------------
# network (the fixed network and the weight-sharing supernet are the same module, holding one
# or all operations per layer)


class ConvBranch(nn.Sequential):
    """conv KxK (no bias) -> BN -> ReLU, or depthwise KxK -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, dim: int, channels: int, kernel: int, separable: bool):
        pad = kernel // 2
        if separable:
            layers = [conv(dim, channels, channels, kernel, 1, pad, bias=False, groups=channels),
                      conv(dim, channels, channels, 1, bias=False)]
        else:
            layers = [conv(dim, channels, channels, kernel, 1, pad, bias=False)]
        super().__init__(*layers, batch_norm(dim, channels), nn.ReLU(inplace=False))


def make_macro_op(name: str, dim: int, channels: int) -> nn.Module:
    """One macro operation on ``channels`` channels, shape-preserving."""
    if name in ("conv_3x3", "conv_5x5", "sep_conv_3x3", "sep_conv_5x5"):
        return ConvBranch(dim, channels, int(name[-1]), name.startswith("sep"))
    if name == "max_pool_3x3":
        return max_pool(dim, 3, 1, padding=1)
    if name == "avg_pool_3x3":
        return avg_pool(dim, 3, 1, padding=1)
    raise ArchitectureError(f"enas_macro: unknown operation {name!r}; expected one of "
                            f"{', '.join(MACRO_OPS)}")


class MacroEncoder(nn.Module):
    """Stem, ``len(op_sets)`` layers and the fixed reductions; ``op_sets[i]`` are the operations
    layer ``i`` holds (one for a built architecture, all for the ENAS supernet). ``forward``
    runs the architecture set with ``use`` (a built network is fixed to its own)."""

    def __init__(self, dim: int, in_channels: int, channels: int, op_sets: Sequence[Sequence[str]]):
        super().__init__()
        self.dim, self.num_layers = dim, len(op_sets)
        self.stem = nn.Sequential(conv(dim, in_channels, channels, 3, 1, 1, bias=False),
                                  batch_norm(dim, channels))
        self.layer_ops = nn.ModuleList(
            nn.ModuleDict({op: make_macro_op(op, dim, c) for op in ops})
            for ops, c in zip(op_sets, self._widths(channels)))
        self.layer_bns = nn.ModuleList(batch_norm(dim, c) for c in self._widths(channels))
        self.reduce_after = reduction_layers(self.num_layers)
        self.reductions = nn.ModuleDict()
        c = channels
        for p in self.reduce_after:
            self.reductions[str(p)] = nn.ModuleList(FactorizedReduce(dim, c, 2 * c)
                                                    for _ in range(p + 2))
            c *= 2
        self.out_channels = c
        self.arch: MacroArch | None = None

    def _widths(self, channels: int) -> list[int]:
        widths, c = [], channels
        for i in range(self.num_layers):
            widths.append(c)
            if i in reduction_layers(self.num_layers):
                c *= 2
        return widths

    def use(self, arch: MacroArch) -> None:
        """Run ``arch`` from now on (its layer count must match; its ops must be held)."""
        if arch.layers != self.num_layers:
            raise ArchitectureError(f"enas_macro: {arch.layers} layers; this network has "
                                    f"{self.num_layers}")
        for i, op in enumerate(arch.ops):
            if op not in self.layer_ops[i]:
                raise ArchitectureError(f"enas_macro: layer {i} holds {list(self.layer_ops[i])}, "
                                        f"not {op!r}")
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arch = self.arch
        if arch is None:
            raise RuntimeError("enas_macro: no architecture set; call use(arch) first")
        nodes = [self.stem(x)]
        for i in range(self.num_layers):
            out = self.layer_ops[i][arch.ops[i]](nodes[i])
            for j in arch.skips[i]:
                out = out + nodes[j]
            nodes.append(self.layer_bns[i](out))
            if i in self.reduce_after:
                nodes = [fr(n) for fr, n in zip(self.reductions[str(i)], nodes)]
        return nodes[-1].mean(dim=tuple(range(2, 2 + self.dim)))


@register("spaces", "enas_macro")
class EnasMacroSpace(SearchSpace):
    """ENAS macro search space (see the module docstring); ``layers``, ``channels`` (stem width)."""

    name = "enas_macro"
    kinds = ("image", "series")
    ops = MACRO_OPS

    def __init__(self, *, layers: int = 6, channels: int = 16):
        for key, value, high in (("layers", layers, MAX_LAYERS), ("channels", channels, MAX_CHANNELS)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ConfigError(f"enas_macro: {key}={value!r}; expected an integer from 1 to {high}")
        self.layers, self.channels = layers, channels

    def options(self) -> dict[str, Any]:
        return {"layers": self.layers, "channels": self.channels}

    # -- text and sequential view -------------------------------------------------------------
    def parse(self, text: str) -> MacroArch:
        arch = parse_macro(text)
        if arch.layers != self.layers:
            raise ArchitectureError(f"enas_macro: {quote_text(text)} has {arch.layers} layers; this "
                                    f"space has layers={self.layers}")
        return arch

    @property
    def num_decisions(self) -> int:
        return self.layers + self.layers * (self.layers - 1) // 2

    def _position(self, p: int) -> tuple[int, int]:
        """(layer, -1 for its operation or the node number of a skip decision) of decision ``p``."""
        layer = 0
        while p > layer:
            p -= layer + 1
            layer += 1
        return layer, p - 1

    def choices(self, prefix: Sequence[Decision]) -> list[Decision]:
        p = len(prefix)
        if p > self.num_decisions:
            raise ArchitectureError(f"enas_macro: prefix of {p} decisions; an architecture has "
                                    f"{self.num_decisions}")
        if p == self.num_decisions:
            return []
        return list(MACRO_OPS) if self._position(p)[1] < 0 else [0, 1]

    def state_key(self, prefix: Sequence[Decision]) -> Hashable:
        return (len(prefix), prefix[-1] if prefix else None)

    def to_decisions(self, arch: Architecture) -> tuple[Decision, ...]:
        a = self._check(arch)
        out: list[Decision] = []
        for i, (op, s) in enumerate(zip(a.ops, a.skips)):
            out.append(op)
            out += [1 if j in s else 0 for j in range(i)]
        return tuple(out)

    def from_decisions(self, decisions: Sequence[Decision]) -> MacroArch:
        decisions = list(decisions)
        if len(decisions) != self.num_decisions:
            raise ArchitectureError(f"enas_macro: {len(decisions)} decisions; expected "
                                    f"{self.num_decisions} ({self.layers} layers)")
        ops: list[str] = []
        skips: list[tuple[int, ...]] = []
        k = 0
        for i in range(self.layers):
            op = decisions[k]
            if not isinstance(op, str) or op not in MACRO_OPS:
                raise ArchitectureError(f"enas_macro: decision {k} = {op!r}; expected an "
                                        f"operation, one of {', '.join(MACRO_OPS)}")
            bits = decisions[k + 1:k + 1 + i]
            for b, bit in enumerate(bits):
                if isinstance(bit, bool) or bit not in (0, 1):
                    raise ArchitectureError(f"enas_macro: decision {k + 1 + b} = {bit!r}; expected "
                                            "0 or 1 (skip from an earlier node)")
            ops.append(op)
            skips.append(tuple(j for j, bit in enumerate(bits) if bit == 1))
            k += 1 + i
        return MacroArch(tuple(ops), tuple(skips))

    def sample(self, rng: np.random.Generator) -> MacroArch:
        """Uniform: each operation uniformly, each skip with probability 1/2."""
        ops = tuple(MACRO_OPS[int(i)] for i in rng.integers(len(MACRO_OPS), size=self.layers))
        skips = tuple(tuple(int(j) for j in np.flatnonzero(rng.integers(2, size=i)))
                      for i in range(self.layers))
        return MacroArch(ops, skips)

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> MacroArch:
        """Change one layer's operation, or flip one skip connection."""
        a = self._check(arch)
        n_skips = self.layers * (self.layers - 1) // 2
        if n_skips and rng.random() < 0.5:
            k = int(rng.integers(n_skips))
            i = 1
            while k >= i:
                k -= i
                i += 1
            s = set(a.skips[i]) ^ {k}
            skips = a.skips[:i] + (tuple(sorted(s)),) + a.skips[i + 1:]
            return MacroArch(a.ops, skips)
        i = int(rng.integers(self.layers))
        others = [op for op in MACRO_OPS if op != a.ops[i]]
        ops = a.ops[:i] + (others[int(rng.integers(len(others)))],) + a.ops[i + 1:]
        return MacroArch(ops, a.skips)

    # -- features ---------------------------------------------------------------------------------
    @property
    def encoding_size(self) -> int:
        return self.layers * len(MACRO_OPS) + self.layers * (self.layers - 1) // 2

    def encode(self, arch: Architecture) -> np.ndarray:
        """Per layer a one-hot of its operation (``MACRO_OPS`` order), then every skip bit in
        decision order (layer 1's, layer 2's, ...)."""
        a = self._check(arch)
        onehot = np.zeros((self.layers, len(MACRO_OPS)), dtype=np.float32)
        onehot[np.arange(self.layers), [MACRO_OPS.index(op) for op in a.ops]] = 1.0
        bits = [1.0 if j in s else 0.0 for i, s in enumerate(a.skips) for j in range(i)]
        return np.concatenate([onehot.reshape(-1), np.asarray(bits, dtype=np.float32)])

    @property
    def op_vocab(self) -> tuple[str, ...]:
        return ("input", *MACRO_OPS, "add", "output")

    def graph(self, arch: Architecture) -> "ArchGraph":
        """Operations as nodes: 0 the stem output (``input``); per layer its operation, which
        reads the layer's input, then, when the layer has skips, an ``add`` node reading the
        operation and every skipped node; the last layer's output feeds ``output``.
        Attributes: ``layer`` (of an operation or add node)."""
        from ..graph import ArchGraph

        a = self._check(arch)
        ops, attrs, edges = ["input"], [{}], []
        node_of = [0]  # graph node holding each network node (0: stem)
        for i, (op, s) in enumerate(zip(a.ops, a.skips)):
            ops.append(op)
            attrs.append({"layer": float(i)})
            edges.append((node_of[i], len(ops) - 1))
            out = len(ops) - 1
            if s:
                ops.append("add")
                attrs.append({"layer": float(i)})
                edges += [(out, len(ops) - 1)] + [(node_of[j], len(ops) - 1) for j in s]
                out = len(ops) - 1
            node_of.append(out)
        ops.append("output")
        attrs.append({})
        edges.append((node_of[-1], len(ops) - 1))
        return ArchGraph(ops=tuple(ops), edges=tuple(edges), inputs=(0,), outputs=(len(ops) - 1,),
                         attrs=tuple(attrs))

    # -- building -------------------------------------------------------------------------------
    def dim(self, task: Task) -> int:
        """1 for series ``(C, L)``, 2 for images ``(C, H, W)``; ``ArchitectureError`` otherwise."""
        return conv_dims(task, "enas_macro")

    def check(self, arch: Architecture, task: Task) -> None:
        a = self._check(arch)
        self.dim(task)
        if a.layers != self.layers:
            raise ArchitectureError(f"enas_macro: {a.layers} layers; this space has {self.layers}")

    def build(self, arch: Architecture, task: Task) -> Network:
        a = self._check(arch)
        self.check(a, task)
        encoder = MacroEncoder(self.dim(task), task.input_shape[0], self.channels,
                               [[op] for op in a.ops])
        encoder.use(a)
        return Network(encoder, nn.Linear(encoder.out_channels, task.num_classes))

    def _check(self, arch: Architecture) -> MacroArch:
        if not isinstance(arch, MacroArch):
            raise ArchitectureError(f"enas_macro: {arch!r} is not an ENAS macro architecture")
        return arch


__all__ = ["MACRO_OPS", "MacroArch", "parse_macro", "reduction_layers", "make_macro_op",
           "MacroEncoder", "EnasMacroSpace"]
