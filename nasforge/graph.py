"""Architectures as features for learned models: a fixed-length vector and a graph of operations.

Every ``SearchSpace`` has ``encode(arch)`` (a float vector of ``space.encoding_size``) and
``graph(arch)`` (an ``ArchGraph``), read by predictors (an MLP on the vector, a GIN on the graph)
and by graph hypernetworks.

The graph convention (the one GIN accuracy predictors use, and NAS-Bench-101 / arch2vec):

- **operations are nodes, data flow is edges**. A space whose cells carry operations on edges
  (NAS-Bench-201, DARTS) turns each edge operation into a node; the cell's intermediate nodes
  (sums) become the edges from every operation that feeds them to every operation that reads
  them.
- Nodes are numbered in a topological order: every edge ``(src, dst)`` has ``src < dst``.
  Edges are sorted. ``inputs`` are nodes without predecessors that receive the network's input
  (label ``input``); ``outputs`` are the nodes whose value is the result.
- ``ops[i]`` is node ``i``'s operation label, one of ``space.op_vocab`` (a tuple fixed per
  space instance, so ``ArchGraph.one_hot(space.op_vocab)`` has the same columns for every
  architecture of the space); ``attrs[i]`` holds numeric hyperparameters of the node
  (``features``, ``kernel``, ``stride``, ...), whatever the space knows.

Two equal architectures give equal vectors and graphs; two different architectures of a space
give different ones (the conformance suite checks both for every registered space).

The defaults in ``SearchSpace`` work for any space through its sequential view: the vector is
a one-hot of each decision over the union of the choices seen at that position, and the graph a
chain ``input -> decision 1 -> ... -> decision n -> output``. The union is found by walking the
space's decision tree (all of it when it is small, else every option offered along 256 random
paths drawn from a fixed seed); a decision never seen there sets its position's ``other`` column.
Spaces with structure (chain, nb201) override both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from .errors import ArchitectureError

if TYPE_CHECKING:  # pragma: no cover
    from .core import Architecture, SearchSpace

INPUT, OUTPUT, OTHER = "input", "output", "other"


@dataclass(frozen=True, eq=False)
class ArchGraph:
    """A directed acyclic graph of operations (see the module docstring for the convention)."""

    ops: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    inputs: tuple[int, ...] = (0,)
    outputs: tuple[int, ...] = ()
    attrs: tuple[Mapping[str, float], ...] = field(default=())

    def __post_init__(self) -> None:
        ops = tuple(str(o) for o in self.ops)
        n = len(ops)
        edges = tuple(sorted({(int(a), int(b)) for a, b in self.edges}))
        attrs = tuple(dict(a) for a in self.attrs) if self.attrs else tuple({} for _ in ops)
        outputs = tuple(self.outputs) if self.outputs else ((n - 1,) if n else ())
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "attrs", attrs)
        object.__setattr__(self, "inputs", tuple(int(i) for i in self.inputs))
        object.__setattr__(self, "outputs", tuple(int(i) for i in outputs))
        if len(attrs) != n:
            raise ValueError(f"ArchGraph: {len(attrs)} attribute dicts for {n} nodes")
        for a, b in edges:
            if not (0 <= a < b < n):
                raise ValueError(f"ArchGraph: edge ({a}, {b}) must satisfy 0 <= src < dst < {n} "
                                 "(nodes are numbered in topological order)")
        for i in (*self.inputs, *self.outputs):
            if not 0 <= i < n:
                raise ValueError(f"ArchGraph: input/output node {i} out of range 0..{n - 1}")

    # -- identity ---------------------------------------------------------------------------------
    def key(self) -> Hashable:
        """A hashable value equal exactly when two graphs are equal (same numbering)."""
        return (self.ops, self.edges, self.inputs, self.outputs,
                tuple(tuple(sorted(a.items())) for a in self.attrs))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArchGraph) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    # -- structure --------------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return len(self.ops)

    def adjacency(self) -> np.ndarray:
        """``A[src, dst] = 1`` for each edge (upper triangular), ``(n, n)`` float32."""
        a = np.zeros((self.num_nodes, self.num_nodes), dtype=np.float32)
        for s, d in self.edges:
            a[s, d] = 1.0
        return a

    def predecessors(self, node: int) -> list[int]:
        return [s for s, d in self.edges if d == node]

    def successors(self, node: int) -> list[int]:
        return [d for s, d in self.edges if s == node]

    def reachable_from(self, nodes: Sequence[int]) -> set[int]:
        """Nodes reachable from ``nodes`` along edges (``nodes`` included)."""
        seen = set(nodes)
        for s, d in self.edges:  # sorted by src, and src < dst: one pass suffices
            if s in seen:
                seen.add(d)
        return seen

    def is_dag(self) -> bool:
        """Always true for a valid graph (``src < dst``); kept for readers that check."""
        return all(s < d for s, d in self.edges)

    def connected(self) -> bool:
        """Whether every output is reachable from the inputs."""
        reach = self.reachable_from(self.inputs)
        return bool(self.outputs) and all(o in reach for o in self.outputs)

    # -- features ---------------------------------------------------------------------------------
    def op_indices(self, vocab: Sequence[str]) -> np.ndarray:
        """Each node's operation as an index into ``vocab`` (``ArchitectureError`` if missing)."""
        index = {op: i for i, op in enumerate(vocab)}
        try:
            return np.array([index[op] for op in self.ops], dtype=np.int64)
        except KeyError as exc:
            raise ArchitectureError(f"operation {exc.args[0]!r} is not in the vocabulary "
                                    f"{tuple(vocab)}") from None

    def one_hot(self, vocab: Sequence[str]) -> np.ndarray:
        """``(n, len(vocab))`` float32 one-hot of the node operations."""
        out = np.zeros((self.num_nodes, len(vocab)), dtype=np.float32)
        out[np.arange(self.num_nodes), self.op_indices(vocab)] = 1.0
        return out

    def op_counts(self, vocab: Sequence[str]) -> np.ndarray:
        """How many nodes carry each operation of ``vocab`` (a hand feature for predictors)."""
        return np.bincount(self.op_indices(vocab), minlength=len(vocab)).astype(np.float32)

    def attr_matrix(self, keys: Sequence[str], fill: float = 0.0) -> np.ndarray:
        """``(n, len(keys))`` float32 of node attributes (``fill`` where a node lacks one)."""
        return np.array([[float(a.get(k, fill)) for k in keys] for a in self.attrs],
                        dtype=np.float32).reshape(self.num_nodes, len(keys))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly form."""
        return {"ops": list(self.ops), "edges": [list(e) for e in self.edges],
                "inputs": list(self.inputs), "outputs": list(self.outputs),
                "attrs": [dict(a) for a in self.attrs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArchGraph":
        return cls(ops=tuple(d["ops"]), edges=tuple(tuple(e) for e in d["edges"]),  # type: ignore[misc]
                   inputs=tuple(d.get("inputs", (0,))), outputs=tuple(d.get("outputs", ())),
                   attrs=tuple(d.get("attrs", ())))


def chain_graph(labels: Sequence[str], attrs: Sequence[Mapping[str, float]] | None = None, *,
                input_attrs: Mapping[str, float] | None = None,
                output_node: bool = True) -> ArchGraph:
    """``input -> labels[0] -> ... -> labels[-1] (-> output)``."""
    ops = [INPUT, *labels] + ([OUTPUT] if output_node else [])
    node_attrs = [dict(input_attrs or {}), *(dict(a) for a in (attrs or [{}] * len(labels)))]
    if output_node:
        node_attrs.append({})
    return ArchGraph(ops=tuple(ops), edges=tuple((i, i + 1) for i in range(len(ops) - 1)),
                     inputs=(0,), outputs=(len(ops) - 1,), attrs=tuple(node_attrs))


# --------------------------------------------------------------------------------------------
# the default features of any space, from its sequential view


def decision_label(decision: Any) -> str:
    """A decision's text as an operation label (``str``; tuples joined without spaces)."""
    if isinstance(decision, tuple):
        return "(" + ",".join(decision_label(d) for d in decision) + ")"
    return str(decision)


