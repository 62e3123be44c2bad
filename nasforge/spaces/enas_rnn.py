"""The ENAS recurrent cell space (Pham et al. 2018, section 2.1): a DAG of N nodes per time step.

Node 1 reads the step's input ``x_t`` and the previous state ``h_{t-1}``; node ``j > 1`` reads
one earlier node ``i`` (a decision) and applies an activation among ``tanh``, ``relu``,
``identity`` and ``sigmoid`` (a decision), with ENAS's highway connection::

    c_1 = sigmoid(x_t W_x^c + h_{t-1} W_h^c)     h_1 = c_1 * f_1(x_t W_x^h + h_{t-1} W_h^h) + (1 - c_1) * h_{t-1}
    c_j = sigmoid(h_i W_{i,j}^c)                h_j = c_j * f_j(h_i W_{i,j}^h) + (1 - c_j) * h_i

The cell's output ``h_t`` is the average of the loose ends (nodes no other node reads). Each
``W`` above is one ``(features, 2 * hidden)`` matrix (gate and value halves); there is one per
(previous node, node) pair, so a shared-weight supernet (``nasforge.oneshot.enas_rnn``) holds
all ``N (N - 1) / 2`` of them and a sampled cell uses only its own ``N - 1``.

Text: one ``source:activation`` token per node, node 1 first (its source is always 0, the
input), e.g. ``0:tanh 1:relu 1:identity 2:sigmoid``. Decisions (the controller's sequence):
node 1's activation, then for each node ``j >= 2`` its source (an int in 1..j-1) and its
activation (a string).

Networks: on a ``series`` task ``(C, L)`` the cell runs over the series, ``patch`` values per
step, and a linear head classifies the mean (or last) state; on a ``language`` task
(``nasforge.data.ptb``) an embedding feeds the cell and a linear decoder predicts the next token
at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..core import Architecture, Decision, Network, SearchSpace, Task, TextArchitecture
from ..errors import ArchitectureError, ConfigError, quote_text
from ..registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..graph import ArchGraph

ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "identity", "sigmoid")
_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh, "relu": torch.relu, "identity": lambda v: v, "sigmoid": torch.sigmoid}
MAX_NODES = 64
MAX_HIDDEN = 4096
MAX_PATCH = 4096


@dataclass(frozen=True, eq=False)
class RnnCellArch(TextArchitecture):
    """A recurrent cell: ``nodes[j - 1] = (source, activation)`` of node j (node 1's source is 0)."""

    nodes: tuple[tuple[int, str], ...]
    _text: str = field(init=False, repr=False, compare=False)
    _equal_by = "nodes"  # equal when the nodes are

    def __post_init__(self) -> None:
        nodes = tuple((int(s), str(a)) for s, a in self.nodes)
        if not nodes:
            raise ArchitectureError("enas_rnn: a cell needs at least one node")
        for j, (source, act) in enumerate(nodes, start=1):
            if act not in ACTIVATIONS:
                raise ArchitectureError(f"enas_rnn: node {j} has activation {act!r}; expected one "
                                        f"of {', '.join(ACTIVATIONS)}")
            allowed = (0, 0) if j == 1 else (1, j - 1)
            if not allowed[0] <= source <= allowed[1]:
                raise ArchitectureError(
                    f"enas_rnn: node {j} reads node {source}; expected "
                    + ("0 (the input)" if j == 1 else f"an earlier node 1..{j - 1}"))
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "_text", " ".join(f"{s}:{a}" for s, a in nodes))

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    def loose_ends(self) -> tuple[int, ...]:
        """Nodes (1-based) no other node reads: the cell's output is their average."""
        read = {s for s, _ in self.nodes[1:]}
        return tuple(j for j in range(1, self.num_nodes + 1) if j not in read)

    def pairs(self) -> tuple[tuple[int, int], ...]:
        """The (source, node) pairs of nodes 2..N: the shared matrices this cell uses."""
        return tuple((s, j) for j, (s, _) in enumerate(self.nodes[1:], start=2))


