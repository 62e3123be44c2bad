"""DP-NAS's hypotheses as experiments on a finished run (or on architectures given as text).

- H2, the weight lottery (``lottery``): does a deep prior's accuracy depend on the particular
  random weights, or on the architecture? Each architecture's encoder is re-sampled ``k`` times
  (different init seeds) while the classifier's seed stays fixed; the spread of test accuracy
  within an architecture is compared with the spread between low, medium and top architectures.
- H3, parameter inference (``inference``): the same architectures as deep priors (only the
  classifier trained) and fully trained (train evaluator), side by side, with the rank
  correlation of the two accuracies.

Both write CSV files and a plot into a new folder (see ``experiments.output_dir``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core import SearchSpace, Task, derive_seed
from ..errors import ConfigError
from ..evaluators.deep_prior import DeepPriorEvaluator
from ..evaluators.train import TrainEvaluator
from . import Target, write_csv

GROUP_COLORS = {"low": "tab:red", "medium": "tab:orange", "top": "tab:green",
                "given": "tab:blue", "trial": "tab:blue"}
Progress = Callable[[int, int, str], None] | None


def _pyplot():
    from ..report import _pyplot as pyplot

    return pyplot()


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def lottery(targets: Sequence[Target], space: SearchSpace, task: Task, *, k: int = 5,
            seed: int = 0, evaluator: DeepPriorEvaluator | None = None,
            progress: Progress = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Test accuracy of each architecture's deep prior over ``k`` re-sampled encoders.

    Encoder ``j`` is initialised from ``derive_seed(seed, 1, j)``; the classifier always from
    ``seed``, so only the random weights change. Returns ``(summary, samples)``: one row per
    architecture (mean and sample std of val / test accuracy over the ``k`` encoders; failed
    samples are left out and counted) and one row per (architecture, encoder).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k = {k!r}; expected an integer >= 1 (encoders per architecture)")
    if not targets:
        raise ConfigError("lottery needs at least one architecture")
    evaluator = evaluator or DeepPriorEvaluator()
    summary, samples = [], []
    total, done = len(targets) * k, 0
    for i, t in enumerate(targets):
        tests, vals, failed = [], [], 0
        for j in range(k):
            init_seed = derive_seed(seed, 1, j)
            row: dict[str, Any] = {"index": i, "group": t.group, "sample": j,
                                   "init_seed": init_seed, "arch": str(t.arch)}
            try:
                _, probe = evaluator.probe(t.arch, space, task, seed=seed, init_seed=init_seed)
                row.update(val_acc=probe.metrics["val_acc"], test_acc=probe.metrics["test_acc"],
                           status="ok")
                tests.append(probe.metrics["test_acc"])
                vals.append(probe.metrics["val_acc"])
            except Exception as exc:  # one bad encoder must not end the experiment
                failed += 1
                row.update(val_acc=math.nan, test_acc=math.nan, status=f"failed: {exc}")
            samples.append(row)
            done += 1
            if progress is not None:
                progress(done, total, str(t.arch))
        test_mean, test_std = _mean_std(tests)
        val_mean, val_std = _mean_std(vals)
        summary.append({"index": i, "group": t.group, "trial": t.trial, "objective": t.value,
                        "k": k, "failed": failed, "test_acc_mean": test_mean,
                        "test_acc_std": test_std, "val_acc_mean": val_mean, "val_acc_std": val_std,
                        "test_accs": json.dumps([round(v, 5) for v in tests]),
                        "arch": str(t.arch)})
    return summary, samples


def plot_lottery(summary: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Mean test accuracy with std error bars per architecture, grouped low / medium / top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(summary) + 2), 4))
    x, pos, last, ticks = 0.0, [], None, []
    for r in summary:
        if last is not None and r["group"] != last:
            x += 1.0  # a gap between groups
        pos.append(x)
        last = r["group"]
        x += 1.0
    for group in dict.fromkeys(r["group"] for r in summary):
        idx = [i for i, r in enumerate(summary) if r["group"] == group]
        ax.errorbar([pos[i] for i in idx], [summary[i]["test_acc_mean"] for i in idx],
                    yerr=[summary[i]["test_acc_std"] for i in idx], fmt="o", capsize=3,
                    color=GROUP_COLORS.get(group, "tab:blue"), label=group)
        values = [(pos[i], summary[i]["objective"]) for i in idx
                  if summary[i]["objective"] is not None]
        if values:
            ax.scatter(*zip(*values), marker="x", color="black", s=18, zorder=3)
        ticks.append((float(np.mean([pos[i] for i in idx])), group))
    if any(r["objective"] is not None for r in summary):
        ax.scatter([], [], marker="x", color="black", s=18, label="run's objective")
    ax.set_xticks([p for p, _ in ticks], [g for _, g in ticks])
    ax.set_ylabel(f"test accuracy (mean ± std over {summary[0]['k']} encoders)")
    ax.set_title(title or "weight lottery: re-sampled random encoders per architecture")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def lottery_stats(summary: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean within-architecture std against the std of architecture means (H2 in two numbers)."""
    means = [r["test_acc_mean"] for r in summary if math.isfinite(r["test_acc_mean"])]
    stds = [r["test_acc_std"] for r in summary if math.isfinite(r["test_acc_std"])]
    return {"within_arch_std": float(np.mean(stds)) if stds else math.nan,
            "between_arch_std": float(np.std(means, ddof=1)) if len(means) > 1 else math.nan}