class SequentialFeatures:
    """The choices seen at each position of a space's sequential view, and features built on them.

    ``positions[i]`` lists the decisions seen at position ``i`` (in first-seen order); a vector
    has, per position, one column per such decision, one ``other`` column and one ``absent``
    column (the architecture is shorter), so its length is fixed for the space.
    """

    EXHAUSTIVE_LIMIT = 5_000  # prefixes visited before falling back to random paths
    PATHS = 256

    def __init__(self, space: "SearchSpace"):
        self.positions, self.exhaustive = self._discover(space)
        self.index = [{d: j for j, d in enumerate(p)} for p in self.positions]
        self.offsets = np.cumsum([0] + [len(p) + 2 for p in self.positions]).tolist()
        self.size = int(self.offsets[-1])
        labels: list[str] = []
        for p in self.positions:
            for d in p:
                label = decision_label(d)
                if label not in labels:
                    labels.append(label)
        self.vocab = (INPUT, *labels, OTHER, OUTPUT)

    def _discover(self, space: "SearchSpace") -> tuple[list[list[Any]], bool]:
        positions: list[list[Any]] = []
        seen: list[set] = []

        def record(depth: int, options: Sequence[Any]) -> None:
            if not options:  # a complete architecture: no position here
                return
            while len(positions) <= depth:
                positions.append([])
                seen.append(set())
            for o in options:
                if o not in seen[depth]:
                    seen[depth].add(o)
                    positions[depth].append(o)

        stack: list[tuple[Any, ...]] = [()]
        visited = 0
        while stack and visited < self.EXHAUSTIVE_LIMIT:
            prefix = stack.pop()
            visited += 1
            options = space.choices(list(prefix))
            record(len(prefix), options)
            stack.extend(prefix + (o,) for o in reversed(options))
        if not stack:
            return positions, True
        rng = np.random.default_rng(0)
        for _ in range(self.PATHS):
            prefix: list[Any] = []
            for _ in range(10_000):
                options = space.choices(prefix)
                if not options:
                    break
                record(len(prefix), options)
                prefix.append(options[int(rng.integers(len(options)))])
        return positions, False

    def encode(self, decisions: Sequence[Any]) -> np.ndarray:
        if len(decisions) > len(self.positions):
            raise ArchitectureError(
                f"{len(decisions)} decisions; the space's encoding covers at most "
                f"{len(self.positions)} (override encode() for spaces with longer architectures)")
        out = np.zeros(self.size, dtype=np.float32)
        for i in range(len(self.positions)):
            base = self.offsets[i]
            if i >= len(decisions):
                out[base + len(self.positions[i]) + 1] = 1.0  # absent
                continue
            try:
                j = self.index[i].get(decisions[i])
            except TypeError:  # unhashable decision
                j = None
            out[base + (len(self.positions[i]) if j is None else j)] = 1.0
        return out

    def graph(self, decisions: Sequence[Any]) -> ArchGraph:
        vocab = set(self.vocab)
        labels = [decision_label(d) for d in decisions]
        labels = [label if label in vocab else OTHER for label in labels]
        attrs = [{"position": float(i)} for i in range(len(labels))]
        if all(label != OTHER for label in labels):
            return chain_graph(labels, attrs)
        # an unseen decision keeps the graph distinct through its position's index attribute
        for i, d in enumerate(decisions):
            if labels[i] == OTHER:
                attrs[i]["other_hash"] = float(_stable_hash(decision_label(d)))
        return chain_graph(labels, attrs)


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


