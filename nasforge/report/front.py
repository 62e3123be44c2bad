"""The Pareto front of a run from its store rows: summary, hypervolume curve and plots.

Search plots show the search metrics (the objectives, e.g. validation accuracy); test accuracy is
reported for the chosen architectures (the front and the chosen trial) only.

Hypervolume reference point (the rule, stated in the report): for each objective the worst value
among the feasible trials of the run, moved out by 10% of that objective's observed range
(``nasforge.pareto.reference_point``). The curve gives, after each trial count, the hypervolume
of the front found so far against that one reference, normalised by the box between the
reference and the ideal point (the best value of each objective), so it ends below 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..core import CHOICE_RULE, COST_KEYS, Objective, Objectives, evaluated
from ..pareto import hypervolume, hypervolume_curve, reference_point
from .axes import log_axis


def _pyplot():
    from . import _pyplot as pyplot

    return pyplot()


def member(row: dict[str, Any], objectives: Objectives) -> dict[str, Any]:
    """One front member as plain JSON: trial, architecture, objective values, metrics, cost."""
    values = objectives.values(row) or ()
    return {"trial": row["id"], "arch": row["arch"],
            "objectives": {o.metric: v for o, v in zip(objectives, values)},
            "metrics": row["metrics"], "cost": row["cost"]}


def front_summary(rows: Sequence[dict[str, Any]], objectives: Objectives | Objective
                  ) -> dict[str, Any]:
    """The front (feasible non-dominated trials, best first by the chosen rule), the chosen trial,
    and the hypervolume with its reference point (raw objective values). A trial that reuses an
    earlier trial's result counts in ``trials`` but not again in the front or ``feasible``."""
    objs = Objectives.of(objectives)
    distinct = evaluated(rows)
    front = sorted(objs.front(distinct), key=lambda r: objs.choice_key(r), reverse=True)
    chosen = objs.best(distinct)
    out: dict[str, Any] = {
        "objectives": [str(o) for o in objs], "constraints": [str(c) for c in objs.constraints],
        "rule": CHOICE_RULE,
        "chosen": None if chosen is None else chosen["id"],
        "trials": len(rows), "feasible": sum(objs.feasible(r) for r in distinct),
        "front": [member(r, objs) for r in front],
    }
    hv = hypervolume_data(rows, objs)
    if hv is not None:
        out["hypervolume"] = {k: hv[k] for k in ("reference", "ideal", "value", "normalised",
                                                  "rule")}
    return out


def hypervolume_data(rows: Sequence[dict[str, Any]], objectives: Objectives
                     ) -> dict[str, Any] | None:
    """Reference, ideal point, final and per-trial-count hypervolume; None without a feasible trial."""
    scores = [objectives.scores(r) for r in rows]
    feasible = [s for s in scores if s is not None]
    if not feasible:
        return None
    ref = reference_point(feasible)
    ideal = [max(s[k] for s in feasible) for k in range(len(ref))]
    box = math.prod(i - r for i, r in zip(ideal, ref))
    curve = hypervolume_curve(scores, ref)
    value = hypervolume(feasible, ref)

    def raw(point: Sequence[float]) -> dict[str, float]:
        return {o.metric: (v if o.mode == "max" else -v) for o, v in zip(objectives, point)}

    return {"reference": raw(ref), "ideal": raw(ideal), "value": value,
            "normalised": value / box if box > 0 else 0.0,
            "curve": [h / box if box > 0 else 0.0 for h in curve],
            "rule": "worst feasible value of each objective, moved out by 10% of its range"}


def plot_front(rows: Sequence[dict[str, Any]], objectives: Objectives | Objective, path: Path
               ) -> None:
    """Every trial in the plane of the first objective (y) against the second (x; parameters for
    a single objective), feasible trials filled, the others as crosses; the front of that plane
    drawn as a line and the chosen trial starred (a trial that reuses another's result is that
    trial's point, not drawn again)."""
    rows = evaluated(rows)
    objs = Objectives.of(objectives)
    plane = Objectives([objs.primary, objs.items[1] if objs.multi else Objective("params", "min")],
                       objs.constraints)
    y_obj, x_obj = plane.items
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ok = [(r, plane.values(r)) for r in rows if plane.values(r) is not None]
    feas = [(v[1], v[0]) for r, v in ok if plane.feasible(r)]
    infeas = [(v[1], v[0]) for r, v in ok if not plane.feasible(r)]
    if feas:
        ax.scatter(*zip(*feas), s=14, alpha=0.5, label="trial")
    if infeas:
        ax.scatter(*zip(*infeas), s=14, marker="x", color="0.6", label="breaks a constraint")
    front = sorted((plane.values(r) for r in plane.front(rows)), key=lambda v: v[1])  # type: ignore
    if front:
        xs, ys = [v[1] for v in front], [v[0] for v in front]
        ax.step(xs, ys, where="post" if x_obj.mode == "min" else "pre", color="C3", lw=1.5)
        ax.scatter(xs, ys, s=30, color="C3", zorder=3, label=f"Pareto front ({len(front)})")
    chosen = objs.best(rows)
    if chosen is not None and plane.values(chosen) is not None:
        cv = plane.values(chosen)
        ax.scatter([cv[1]], [cv[0]], s=160, marker="*", color="gold", edgecolor="k", zorder=4,
                   label=f"chosen (trial {chosen['id']})")
    if x_obj.metric in COST_KEYS and all(x > 0 for x, _ in feas + infeas):
        log_axis(ax, "x")  # a few labelled ticks that do not overlap, however narrow the range
    ax.set_xlabel(f"{x_obj.metric} ({x_obj.mode})")
    ax.set_ylabel(f"{y_obj.metric} ({y_obj.mode})")
    ax.set_title(f"{y_obj.metric} against {x_obj.metric}: every trial and the front")
    if feas or infeas:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_hypervolume(rows: Sequence[dict[str, Any]], objectives: Objectives, path: Path) -> bool:
    """Normalised hypervolume against trial count; False when there is nothing to plot."""
    hv = hypervolume_data(rows, objectives)
    if hv is None:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(hv["curve"]) + 1), hv["curve"], color="C2")
    ref = ", ".join(f"{k}={v:.4g}" for k, v in hv["reference"].items())
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (normalised)")
    ax.set_title(f"hypervolume, reference {ref}", fontsize=9)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


__all__ = ["front_summary", "hypervolume_data", "plot_front", "plot_hypervolume", "member"]