def run_lottery(targets: Sequence[Target], space: SearchSpace, task: Task, out: Path, *,
                k: int = 5, seed: int = 0, evaluator: DeepPriorEvaluator | None = None,
                progress: Progress = None, info: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """``lottery`` and its files in ``out``: lottery.csv, lottery_samples.csv, lottery.png,
    meta.json. Returns the summary rows, the stats and the file paths."""
    evaluator = evaluator or DeepPriorEvaluator()
    summary, samples = lottery(targets, space, task, k=k, seed=seed, evaluator=evaluator,
                               progress=progress)
    stats = lottery_stats(summary)
    files = {"summary": write_csv(out / "lottery.csv", summary),
             "samples": write_csv(out / "lottery_samples.csv", samples),
             "plot": plot_lottery(summary, out / "lottery.png",
                                  title=f"weight lottery on {task.name} ({k} encoders each)")}
    meta = {"experiment": "lottery", "task": task.name, "k": k, "seed": seed,
            "evaluator": "deep_prior", "init": evaluator.init, "batch_norm": evaluator.batch_norm,
            **stats, **(info or {})}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    files["meta"] = out / "meta.json"
    return {"summary": summary, "stats": stats, "files": files}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equal-length sequences (average ranks for ties)."""
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 3:
        return math.nan
    xs, ys = zip(*pairs)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan
    return float(spearmanr(xs, ys).statistic)


def inference(targets: Sequence[Target], space: SearchSpace, task: Task, *, seed: int = 0,
              deep_prior: DeepPriorEvaluator | None = None,
              trained: TrainEvaluator | None = None, progress: Progress = None
              ) -> list[dict[str, Any]]:
    """Each architecture as a deep prior and fully trained, from the same seed."""
    deep_prior = deep_prior or DeepPriorEvaluator(measure_latency=False)
    trained = trained or TrainEvaluator(measure_latency=False)
    rows = []
    for i, t in enumerate(targets):
        dp = deep_prior.evaluate(t.arch, space, task, seed=seed)
        if progress is not None:
            progress(2 * i + 1, 2 * len(targets), str(t.arch))
        tr = trained.evaluate(t.arch, space, task, seed=seed)
        if progress is not None:
            progress(2 * i + 2, 2 * len(targets), str(t.arch))
        nan = math.nan
        rows.append({
            "index": i, "group": t.group, "trial": t.trial, "objective": t.value,
            "deep_prior_val_acc": dp.metrics.get("val_acc", nan),
            "deep_prior_test_acc": dp.metrics.get("test_acc", nan),
            "trained_val_acc": tr.metrics.get("val_acc", nan),
            "trained_test_acc": tr.metrics.get("test_acc", nan),
            "deep_prior_seconds": (dp.cost.get("embed_seconds", nan)
                                   + dp.cost.get("train_seconds", nan)),
            "trained_seconds": tr.cost.get("train_seconds", nan),
            "params": tr.cost.get("params", dp.cost.get("params", nan)),
            "deep_prior_status": dp.status if dp.reason is None else f"{dp.status}: {dp.reason}",
            "trained_status": tr.status if tr.reason is None else f"{tr.status}: {tr.reason}",
            "arch": str(t.arch)})
    return rows


def plot_inference(rows: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Deep prior and fully trained test accuracy side by side, two bars per architecture."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(rows) + 2), 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["deep_prior_test_acc"] for r in rows], 0.4,
           label="deep prior (classifier only)", color="tab:blue")
    ax.bar(x + 0.2, [r["trained_test_acc"] for r in rows], 0.4, label="fully trained",
           color="tab:gray")
    ax.set_xticks(x, [f"{r['group']}\n{r['index']}" for r in rows], fontsize=7)
    low = min([v for r in rows for v in (r["deep_prior_test_acc"], r["trained_test_acc"])
               if math.isfinite(v)] or [0.0])
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "deep prior against full training")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_inference(targets: Sequence[Target], space: SearchSpace, task: Task, out: Path, *,
                  seed: int = 0, deep_prior: DeepPriorEvaluator | None = None,
                  trained: TrainEvaluator | None = None, progress: Progress = None,
                  info: dict[str, Any] | None = None) -> dict[str, Any]:
    """``inference`` and its files in ``out``: inference.csv, inference.png, meta.json."""
    rows = inference(targets, space, task, seed=seed, deep_prior=deep_prior, trained=trained,
                     progress=progress)
    stats = {"spearman_test_acc": spearman([r["deep_prior_test_acc"] for r in rows],
                                           [r["trained_test_acc"] for r in rows]),
             "mean_deep_prior_test_acc": _mean_std([r["deep_prior_test_acc"] for r in rows])[0],
             "mean_trained_test_acc": _mean_std([r["trained_test_acc"] for r in rows])[0]}
    files = {"summary": write_csv(out / "inference.csv", rows),
             "plot": plot_inference(rows, out / "inference.png",
                                    title=f"deep prior against full training on {task.name}")}
    meta = {"experiment": "inference", "task": task.name, "seed": seed, **stats, **(info or {})}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    files["meta"] = out / "meta.json"
    return {"rows": rows, "stats": stats, "files": files}


__all__ = ["lottery", "run_lottery", "plot_lottery", "lottery_stats", "inference",
           "run_inference", "plot_inference", "spearman"]
