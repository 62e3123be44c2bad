"""The DARTS cell search space (Liu, Simonyan & Yang, ICLR 2019) and its network builder.

A cell has two inputs, the outputs of the two previous cells (states 0 and 1), and ``nodes``
intermediate nodes (states 2, 3, ...). Each node sums its incoming edges; an edge applies one
operation to an earlier state. In the searched space every node takes exactly two edges from two
different earlier states and the cell's output concatenates all intermediate nodes. A network
has a normal cell (keeps the size) and a reduction cell (halves the size, doubles the channels;
the edges leaving states 0 and 1 are strided).

The text of an architecture is the DARTS genotype, exactly as the DARTS code prints it::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5],
             reduce=[('max_pool_3x3', 0), ...], reduce_concat=[2, 3, 4, 5])

``normal`` lists two ``(operation, input state)`` edges per node, node by node. The parser also
accepts ``range(2, 6)`` for a concat list (as the DARTS search code prints it), either quote
style, free whitespace, comments, trailing commas, the four fields in any order, the pt.darts
nested form (one list of edges per node, any number of edges), a published genotype's name
(``DARTS_V2``) and the JSON form (see :func:`to_json`). Printing is canonical: the flat form when
every node of both cells has two edges, the nested form otherwise, concat lists written out.

The network is the DARTS evaluation network (``NetworkCIFAR``): a 3x3 conv stem with
``stem_multiplier * C`` channels and BN, ``layers`` cells with reductions at ``layers // 3`` and
``2 * layers // 3`` (channels doubled at each), cell inputs preprocessed by ``FactorizedReduce``
after a reduction and ReLU-1x1 conv-BN otherwise, drop-path on every non-identity edge during
training, an optional auxiliary head after the second reduction cell, global average pooling
and a linear classifier. ``series`` tasks get the same cells with 1-D operations.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import (Architecture, Decision, Network, SearchSpace, Task, TextArchitecture,
                    conv_dims)
from ..errors import ArchitectureError, ConfigError
from ..ops.blocks import avg_pool, batch_norm, conv
from ..ops.darts_ops import OPS, PRIMITIVES, DropPath, FactorizedReduce, ReLUConvBN, make_op
from ..registry import register
from ..training import Callback

if TYPE_CHECKING:  # pragma: no cover
    from ..graph import ArchGraph

#: every operation the builder knows: the DARTS primitives and the NASNet / AmoebaNet extras
KNOWN_OPS: tuple[str, ...] = tuple(OPS)
#: limits on what the parser accepts (a genotype is small; these stop absurd inputs early)
MAX_TEXT = 100_000
MAX_NODES = 16
MAX_EDGES_PER_NODE = 32
JSON_FORMAT = "nasforge-darts-genotype/1"

Edge = tuple[str, int]
CellSpec = tuple[tuple[Edge, ...], ...]


# --------------------------------------------------------------------------------------------
# the genotype


def _nodes_problem(nodes: CellSpec, name: str) -> str | None:
    """What is wrong with one cell's nodes, or None."""
    if not nodes:
        return f"{name} has no nodes; expected at least one"
    if len(nodes) > MAX_NODES:
        return f"{name} has {len(nodes)} nodes; at most {MAX_NODES} are allowed"
    for j, edges in enumerate(nodes):
        state = j + 2
        if not edges:
            return f"{name} node {state} has no input edges"
        if len(edges) > MAX_EDGES_PER_NODE:
            return f"{name} node {state} has {len(edges)} edges; at most {MAX_EDGES_PER_NODE}"
        for op, source in edges:
            if op not in OPS:
                return (f"{name} node {state}: unknown operation {op!r}; expected one of "
                        f"{', '.join(KNOWN_OPS)}")
            if not 0 <= source < state:
                return (f"{name} node {state}: input {source} is not an earlier state; "
                        f"expected 0..{state - 1}")
    return None


def _concat_problem(concat: tuple[int, ...], num_nodes: int, name: str) -> str | None:
    """What is wrong with one cell's concat list, or None."""
    last = num_nodes + 1
    if not concat:
        return f"{name}_concat is empty; expected some of the states 2..{last}"
    for k in concat:
        if not 2 <= k <= last:
            return (f"{name}_concat contains {k}; expected intermediate states 2..{last} "
                    f"({num_nodes} nodes)")
    if list(concat) != sorted(set(concat)):
        return f"{name}_concat {list(concat)} must list distinct states in increasing order"
    return None


def _cell_text(nodes: CellSpec, nested: bool) -> str:
    def edge(e: Edge) -> str:
        return f"('{e[0]}', {e[1]})"
    if not nested:
        return "[" + ", ".join(edge(e) for edges in nodes for e in edges) + "]"
    return "[" + ", ".join("[" + ", ".join(edge(e) for e in edges) + "]" for edges in nodes) + "]"