def _per_space(space: "SearchSpace", key: str, make: Callable[["SearchSpace"], Any]) -> Any:
    """``make(space)``, computed once per space instance (kept in the instance's ``__dict__``)."""
    cached = space.__dict__.get(key)
    if cached is None:
        cached = make(space)
        space.__dict__[key] = cached
    return cached


def sequential_features(space: "SearchSpace") -> SequentialFeatures:
    """The space's ``SequentialFeatures``, computed once per space instance."""
    return _per_space(space, "_sequential_features", SequentialFeatures)


# --------------------------------------------------------------------------------------------
# path encoding (BANANAS)


class PathFeatures:
    """BANANAS's path encoding (White et al., AAAI 2021) of a space, read from ``space.graph``.

    A path is a route through the graph from an input to an output; its key is the sequence of
    operation labels along it (input and output labels left out). The vector counts, for every
    possible sequence of at most ``max_length`` operations over ``labels``, how many paths have
    it, in a fixed order (length 1 first, then length 2, ...; within a length, base-``len(labels)``
    numbering); one last column counts paths that are longer or carry a label outside ``labels``.
    Paths through a ``zero`` operation (``none``: it passes nothing) are left out, so two cells
    that compute the same paths get the same vector, whatever their dead edges hold.

    ``labels`` default to ``space.op_vocab`` without ``input``, ``output`` and the zero ops;
    ``max_length`` defaults to the longest path seen in 256 architectures sampled from a fixed
    seed. The length is ``sum(V**l for l in 1..max_length) + 1``; spaces where that passes
    ``MAX_SIZE`` (long chains, DARTS cells) are refused with a message naming the size.
    """

    MAX_SIZE = 100_000
    SAMPLES = 256

    def __init__(self, space: "SearchSpace", *, max_length: int | None = None,
                 zero: Sequence[str] = ("none",)):
        self.zero = frozenset(zero)
        self.labels = tuple(op for op in space.op_vocab
                            if op not in (INPUT, OUTPUT) and op not in self.zero)
        self.index = {op: i for i, op in enumerate(self.labels)}
        if max_length is None:
            rng = np.random.default_rng(0)
            max_length = max((len(p) for _ in range(self.SAMPLES)
                              for p in self.paths(space.graph(space.sample(rng)), keep_zero=True)),
                             default=1)
        self.max_length = max(1, int(max_length))
        v = len(self.labels)
        self.offsets = [0]
        for length in range(1, self.max_length + 1):
            self.offsets.append(self.offsets[-1] + v ** length)
            if self.offsets[-1] > self.MAX_SIZE:
                raise ArchitectureError(
                    f"{space.name}: a path encoding of {v} operations and paths of up to "
                    f"{self.max_length} of them needs more than {self.MAX_SIZE:,} columns; "
                    "use space.encode instead")
        self.size = self.offsets[-1] + 1

    def paths(self, graph: ArchGraph, *, keep_zero: bool = False) -> list[tuple[str, ...]]:
        """Operation labels along every input-to-output path (zero-op paths dropped unless
        ``keep_zero``)."""
        succ: dict[int, list[int]] = {}
        for s, d in graph.edges:
            succ.setdefault(s, []).append(d)
        outputs = set(graph.outputs)
        ends = {INPUT, OUTPUT}
        found: list[tuple[str, ...]] = []

        def walk(node: int, trail: tuple[str, ...]) -> None:
            op = graph.ops[node]
            if op in self.zero and not keep_zero:
                return
            if op not in ends:
                trail = trail + (op,)
            if node in outputs:
                found.append(trail)
            for nxt in succ.get(node, ()):
                walk(nxt, trail)

        for start in graph.inputs:
            walk(start, ())
        return found

    def encode(self, graph: ArchGraph) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.float32)
        v = len(self.labels)
        for path in self.paths(graph):
            if not path:
                continue  # input wired straight to output: no operation to count
            if len(path) > self.max_length or any(op not in self.index for op in path):
                out[-1] += 1.0
                continue
            code = 0
            for op in path:
                code = code * v + self.index[op]
            out[self.offsets[len(path) - 1] + code] += 1.0
        return out


def path_features(space: "SearchSpace") -> PathFeatures:
    """The space's ``PathFeatures`` (default options), computed once per space instance."""
    return _per_space(space, "_path_features", PathFeatures)


def encode_paths(space: "SearchSpace", arch: "Architecture") -> np.ndarray:
    """``arch``'s path encoding (see ``PathFeatures``), a float32 vector of fixed length."""
    return path_features(space).encode(space.graph(arch))


def one_hot(value: Any, options: Sequence[Any]) -> list[float]:
    """``options``-long one-hot of ``value`` plus a final ``other`` column."""
    out = [0.0] * (len(options) + 1)
    out[options.index(value) if value in options else len(options)] = 1.0
    return out


__all__ = ["ArchGraph", "chain_graph", "SequentialFeatures", "sequential_features",
           "PathFeatures", "path_features", "encode_paths",
           "decision_label", "one_hot", "INPUT", "OUTPUT", "OTHER"]
