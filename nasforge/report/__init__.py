"""Plots, trials CSV and the HTML report of a run, all made from the store's rows.

Everything here reads plain trial dicts (``Store.rows()``), so a report can be made for any run
directory without rebuilding its space or task.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..core import Objective, Objectives, evaluated

# Leading columns of trials.csv: those DP-NAS logs, then the rest in name order.
LEADING = ["id", "status", "reward", "best_val_acc", "test_acc", "epsilon",
           "val_acc_per_epoch", "train_acc_per_epoch", "params", "flops", "train_seconds",
           "latency_ms", "seed", "reason", "net"]


def objective_value(row: dict[str, Any], objective: Objective | Objectives) -> float | None:
    """The (first) objective's value of an ok row, None if absent."""
    if isinstance(objective, Objectives):
        objective = objective.primary
    if row["status"] != "ok":
        return None
    v = row["metrics"].get(objective.metric, row["cost"].get(objective.metric))
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def csv_row(row: dict[str, Any], objective: Objective) -> dict[str, Any]:
    """One trial flattened for trials.csv (DP-NAS's columns first)."""
    out: dict[str, Any] = {"id": row["id"], "status": row["status"], "seed": row["seed"],
                           "reason": row["reason"] or "", "net": row["arch"]}
    value = objective_value(row, objective)
    out["reward"] = "" if value is None else value
    metrics = row["metrics"]
    out["best_val_acc"] = metrics.get("val_acc", "")
    for k, v in metrics.items():
        if k != "val_acc":
            out[k] = v
    for k, v in row["cost"].items():
        out[k] = v
    for k, v in row["info"].items():
        out[k] = v
    for k, v in row["curves"].items():
        out[f"{k}_per_epoch"] = json.dumps([round(float(x), 5) for x in v])
    return out


def write_trials_csv(rows: Sequence[dict[str, Any]], objective: Objective | Objectives,
                     path: Path) -> None:
    """Write (atomically) one row per finished trial (with ``pareto`` = 1 for front members and
    ``feasible`` = 0/1 when the run has constraints)."""
    objs = Objectives.of(objective)
    flat = [csv_row(r, objs.primary) for r in rows]
    if objs.multi:  # a trial that reuses a front member's result is not on the front again
        on_front = {r["id"] for r in objs.front(evaluated(rows))}
        for r, f in zip(rows, flat):
            f["pareto"] = int(r["id"] in on_front)
    if objs.constraints:
        for r, f in zip(rows, flat):
            f["feasible"] = int(objs.feasible(r))
    extra = sorted({k for r in flat for k in r} - set(LEADING))
    columns = [c for c in LEADING if any(c in r for r in flat) or c in ("id", "status", "net")]
    columns = [c for c in columns if c != "net"] + extra + ["net"]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in flat:
            writer.writerow(r)
    os.replace(tmp, path)


def leaderboard(rows: Iterable[dict[str, Any]], objective: Objective | Objectives,
                top: int | None = 10) -> list[dict[str, Any]]:
    """The best feasible trials, best first: by the objective, ties broken by fewer parameters
    then the earlier trial; with several objectives, by Pareto rank and then that rule. Trials
    that reuse an earlier trial's result (``info["reuses"]``) are left out: each architecture
    evaluated once appears once."""
    ranked = Objectives.of(objective).ranked(evaluated(list(rows)), top or None)
    return ranked[:top] if top else ranked


def _pyplot():
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_best_so_far(rows: Sequence[dict[str, Any]], objective: Objective | Objectives,
                     path: Path) -> None:
    """Each feasible trial's (first) objective value and the best so far."""
    objs = Objectives.of(objective)
    objective = objs.primary
    plt = _pyplot()
    xs, ys, best = [], [], None
    vals = []
    for i, r in enumerate(rows, 1):
        v = objective_value(r, objective) if objs.feasible(r) else None
        vals.append(v)
        if v is not None and (best is None or (v > best if objective.mode == "max" else v < best)):
            best = v
        if best is not None:
            xs.append(i)
            ys.append(best)
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(i, v) for i, v in enumerate(vals, 1) if v is not None]
    if pts:
        ax.scatter(*zip(*pts), s=10, alpha=0.4, label="trial")
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective.metric)
    ax.set_title(f"best {objective.metric} so far")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def epsilon_phases(rows: Sequence[dict[str, Any]], objective: Objective, window: int = 20
                   ) -> list[dict[str, Any]]:
    """Rolling-average reward per epsilon phase (DP-NAS figure 2): one entry per phase with the
    trial indices, the rolling mean reward (over ``window`` trials, failed trials count 0) and the
    phase mean."""
    phases: list[dict[str, Any]] = []
    rewards = [objective_value(r, objective) or 0.0 for r in rows]
    for i, r in enumerate(rows):
        eps = r["info"].get("epsilon")
        if eps is None:
            continue
        if not phases or phases[-1]["epsilon"] != eps:
            phases.append({"epsilon": eps, "trials": [], "rolling": [], "rewards": []})
        lo = max(0, i - window + 1)
        phases[-1]["trials"].append(i + 1)
        phases[-1]["rolling"].append(sum(rewards[lo:i + 1]) / (i + 1 - lo))
        phases[-1]["rewards"].append(rewards[i])
    for p in phases:
        p["mean"] = sum(p["rewards"]) / len(p["rewards"])
    return phases


