"""Pareto tools shared by runs, reports and strategies: non-dominated sorting, crowding distance,
hypervolume and a selection order, as NSGA-II (Deb et al., 2002) defines them.

Convention: every point is a sequence of *scores*, each to be **maximised** (a ``min`` objective
is negated before it gets here; ``Objectives.scores`` does that). Points are plain sequences of
floats; nothing here knows about trials.

- ``dominates(a, b)``: ``a`` is at least as good everywhere and better somewhere.
- ``non_dominated_sort(points)``: the fronts, best first, as lists of indices (peeled one front
  at a time, O(M N^2) per front, memory linear in N).
- ``crowding_distance(points, front)``: NSGA-II's crowding distance of each front member (the
  extreme members of every objective get infinity).
- ``rank_and_crowding(points)``: each point's front number (0 = non-dominated) and crowding
  distance, and ``crowded_order(points)``: indices best first by NSGA-II's crowded comparison
  (lower rank first, then larger crowding distance, then earlier index).
- ``hypervolume(points, reference)``: the exact volume dominated by the points and bounded by
  ``reference`` (a point worse than every score); points not strictly better than the reference
  in every coordinate add nothing. Two objectives: a sort and a sweep, O(N log N); more: the
  exact recursive slicing of the last coordinate (fine for a few hundred points and up to about
  four objectives).
- ``reference_point(points)``: the rule a run's report uses: the worst observed score of each
  objective, moved out by 10% of its observed range; ``normalised_hypervolume`` divides by the
  box between that reference and the ideal point (the best score of each objective).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` Pareto-dominates ``b`` (all scores maximised)."""
    better = False
    for x, y in zip(a, b):
        if x < y:
            return False
        if x > y:
            better = True
    return better


def non_dominated_sort(points: Sequence[Point], limit: int | None = None) -> list[list[int]]:
    """Fronts of ``points`` best first (front 0 is the non-dominated set), indices ascending.

    Fronts are peeled one at a time (memory linear in the number of points); with ``limit``,
    peeling stops once the fronts found hold at least ``limit`` points.
    """
    remaining = list(range(len(points)))
    fronts: list[list[int]] = []
    taken = 0
    while remaining and (limit is None or taken < limit):
        front = [remaining[i] for i in pareto_indices([points[j] for j in remaining])]
        fronts.append(front)
        taken += len(front)
        chosen = set(front)
        remaining = [j for j in remaining if j not in chosen]
    return fronts


def pareto_indices(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points (ascending); equal points are all kept.

    Points are visited in descending lexicographic order, where every dominator of a point comes
    before it, so each point is compared with the front kept so far only: O(N F) time.
    """
    n = len(points)
    if n == 0:
        return []
    arr = np.asarray(points, dtype=float).reshape(n, -1)
    order = np.lexsort(arr.T[::-1])[::-1]  # descending lexicographic by column 0, 1, ...
    kept: list[int] = []
    front = np.empty((0, arr.shape[1]))
    for i in order:
        p = arr[i]
        if front.size and np.any(np.all(front >= p, axis=1) & np.any(front > p, axis=1)):
            continue
        kept.append(int(i))
        front = np.vstack([front, p])
    return sorted(kept)


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each index in ``front`` (extremes of any objective: inf).

    Each objective's gap between a member's two neighbours (sorted by that objective) is divided
    by the objective's range over the front, and the gaps are summed.
    """
    dist = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    m = len(points[front[0]])
    for k in range(m):
        order = sorted(front, key=lambda i: (points[i][k], i))
        lo, hi = points[order[0]][k], points[order[-1]][k]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for a, i, b in zip(order, order[1:], order[2:]):
            if dist[i] != math.inf:
                dist[i] += (points[b][k] - points[a][k]) / (hi - lo)
    return dist


def rank_and_crowding(points: Sequence[Point]) -> tuple[list[int], list[float]]:
    """Each point's front number (0 is best) and its crowding distance within that front."""
    rank = [0] * len(points)
    crowd = [0.0] * len(points)
    for r, front in enumerate(non_dominated_sort(points)):
        for i, d in crowding_distance(points, front).items():
            rank[i], crowd[i] = r, d
    return rank, crowd


def crowded_order(points: Sequence[Point]) -> list[int]:
    """Indices best first by the crowded comparison: rank, then crowding distance, then index."""
    rank, crowd = rank_and_crowding(points)
    return sorted(range(len(points)), key=lambda i: (rank[i], -crowd[i], i))


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Exact hypervolume dominated by ``points`` and bounded below by ``reference`` (maximised)."""
    ref = [float(r) for r in reference]
    pts = [tuple(float(x) for x in p) for p in points
           if len(p) == len(ref) and all(x > r for x, r in zip(p, ref))]
    if not pts:
        return 0.0
    pts = [pts[i] for i in pareto_indices(pts)]
    return _hv(sorted(set(pts)), ref)


def _hv(pts: list[tuple[float, ...]], ref: list[float]) -> float:
    d = len(ref)
    if d == 1:
        return max(p[0] for p in pts) - ref[0]
    if d == 2:
        # sweep by the first score descending; each point adds the slab its second score gains
        total, best_y = 0.0, ref[1]
        for x, y in sorted(pts, key=lambda p: (-p[0], -p[1])):
            if y > best_y:
                total += (x - ref[0]) * (y - best_y)
                best_y = y
        return total
    # slice along the last coordinate: between consecutive levels, the (d-1)-D volume of the
    # points at or above the upper level
    levels = sorted({p[-1] for p in pts}, reverse=True)
    total = 0.0
    for k, level in enumerate(levels):
        below = levels[k + 1] if k + 1 < len(levels) else ref[-1]
        layer = [p[:-1] for p in pts if p[-1] >= level]
        layer = [layer[i] for i in pareto_indices(layer)]
        total += _hv(sorted(set(layer)), ref[:-1]) * (level - below)
    return total


def hypervolume_curve(points: Sequence[Point | None], reference: Point) -> list[float]:
    """Hypervolume of the first ``k`` points for every ``k`` (None entries add nothing)."""
    out: list[float] = []
    front: list[Point] = []
    hv = 0.0
    for p in points:
        if p is not None and not any(dominates(q, p) or tuple(q) == tuple(p) for q in front):
            front = [q for q in front if not dominates(p, q)] + [p]
            hv = hypervolume(front, reference)
        out.append(hv)
    return out




def reference_point(points: Sequence[Point], margin: float = 0.1) -> list[float]:
    """The reference point of a run's hypervolume: the worst score of each objective over
    ``points``, moved ``margin`` times that objective's range further out (by ``margin`` times
    the value's magnitude, or ``margin``, when all points share the value), so that the extreme
    points of the front still add volume."""
    arr = np.asarray(points, dtype=float)
    if arr.size == 0:
        raise ValueError("reference_point needs at least one point")
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    span = hi - lo
    pad = np.where(span > 0, span, np.maximum(np.abs(lo), 1.0)) * margin
    return [float(x) for x in lo - pad]


def normalised_hypervolume(points: Sequence[Point], reference: Point, ideal: Point) -> float:
    """Hypervolume divided by the volume of the box from ``reference`` to ``ideal`` (in [0, 1])."""
    box = float(np.prod([i - r for i, r in zip(ideal, reference)]))
    return hypervolume(points, reference) / box if box > 0 else 0.0


__all__ = ["dominates", "non_dominated_sort", "pareto_indices", "crowding_distance",
           "rank_and_crowding", "crowded_order", "hypervolume", "hypervolume_curve",
           "reference_point", "normalised_hypervolume"]