@dataclass(frozen=True, eq=False)
class Genotype(TextArchitecture):
    """A DARTS genotype: the edges of each node of the normal and reduction cells.

    ``normal[j]`` holds the ``(operation, input state)`` edges of node ``j + 2``; ``normal_concat``
    the states concatenated into the cell's output. Immutable; validated on construction.
    """

    normal: CellSpec
    normal_concat: tuple[int, ...]
    reduce: CellSpec
    reduce_concat: tuple[int, ...]
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("normal", "reduce"):
            try:
                nodes = tuple(tuple((str(op), int(src)) for op, src in edges)
                              for edges in getattr(self, name))
                concat = tuple(int(k) for k in getattr(self, name + "_concat"))
            except (TypeError, ValueError) as exc:
                raise ArchitectureError(f"darts: {name} is not a list of nodes of (operation, "
                                        f"input) edges: {exc}") from None
            problem = _nodes_problem(nodes, name) or _concat_problem(concat, len(nodes), name)
            if problem:
                raise ArchitectureError(f"darts: {problem}")
            object.__setattr__(self, name, nodes)
            object.__setattr__(self, name + "_concat", concat)
        nested = any(len(edges) != 2 for edges in self.normal + self.reduce)
        text = (f"Genotype(normal={_cell_text(self.normal, nested)}, "
                f"normal_concat={list(self.normal_concat)}, "
                f"reduce={_cell_text(self.reduce, nested)}, "
                f"reduce_concat={list(self.reduce_concat)})")
        object.__setattr__(self, "_text", text)

    @classmethod
    def from_flat(cls, normal: Sequence[Edge], normal_concat: Sequence[int],
                  reduce: Sequence[Edge], reduce_concat: Sequence[int]) -> "Genotype":
        """From the DARTS flat lists (two consecutive edges per node)."""
        def group(edges: Sequence[Edge], name: str) -> CellSpec:
            if len(edges) % 2:
                raise ArchitectureError(f"darts: {name} has {len(edges)} edges; the flat form "
                                        "needs two per node (an even number)")
            return tuple(tuple(edges[i:i + 2]) for i in range(0, len(edges), 2))
        return cls(group(normal, "normal"), tuple(normal_concat), group(reduce, "reduce"),
                   tuple(reduce_concat))

    def cell(self, reduction: bool) -> tuple[CellSpec, tuple[int, ...]]:
        """``(nodes, concat)`` of the reduction cell or the normal cell."""
        return (self.reduce, self.reduce_concat) if reduction else (self.normal, self.normal_concat)

    def ops(self) -> list[str]:
        """Every edge's operation, normal cell first."""
        return [op for cell in (self.normal, self.reduce) for edges in cell for op, _ in edges]

    def to_json(self) -> str:
        """The JSON form (see :func:`to_json`)."""
        return to_json(self)


# --------------------------------------------------------------------------------------------
# parsing: a tokenizer and a recursive-descent parser for the Python-literal subset a genotype
# uses (calls with keyword arguments, lists, tuples, integers, strings). Nothing is evaluated.

_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<int>-?[0-9]+)
  | (?P<str>'[^'\\\n]*'|"[^"\\\n]*")
  | (?P<punct>[()\[\],=])