def plot_epsilon_phases(rows: Sequence[dict[str, Any]], objective: Objective, path: Path,
                        window: int = 20) -> bool:
    """Plot the rolling-average reward coloured by epsilon phase; False if there is none yet."""
    phases = epsilon_phases(rows, objective, window)
    if len(rows) < window or not phases:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("viridis")
    for p in phases:
        ax.plot(p["trials"], p["rolling"], color=cmap(1.0 - float(p["epsilon"])),
                label=f"epsilon {p['epsilon']:g} (mean {p['mean']:.3f})")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"rolling mean of {objective.metric} ({window} trials)")
    ax.set_title("reward per epsilon phase")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_plots(rows: Sequence[dict[str, Any]], objective: Objective | Objectives,
                plots_dir: Path) -> list[Path]:
    """Refresh the standard plots; returns their paths. Search plots show the search metrics
    (the objectives), never test accuracy: ``best_so_far.png``, ``pareto.png`` (every trial and
    the front) and, with several objectives, ``hypervolume.png``."""
    from .front import plot_front, plot_hypervolume

    objs = Objectives.of(objective)
    plots_dir.mkdir(parents=True, exist_ok=True)
    paths = [plots_dir / "best_so_far.png"]
    plot_best_so_far(rows, objs, paths[0])
    paths.append(plots_dir / "pareto.png")
    plot_front(rows, objs, paths[-1])
    if objs.multi and plot_hypervolume(rows, objs, plots_dir / "hypervolume.png"):
        paths.append(plots_dir / "hypervolume.png")
    if plot_epsilon_phases(rows, objs.primary, plots_dir / "reward_per_epsilon.png"):
        paths.append(plots_dir / "reward_per_epsilon.png")
    return paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_html(run_dir: Path, rows: Sequence[dict[str, Any]], objective: Objective | Objectives,
               config: dict[str, Any], top: int = 20) -> Path:
    """report.html: config, chosen architecture, Pareto front, leaderboard and plots."""
    from .front import front_summary

    objs = Objectives.of(objective)
    objective = objs.primary
    board = leaderboard(rows, objs, top)
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_reused = len(rows) - len(evaluated(rows))
    metric_keys = sorted({k for r in board for k in r["metrics"]})[:8]
    cost_keys = [k for k in ("params", "flops", "train_seconds", "latency_ms")
                 if any(k in r["cost"] for r in board)]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["#", "trial", *metric_keys, *cost_keys, "architecture"])
    body = []
    for rank, r in enumerate(board, 1):
        cells = [str(rank), str(r["id"])] + [_fmt(r["metrics"].get(k, "")) for k in metric_keys] \
            + [_fmt(r["cost"].get(k, "")) for k in cost_keys]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                    + f"<td><code>{html.escape(r['arch'])}</code></td></tr>")
    plots = sorted((run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []
    imgs = "".join(f'<figure><img src="plots/{p.name}" alt="{p.stem}"><figcaption>{p.stem}'
                   f"</figcaption></figure>" for p in plots)
    best = objs.best(rows)
    summary = front_summary(rows, objs)
    best_html = "<p>no successful trial yet</p>"
    if best is not None:
        values = ", ".join(f"{html.escape(o.metric)} = {_fmt(v)}"
                           for o, v in zip(objs, objs.values(best) or ()))
        test = best["metrics"].get("test_acc")
        best_html = (f"<p><code>{html.escape(best['arch'])}</code></p><p>trial {best['id']}: "
                     f"{values}" + (f"; test_acc = {_fmt(test)}" if test is not None else "")
                     + f"</p><p>rule: {html.escape(summary['rule'])}</p>")
    front_html = ""
    if objs.multi:
        fhead = "".join(f"<th>{html.escape(k)}</th>" for k in
                        ["trial", *[str(o) for o in objs], "test_acc", "architecture"])
        frows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in
                             [m["trial"], *m["objectives"].values(), m["metrics"].get("test_acc", "")])
            + f"<td><code>{html.escape(m['arch'])}</code></td></tr>" for m in summary["front"])
        hv = summary.get("hypervolume")
        hv_html = "" if hv is None else (
            f"<p>hypervolume {_fmt(hv['value'])} (normalised {_fmt(hv['normalised'])}) against "
            f"the reference point {html.escape(json.dumps(hv['reference']))} "
            f"({html.escape(hv['rule'])}).</p>")
        front_html = (f"<h2>Pareto front ({len(summary['front'])} of {summary['feasible']} "
                      f"feasible trials)</h2>{hv_html}<table><tr>{fhead}</tr>{frows}</table>")
    failed = [r for r in rows if r["status"] == "failed"]
    reused_html = (f", {n_reused} of them reuse an earlier trial's result (repeats: reuse) and are "
                   "not listed again") if n_reused else ""
    failed_html = "".join(f"<li>trial {r['id']}: {html.escape(str(r['reason']))}</li>" for r in failed[:20])
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nasforge run {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:90%}}code{{font-size:85%}}
figure{{display:inline-block;margin:0 1em 1em 0}}img{{max-width:560px}}</style></head><body>
<h1>nasforge run <code>{html.escape(run_dir.name)}</code></h1>
<p>{len(rows)} trials ({n_ok} ok, {len(failed)} failed{reused_html}); objective {html.escape(str(objs))};
space {html.escape(str(config.get('space')))}, strategy {html.escape(str(config.get('strategy')))},
evaluator {html.escape(str(config.get('evaluator')))}, task {html.escape(str(config.get('task')))}.</p>
<h2>Chosen architecture</h2>{best_html}
{front_html}
<h2>Leaderboard</h2><table><tr>{head}</tr>{''.join(body)}</table>
<h2>Plots</h2>{imgs}
{'<h2>Failed trials</h2><ul>' + failed_html + '</ul>' if failed else ''}
<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2, default=str))}</pre>
</body></html>"""
    path = run_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page)
    os.replace(tmp, path)
    return path
