"""DARTS-CC: architecture parameters as a function of a complexity parameter λ.

"Neural architecture search with structure complexity control" (the DARTS-CC reference code,
Intelligent-Systems-Phystech/DARTS-CC) makes the DARTS architecture parameters α a function of a
complexity parameter λ through a small hypernetwork, so that one search yields a family of
architectures, from large (small λ) to small (large λ). What this module holds, written from
the reference's description (``shared/reference/ghn2-dartscc.md`` section B):

- ``LambdaRange``: λ lives in ``[low, high]`` (default ``[1e-8, 1e-4]``, the reference's
  Fashion-MNIST range) and is normalised as ``λ̃ = (log10 λ - log10 low) / (log10 high - log10
  low)`` in ``[0, 1]``; ``sample`` draws λ log-uniformly (λ̃ uniformly), once per step, or (option
  ``sampling="anchors"``) λ̃ at an anchor of the grid plus jitter, so that the end anchors of
  α(λ̃) get as much of the architecture gradient as the inner ones.
- ``PiecewiseLinear``: α(λ̃) of one node, piecewise linear in λ̃ with ``K`` learnable anchor
  matrices ``c_0..c_{K-1}`` and learnable pivots ``p`` (initialised ``linspace(0, 1, K)``;
  ``K = 5``, one anchor per decade of the default range)::

      seg = floor(0.99999 * λ̃ * (K - 1))            (the segment, from the uniform grid)
      d   = (p[seg+1] - λ̃) / (p[seg+1] - p[seg])
      α   = c[seg] * d + c[seg+1] * (1 - d)

  ``MLPAlpha`` is the other option: a small MLP of λ̃ (the reference's hidden-layer variant
  ignores its input; this one does not).
- ``AlphaHypernet``: one α(λ̃) module per node and cell type; ``forward(λ̃)`` gives
  ``{"normal": [E, K], "reduce": [E, K]}`` (edges node by node, inputs ``0..i+1``, the order of
  ``SuperNet.edges``).
- ``complexity``: the complexity term ``λ · Σ_cells Σ_edges Σ_ops softmax(α(λ̃))_op · #params(op)``
  (plain softmax, no Gumbel noise, no temperature; stem and classifier excluded), with the
  parameter counts of every operation on every edge summed over the cells of each type
  (``SuperNet.op_param_counts()``: the operations as a derived network builds them). The unit
  is the reference's raw parameter count (``params``) or, as an option, the count relative to
  the cells' largest possible one (``relative``, ``max_params``): the reference's λ range
  ``[1e-8, 1e-4]`` suits its C = 16 cells (about 10^5 parameters); a relative term keeps the
  balance between the cross-entropy and the complexity term whatever the network's size.
- ``gumbel_weights``: per-sample relaxed one-hot weights ``softmax((α + g) / τ)``, Gumbel noise
  ``g`` drawn from a given generator; ``temperature(epoch)``: the reference's schedule
  ``τ = 1 - 0.016 · epoch`` (epoch 0-based), floored at ``0.1`` (the reference never goes below
  0.216 in its 50 epochs; past 62 epochs its formula would turn negative).

Genotypes are derived from α(λ̃) by ``nasforge.oneshot.derive.derive`` (``argmax``, DARTS-CC's
small-data rule, or ``top2``, DARTS's).

The method that trains with these is ``nasforge.methods.darts_cc``.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

CELL_TYPES = ("normal", "reduce")
#: operations without parameters (at stride 1; a strided skip_connect is a FactorizedReduce)
PARAMETER_FREE = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


# --------------------------------------------------------------------------------------------
# λ


#: how λ̃ is drawn per step: ``uniform`` (the reference's, λ log-uniform) or ``anchors`` (an
#: anchor of the grid ``k / (K - 1)`` drawn uniformly, plus uniform jitter, clipped to [0, 1]);
#: ``stratified`` and ``coupled`` draw one λ̃ per anchor every step (``LambdaRange.strata``;
#: the method splits or replicates the batch over them)
LAMBDA_SAMPLING = ("uniform", "anchors", "stratified", "coupled")


class LambdaRange:
    """λ in ``[low, high]``, its normalised log ``λ̃ in [0, 1]``, and how λ̃ is drawn per step.

    ``sampling``: ``uniform`` (the reference's: λ̃ uniform in [0, 1], λ log-uniform) or
    ``anchors``: ``λ̃ = clip(k / (K - 1) + jitter · u / (K - 1), 0, 1)`` with ``k`` uniform in
    ``0..K-1`` (``K = anchors``) and ``u`` uniform in ``[-1, 1]``. Under ``uniform`` an end
    anchor of the piecewise-linear α(λ̃) gets half the interpolation weight of an inner one
    (``1 / (2 (K - 1))`` against ``1 / (K - 1)``: its hat function is cut in half by the
    interval's end), so the ends -- the family's largest and smallest members -- are the least
    trained. Under ``anchors`` with ``0 <= jitter <= 1`` and the pivots at their grid, every
    anchor's expected interpolation weight is exactly ``1 / K``: draws clipped at 0 or 1 give the
    end anchor full weight, making up for the half of its hat that lies outside [0, 1].
    ``jitter = 0`` trains α only at the anchors (the family's λ̃ by default); ``jitter = 1``
    covers all of [0, 1].
    """

    def __init__(self, low: float = 1e-8, high: float = 1e-4, sampling: str = "uniform",
                 anchors: int = 5, jitter: float = 1.0):
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"lambda range {name} = {value!r}; expected a positive number")
        if not low < high:
            raise ConfigError(f"lambda range [{low}, {high}]; expected low < high")
        if sampling not in LAMBDA_SAMPLING:
            raise ConfigError(f"lambda sampling {sampling!r}; expected one of "
                              f"{', '.join(LAMBDA_SAMPLING)}")
        if isinstance(anchors, bool) or not isinstance(anchors, int) or anchors < 2:
            raise ConfigError(f"anchors = {anchors!r}; expected an integer >= 2")
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) \
                or not 0 <= jitter <= 1:
            raise ConfigError(f"lambda jitter = {jitter!r}; expected a number in [0, 1] (a "
                              "fraction of the spacing between anchors)")
        self.low, self.high = float(low), float(high)
        self.log_low, self.log_high = math.log10(low), math.log10(high)
        self.sampling, self.anchors, self.jitter = sampling, anchors, float(jitter)

    def tilde(self, lam: float) -> float:
        """λ̃ of ``lam`` (``ConfigError`` outside the range)."""
        if not (isinstance(lam, (int, float)) and self.low * (1 - 1e-9) <= lam <= self.high * (1 + 1e-9)):
            raise ConfigError(f"lambda = {lam!r}; expected a value in [{self.low:g}, {self.high:g}]")
        t = (math.log10(lam) - self.log_low) / (self.log_high - self.log_low)
        return min(1.0, max(0.0, t))

    def value(self, tilde: float) -> float:
        """λ of the normalised ``tilde`` in [0, 1]."""
        if not (isinstance(tilde, (int, float)) and 0.0 <= tilde <= 1.0):
            raise ConfigError(f"lambda_tilde = {tilde!r}; expected a number in [0, 1]")
        return 10.0 ** (self.log_low + tilde * (self.log_high - self.log_low))

    def strata(self, generator: torch.Generator) -> list[tuple[float, float]]:
        """One ``(λ, λ̃)`` per anchor ``k = 0 .. K-1``: ``λ̃_k = clip((k + jitter · u_k) / (K - 1),
        0, 1)`` with independent ``u_k`` uniform in ``[-1, 1]`` (``sampling`` ``stratified`` and
        ``coupled``): the draw of ``anchors`` sampling, stratified by anchor, so every step's
        architecture gradient reaches every anchor with exactly its ``1 / K`` share."""
        out = []
        for k in range(self.anchors):
            u = 2.0 * float(torch.rand((), generator=generator)) - 1.0
            t = min(1.0, max(0.0, (k + self.jitter * u) / (self.anchors - 1)))
            out.append((self.value(t), t))
        return out

    def sample(self, generator: torch.Generator) -> tuple[float, float]:
        """``(λ, λ̃)``, λ̃ drawn as ``sampling`` says (``uniform``: λ log-uniform in the range;
        ``stratified`` and ``coupled``: one of ``strata``, drawn as ``anchors`` draws)."""
        if self.sampling == "uniform":
            t = float(torch.rand((), generator=generator))
        else:
            k = int(torch.randint(self.anchors, (), generator=generator))
            u = 2.0 * float(torch.rand((), generator=generator)) - 1.0
            t = min(1.0, max(0.0, (k + self.jitter * u) / (self.anchors - 1)))
        return self.value(t), t

    def anchor_mass(self, draws: int, generator: torch.Generator) -> list[float]:
        """The mean interpolation weight of each anchor (pivots at their grid) over ``draws``
        draws of ``sample``: how much of the architecture gradient each anchor receives."""
        K, mass = self.anchors, [0.0] * self.anchors
        for _ in range(draws):
            if self.sampling in ("stratified", "coupled"):  # a step's K draws share its weight
                ts = [t for _, t in self.strata(generator)]
            else:
                ts = [self.sample(generator)[1]]
            for t in ts:
                seg = min(max(int(math.floor(0.99999 * t * (K - 1))), 0), K - 2)
                d = (seg + 1) - t * (K - 1)
                mass[seg] += d / draws / len(ts)
                mass[seg + 1] += (1 - d) / draws / len(ts)
        return mass


# --------------------------------------------------------------------------------------------
# α(λ̃)


class PiecewiseLinear(nn.Module):
    """α(λ̃) of one node's ``shape`` (inputs x operations): piecewise linear in λ̃ through
    ``anchors`` learnable matrices with learnable pivots (see the module docstring)."""

    def __init__(self, shape: Sequence[int], anchors: int = 5, init_scale: float = 1e-3,
                 learn_pivots: bool = True):
        super().__init__()
        if isinstance(anchors, bool) or not isinstance(anchors, int) or anchors < 2:
            raise ConfigError(f"anchors = {anchors!r}; expected an integer >= 2")
        self.shape, self.K, self.init_scale = tuple(shape), anchors, float(init_scale)
        self.anchors = nn.Parameter(torch.empty(anchors, *self.shape))
        # fixed pivots stay a (frozen) parameter: the same state dict either way
        self.pivots = nn.Parameter(torch.empty(anchors), requires_grad=bool(learn_pivots))
        if not self.anchors.is_meta:
            self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Anchors ``init_scale * N(0, 1)`` (DARTS's α initialisation), pivots ``linspace(0, 1, K)``."""
        with torch.no_grad():
            self.anchors.normal_(0.0, 1.0, generator=generator).mul_(self.init_scale)
            self.pivots.copy_(torch.linspace(0.0, 1.0, self.K))

    def forward(self, t: float) -> torch.Tensor:
        return interpolate(self.anchors, self.pivots, t)


def interpolate(anchors: torch.Tensor, pivots: torch.Tensor, t: float) -> torch.Tensor:
    """The piecewise-linear value at ``t`` of ``anchors`` ``[K, ...]`` with ``pivots`` ``[K]``
    (segment from the uniform grid, weight from the pivots; see the module docstring)."""
    t, K = float(t), anchors.shape[0]
    seg = min(max(int(math.floor(0.99999 * t * (K - 1))), 0), K - 2)
    p0, p1 = pivots[seg], pivots[seg + 1]
    d = (p1 - t) / (p1 - p0)
    return anchors[seg] * d + anchors[seg + 1] * (1 - d)


class LambdaLinear(nn.Module):
    """A linear layer whose weight and bias are piecewise linear in λ̃ (the reference's
    λ-conditioned classifier, ``PWLinear``): ``anchors`` weight matrices and bias vectors with
    pivots as ``PiecewiseLinear``. Every anchor starts as the same draw of ``nn.Linear``'s
    initialisation, so the layer starts independent of λ̃. ``forward(x, t)``."""

    def __init__(self, in_features: int, out_features: int, anchors: int = 5,
                 learn_pivots: bool = True):
        super().__init__()
        if isinstance(anchors, bool) or not isinstance(anchors, int) or anchors < 2:
            raise ConfigError(f"anchors = {anchors!r}; expected an integer >= 2")
        self.in_features, self.out_features, self.K = in_features, out_features, anchors
        self.weight = nn.Parameter(torch.empty(anchors, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(anchors, out_features))
        self.pivots = nn.Parameter(torch.empty(anchors), requires_grad=bool(learn_pivots))
        if not self.weight.is_meta:
            self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        with torch.no_grad():
            self.weight[0].uniform_(-bound, bound, generator=generator)
            self.bias[0].uniform_(-bound, bound, generator=generator)
            self.weight[1:] = self.weight[0]
            self.bias[1:] = self.bias[0]
            self.pivots.copy_(torch.linspace(0.0, 1.0, self.K))

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return F.linear(x, interpolate(self.weight, self.pivots, t),
                        interpolate(self.bias, self.pivots, t))


class MLPAlpha(nn.Module):
    """α(λ̃) of one node's ``shape`` as a small MLP of λ̃ (one tanh hidden layer)."""

    def __init__(self, shape: Sequence[int], hidden: int = 16):
        super().__init__()
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ConfigError(f"hidden = {hidden!r}; expected an integer >= 1")
        self.shape = tuple(shape)
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(),
                                 nn.Linear(hidden, math.prod(self.shape)))

    def forward(self, t: float) -> torch.Tensor:
        x = torch.tensor([[float(t)]], dtype=self.net[0].weight.dtype,
                         device=self.net[0].weight.device)
        return self.net(x).view(self.shape)


class AlphaHypernet(nn.Module):
    """α(λ̃) of every node of the normal and the reduction cell.

    ``forward(λ̃)`` returns ``{"normal": [E, K], "reduce": [E, K]}`` with ``E = Σ_i (i + 2)``
    edges (node by node, inputs ``0..i+1``) and ``K = n_ops`` operations. ``kind``:
    ``piecewise`` (the reference's, ``anchors`` anchors; ``learn_pivots=False`` keeps the pivots
    at ``linspace(0, 1, K)``, a plain linear interpolation between the anchors) or ``mlp``
    (``hidden`` units). Only parameters with ``requires_grad`` are to be optimised.
    """

    def __init__(self, n_ops: int, n_nodes: int = 4, *, kind: Literal["piecewise", "mlp"] = "piecewise",
                 anchors: int = 5, hidden: int = 16, learn_pivots: bool = True):
        super().__init__()
        if kind not in ("piecewise", "mlp"):
            raise ConfigError(f"alpha kind {kind!r}; expected 'piecewise' or 'mlp'")
        self.n_ops, self.n_nodes, self.kind = n_ops, n_nodes, kind

        def node(i: int) -> nn.Module:
            shape = (i + 2, n_ops)
            return (PiecewiseLinear(shape, anchors, learn_pivots=learn_pivots) if kind == "piecewise"
                    else MLPAlpha(shape, hidden))

        self.cells = nn.ModuleDict({ct: nn.ModuleList(node(i) for i in range(n_nodes))
                                    for ct in CELL_TYPES})

    @property
    def n_edges(self) -> int:
        return sum(i + 2 for i in range(self.n_nodes))

    def forward(self, t: float) -> dict[str, torch.Tensor]:
        return {ct: torch.cat([m(t) for m in self.cells[ct]], dim=0) for ct in CELL_TYPES}


def edge_list(n_nodes: int) -> list[tuple[int, int]]:
    """``(node state, input state)`` of every edge, in the order of α's rows."""
    return [(i + 2, j) for i in range(n_nodes) for j in range(i + 2)]


# --------------------------------------------------------------------------------------------
# the complexity term, Gumbel weights, temperature


def expected_params(alphas: Mapping[str, torch.Tensor], table: Mapping[str, torch.Tensor]
                    ) -> torch.Tensor:
    """``Σ_cells Σ_edges Σ_ops softmax(α)_op · #params(op)`` (differentiable in α)."""
    total = None
    for ct in CELL_TYPES:
        probs = F.softmax(alphas[ct], dim=-1)
        term = (probs * table[ct].to(probs)).sum()
        total = term if total is None else total + term
    assert total is not None
    return total


def max_params(table: Mapping[str, torch.Tensor]) -> float:
    """``Σ_cells Σ_edges max_op #params(op)``: the cells' parameters when every edge holds its
    largest operation (the scale of the ``relative`` complexity unit)."""
    return float(sum(table[ct].max(dim=-1).values.sum() for ct in CELL_TYPES))


#: units of the complexity term: the reference's raw parameter count, or relative to the cells'
#: largest possible parameter count (``max_params``), so that one λ range fits any network size
COMPLEXITY_UNITS = ("params", "relative")


def complexity_scale(table: Mapping[str, torch.Tensor], unit: str = "params") -> float:
    """The divisor of the expected parameter count in the complexity term: 1 for ``params``
    (DARTS-CC's reference), ``max_params(table)`` for ``relative`` (the term lies in [0, λ])."""
    if unit not in COMPLEXITY_UNITS:
        raise ConfigError(f"complexity unit {unit!r}; expected one of {', '.join(COMPLEXITY_UNITS)}")
    if unit == "params":
        return 1.0
    top = max_params(table)
    if not top > 0:
        raise ConfigError("complexity unit 'relative': no operation of the cells has parameters")
    return top


def complexity(alphas: Mapping[str, torch.Tensor], table: Mapping[str, torch.Tensor],
               lam: float, unit: str = "params") -> torch.Tensor:
    """The complexity term ``λ · expected_params(α) / complexity_scale(table, unit)``."""
    return lam * expected_params(alphas, table) / complexity_scale(table, unit)


def gumbel_weights(alpha: torch.Tensor, batch: int, tau: float,
                   generator: torch.Generator) -> torch.Tensor:
    """Per-sample relaxed one-hot weights ``[batch, E, K] = softmax((α + g) / τ)``, ``g`` Gumbel
    noise from ``generator`` (drawn on the CPU, then moved to α's device)."""
    if not tau > 0:
        raise ConfigError(f"Gumbel temperature = {tau!r}; expected a number > 0")
    u = torch.rand((batch, *alpha.shape), generator=generator, dtype=torch.float32)
    g = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    return F.softmax((alpha.unsqueeze(0) + g.to(alpha)) / tau, dim=-1)


def temperature(epoch: int, decay: float = 0.016, floor: float = 0.1) -> float:
    """Gumbel temperature of (0-based) ``epoch``: ``max(floor, 1 - decay * epoch)``."""
    return max(float(floor), 1.0 - float(decay) * epoch)


__all__ = ["LambdaRange", "LAMBDA_SAMPLING", "PiecewiseLinear", "LambdaLinear", "interpolate", "MLPAlpha", "AlphaHypernet", "edge_list",
           "expected_params", "complexity", "complexity_scale", "max_params", "COMPLEXITY_UNITS", "gumbel_weights", "temperature",
           "PARAMETER_FREE", "CELL_TYPES"]