""", re.VERBOSE)


@dataclass
class _Node:
    kind: str  # call, list, tuple, int, str, name
    value: Any
    pos: int
    args: list[tuple[str | None, "_Node"]] = field(default_factory=list)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise self.error(pos, f"unexpected character {text[pos]!r}")
            if m.lastgroup != "space":
                self.tokens.append((m.lastgroup or "", m.group(), pos))
            pos = m.end()
        self.i = 0

    def error(self, pos: int, message: str) -> ArchitectureError:
        return ArchitectureError(f"darts: {message} at character {pos} of {_excerpt(self.text, pos)}")

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", len(self.text))

    def take(self, value: str) -> None:
        kind, text, pos = self.peek()
        if text != value or kind not in ("punct", "name"):
            found = "the end of the text" if kind == "end" else repr(text)
            raise self.error(pos, f"expected {value!r}, found {found}")
        self.i += 1

    def value(self, depth: int = 0) -> _Node:
        if depth > 8:
            raise self.error(self.peek()[2], "nesting too deep for a genotype")
        kind, text, pos = self.peek()
        if kind == "int":
            if len(text.lstrip("-")) > 6:
                raise self.error(pos, f"number {text[:12]}{'...' if len(text) > 12 else ''} is "
                                 "too large for a genotype")
            self.i += 1
            return _Node("int", int(text), pos)
        if kind == "str":
            self.i += 1
            return _Node("str", text[1:-1], pos)
        if kind == "name":
            self.i += 1
            if self.peek()[1] != "(":
                return _Node("name", text, pos)
            node = _Node("call", text, pos)
            node.args = self.items(")", depth, keywords=True)
            return node
        if text in ("[", "("):
            close = "]" if text == "[" else ")"
            node = _Node("list" if text == "[" else "tuple", None, pos)
            node.args = self.items(close, depth, keywords=False)
            return node
        found = "the end of the text" if kind == "end" else repr(text)
        raise self.error(pos, f"expected a value (list, tuple, number, string or call), found {found}")

    def items(self, close: str, depth: int, *, keywords: bool) -> list[tuple[str | None, _Node]]:
        self.i += 1  # the opening bracket
        out: list[tuple[str | None, _Node]] = []
        while self.peek()[1] != close:
            key = None
            if keywords and self.peek()[0] == "name" and self.i + 1 < len(self.tokens) \
                    and self.tokens[self.i + 1][1] == "=":
                key = self.peek()[1]
                self.i += 2
            out.append((key, self.value(depth + 1)))
            if self.peek()[1] == ",":
                self.i += 1
            elif self.peek()[1] != close:
                kind, text, pos = self.peek()
                found = "the end of the text" if kind == "end" else repr(text)
                raise self.error(pos, f"expected ',' or {close!r}, found {found}")
        self.i += 1
        return out

    def parse(self) -> _Node:
        node = self.value()
        kind, text, pos = self.peek()
        if kind != "end":
            raise self.error(pos, f"unexpected {text!r} after the genotype")
        return node


def _excerpt(text: str, pos: int) -> str:
    if len(text) <= 120:
        return repr(text)
    start = max(0, pos - 40)
    return f"the text (...{text[start:pos + 40]!r}...)"


def _describe(node: _Node) -> str:
    return {"call": f"a call of {node.value}(...)", "list": "a list", "tuple": "a tuple",
            "int": f"the number {node.value}", "str": f"the string {node.value!r}",
            "name": f"the name {node.value}"}[node.kind]


def _edge(p: _Parser, node: _Node, field_name: str) -> Edge:
    if node.kind != "tuple" or len(node.args) != 2 or any(k for k, _ in node.args):
        raise p.error(node.pos, f"{field_name}: expected an edge ('operation', input), found "
                      f"{_describe(node)}" + (f" of {len(node.args)} items" if node.kind == "tuple" else ""))
    op, src = node.args[0][1], node.args[1][1]
    if op.kind != "str":
        raise p.error(op.pos, f"{field_name}: expected an operation name in quotes, found {_describe(op)}")
    if op.value not in OPS:
        raise p.error(op.pos, f"{field_name}: unknown operation {op.value!r}; expected one of "
                      f"{', '.join(KNOWN_OPS)}")
    if src.kind != "int":
        raise p.error(src.pos, f"{field_name}: expected an input state number, found {_describe(src)}")
    return op.value, src.value


def _cell(p: _Parser, node: _Node, name: str) -> CellSpec:
    if node.kind != "list":
        raise p.error(node.pos, f"{name}: expected a list of edges, found {_describe(node)}")
    items = [v for _, v in node.args]
    if not items:
        raise p.error(node.pos, f"{name}: a cell needs at least one node (two edges)")
    if len(items) > MAX_NODES * MAX_EDGES_PER_NODE:
        raise p.error(node.pos, f"{name}: {len(items)} items; too many for a cell")
    if all(v.kind == "list" for v in items):  # pt.darts nested form: one list per node
        nodes = []
        for v in items:
            if not v.args:
                raise p.error(v.pos, f"{name}: node {len(nodes) + 2} has no edges")
            nodes.append(tuple(_edge(p, e, name) for _, e in v.args))
        return tuple(nodes)
    edges = [_edge(p, v, name) for v in items]
    if len(edges) % 2:
        raise p.error(node.pos, f"{name}: {len(edges)} edges; the DARTS form lists two edges per "
                      "node (an even number)")
    return tuple(tuple(edges[i:i + 2]) for i in range(0, len(edges), 2))


def _concat(p: _Parser, node: _Node, name: str, num_nodes: int) -> tuple[int, ...]:
    if node.kind == "call" and node.value == "range":
        if not 1 <= len(node.args) <= 3 or any(k for k, _ in node.args) \
                or any(v.kind != "int" for _, v in node.args):
            raise p.error(node.pos, f"{name}: expected range(start, stop) with integer bounds")
        bounds = [v.value for _, v in node.args]
        if len(bounds) == 3 and bounds[2] == 0:
            raise p.error(node.pos, f"{name}: range() step must not be zero")
        values = range(*bounds)
        if len(values) > MAX_NODES:
            raise p.error(node.pos, f"{name}: {len(values)} states; at most {MAX_NODES}")
        out = tuple(values)
        problem = _concat_problem(out, num_nodes, name[:-len("_concat")])
        if problem:
            raise p.error(node.pos, problem)
        return out
    if node.kind != "list":
        raise p.error(node.pos, f"{name}: expected a list of states like [2, 3, 4, 5] or "
                      f"range(2, 6), found {_describe(node)}")
    out: list[int] = []
    for _, v in node.args:
        if v.kind != "int":
            raise p.error(v.pos, f"{name}: expected a state number, found {_describe(v)}")
        out.append(v.value)
        problem = _concat_problem(tuple(out), num_nodes, name[:-len("_concat")])
        if problem:
            raise p.error(v.pos, problem)
    if not out:
        raise p.error(node.pos, _concat_problem((), num_nodes, name[:-len("_concat")]) or "")
    return tuple(out)


_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


def parse_genotype(text: str) -> Genotype:
    """Parse a genotype text, a published genotype's name or the JSON form (never evaluated).

    Raises ``ArchitectureError`` naming the problem and its character position.
    """
    if not isinstance(text, str):
        raise ArchitectureError(f"darts: expected a genotype text, got {type(text).__name__} {text!r}")
    if len(text) > MAX_TEXT:
        raise ArchitectureError(f"darts: genotype text of {len(text)} characters; at most {MAX_TEXT}")
    stripped = text.strip()
    if stripped in GENOTYPES:
        return genotype(stripped)
    if stripped.startswith("{"):
        return from_json(stripped)
    if not text.strip():
        raise ArchitectureError("darts: empty genotype text; expected Genotype(normal=[...], "
                                f"normal_concat=[...], reduce=[...], reduce_concat=[...]) or one "
                                f"of {', '.join(GENOTYPES)}")
    return _parse_text(text)


def _parse_text(text: str) -> Genotype:
    p = _Parser(text)
    root = p.parse()
    if root.kind == "name":
        raise p.error(root.pos, f"unknown genotype name {root.value!r}; published genotypes: "
                      f"{', '.join(GENOTYPES)}")
    if root.kind != "call" or root.value != "Genotype":
        raise p.error(root.pos, f"expected Genotype(...), found {_describe(root)}")
    values: dict[str, _Node] = {}
    keywords = False
    for i, (key, node) in enumerate(root.args):
        keywords = keywords or key is not None
        if key is None:
            if keywords or i >= len(_FIELDS):
                raise p.error(node.pos, "positional fields must come first, at most four: "
                              f"{', '.join(_FIELDS)}")
            key = _FIELDS[i]
        if key not in _FIELDS:
            raise p.error(node.pos, f"unknown field {key!r}; expected {', '.join(_FIELDS)}")
        if key in values:
            raise p.error(node.pos, f"field {key!r} given twice")
        values[key] = node
    missing = [f for f in _FIELDS if f not in values]
    if missing:
        raise p.error(root.pos, f"Genotype(...) lacks {', '.join(missing)}")
    cells = {}
    for name in ("normal", "reduce"):
        nodes = _cell(p, values[name], name)
        problem = _nodes_problem(nodes, name)
        if problem:
            raise p.error(values[name].pos, problem)
        concat = _concat(p, values[name + "_concat"], name + "_concat", len(nodes))
        cells[name] = (nodes, concat)
    return Genotype(cells["normal"][0], cells["normal"][1], cells["reduce"][0], cells["reduce"][1])


# --------------------------------------------------------------------------------------------
# JSON form


def to_json(geno: Genotype) -> str:
    """The JSON form: one list of ``[operation, input]`` edges per node, and the concat lists.

    ``{"format": "nasforge-darts-genotype/1", "normal": [[["sep_conv_3x3", 0], ["sep_conv_3x3",
    1]], ...], "normal_concat": [2, 3, 4, 5], "reduce": [...], "reduce_concat": [...]}``.
    Operations are named (not indexed), so the form does not depend on an operation list's order.
    """
    return json.dumps({"format": JSON_FORMAT,
                       "normal": [[list(e) for e in edges] for edges in geno.normal],
                       "normal_concat": list(geno.normal_concat),
                       "reduce": [[list(e) for e in edges] for edges in geno.reduce],
                       "reduce_concat": list(geno.reduce_concat)})


def from_json(text: str | dict[str, Any]) -> Genotype:
    """A genotype from its JSON form (a string or the decoded dict); ``ArchitectureError`` if bad."""
    if isinstance(text, str):
        if len(text) > MAX_TEXT:
            raise ArchitectureError(f"darts: JSON of {len(text)} characters; at most {MAX_TEXT}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"darts: invalid JSON genotype at character {exc.pos}: "
                                    f"{exc.msg}") from None
    else:
        data = text
    if not isinstance(data, dict):
        raise ArchitectureError(f"darts: a JSON genotype is an object with keys "
                                f"{', '.join(_FIELDS)}; got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS) - {"format"})
    missing = [f for f in _FIELDS if f not in data]
    if unknown or missing:
        raise ArchitectureError(f"darts: JSON genotype keys: unknown {unknown}, missing {missing}; "
                                f"expected {', '.join(_FIELDS)} (and optionally format)")
    if data.get("format", JSON_FORMAT) != JSON_FORMAT:
        raise ArchitectureError(f"darts: JSON genotype format {data['format']!r}; expected {JSON_FORMAT!r}")

    def cell(name: str) -> CellSpec:
        nodes = data[name]
        if not isinstance(nodes, list) or not all(isinstance(n, list) for n in nodes):
            raise ArchitectureError(f"darts: JSON {name} must be a list of nodes, each a list of "
                                    f"[operation, input] edges; got {nodes!r:.200}")
        out = []
        for j, edges in enumerate(nodes):
            if len(edges) > MAX_EDGES_PER_NODE:
                raise ArchitectureError(f"darts: JSON {name} node {j + 2} has {len(edges)} edges; "
                                        f"at most {MAX_EDGES_PER_NODE}")
            for e in edges:
                if not (isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                        and isinstance(e[1], int) and not isinstance(e[1], bool)):
                    raise ArchitectureError(f"darts: JSON {name} node {j + 2}: edge {e!r:.80} is not "
                                            "[operation, input]")
            out.append(tuple((e[0], e[1]) for e in edges))
        return tuple(out)

    def concat(name: str) -> tuple[int, ...]:
        values = data[name]
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                   for v in values):
            raise ArchitectureError(f"darts: JSON {name} must be a list of state numbers; "
                                    f"got {values!r:.200}")
        return tuple(values)

    return Genotype(cell("normal"), concat("normal_concat"), cell("reduce"), concat("reduce_concat"))


# --------------------------------------------------------------------------------------------
# published genotypes, as printed in the DARTS repository's cnn/genotypes.py (quark0/darts):
# NASNet-A (Zoph et al. 2018) and AmoebaNet-A (Real et al. 2019) as DARTS transcribed them, and
# the two DARTS cells (first-order V1, second-order V2, the paper's result; DARTS = DARTS_V2).
# PNAS and ENAS cells are not in that file and are not included here.

GENOTYPES: dict[str, str] = {
    "DARTS_V1": "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), "
                "('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                "('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
                "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], "
                "reduce_concat=[2, 3, 4, 5])",
    "DARTS_V2": "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
                "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
                "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
                "reduce_concat=[2, 3, 4, 5])",
    "NASNet": "Genotype(normal=[('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 0), "
              "('sep_conv_3x3', 0), ('avg_pool_3x3', 1), ('skip_connect', 0), ('avg_pool_3x3', 0), "
              "('avg_pool_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 1)], "
              "normal_concat=[2, 3, 4, 5, 6], reduce=[('sep_conv_5x5', 1), ('sep_conv_7x7', 0), "
              "('max_pool_3x3', 1), ('sep_conv_7x7', 0), ('avg_pool_3x3', 1), ('sep_conv_5x5', 0), "
              "('skip_connect', 3), ('avg_pool_3x3', 2), ('sep_conv_3x3', 2), ('max_pool_3x3', 1)], "
              "reduce_concat=[4, 5, 6])",
    "AmoebaNet": "Genotype(normal=[('avg_pool_3x3', 0), ('max_pool_3x3', 1), ('sep_conv_3x3', 0), "
                 "('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('avg_pool_3x3', 3), ('sep_conv_3x3', 1), "
                 "('skip_connect', 1), ('skip_connect', 0), ('avg_pool_3x3', 1)], "
                 "normal_concat=[4, 5, 6], reduce=[('avg_pool_3x3', 0), ('sep_conv_3x3', 1), "
                 "('max_pool_3x3', 0), ('sep_conv_7x7', 2), ('sep_conv_7x7', 0), ('avg_pool_3x3', 1), "
                 "('max_pool_3x3', 0), ('max_pool_3x3', 1), ('conv_7x1_1x7', 0), ('sep_conv_3x3', 5)], "
                 "reduce_concat=[3, 4, 6])",
}
GENOTYPES["DARTS"] = GENOTYPES["DARTS_V2"]


def genotype(name: str) -> Genotype:
    """A published genotype by name: ``DARTS_V1``, ``DARTS_V2`` (= ``DARTS``), ``NASNet``, ``AmoebaNet``."""
    try:
        text = GENOTYPES[name]
    except (KeyError, TypeError):
        raise ArchitectureError(f"darts: unknown genotype name {name!r}; published genotypes: "
                                f"{', '.join(GENOTYPES)}") from None
    return _parse_text(text)


# --------------------------------------------------------------------------------------------
# the network


class DartsCell(nn.Module):
    """One cell of a genotype: preprocess the two inputs, compute the nodes, concatenate.

    ``c_pp`` / ``c_p``: channels of the cell inputs (the cells two and one back); ``c``: the
    width of every node. In a reduction cell the edges leaving states 0 and 1 have stride 2.
    """

    def __init__(self, dim: int, nodes: CellSpec, concat: Sequence[int], c_pp: int, c_p: int,
                 c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0: nn.Module = (FactorizedReduce(dim, c_pp, c) if reduction_prev
                                       else ReLUConvBN(dim, c_pp, c, 1))
        self.preprocess1 = ReLUConvBN(dim, c_p, c, 1)
        self.inputs = [[src for _, src in edges] for edges in nodes]
        self.ops = nn.ModuleList(
            nn.ModuleList(make_op(op, dim, c, 2 if reduction and src < 2 else 1)
                          for op, src in edges) for edges in nodes)
        self.concat = list(concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                drop: DropPath | None = None) -> torch.Tensor:
        """The cell's output; ``drop`` (the network's drop-path) acts on every non-identity edge."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for sources, ops in zip(self.inputs, self.ops):
            total = None
            for src, op in zip(sources, ops):
                h = op(states[src])
                if drop is not None and not isinstance(op, nn.Identity):
                    h = drop(h)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """The DARTS CIFAR auxiliary classifier, for the output of the second reduction cell.

    ReLU, 5x5 average pooling with stride 3 (when the map is at least 5 wide; on CIFAR's 8x8 it
    gives 2x2), 1x1 conv to 128 + BN + ReLU, a conv to 768 covering the remaining map (2x2 at
    most, after adaptive average pooling) + BN + ReLU, and a linear classifier. On 32x32 inputs
    this is exactly the DARTS ``AuxiliaryHeadCIFAR``.
    """

    def __init__(self, dim: int, channels: int, sizes: Sequence[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.ReLU(inplace=False)]
        if min(sizes) >= 5:
            layers.append(avg_pool(dim, 5, 3))
            sizes = [(s - 5) // 3 + 1 for s in sizes]
        kernel = min(min(sizes), 2)
        if max(sizes) > kernel:
            layers.append((nn.AdaptiveAvgPool1d if dim == 1 else nn.AdaptiveAvgPool2d)(kernel))
        layers += [conv(dim, channels, 128, 1, bias=False), batch_norm(dim, 128), nn.ReLU(inplace=False),
                   conv(dim, 128, 768, kernel, bias=False), batch_norm(dim, 768), nn.ReLU(inplace=False)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class DartsEncoder(nn.Module):
    """Stem, cells and global average pooling; the features a ``DartsNetwork``'s head classifies.

    ``drop_path`` (a ``DropPath``; its probability ``drop_path.p`` may be ramped per epoch, as
    DARTS does) acts on every non-identity edge in training mode. With an auxiliary head, each training-mode forward pass
    stores the auxiliary logits in ``aux_logits`` (``None`` in eval mode or without the head).
    """

    def __init__(self, genotype: Genotype, dim: int, in_channels: int, sizes: Sequence[int], C: int,
                 layers: int, num_classes: int, *, stem_multiplier: int = 3,
                 auxiliary: bool = False, drop_path_prob: float = 0.0):
        super().__init__()
        self.drop_path = DropPath(drop_path_prob)
        self.aux_logits: torch.Tensor | None = None
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(conv(dim, in_channels, c_curr, 3, padding=1, bias=False),
                                  batch_norm(dim, c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reductions = reduction_positions(layers)
        self.aux_index = 2 * layers // 3
        reduction_prev = False
        aux_channels, aux_sizes = 0, list(sizes)
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
                sizes = [(s + 1) // 2 for s in sizes]
            nodes, concat = genotype.cell(reduction)
            cell = DartsCell(dim, nodes, concat, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_index:
                aux_channels, aux_sizes = c_p, list(sizes)
        self.auxiliary_head = (AuxiliaryHead(dim, aux_channels, aux_sizes, num_classes)
                               if auxiliary else None)
        self.pool = nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)
        self.out_channels = c_p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.aux_logits = None
        drop = self.drop_path if self.training and self.drop_path.p > 0 else None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                self.aux_logits = self.auxiliary_head(s1)
        return torch.flatten(self.pool(s1), 1)


class DartsNetwork(Network):
    """A ``Network`` whose encoder is a ``DartsEncoder``; ``model(x)`` returns the main logits.

    Training with the auxiliary head: after a training-mode forward, ``model.aux_logits`` holds
    the auxiliary logits; add ``aux_weight * cross_entropy(model.aux_logits, y)`` to the loss
    (DARTS uses 0.4). Evaluators that only call ``model(x)`` are unaffected.
    """

    encoder: DartsEncoder

    @property
    def aux_logits(self) -> torch.Tensor | None:
        return self.encoder.aux_logits

    @property
    def drop_path_prob(self) -> float:
        """The drop-path probability in training (settable, e.g. by an epoch callback)."""
        return self.encoder.drop_path.p

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise ConfigError(f"drop_path_prob = {value!r}; expected a probability in [0, 1)")
        self.encoder.drop_path.p = float(value)


def auxiliary_loss(weight: float = 0.4, label_smoothing: float = 0.0
                   ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A ``loss_fn`` for the training engine: cross-entropy of the logits plus ``weight`` times
    that of the auxiliary logits (DARTS trains with ``weight = 0.4``).

    ``Engine(model, config, seed=..., loss_fn=auxiliary_loss(0.4))``. Without an auxiliary
    head (or in eval mode) it is the plain cross-entropy.
    """
    if not (isinstance(weight, (int, float)) and weight >= 0):
        raise ConfigError(f"auxiliary loss weight = {weight!r}; expected a number >= 0")

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        aux = getattr(model, "aux_logits", None)
        if aux is not None and weight > 0:
            loss = loss + weight * F.cross_entropy(aux, y, label_smoothing=label_smoothing)
        return loss, logits

    return loss_fn


class DropPathSchedule(Callback):
    """Training-engine callback: drop-path probability ``max_prob * (epoch - 1) / epochs`` at
    the start of each (1-based) epoch, DARTS's linear ramp from 0."""

    def __init__(self, max_prob: float):
        if not (isinstance(max_prob, (int, float)) and 0.0 <= max_prob < 1.0):
            raise ConfigError(f"drop-path max_prob = {max_prob!r}; expected a probability in [0, 1)")
        self.max_prob = float(max_prob)

    def on_epoch_start(self, engine: Any) -> None:
        model = engine.model
        if not isinstance(model, DartsNetwork):
            raise ConfigError(f"DropPathSchedule needs a DARTS network; got {type(model).__name__}")
        model.drop_path_prob = self.max_prob * (engine.epoch - 1) / engine.config.epochs


def reduction_positions(layers: int) -> list[int]:
    """Indices of the reduction cells: ``layers // 3`` and ``2 * layers // 3`` (DARTS)."""
    return sorted({layers // 3, 2 * layers // 3})


def build_network(geno: Genotype, input_shape: Sequence[int], num_classes: int, *,
                  C: int = 36, layers: int = 20, stem_multiplier: int = 3,
                  auxiliary: bool = False, drop_path_prob: float = 0.0) -> DartsNetwork:
    """The DARTS evaluation network for ``geno`` on inputs ``(C, H, W)`` (images) or ``(C, L)``.

    Raises ``ArchitectureError`` when the input is too small for the reductions or an operation
    has no form for the input's dimensionality.
    """
    shape = tuple(int(v) for v in input_shape)
    if len(shape) not in (2, 3):
        raise ArchitectureError(f"darts: input shape {shape}; expected (C, L) series or (C, H, W) images")
    dim = len(shape) - 1
    check_input_size(shape, layers)
    if dim == 1 and "conv_7x1_1x7" in geno.ops():
        raise ArchitectureError("darts: conv_7x1_1x7 is a factorised 2-D convolution; it has no "
                                "1-D form for series inputs")
    encoder = DartsEncoder(geno, dim, shape[0], shape[1:], C, layers, num_classes,
                           stem_multiplier=stem_multiplier, auxiliary=auxiliary,
                           drop_path_prob=drop_path_prob)
    return DartsNetwork(encoder, nn.Linear(encoder.out_channels, num_classes))


def check_input_size(shape: Sequence[int], layers: int) -> None:
    """Refuse an input ``shape`` (``(C, ...)``) too small for the reduction cells.

    Each reduction halves every axis (rounding up); an axis must have at least 2 positions
    before each reduction.
    """
    reductions = reduction_positions(layers)
    size = min(shape[1:])
    for i in reductions:
        if size < 2:
            axes = "x".join(str(v) for v in shape[1:])
            raise ArchitectureError(
                f"darts: input {shape[0]}x{axes} is too small for {len(reductions)} reduction "
                f"cells (cell {i} would halve a size-{size} axis); with layers={layers} the "
                f"smallest axis needs at least {2 ** (len(reductions) - 1) + 1} positions")
        size = (size + 1) // 2


# --------------------------------------------------------------------------------------------
# the space


@register("spaces", "darts")
class DartsSpace(SearchSpace):
    """The DARTS cell space: per cell (normal, reduce) and node, two edges (input state, operation).

    Options (defaults give the DARTS search network's size, quick on small data; the DARTS
    CIFAR-10 evaluation network is ``C=36, layers=20, auxiliary=True, drop_path=0.2``):

    - ``C``: initial channels; ``layers``: number of cells; ``nodes``: intermediate nodes per cell.
    - ``stem_multiplier``: the stem has ``stem_multiplier * C`` channels.
    - ``ops``: the candidate operations (default the 8 DARTS primitives). ``allow_none``: whether
      a discrete genotype may put ``none`` on an edge (sampling, mutation, decisions); DARTS's
      derivation never does, DARTS-CC's argmax derivation may.
    - ``auxiliary``: build the auxiliary head; ``drop_path``: drop-path probability in training.

    ``parse`` accepts any genotype the builder can build (other node counts, the extra operations
    ``sep_conv_7x7`` and ``conv_7x1_1x7``, nodes with any number of edges, as in NASNet and
    AmoebaNet); the sequential view, ``sample`` and ``encode`` cover the searched space only:
    ``nodes`` nodes of two edges from distinct inputs, operations from ``ops``, all nodes concatenated.

    Sequential view: for each cell, node and edge, first the input state (an ``int``), then the
    operation (a ``str``); ``2 * nodes * 4`` decisions (32 by default).
    """

    name = "darts"
    kinds = ("image", "series")

    def __init__(self, *, C: int = 16, layers: int = 8, nodes: int = 4, stem_multiplier: int = 3,
                 ops: list[str] | None = None, allow_none: bool = False, auxiliary: bool = False,
                 drop_path: float = 0.0):
        for key, value, low in (("C", C, 1), ("layers", layers, 1), ("nodes", nodes, 1),
                                ("stem_multiplier", stem_multiplier, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"darts: {key}={value!r}; expected an integer >= {low}")
        if nodes > MAX_NODES:
            raise ConfigError(f"darts: nodes={nodes}; at most {MAX_NODES}")
        ops = list(PRIMITIVES if ops is None else ops)
        unknown = [op for op in ops if op not in OPS]
        if unknown or not ops or len(set(ops)) != len(ops):
            raise ConfigError(f"darts: ops={ops!r}; expected distinct names from "
                              f"{', '.join(KNOWN_OPS)}")
        genotype_ops = [op for op in ops if allow_none or op != "none"]
        if not genotype_ops:
            raise ConfigError(f"darts: ops={ops!r} with allow_none={allow_none} leaves no operation "
                              "for a genotype's edges")
        if not (isinstance(drop_path, (int, float)) and 0.0 <= drop_path < 1.0):
            raise ConfigError(f"darts: drop_path={drop_path!r}; expected a probability in [0, 1)")
        self.C, self.layers, self.nodes = C, layers, nodes
        self.stem_multiplier = stem_multiplier
        self.ops = ops
        self.allow_none = allow_none
        self.genotype_ops = genotype_ops
        self.auxiliary = auxiliary
        self.drop_path = float(drop_path)
        self.concat = tuple(range(2, nodes + 2))

    def options(self) -> dict[str, Any]:
        return {"C": self.C, "layers": self.layers, "nodes": self.nodes,
                "stem_multiplier": self.stem_multiplier, "ops": list(self.ops),
                "allow_none": self.allow_none, "auxiliary": self.auxiliary,
                "drop_path": self.drop_path}

    # -- text ---------------------------------------------------------------------------------
    def parse(self, text: str) -> Genotype:
        """A genotype text, a published name (``DARTS_V2``) or the JSON form."""
        return parse_genotype(text)

    def genotype(self, name: str) -> Genotype:
        """A published genotype by name (see :data:`GENOTYPES`)."""
        return genotype(name)

    def to_json(self, arch: Architecture) -> str:
        return to_json(self._check(arch))

    def from_json(self, text: str | dict[str, Any]) -> Genotype:
        return from_json(text)

    # -- sequential view ------------------------------------------------------------------------
    @property
    def num_decisions(self) -> int:
        return 2 * self.nodes * 4

    def _position(self, p: int) -> tuple[int, int, int, bool]:
        """(cell 0/1, node j, edge slot 0/1, is the op decision) of decision number ``p``."""
        cell, rest = divmod(p, self.nodes * 4)
        node, rest = divmod(rest, 4)
        slot, kind = divmod(rest, 2)
        return cell, node, slot, kind == 1

    def choices(self, prefix: Sequence[Decision]) -> list[Decision]:
        p = len(prefix)
        if p > self.num_decisions:
            raise ArchitectureError(f"darts: prefix of {p} decisions; a genotype has {self.num_decisions}")
        if p == self.num_decisions:
            return []
        _, node, slot, is_op = self._position(p)
        if is_op:
            return list(self.genotype_ops)
        inputs = list(range(node + 2))
        if slot == 1:  # the node's second edge comes from a different state than its first
            inputs.remove(prefix[p - 2])
        return inputs

    def state_key(self, prefix: Sequence[Decision]) -> Hashable:
        """The decision number and the previous two decisions (the current edge's context)."""
        return (len(prefix), tuple(prefix[-2:]))

    def to_decisions(self, arch: Architecture) -> tuple[Decision, ...]:
        geno = self._check(arch)
        problem = self.outside(geno)
        if problem:
            raise ArchitectureError(f"darts: {problem}; the sequential view covers the searched "
                                    "space only")
        return tuple(d for cell in (geno.normal, geno.reduce) for edges in cell
                     for op, src in edges for d in (src, op))

    def from_decisions(self, decisions: Sequence[Decision]) -> Genotype:
        decisions = list(decisions)
        if len(decisions) != self.num_decisions:
            raise ArchitectureError(f"darts: {len(decisions)} decisions; expected {self.num_decisions} "
                                    f"(input and operation of 2 edges x {self.nodes} nodes x 2 cells)")
        for i, d in enumerate(decisions):
            valid = self.choices(decisions[:i])
            if d not in valid or type(d) is not type(valid[0]):
                raise ArchitectureError(f"darts: decision {i} = {d!r}; expected one of {valid}")
        cells = []
        per_cell = self.nodes * 4
        for c in range(2):
            ds = decisions[c * per_cell:(c + 1) * per_cell]
            cells.append(tuple(((ds[4 * j + 1], ds[4 * j]), (ds[4 * j + 3], ds[4 * j + 2]))
                               for j in range(self.nodes)))
        return Genotype(cells[0], self.concat, cells[1], self.concat)

    def outside(self, geno: Genotype) -> str | None:
        """Why ``geno`` is not in the searched space, or None if it is."""
        for name in ("normal", "reduce"):
            nodes, concat = getattr(geno, name), getattr(geno, name + "_concat")
            if len(nodes) != self.nodes:
                return f"the {name} cell has {len(nodes)} nodes; this space has {self.nodes}"
            if concat != self.concat:
                return f"{name}_concat is {list(concat)}; this space concatenates {list(self.concat)}"
            for j, edges in enumerate(nodes):
                if len(edges) != 2 or edges[0][1] == edges[1][1]:
                    return (f"{name} node {j + 2} has edges {list(edges)}; this space needs two "
                            "edges from different states")
                for op, _ in edges:
                    if op not in self.genotype_ops:
                        return (f"{name} node {j + 2} uses {op!r}; this space's genotype "
                                f"operations are {', '.join(self.genotype_ops)}")
        return None

    # -- sampling and neighbourhood -------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Genotype:
        cells = []
        for _ in range(2):
            nodes = []
            for j in range(self.nodes):
                a, b = rng.choice(j + 2, size=2, replace=False)
                ops = rng.integers(len(self.genotype_ops), size=2)
                nodes.append(((self.genotype_ops[ops[0]], int(a)), (self.genotype_ops[ops[1]], int(b))))
            cells.append(tuple(nodes))
        return Genotype(cells[0], self.concat, cells[1], self.concat)

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Genotype:
        """Change one edge: its operation, or its input state (kept apart from its sibling edge's)."""
        geno = self._check(arch)
        edges = [(name, j, k) for name in ("normal", "reduce")
                 for j, node in enumerate(getattr(geno, name)) for k in range(len(node))]
        for _ in range(100):
            name, j, k = edges[int(rng.integers(len(edges)))]
            node = getattr(geno, name)[j]
            op, src = node[k]
            taken = {s for i, (_, s) in enumerate(node) if i != k}
            new_inputs = [s for s in range(j + 2) if s != src and s not in taken]
            new_ops = [o for o in self.genotype_ops if o != op]
            if new_inputs and (not new_ops or rng.random() < 0.5):
                edge = (op, new_inputs[int(rng.integers(len(new_inputs)))])
            elif new_ops:
                edge = (new_ops[int(rng.integers(len(new_ops)))], src)
            else:
                continue
            new_node = node[:k] + (edge,) + node[k + 1:]
            cell = list(getattr(geno, name))
            cell[j] = new_node
            fields = {"normal": geno.normal, "reduce": geno.reduce, name: tuple(cell)}
            return Genotype(fields["normal"], geno.normal_concat, fields["reduce"], geno.reduce_concat)
        raise ArchitectureError(f"darts: no edge of {geno} can change with operations {self.genotype_ops}")

    # -- features for learned models (see nasforge.graph) -----------------------------------------
    @property
    def encoding_size(self) -> int:
        return 2 * self.nodes * 2 * (len(self.ops) + self.nodes + 1)

    def encode(self, arch: Architecture) -> np.ndarray:
        """Per edge (normal cell, then reduce; node by node; edges in order) a one-hot of its
        operation over ``ops`` followed by a one-hot of its input state over ``0..nodes``.

        Covers genotypes of this space's shape (``nodes`` nodes of two edges, operations from
        ``ops`` -- ``none`` included even when ``allow_none`` is off -- all nodes concatenated);
        ``ArchitectureError`` for others (NASNet, nested forms): use ``graph`` for those.
        """
        geno = self._check(arch)
        width = len(self.ops) + self.nodes + 1
        out = np.zeros((2, self.nodes, 2, width), dtype=np.float32)
        for c, (name, nodes, concat) in enumerate((("normal", geno.normal, geno.normal_concat),
                                                   ("reduce", geno.reduce, geno.reduce_concat))):
            if len(nodes) != self.nodes or concat != self.concat \
                    or any(len(edges) != 2 for edges in nodes):
                raise ArchitectureError(
                    f"darts: cannot encode this {name} cell ({len(nodes)} nodes, concat "
                    f"{list(concat)}): encode covers cells of {self.nodes} "
                    f"nodes of two edges concatenated as {list(self.concat)}; use graph() instead")
            for j, edges in enumerate(nodes):
                for k, (op, src) in enumerate(edges):
                    if op not in self.ops:
                        raise ArchitectureError(f"darts: cannot encode operation {op!r}; this space's "
                                                f"operations are {', '.join(self.ops)}")
                    out[c, j, k, self.ops.index(op)] = 1.0
                    out[c, j, k, len(self.ops) + src] = 1.0
        return out.reshape(-1)

    @property
    def op_vocab(self) -> tuple[str, ...]:
        extra = [op for op in KNOWN_OPS if op not in self.ops]
        return ("input", *self.ops, *extra, "concat", "output")

    def graph(self, arch: Architecture) -> "ArchGraph":
        """The two cells as one DAG with operations as nodes: a normal cell followed by a
        reduction cell, as they meet in the network.

        Nodes, in topological order: 0 and 1 the normal cell's inputs (labels ``input``; the
        outputs of the two cells before it), one node per edge operation of the normal cell
        (node by node, edges in order), the normal cell's output (``concat``), one node per edge
        operation of the reduction cell, and its output (``output``). The reduction cell reads
        node 1 (its state 0, the cell two back) and the ``concat`` node (its state 1). An
        operation reads its source state: an input node, or every operation into that
        intermediate state (the state is their sum); ``concat`` / ``output`` read every
        operation into a concatenated state. Attributes: ``cell`` (0 normal, 1 reduce),
        ``state`` (the intermediate state the operation feeds), ``src`` (the state it reads) and
        ``stride``. Works for every genotype the space parses (other node and edge counts too).
        """
        from ..graph import ArchGraph

        geno = self._check(arch)
        ops: list[str] = ["input", "input"]
        attrs: list[dict[str, float]] = [{}, {}]
        edges: list[tuple[int, int]] = []
        state_nodes: list[list[int]] = [[0], [1]]  # graph nodes whose sum is each cell state
        for c, reduction in enumerate((False, True)):
            nodes, concat = geno.cell(reduction)
            states = state_nodes
            for j, cell_edges in enumerate(nodes):
                into = []
                for op, src in cell_edges:
                    index = len(ops)
                    ops.append(op)
                    attrs.append({"cell": float(c), "state": float(j + 2), "src": float(src),
                                  "stride": 2.0 if reduction and src < 2 else 1.0})
                    edges += [(a, index) for a in states[src]]
                    into.append(index)
                states.append(into)
            out = len(ops)
            ops.append("output" if reduction else "concat")
            attrs.append({})
            edges += [(a, out) for k in concat for a in states[k]]
            state_nodes = [states[1], [out]]  # the next cell reads this cell's input 1 and output
        return ArchGraph(ops=tuple(ops), edges=tuple(edges), inputs=(0, 1), outputs=(len(ops) - 1,),
                         attrs=tuple(attrs))

    def canonical_key(self, arch: Architecture) -> str:
        """A key equal for genotypes that differ only in the order of edges within a node (the
        same network: a node sums its edges); e.g. to find duplicates among random genotypes."""
        geno = self._check(arch)

        def sort_edges(cell: CellSpec) -> CellSpec:
            return tuple(tuple(sorted(edges, key=lambda e: (e[1], e[0]))) for edges in cell)

        return str(Genotype(sort_edges(geno.normal), geno.normal_concat, sort_edges(geno.reduce),
                            geno.reduce_concat))

    # -- building -------------------------------------------------------------------------------
    def check(self, arch: Architecture, task: Task) -> None:
        """Refuse a task whose input is too small for the reductions (without building)."""
        geno = self._check(arch)
        conv_dims(task, "darts")
        check_input_size(task.input_shape, self.layers)
        if task.kind == "series" and "conv_7x1_1x7" in geno.ops():
            raise ArchitectureError("darts: conv_7x1_1x7 has no 1-D form for series inputs")

    def build(self, arch: Architecture, task: Task) -> DartsNetwork:
        geno = self._check(arch)
        conv_dims(task, "darts")
        return build_network(geno, task.input_shape, task.num_classes, C=self.C, layers=self.layers,
                             stem_multiplier=self.stem_multiplier, auxiliary=self.auxiliary,
                             drop_path_prob=self.drop_path)

    def _check(self, arch: Architecture) -> Genotype:
        if not isinstance(arch, Genotype):
            raise ArchitectureError(f"darts: {arch!r} is not a DARTS genotype")
        return arch


__all__ = ["Genotype", "DartsSpace", "DartsNetwork", "auxiliary_loss", "DropPathSchedule", "DartsEncoder", "DartsCell", "AuxiliaryHead",
           "GENOTYPES", "genotype", "parse_genotype", "to_json", "from_json", "build_network",
           "reduction_positions", "check_input_size", "KNOWN_OPS", "PRIMITIVES"]