def parse_cell(text: str, num_nodes: int | None = None) -> RnnCellArch:
    """Parse ``source:activation`` tokens strictly; errors name the token and what was expected."""
    if not isinstance(text, str):
        raise ArchitectureError(f"enas_rnn: expected a cell string, got {type(text).__name__}")
    tokens = text.split(" ")
    if num_nodes is not None and len(tokens) != num_nodes:
        raise ArchitectureError(f"enas_rnn: {quote_text(text)} has {len(tokens)} nodes; this space "
                                f"has {num_nodes} (one 'source:activation' token per node, "
                                "separated by single spaces)")
    nodes = []
    for j, token in enumerate(tokens, start=1):
        source, colon, act = token.partition(":")
        if not colon or not (source.isascii() and source.isdigit()) or (len(source) > 1 and source[0] == "0"):
            raise ArchitectureError(f"enas_rnn: token {j} of {quote_text(text)} is {quote_text(token)}; "
                                    "expected 'source:activation' like '1:tanh'")
        nodes.append((int(source), act))
    return RnnCellArch(tuple(nodes))


# --------------------------------------------------------------------------------------------
# the cell (shared by the standalone networks and the supernet)


class CellWeights(nn.Module):
    """The cell's matrices: ``w_x`` (input), ``w_h`` (previous state) for node 1, and one
    ``w_{i}_{j}`` per (source i, node j) pair in ``pairs``, each ``(features, 2 * hidden)``.

    A standalone network holds its cell's pairs only; the supernet holds every pair. Parameter
    names match, so a supernet's weights load into the standalone network of any of its cells.
    """

    def __init__(self, input_size: int, hidden: int, pairs: Iterable[tuple[int, int]]):
        super().__init__()
        self.input_size, self.hidden = input_size, hidden
        self.w_x = nn.Parameter(torch.empty(input_size, 2 * hidden))
        self.w_h = nn.Parameter(torch.empty(hidden, 2 * hidden))
        self.pairs = tuple(sorted(set(pairs)))
        for i, j in self.pairs:
            self.register_parameter(f"w_{i}_{j}", nn.Parameter(torch.empty(hidden, 2 * hidden)))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform in +-1/sqrt(fan_in) (``input_size`` for ``w_x``, ``hidden`` for the others),
        as PyTorch's linear layers: the input is not shrunk when it has few features."""
        with torch.no_grad():
            for name, p in self.named_parameters(recurse=False):
                bound = 1.0 / math.sqrt(self.input_size if name == "w_x" else self.hidden)
                p.uniform_(-bound, bound, generator=generator)

    def pair(self, i: int, j: int) -> torch.Tensor:
        try:
            return getattr(self, f"w_{i}_{j}")
        except AttributeError:
            raise ArchitectureError(f"enas_rnn: these weights hold no matrix for node {j} reading "
                                    f"node {i}; they were built for pairs {self.pairs}") from None

    def step(self, x_proj: torch.Tensor, h: torch.Tensor, arch: RnnCellArch) -> torch.Tensor:
        """One time step: ``x_proj = x_t @ w_x`` (precomputed), ``h`` the previous state."""
        d = self.hidden
        gate, value = (x_proj + h @ self.w_h).split(d, dim=-1)
        c = torch.sigmoid(gate)
        states = [h, c * _ACT[arch.nodes[0][1]](value) + (1 - c) * h]
        for j, (i, act) in enumerate(arch.nodes[1:], start=2):
            src = states[i]
            gate, value = (src @ self.pair(i, j)).split(d, dim=-1)
            c = torch.sigmoid(gate)
            states.append(c * _ACT[act](value) + (1 - c) * src)
        ends = arch.loose_ends()
        return torch.stack([states[j] for j in ends]).mean(0)

    def run(self, x: torch.Tensor, arch: RnnCellArch, h0: torch.Tensor | None = None
            ) -> torch.Tensor:
        """Outputs ``(B, T, hidden)`` of the cell over ``x`` ``(B, T, features)`` from ``h0``
        (zeros by default)."""
        if arch.num_nodes < 1 or any(i >= j for i, j in arch.pairs()):
            raise ArchitectureError(f"enas_rnn: malformed cell {arch}")
        b, t, _ = x.shape
        h = x.new_zeros(b, self.hidden) if h0 is None else h0
        proj = x @ self.w_x
        out = []
        for s in range(t):
            h = self.step(proj[:, s], h, arch)
            out.append(h)
        return torch.stack(out, dim=1)


