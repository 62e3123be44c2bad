"""The chain CNN space of MetaQNN (Baker et al., 2017) as used by DP-NAS (Mundt et al., 2021).

An architecture is a chain of layers, written as a DP-NAS net string::

    [C(32,5,1,2,1), P(4,4,0,0), C(32,3,1,1,0), C(1024,1,1,0,1), C(512,3,1,0,1), SM(10)]

- ``C(features, kernel, stride, padding, skip)``: ``skip`` 1 is a plain conv -> (BatchNorm) ->
  ReLU; ``skip`` 0 is a residual block of two same-size 3x3 convolutions (DP-NAS's odd
  convention), always written ``C(f,3,stride,1,0)``.
- ``P(size, stride, 0, 0)``: max pooling without padding.
- ``FC(units)``: a dense layer of the classifier; ``SM(classes)``: the classifier, always last.

``parse`` accepts any whitespace between tokens; ``str`` gives the canonical text (``", "``
between layers, none inside a layer). Malformed text raises ``ArchitectureError`` naming the
character offset, the layer index and what was expected.

The sequential view has one decision per layer: ``("C", f, k, s, p, skip)``, ``("P", size,
stride)``, ``("FC", units)`` and ``("SM", classes)`` (the class count is part of the decision,
so ``from_decisions`` inverts ``to_decisions`` exactly for any architecture). The space tracks the spatial size along a
prefix (from ``input_shape``, ``(C, H, W)`` or ``(C, L)``, or square ``input_size`` images) and
offers only layers that keep the architecture completable. The rules, after DP-NAS's state
enumerator (``lib/MetaQNN/state_enumerator.py``) and MetaQNN:

- conv: kernel ``k`` in ``kernels`` with ``k`` < the current size; padding 0 or ``(k-1)//2``;
  stride ``large_kernel_stride`` for ``k >= large_kernel``, else 1. Adds 1 to the depth.
- residual block (``allow_residual``): 3x3, stride 1, padding 1, any of ``features``, only while
  the size is > 3 (as DP-NAS). Adds 2 to the depth, as DP-NAS's wrn state does.
- pooling: only right after a conv or residual block (MetaQNN's defaults: no initial and no
  consecutive pooling; both are options); size < the current size, stride <= size and, with
  ``pool_exact_fit``, windows that tile the map exactly, ``(n - size) % stride == 0`` (DP-NAS's
  ``check_stride_fit``).
- FC / SM after a conv, residual block or pool once the depth is >= ``min_conv`` (or no kernel
  fits the map any more, as DP-NAS), with the spatial size <= ``max_image_size`` and
  ``channels * prod(size) <= max_num_fc_input``. FC sizes never grow (MetaQNN), at most
  ``max_fc`` of them; the depth never exceeds ``max_conv``.

Deviations from DP-NAS, on purpose:

- Convs use ``large_kernel_stride`` (DP-NAS's README says stride 2 for 7, 9, 11; its code uses
  stride 1 only) and PyTorch's floor rule for the output size: DP-NAS's exact-fit test on strided
  convs would forbid every odd kernel on even-sized maps.
- DP-NAS rejects an architecture whose classifier input map is larger than ``max_image_size`` or
  has more than ``max_num_fc_input`` values only when it is evaluated (zero reward); here these
  are constraints of the space, and choices never lead into a dead end, so every sampled
  architecture is valid. A residual block is not offered when it
  would exceed ``max_conv`` (DP-NAS may overshoot by one).
- ``build`` enforces only what the task physically needs: every spatial size >= 1 and the
  classifier input <= ``max_num_fc_input``. ``max_image_size`` and the depth / kernel / feature
  lists are rules of the search (``validate`` checks them), so a hand-written DP-NAS string
  builds for any task it fits.
- The head is built for ``task.num_classes`` whatever ``SM(n)`` says, as DP-NAS builds its
  classifier from the dataset; ``SM(n)`` records the class count the space sampled for.
- The residual block is a post-activation ResNet basic block (DP-NAS uses a pre-activation WRN
  block); FC layers have no BatchNorm and there is no dropout.
- ``state_key`` buckets the spatial size (MetaQNN's representation-size buckets; powers of two
  by default, ``size_buckets`` to choose) while ``choices`` track exact sizes (as DP-NAS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, NamedTuple, Sequence

import numpy as np
from torch import nn

from ..core import Architecture, Network, SearchSpace, Task
from ..errors import ArchitectureError, ConfigError
from ..ops.blocks import ConvBNReLU, ResidualBlock, max_pool, output_size
from ..registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..graph import ArchGraph

Layer = tuple  # ("C", f, k, s, p, skip) | ("P", size, stride) | ("FC", units) | ("SM", classes)

# numbers each layer takes in the text, and what they mean (for error messages)
_FIELDS = {
    "C": ("features", "kernel", "stride", "padding", "skip flag"),
    "P": ("size", "stride", "padding", "flag"),
    "FC": ("units",),
    "SM": ("classes",),
}


#: Any number in a chain architecture is at most this (the space's own limits are tighter).
MAX_NUMBER = 1_000_000
MAX_LAYERS = 1_000
_DIGITS = frozenset("0123456789")  # str.isdigit() also accepts fullwidth and other digits

# --------------------------------------------------------------------------------------------
# Architecture value and its text


def _render(layer: Layer) -> str:
    kind = layer[0]
    if kind == "P":
        return f"P({layer[1]},{layer[2]},0,0)"
    return f"{kind}({','.join(str(v) for v in layer[1:])})"


def _layer_problem(layers: Sequence[Layer]) -> tuple[int, str] | None:
    """The first structural problem of a layer chain as ``(layer index, message)``, or None."""
    if not layers:
        return 0, "expected at least one layer, ending with SM(classes)"
    if len(layers) > MAX_LAYERS:
        return MAX_LAYERS, f"{len(layers):,} layers; a chain architecture has at most {MAX_LAYERS:,}"
    seen_fc = False
    for i, layer in enumerate(layers):
        if not isinstance(layer, tuple) or not layer or layer[0] not in _FIELDS:
            return i, f"unknown layer {layer!r}; expected a C, P, FC or SM layer"
        kind = layer[0]
        arity = len(_FIELDS[kind]) - (2 if kind == "P" else 0)
        values = layer[1:]
        if len(values) != arity or not all(type(v) is int for v in values):
            return i, f"{kind} layer {layer!r}: expected {arity} integers after {kind!r}"
        if any(v > MAX_NUMBER for v in values):
            return i, (f"{kind} layer with a number above {MAX_NUMBER:,}; a chain architecture's "
                       "numbers are at most that")
        if kind in ("C", "P") and seen_fc:
            return i, f"{_render(layer)} after an FC layer: convolutions and pooling come before FC layers"
        if kind == "C":
            f, k, s, p, skip = values
            for name, v in (("features", f), ("kernel", k), ("stride", s)):
                if v < 1:
                    return i, f"{_render(layer)}: {name} {v} must be >= 1"
            if skip not in (0, 1):
                return i, f"{_render(layer)}: skip flag {skip} must be 1 (plain conv) or 0 (residual block)"
            if p > k // 2:
                return i, f"{_render(layer)}: padding {p} must be at most kernel // 2 = {k // 2}"
            if skip == 0 and (k, p) != (3, 1):
                return i, (f"{_render(layer)}: a residual block (skip flag 0) is two 3x3 convolutions, "
                           f"written C({f},3,{s},1,0)")
        elif kind == "P":
            if values[0] < 1 or values[1] < 1:
                return i, f"{_render(layer)}: pooling size and stride must be >= 1"
        elif kind == "FC":
            seen_fc = True
            if values[0] < 1:
                return i, f"{_render(layer)}: units must be >= 1"
        elif kind == "SM":
            if values[0] < 1:
                return i, f"{_render(layer)}: classes must be >= 1"
            if i != len(layers) - 1:
                return i, f"SM must be the last layer, but {len(layers) - 1 - i} layer(s) follow it"
    if layers[-1][0] != "SM":
        return len(layers) - 1, f"the last layer must be SM(classes), found {_render(layers[-1])}"
    return None


@dataclass(frozen=True, eq=False)
class ChainArch(Architecture):
    """A chain of layers; ``str`` is the DP-NAS net string. Structurally checked on creation."""

    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        layers = tuple(tuple(layer) if isinstance(layer, list) else layer for layer in self.layers)
        object.__setattr__(self, "layers", layers)
        problem = _layer_problem(layers)
        if problem is not None:
            raise ArchitectureError(f"chain architecture, layer {problem[0]}: {problem[1]}")

    def __str__(self) -> str:
        return "[" + ", ".join(_render(layer) for layer in self.layers) + "]"

    @property
    def num_classes(self) -> int:
        """The class count written in ``SM(classes)``."""
        return self.layers[-1][1]

    @property
    def depth(self) -> int:
        """Conv layers, residual blocks counting 2 (MetaQNN / DP-NAS layer depth)."""
        return sum(1 if layer[5] else 2 for layer in self.layers if layer[0] == "C")


def parse_chain(text: str) -> ChainArch:
    """Parse a DP-NAS net string; ``ArchitectureError`` says where and what was expected."""
    if not isinstance(text, str):
        raise ArchitectureError(f"chain architecture text must be a string, got {type(text).__name__}")
    return _Parser(text).parse()


class _Parser:
    """Recursive-descent parser that keeps the character offset for error messages."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.layer = 0

    def fail(self, message: str, at: int | None = None, layer: int | None = None) -> ArchitectureError:
        at = self.pos if at is None else at
        layer = self.layer if layer is None else layer
        start = max(0, at - 12)
        excerpt = ("..." if start else "") + self.text[start:at] + " <-HERE-> " + self.text[at:at + 12]
        if at + 12 < len(self.text):
            excerpt += "..."
        return ArchitectureError(
            f"cannot parse chain architecture at character {at} (layer {layer}): {message}; "
            f"text: {excerpt!r}")

    def found(self) -> str:
        return f"found {self.text[self.pos]!r}" if self.pos < len(self.text) else "found the end of the text"

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def expect(self, char: str, what: str) -> None:
        self.skip_ws()
        if self.pos >= len(self.text) or self.text[self.pos] != char:
            raise self.fail(f"expected {what}, {self.found()}")
        self.pos += 1

    def number(self, kind: str, index: int) -> int:
        self.skip_ws()
        start = self.pos
        field = _FIELDS[kind][index]
        if self.pos < len(self.text) and self.text[self.pos] in "+-":
            raise self.fail(f"{kind}'s {field} must be a non-negative integer without sign, {self.found()}")
        while self.pos < len(self.text) and self.text[self.pos] in _DIGITS:
            self.pos += 1
        if self.pos == start:
            if self.pos < len(self.text) and self.text[self.pos].isdigit():
                raise self.fail(f"{kind}'s {field} must be written with ASCII digits 0-9, "
                                f"{self.found()}")
            raise self.fail(f"expected {kind}'s {field} (a non-negative integer), {self.found()}")
        if self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] in "._"):
            raise self.fail(f"{kind}'s {field} must be an integer written with ASCII digits 0-9, "
                            f"found {self.text[start:self.pos + 1]!r}", at=start)
        digits = self.text[start:self.pos]
        if len(digits.lstrip("0")) > len(str(MAX_NUMBER)) or int(digits) > MAX_NUMBER:
            shown = digits if len(digits) <= 24 else f"{digits[:12]}...({len(digits)} digits)"
            raise self.fail(f"{kind}'s {field} {shown} is too large; a chain architecture's "
                            f"numbers are at most {MAX_NUMBER:,}", at=start)
        return int(digits)

    def parse_layer(self) -> tuple[Layer, int]:
        self.skip_ws()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos].isalpha():
            self.pos += 1
        name = self.text[start:self.pos]
        if not name:
            raise self.fail(f"expected a layer (C, P, FC or SM), {self.found()}")
        if name not in _FIELDS and self.pos == len(self.text) and any(k.startswith(name) for k in _FIELDS):
            raise self.fail(f"the text ends inside the layer name {name!r}")
        if name not in _FIELDS:
            raise self.fail(f"unknown layer type {name!r}; expected C, P, FC or SM", at=start)
        fields = _FIELDS[name]
        self.expect("(", f"'(' after {name}")
        values = []
        for j in range(len(fields)):
            values.append(self.number(name, j))
            self.skip_ws()
            last = j == len(fields) - 1
            char = self.text[self.pos] if self.pos < len(self.text) else ""
            if char == ("," if not last else ")"):
                self.pos += 1
                continue
            if char in (",", ")"):
                raise self.fail(f"{name} takes {len(fields)} numbers ({', '.join(fields)})"
                                + (f", found only {j + 1}" if char == ")" else ", found more"))
            expected = "')'" if last else "','"
            raise self.fail(f"expected {expected} after {name}'s {fields[j]}, {self.found()}")
        if name == "P":
            if values[2] != 0 or values[3] != 0:
                raise self.fail(f"P's padding and flag must be 0 (P(size,stride,0,0)), found "
                                f"P({','.join(map(str, values))})", at=start)
            return ("P", values[0], values[1]), start
        return (name, *values), start

    def parse(self) -> ChainArch:
        self.expect("[", "'[' at the start of the architecture")
        layers: list[Layer] = []
        starts: list[int] = []
        while True:
            layer, start = self.parse_layer()
            layers.append(layer)
            starts.append(start)
            self.skip_ws()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                self.layer += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                self.pos += 1
                break
            raise self.fail(f"expected ',' or ']' after {_render(layer)}, {self.found()}")
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected text after the closing ']', {self.found()}")
        problem = _layer_problem(layers)
        if problem is not None:
            index, message = problem
            raise self.fail(message, at=starts[index], layer=index)
        return ChainArch(tuple(layers))