def series_steps(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Series ``(B, C, L)`` -> cell inputs ``(B, ceil(L / patch), C * patch)``: each time step of
    the cell reads ``patch`` consecutive values of every channel. The series is left-padded with
    zeros to a multiple of ``patch``, so the last step always holds the last values."""
    b, c, length = x.shape
    pad = (-length) % patch
    if pad:
        x = torch.nn.functional.pad(x, (pad, 0))
    steps = (length + pad) // patch
    return x.reshape(b, c, steps, patch).permute(0, 2, 1, 3).reshape(b, steps, c * patch)


class SeriesEncoder(nn.Module):
    """Series ``(B, C, L)`` -> ``(B, hidden)``: the cell runs over ``ceil(L / patch)`` steps of
    ``patch`` values each (``series_steps``) and ``readout`` keeps its ``last`` state or the
    ``mean`` of its states over all steps."""

    def __init__(self, cell: CellWeights, arch: RnnCellArch | None, *, patch: int = 1,
                 readout: str = "last"):
        super().__init__()
        self.cell, self.arch, self.patch, self.readout = cell, arch, patch, readout

    def forward(self, x: torch.Tensor, arch: RnnCellArch | None = None) -> torch.Tensor:
        states = self.cell.run(series_steps(x, self.patch), arch or self.arch)
        return states.mean(1) if self.readout == "mean" else states[:, -1]


class LanguageEncoder(nn.Module):
    """Token ids ``(B, T)`` -> the cell's states ``(B, T, hidden)`` (embedding, dropout, cell)."""

    def __init__(self, vocab: int, embed: int, cell: CellWeights, arch: RnnCellArch | None,
                 dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.cell, self.arch = cell, arch
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, arch: RnnCellArch | None = None) -> torch.Tensor:
        tokens = x.long()  # cost counters feed float zeros of the input shape
        return self.drop(self.cell.run(self.drop(self.embedding(tokens)), arch or self.arch))


def recurrent_network(task: Task, arch: RnnCellArch | None, pairs: Iterable[tuple[int, int]], *,
                      hidden: int, embed: int, dropout: float, patch: int = 1,
                      readout: str = "last") -> Network:
    """The network of a cell (``arch``) or of a supernet (``arch=None``, all ``pairs``);
    ``patch`` and ``readout`` apply to series tasks (see ``SeriesEncoder``)."""
    shape = tuple(task.input_shape)
    if task_layout(task) == "series":
        cell = CellWeights(shape[0] * patch, hidden, pairs)
        encoder: nn.Module = SeriesEncoder(cell, arch, patch=patch, readout=readout)
        head: nn.Module = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, task.num_classes))
        return Network(encoder, head)
    cell = CellWeights(embed, hidden, pairs)
    encoder = LanguageEncoder(task.num_classes, embed, cell, arch, dropout)
    return Network(encoder, nn.Linear(hidden, task.num_classes))


def task_layout(task: Task) -> str:
    """``series`` or ``language``; ``ArchitectureError`` for a task the cell cannot read."""
    shape = tuple(task.input_shape)
    if task.kind == "series" and len(shape) == 2:
        return "series"
    if task.kind == "language" and len(shape) == 1:
        return "language"
    raise ArchitectureError(
        f"enas_rnn: needs a series task (C, L) or a language task (T,); task {task.name!r} has "
        f"kind {task.kind!r} and input shape {shape}")


# --------------------------------------------------------------------------------------------
# the space


@register("spaces", "enas_rnn")
class EnasRnnSpace(SearchSpace):
    """ENAS recurrent cells of ``num_nodes`` nodes (ENAS used 12 on Penn Treebank; the default 6
    keeps CPU searches quick). ``hidden`` is the state size, ``embed`` the token embedding size of
    language models (default: ``hidden``), ``dropout`` the rate on embeddings and outputs.

    Series tasks only: ``patch`` values of each channel are read per time step (1: one value per
    step, as a plain RNN; the default 4 turns MNIST-1D's 40 values into 10 steps of 4, which
    trains much faster and better) and ``readout`` is the state the head classifies, ``mean``
    (the average of the states over all steps, the default: gradients reach every step) or
    ``last`` (the last state)."""

    name = "enas_rnn"
    kinds = ("series", "language")
    activations = ACTIVATIONS
    readouts = ("mean", "last")

    def __init__(self, *, num_nodes: int = 6, hidden: int = 64, embed: int | None = None,
                 dropout: float = 0.0, patch: int = 4, readout: str = "mean"):
        for key, value, low, high in (("num_nodes", num_nodes, 1, MAX_NODES),
                                      ("hidden", hidden, 1, MAX_HIDDEN),
                                      ("embed", hidden if embed is None else embed, 1, MAX_HIDDEN),
                                      ("patch", patch, 1, MAX_PATCH)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"enas_rnn: {key}={value!r}; expected an integer from {low} to "
                                  f"{high}")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ConfigError(f"enas_rnn: dropout={dropout!r}; expected a number in [0, 1)")
        if readout not in self.readouts:
            raise ConfigError(f"enas_rnn: readout={readout!r}; expected 'mean' or 'last'")
        self.num_nodes, self.hidden, self.dropout = num_nodes, hidden, float(dropout)
        self.embed = hidden if embed is None else embed
        self.patch, self.readout = patch, readout

    def options(self) -> dict[str, Any]:
        return {"num_nodes": self.num_nodes, "hidden": self.hidden, "embed": self.embed,
                "dropout": self.dropout, "patch": self.patch, "readout": self.readout}

    def network(self, task: Task, arch: RnnCellArch | None,
                pairs: Iterable[tuple[int, int]]) -> Network:
        """The network of ``arch`` (or, with ``arch=None``, of every cell using ``pairs``)."""
        return recurrent_network(task, arch, pairs, hidden=self.hidden, embed=self.embed,
                                 dropout=self.dropout, patch=self.patch, readout=self.readout)

    @property
    def all_pairs(self) -> tuple[tuple[int, int], ...]:
        """Every (source, node) pair a cell of this space may use (the supernet's matrices)."""
        return tuple((i, j) for j in range(2, self.num_nodes + 1) for i in range(1, j))

    # -- text and sequential view -------------------------------------------------------------
    def parse(self, text: str) -> RnnCellArch:
        return parse_cell(text, self.num_nodes)

    def choices(self, prefix: Sequence[Decision]) -> list[Decision]:
        k = len(prefix)
        total = 2 * self.num_nodes - 1
        if k > total:
            raise ArchitectureError(f"enas_rnn: prefix of {k} decisions; a cell of "
                                    f"{self.num_nodes} nodes has {total}")
        if k == total:
            return []
        if k % 2 == 0:  # an activation: node 1's (k = 0) or node (k + 2) / 2's
            return list(ACTIVATIONS)
        node = (k + 3) // 2  # k = 1 -> node 2's source
        return list(range(1, node))

    def to_decisions(self, arch: Architecture) -> tuple[Decision, ...]:
        cell = self._check(arch)
        out: list[Decision] = [cell.nodes[0][1]]
        for source, act in cell.nodes[1:]:
            out += [source, act]
        return tuple(out)

    def from_decisions(self, decisions: Sequence[Decision]) -> RnnCellArch:
        total = 2 * self.num_nodes - 1
        if len(decisions) != total:
            raise ArchitectureError(f"enas_rnn: {len(decisions)} decisions; a cell of "
                                    f"{self.num_nodes} nodes has {total}")
        nodes = [(0, str(decisions[0]))]
        for k in range(1, total, 2):
            source = decisions[k]
            if isinstance(source, bool) or not isinstance(source, (int, np.integer)):
                raise ArchitectureError(f"enas_rnn: decision {k} is {source!r}; expected a node "
                                        "index")
            nodes.append((int(source), str(decisions[k + 1])))
        return RnnCellArch(tuple(nodes))

    def sample(self, rng: np.random.Generator) -> RnnCellArch:
        acts = rng.integers(len(ACTIVATIONS), size=self.num_nodes)
        nodes = [(0, ACTIVATIONS[int(acts[0])])]
        for j in range(2, self.num_nodes + 1):
            nodes.append((int(rng.integers(1, j)), ACTIVATIONS[int(acts[j - 1])]))
        return RnnCellArch(tuple(nodes))

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> RnnCellArch:
        """Change one node's activation, or one node's source (when it has another)."""
        nodes = list(self._check(arch).nodes)
        sites = [(j, "act") for j in range(len(nodes))] + \
            [(j, "src") for j in range(2, len(nodes))]  # node j + 1 >= 3 has >= 2 sources
        j, what = sites[int(rng.integers(len(sites)))]
        source, act = nodes[j]
        if what == "act":
            others = [a for a in ACTIVATIONS if a != act]
            nodes[j] = (source, others[int(rng.integers(len(others)))])
        else:
            others = [s for s in range(1, j + 1) if s != source]
            nodes[j] = (others[int(rng.integers(len(others)))], act)
        return RnnCellArch(tuple(nodes))

    # -- building -------------------------------------------------------------------------------
    def build(self, arch: Architecture, task: Task) -> Network:
        cell = self._check(arch)
        return self.network(task, cell, cell.pairs())

    def check(self, arch: Architecture, task: Task) -> None:
        self._check(arch)
        task_layout(task)

    def _check(self, arch: Architecture) -> RnnCellArch:
        if not isinstance(arch, RnnCellArch):
            raise ArchitectureError(f"enas_rnn: {arch!r} is not a recurrent cell")
        if arch.num_nodes != self.num_nodes:
            raise ArchitectureError(f"enas_rnn: cell {arch} has {arch.num_nodes} nodes; this "
                                    f"space has {self.num_nodes}")
        return arch

    # -- features for learned models ---------------------------------------------------------------
    @property
    def encoding_size(self) -> int:
        n = self.num_nodes
        return n * len(ACTIVATIONS) + n * (n - 1) // 2

    def encode(self, arch: Architecture) -> np.ndarray:
        """One-hot activation of each node, then one-hot source of each node j >= 2 (j - 1
        columns each)."""
        cell = self._check(arch)
        n = self.num_nodes
        out = np.zeros(self.encoding_size, dtype=np.float32)
        for j, (source, act) in enumerate(cell.nodes):
            out[j * len(ACTIVATIONS) + ACTIVATIONS.index(act)] = 1.0
        base = n * len(ACTIVATIONS)
        for j, (source, _) in enumerate(cell.nodes[1:], start=2):
            out[base + (j - 1) * (j - 2) // 2 + source - 1] = 1.0
        return out

    @property
    def op_vocab(self) -> tuple[str, ...]:
        return ("input", *ACTIVATIONS, "output")

    def graph(self, arch: Architecture) -> "ArchGraph":
        """Node 0 the input (x_t, h_{t-1}), nodes 1..N the cell's nodes labelled by activation
        (edge from each node's source), node N + 1 the output (the average of the loose ends)."""
        from ..graph import ArchGraph

        cell = self._check(arch)
        n = cell.num_nodes
        edges = [(s, j) for j, (s, _) in enumerate(cell.nodes, start=1)]
        edges += [(j, n + 1) for j in cell.loose_ends()]
        return ArchGraph(ops=("input", *(a for _, a in cell.nodes), "output"), edges=tuple(edges),
                         inputs=(0,), outputs=(n + 1,))


__all__ = ["ACTIVATIONS", "RnnCellArch", "parse_cell", "CellWeights", "series_steps",
           "SeriesEncoder", "LanguageEncoder", "recurrent_network", "task_layout", "EnasRnnSpace"]