# --------------------------------------------------------------------------------------------
# The space


class _State(NamedTuple):
    """Where a prefix leaves the chain: all that the next choices depend on."""

    last: str  # "start", "C", "R" (residual block), "P", "FC", "SM"
    depth: int  # conv layers so far, residual blocks counting 2
    sizes: tuple[int, ...]  # spatial size per axis
    channels: int  # features of the last conv (0 before the first)
    n_fc: int
    fc_units: int  # units of the last FC layer (0 before the first)


def _int_option(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"chain space option {name!r} = {value!r}: expected an integer >= {minimum}")
    return int(value)


def _int_list_option(name: str, values: Sequence[int], minimum: int = 1) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"chain space option {name!r} = {values!r}: expected a non-empty list "
                          f"of integers >= {minimum}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise ConfigError(f"chain space option {name!r} = {list(values)}: {v!r} is not an "
                              f"integer >= {minimum}")
    return tuple(sorted({int(v) for v in values}))


@register("spaces", "chain")
class ChainSpace(SearchSpace):
    """MetaQNN / DP-NAS chain CNNs (see the module docstring for the rules).

    The sequential view tracks the spatial size from ``input_shape`` (``(C, H, W)`` for images,
    ``(C, L)`` for series) or, without it, from square ``input_size`` x ``input_size`` images
    (default 8, digits); a run fills ``input_shape``, ``input_size`` and ``num_classes`` from
    the task, and ``ChainSpace.for_task(task)`` does the same.
    """

    name = "chain"

    def __init__(
        self,
        input_size: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        num_classes: int = 10,
        kernels: tuple[int, ...] = (1, 3, 5, 7, 9, 11),
        features: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024),
        large_kernel: int = 7,
        large_kernel_stride: int = 2,
        pool_sizes: tuple[int, ...] = (2, 3, 4),
        pool_strides: tuple[int, ...] = (2, 3, 4),
        min_conv: int = 2,  # DP-NAS's conv_layer_min_limit
        max_conv: int = 12,
        max_fc: int = 0,
        fc_sizes: tuple[int, ...] = (32, 64, 128),
        max_image_size: int = 8,
        max_num_fc_input: int = 20000,
        allow_residual: bool = True,
        allow_initial_pooling: bool = False,
        allow_consecutive_pooling: bool = False,
        pool_exact_fit: bool = True,
        batch_norm: bool = False,
        size_buckets: tuple[int, ...] | None = None,
        max_features: int = 4096,
        max_kernel: int = 15,
        max_fc_units: int = 4096,
        max_params: int = 100_000_000,
    ):
        if input_shape is None:
            self.input_shape = None
            self.input_size = 8 if input_size is None else _int_option("input_size", input_size)
            sizes: tuple[int, ...] = (self.input_size, self.input_size)
        else:
            if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) \
                    or len(input_shape) not in (2, 3):
                raise ConfigError(f"chain space option 'input_shape' = {input_shape!r}: expected "
                                  "(C, H, W) for images or (C, L) for series")
            self.input_shape = tuple(_int_option("input_shape", v) for v in input_shape)
            sizes = self.input_shape[1:]
            if input_size is not None and input_size != sizes[-1]:
                raise ConfigError(f"chain space: input_size = {input_size!r} disagrees with "
                                  f"input_shape = {self.input_shape}; give one of them")
            self.input_size = sizes[-1]
        self.kind = "image" if len(sizes) == 2 else "series"
        self.num_classes = _int_option("num_classes", num_classes)
        self.kernels = _int_list_option("kernels", kernels)
        self.features = _int_list_option("features", features)
        self.large_kernel = _int_option("large_kernel", large_kernel)
        self.large_kernel_stride = _int_option("large_kernel_stride", large_kernel_stride)
        # a pooling window of 1 changes nothing and would let consecutive pooling loop forever
        self.pool_sizes = _int_list_option("pool_sizes", pool_sizes, minimum=2)
        self.pool_strides = _int_list_option("pool_strides", pool_strides)
        self.min_conv = _int_option("min_conv", min_conv)
        self.max_conv = _int_option("max_conv", max_conv)
        if self.min_conv > self.max_conv:
            raise ConfigError(f"chain space: min_conv = {min_conv} exceeds max_conv = {max_conv}")
        self.max_fc = _int_option("max_fc", max_fc, minimum=0)
        self.fc_sizes = _int_list_option("fc_sizes", fc_sizes)
        self.max_image_size = _int_option("max_image_size", max_image_size)
        self.max_num_fc_input = _int_option("max_num_fc_input", max_num_fc_input)
        self.allow_residual = bool(allow_residual)
        self.allow_initial_pooling = bool(allow_initial_pooling)
        self.allow_consecutive_pooling = bool(allow_consecutive_pooling)
        self.pool_exact_fit = bool(pool_exact_fit)
        self.batch_norm = bool(batch_norm)
        self.size_buckets = None if size_buckets is None else _int_list_option("size_buckets", size_buckets)
        self.max_features = _int_option("max_features", max_features)
        self.max_kernel = _int_option("max_kernel", max_kernel)
        self.max_fc_units = _int_option("max_fc_units", max_fc_units)
        self.max_params = _int_option("max_params", max_params)
        for name, values, top, limit in (
                ("features", self.features, self.max_features, "max_features"),
                ("kernels", self.kernels, self.max_kernel, "max_kernel"),
                ("pool_sizes", self.pool_sizes, self.max_kernel, "max_kernel"),
                ("pool_strides", self.pool_strides, self.max_kernel, "max_kernel"),
                ("fc_sizes", self.fc_sizes, self.max_fc_units, "max_fc_units")):
            if max(values) > top:
                raise ConfigError(f"chain space option {name!r} = {list(values)}: {max(values)} "
                                  f"exceeds {limit} = {top}; raise {limit} or use smaller values")
        if self.large_kernel_stride > self.max_kernel:
            raise ConfigError(f"chain space option 'large_kernel_stride' = "
                              f"{self.large_kernel_stride} exceeds max_kernel = {self.max_kernel}")
        self._init_caches()
        self._start = _State("start", 0, sizes, 0, 0, 0)
        if not self._feasible(self._start):
            raise ConfigError(
                f"chain space: no architecture satisfies these options for a "
                f"{'x'.join(map(str, sizes))} input "
                f"(min_conv={min_conv}, max_conv={max_conv}, max_image_size={max_image_size}, "
                f"max_num_fc_input={max_num_fc_input}); allow more layers or larger limits")

    @classmethod
    def for_task(cls, task: Task, **options: Any) -> "ChainSpace":
        """A space whose ``input_shape`` and ``num_classes`` come from ``task``."""
        if task.kind not in ("image", "series"):
            raise ConfigError(f"chain space: task {task.name!r} is a {task.kind} task; "
                              "expected an image or series task")
        options.setdefault("input_shape", tuple(int(v) for v in task.input_shape))
        options.setdefault("num_classes", int(task.num_classes))
        return cls(**options)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Task kinds this space's architectures are designed for."""
        return (self.kind,)

    def options(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "num_classes": self.num_classes,
            "kernels": list(self.kernels), "features": list(self.features),
            "large_kernel": self.large_kernel, "large_kernel_stride": self.large_kernel_stride,
            "pool_sizes": list(self.pool_sizes), "pool_strides": list(self.pool_strides),
            "min_conv": self.min_conv, "max_conv": self.max_conv, "max_fc": self.max_fc,
            "fc_sizes": list(self.fc_sizes), "max_image_size": self.max_image_size,
            "max_num_fc_input": self.max_num_fc_input, "allow_residual": self.allow_residual,
            "allow_initial_pooling": self.allow_initial_pooling,
            "allow_consecutive_pooling": self.allow_consecutive_pooling,
            "pool_exact_fit": self.pool_exact_fit, "batch_norm": self.batch_norm,
            "size_buckets": None if self.size_buckets is None else list(self.size_buckets),
            "max_features": self.max_features, "max_kernel": self.max_kernel,
            "max_fc_units": self.max_fc_units, "max_params": self.max_params,
        }

    # caches are derived from the options; leave them out when pickled to worker processes
    def _init_caches(self) -> None:
        self._choice_cache: dict[_State, tuple[Layer, ...]] = {}
        self._choice_sets: dict[_State, frozenset] = {}
        self._feasible_cache: dict[_State, bool] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_choice_cache", "_choice_sets", "_feasible_cache")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_caches()

    # -- text ---------------------------------------------------------------------------------
    def parse(self, text: str) -> ChainArch:
        """Parse a net string and check it against the size limits (``max_features``, ...)."""
        arch = parse_chain(text)
        self.check_limits(arch)
        return arch

    def check_limits(self, arch: Architecture) -> None:
        """``ArchitectureError`` if a layer exceeds the space's size limits: features
        <= ``max_features``, kernel, stride and pooling <= ``max_kernel``, FC units <=
        ``max_fc_units`` (the limits keep a hand-written string from exhausting memory)."""
        for i, layer in enumerate(self._as_chain(arch).layers):
            kind = layer[0]
            if kind == "C":
                checks = [("features", layer[1], "max_features", self.max_features),
                          ("kernel", layer[2], "max_kernel", self.max_kernel),
                          ("stride", layer[3], "max_kernel", self.max_kernel)]
            elif kind == "P":
                checks = [("size", layer[1], "max_kernel", self.max_kernel),
                          ("stride", layer[2], "max_kernel", self.max_kernel)]
            elif kind == "FC":
                checks = [("units", layer[1], "max_fc_units", self.max_fc_units)]
            else:
                checks = []
            for field, value, option, top in checks:
                if value > top:
                    raise ArchitectureError(
                        f"chain architecture, layer {i} {_render(layer)}: {field} {value} exceeds "
                        f"{option} = {top} (an option of the chain space)")

    def param_count(self, arch: Architecture, input_shape: Sequence[int], num_classes: int) -> int:
        """Weights and biases of the network ``build`` makes, counted without building it."""
        shapes = self.layer_shapes(arch, input_shape)
        dim = len(input_shape) - 1
        channels, total = int(input_shape[0]), 0
        extra = 2 if self.batch_norm else 1  # per output channel: BatchNorm's 2, else a bias
        for layer in self._as_chain(arch).layers:
            if layer[0] == "C":
                _, f, k, s, _p, skip = layer
                if skip:
                    total += channels * f * k ** dim + extra * f
                else:
                    total += channels * f * 3 ** dim + f * f * 3 ** dim + 2 * extra * f
                    if channels != f or s != 1:
                        total += channels * f + extra * f
                channels = f
        width = math.prod(shapes[-1]) if shapes else math.prod(input_shape)
        for layer in self._as_chain(arch).layers:
            if layer[0] == "FC":
                total += width * layer[1] + layer[1]
                width = layer[1]
        return total + width * int(num_classes) + int(num_classes)

    # -- transitions ----------------------------------------------------------------------------
    def _conv_stride(self, kernel: int) -> int:
        return self.large_kernel_stride if kernel >= self.large_kernel else 1

    def _fitting_kernels(self, sizes: tuple[int, ...]) -> list[int]:
        return [k for k in self.kernels if all(k < n for n in sizes)]

    def _classifier_ok(self, st: _State) -> bool:
        """Whether FC / SM may follow: enough depth, a small enough map and classifier input."""
        if st.last not in ("C", "R", "P") or st.depth < 1:
            return False
        if st.depth < self.min_conv and self._fitting_kernels(st.sizes):
            return False
        return (all(n <= self.max_image_size for n in st.sizes)
                and st.channels * math.prod(st.sizes) <= self.max_num_fc_input)

    def _raw_choices(self, st: _State) -> list[Layer]:
        """Next layers allowed by the rules, before removing those that lead to dead ends."""
        if st.last == "SM":
            return []
        if st.last == "FC":
            more = [("FC", u) for u in self.fc_sizes if u <= st.fc_units] if st.n_fc < self.max_fc else []
            return more + [("SM", self.num_classes)]
        out: list[Layer] = []
        if st.depth + 1 <= self.max_conv:
            for f in self.features:
                for k in self._fitting_kernels(st.sizes):
                    for p in sorted({0, (k - 1) // 2}):
                        out.append(("C", f, k, self._conv_stride(k), p, 1))
        if self.allow_residual and st.depth + 2 <= self.max_conv and all(n > 3 for n in st.sizes):
            out += [("C", f, 3, 1, 1, 0) for f in self.features]
        if (st.last in ("C", "R") or (st.last == "P" and self.allow_consecutive_pooling)
                or (st.last == "start" and self.allow_initial_pooling)):
            for size in self.pool_sizes:
                if not all(size < n for n in st.sizes):
                    continue
                for stride in self.pool_strides:
                    if stride <= size and (not self.pool_exact_fit
                                           or all((n - size) % stride == 0 for n in st.sizes)):
                        out.append(("P", size, stride))
        if self._classifier_ok(st):
            if self.max_fc > 0:
                out += [("FC", u) for u in self.fc_sizes]
            out.append(("SM", self.num_classes))
        return out

    @staticmethod
    def _advance(st: _State, d: Layer) -> _State:
        kind = d[0]
        if kind == "C":
            _, f, k, s, p, skip = d
            sizes = tuple(output_size(n, k, s, p) for n in st.sizes)
            return st._replace(last="C" if skip else "R", depth=st.depth + (1 if skip else 2),
                               sizes=sizes, channels=f)
        if kind == "P":
            sizes = tuple(output_size(n, d[1], d[2]) for n in st.sizes)
            return st._replace(last="P", sizes=sizes)
        if kind == "FC":
            return st._replace(last="FC", n_fc=st.n_fc + 1, fc_units=d[1])
        return st._replace(last="SM")

    def _feasible(self, st: _State) -> bool:
        """Whether some sequence of valid layers completes an architecture from ``st``."""
        cached = self._feasible_cache.get(st)
        if cached is None:
            if st.last in ("SM", "FC") or self._classifier_ok(st):
                cached = True
            else:  # terminates: each step adds depth or strictly shrinks the map (pool size >= 2)
                cached = any(self._feasible(self._advance(st, d))
                             for d in self._raw_choices(st) if d[0] != "SM")
            self._feasible_cache[st] = cached
        return cached

    def _choices(self, st: _State) -> tuple[Layer, ...]:
        cached = self._choice_cache.get(st)
        if cached is None:
            cached = tuple(d for d in self._raw_choices(st)
                           if d[0] == "SM" or self._feasible(self._advance(st, d)))
            self._choice_cache[st] = cached
            self._choice_sets[st] = frozenset(cached)
        return cached

    def _try_walk(self, prefix: Sequence[Layer]) -> tuple[_State, int | None]:
        """The state after the longest valid part of ``prefix`` and the first invalid index."""
        st = self._start
        for i, d in enumerate(prefix):
            d = tuple(d) if isinstance(d, list) else d
            self._choices(st)
            try:
                valid = d in self._choice_sets[st]
            except TypeError:  # unhashable
                valid = False
            if not valid:
                return st, i
            st = self._advance(st, d)
        return st, None

    def _walk(self, prefix: Sequence[Layer]) -> _State:
        st, bad = self._try_walk(prefix)
        if bad is not None:
            raise ArchitectureError(self._explain(prefix, bad, st))
        return st

    def _explain(self, prefix: Sequence[Layer], index: int, st: _State) -> str:
        d = prefix[index]
        shown = _render(d) if isinstance(d, tuple) and d and d[0] in _FIELDS else repr(d)
        where = f"layer {index} {shown} is not in the chain space here"
        if st.last == "SM":
            return f"{where}: the architecture is already complete after SM"
        size = "x".join(str(n) for n in st.sizes)
        options = self._choices(st)
        kinds = sorted({o[0] for o in options})
        examples = ", ".join(_render(o) for o in options[:3])
        start = "x".join(str(n) for n in self._start.sizes)
        return (f"{where}: after {index} layer(s) the map is {size} (input {start}), depth "
                f"{st.depth} of max_conv={self.max_conv}; {len(options)} valid next layers of "
                f"kinds {', '.join(kinds)} (e.g. {examples})")

    # -- sequential view --------------------------------------------------------------------------
    def choices(self, prefix: Sequence[Layer]) -> list[Layer]:
        return list(self._choices(self._walk(prefix)))

    def to_decisions(self, arch: Architecture) -> tuple[Layer, ...]:
        return self._as_chain(arch).layers

    def from_decisions(self, decisions: Sequence[Layer]) -> ChainArch:
        return ChainArch(tuple(tuple(d) if isinstance(d, list) else d for d in decisions))

    def state_key(self, prefix: Sequence[Layer]) -> Hashable:
        """MetaQNN-style state: (last layer kind, depth, size bucket, features, kernel or pool
        size, stride, FC count, FC units)."""
        st = self._walk(prefix)
        kernel = stride = 0
        layers = [d for d in prefix if d[0] != "SM"]  # the terminal state keeps its layer's fields
        if layers and layers[-1][0] == "C":
            kernel, stride = layers[-1][2], layers[-1][3]
        elif layers and layers[-1][0] == "P":
            kernel, stride = layers[-1][1], layers[-1][2]
        buckets = tuple(self._bucket(n) for n in st.sizes)
        return (st.last, st.depth, buckets, st.channels, kernel, stride, st.n_fc, st.fc_units)

    def _bucket(self, n: int) -> int:
        if self.size_buckets is None:
            return 1 << (n.bit_length() - 1) if n > 0 else 0
        return max((b for b in self.size_buckets if b <= n), default=0)

    def validate(self, arch: Architecture) -> None:
        """Raise ``ArchitectureError`` unless ``arch`` is one this space can produce."""
        self._walk(self._as_chain(arch).layers)

    def contains(self, arch: Architecture) -> bool:
        """Whether ``arch`` is one this space can produce."""
        return isinstance(arch, ChainArch) and self._try_walk(arch.layers)[1] is None

    @staticmethod
    def _as_chain(arch: Architecture) -> ChainArch:
        if not isinstance(arch, ChainArch):
            raise ArchitectureError(f"expected a chain architecture, got {type(arch).__name__} {arch}")
        return arch

    # -- sampling ---------------------------------------------------------------------------------
    def mutate(self, arch: Architecture, rng: np.random.Generator) -> ChainArch:
        """Change, insert or remove one layer (before SM) so that the result stays in the space.

        An architecture outside the space is repaired: its longest valid prefix is kept and
        completed at random.
        """
        layers = list(self._as_chain(arch).layers)
        _, bad = self._try_walk(layers)
        if bad is not None:
            return self.complete(layers[:bad], rng)  # type: ignore[return-value]
        body = len(layers) - 1  # layers before SM
        for _ in range(50):
            op = ("change", "insert", "remove")[int(rng.integers(3))]
            if op == "remove":
                if body < 2:
                    continue
                i = int(rng.integers(body))
                candidates = [layers[:i] + layers[i + 1:]]
            else:
                i = int(rng.integers(body + (op == "insert")))
                options = [c for c in self.choices(layers[:i]) if c[0] != "SM"
                           and (op == "insert" or c != layers[i])]
                order = rng.permutation(len(options))[:20]
                rest = layers[i:] if op == "insert" else layers[i + 1:]
                candidates = [layers[:i] + [options[j]] + rest for j in order]
            for cand in candidates:
                if self._try_walk(cand)[1] is None:
                    return ChainArch(tuple(cand))
        return super().mutate(arch, rng)  # type: ignore[return-value]

    # -- building -------------------------------------------------------------------------------
    def layer_shapes(self, arch: Architecture, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
        """Output shape ``(channels, *spatial)`` of each conv / pool layer, computed without
        building modules; ``ArchitectureError`` if a layer does not fit."""
        layers = self._as_chain(arch).layers
        shape = tuple(int(v) for v in input_shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ArchitectureError(f"input shape {shape}: expected (C, L) or (C, H, W) with positive sizes")
        shapes = []
        for i, layer in enumerate(layers):
            if layer[0] == "C":
                _, f, k, s, p, skip = layer
                new = (f, *(output_size(n, k, s, p) for n in shape[1:]))
            elif layer[0] == "P":
                new = (shape[0], *(output_size(n, layer[1], layer[2]) for n in shape[1:]))
            else:
                break
            if min(new[1:]) < 1:
                raise ArchitectureError(
                    f"{_render(layer)} (layer {i}) does not fit: it takes a "
                    f"{'x'.join(map(str, shape[1:]))} map to {'x'.join(map(str, new[1:]))} "
                    f"(input shape {tuple(input_shape)}, architecture {arch}); use a larger "
                    f"input or fewer down-samplings")
            shapes.append(new)
            shape = new
        return shapes

    def check(self, arch: Architecture, task: Task) -> None:
        """Raise ``ArchitectureError`` if ``arch`` cannot be built for ``task`` (no modules built)."""
        self._classifier_inputs(arch, task)

    def _classifier_inputs(self, arch: Architecture, task: Task) -> int:
        expected = {"image": 3, "series": 2}
        if task.kind not in expected or len(task.input_shape) != expected[task.kind]:
            raise ArchitectureError(
                f"chain space builds image tasks with input (C, H, W) and series tasks with (C, L); "
                f"task {task.name!r} is a {task.kind} task with input shape {tuple(task.input_shape)}")
        self.check_limits(arch)
        shapes = self.layer_shapes(arch, task.input_shape)
        last = shapes[-1] if shapes else tuple(task.input_shape)
        width = math.prod(last)
        if width > self.max_num_fc_input:
            raise ArchitectureError(
                f"{arch} on task {task.name!r} {tuple(task.input_shape)}: the classifier input is "
                f"{'x'.join(map(str, last))} = {width} values, more than max_num_fc_input = "
                f"{self.max_num_fc_input}; down-sample more or use fewer features")
        params = self.param_count(arch, task.input_shape, task.num_classes)
        if params > self.max_params:
            raise ArchitectureError(
                f"{arch} on task {task.name!r}: {params:,} parameters, more than max_params = "
                f"{self.max_params:,} (an option of the chain space); use fewer features or "
                "smaller kernels")
        return width

    def build(self, arch: Architecture, task: Task) -> Network:
        """conv / residual / pool encoder (flattened) and FC head for ``task.num_classes``."""
        width = self._classifier_inputs(arch, task)
        dim = len(task.input_shape) - 1
        channels = int(task.input_shape[0])
        encoder: list[nn.Module] = []
        head: list[nn.Module] = []
        for layer in self._as_chain(arch).layers:
            if layer[0] == "C":
                _, f, k, s, p, skip = layer
                if skip:
                    encoder.append(ConvBNReLU(dim, channels, f, k, s, p, self.batch_norm))
                else:
                    encoder.append(ResidualBlock(dim, channels, f, s, self.batch_norm))
                channels = f
            elif layer[0] == "P":
                encoder.append(max_pool(dim, layer[1], layer[2]))
            elif layer[0] == "FC":
                head += [nn.Linear(width, layer[1]), nn.ReLU()]
                width = layer[1]
        encoder.append(nn.Flatten())
        head.append(nn.Linear(width, int(task.num_classes)))
        return Network(nn.Sequential(*encoder), nn.Sequential(*head))

    # -- features for learned models (see nasforge.graph) -----------------------------------------
    # One slot per layer position, up to the longest architecture of the space; a slot holds the
    # layer kind, one-hots of its hyperparameters over the space's option lists (plus "other"),
    # and their raw values, so even hand-written layers outside the lists encode exactly.
    _KINDS = ("empty", "conv", "residual", "pool", "fc", "classifier")
    _RAW = ("log2_features", "kernel", "stride", "padding", "pool_size", "pool_stride", "log2_units")

    def max_layers(self) -> int:
        """A bound on the layers (SM included) of this space's architectures, from its options:
        at most ``max_conv`` conv layers, pooling layers at most one after each conv (plus an
        initial one) and never more than the smallest input side minus one (each pooling
        shrinks every axis), ``max_fc`` FC layers and SM. Cheap, and exact for the depth limit."""
        convs = self.max_conv
        shrink = min(self._start.sizes) - 1
        pools = shrink if self.allow_consecutive_pooling else min(
            shrink, convs + int(self.allow_initial_pooling))
        return convs + max(pools, 0) + self.max_fc + 1

    def _slot_size(self) -> int:
        lists = (self.features, self.kernels, self.pool_sizes, self.pool_strides, self.fc_sizes)
        return len(self._KINDS) + sum(len(v) + 1 for v in lists) + len(self._RAW)

    @property
    def encoding_size(self) -> int:
        return self.max_layers() * self._slot_size()

    def encode(self, arch: Architecture) -> np.ndarray:
        """Per layer position: kind one-hot, features / kernel / pool size / pool stride / FC
        units one-hot over the space's lists (+ other), raw values; empty slots after SM."""
        from ..graph import one_hot

        layers = self._as_chain(arch).layers
        if len(layers) > self.max_layers():
            raise ArchitectureError(f"{arch} has {len(layers)} layers; this chain space's encoding "
                                    f"covers at most {self.max_layers()} (its longest architecture)")
        out: list[float] = []
        for i in range(self.max_layers()):
            layer = layers[i] if i < len(layers) else ("empty",)
            kind = {"C": "conv" if len(layer) > 5 and layer[5] else "residual", "P": "pool",
                    "FC": "fc", "SM": "classifier"}.get(layer[0], "empty")
            f = k = s = p = ps = pt = u = None
            if layer[0] == "C":
                _, f, k, s, p, _ = layer
            elif layer[0] == "P":
                ps, pt = layer[1], layer[2]
            elif layer[0] == "FC":
                u = layer[1]
            out += [1.0 if kind == name else 0.0 for name in self._KINDS]
            for value, options in ((f, self.features), (k, self.kernels), (ps, self.pool_sizes),
                                   (pt, self.pool_strides), (u, self.fc_sizes)):
                out += one_hot(value, options) if value is not None else [0.0] * (len(options) + 1)
            out += [math.log2(f) if f else 0.0, float(k or 0), float(s or 0), float(p or 0),
                    float(ps or 0), float(pt or 0), math.log2(u) if u else 0.0]
        return np.asarray(out, dtype=np.float32)

    @property
    def op_vocab(self) -> tuple[str, ...]:
        return ("input", *(f"conv{k}" for k in self.kernels), "residual3",
                *(f"maxpool{s}" for s in self.pool_sizes), "fc", "classifier")

    def graph(self, arch: Architecture) -> "ArchGraph":
        """``input -> layer -> ... -> SM``: one node per layer, labelled ``conv<k>``,
        ``residual3`` (a residual block of two 3x3 convs), ``maxpool<size>``, ``fc`` or
        ``classifier`` (SM, the output node). Attributes: the layer's hyperparameters and its
        output ``out_channels`` and ``out_positions`` (spatial positions of the map) for this
        space's input; the input node has ``channels`` and ``positions``."""
        from ..graph import chain_graph

        layers = self._as_chain(arch).layers
        channels = int(self.input_shape[0]) if self.input_shape is not None else 1
        sizes = self._start.sizes
        labels, attrs = [], []
        for layer in layers:
            kind = layer[0]
            if kind == "C":
                _, f, k, s, p, skip = layer
                sizes = tuple(output_size(n, k, s, p) for n in sizes)
                channels = f
                labels.append(f"conv{k}" if skip else "residual3")
                a = {"features": f, "kernel": k, "stride": s, "padding": p}
            elif kind == "P":
                sizes = tuple(output_size(n, layer[1], layer[2]) for n in sizes)
                labels.append(f"maxpool{layer[1]}")
                a = {"size": layer[1], "stride": layer[2]}
            elif kind == "FC":
                labels.append("fc")
                a = {"units": layer[1]}
            else:
                labels.append("classifier")
                a = {"classes": layer[1]}
            if kind in ("C", "P"):
                a.update(out_channels=channels, out_positions=math.prod(max(n, 0) for n in sizes))
            attrs.append({key: float(v) for key, v in a.items()})
        return chain_graph(labels, attrs, output_node=False, input_attrs={
            "channels": float(int(self.input_shape[0]) if self.input_shape is not None else 1),
            "positions": float(math.prod(self._start.sizes))})
