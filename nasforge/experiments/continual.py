"""Class-incremental continual learning on a deep prior (DP-NAS's motivation) against fine-tuning.

The task's classes are split into ``n_tasks`` consecutive groups (digits: {0,1}, {2,3}, ...,
{8,9}), learned one after another; after each, every group seen so far is tested on its test
images, predicting among all classes seen so far (class-incremental, one shared output layer).

Methods:

- ``deep_prior_linear``: the frozen random encoder's embedding is fixed; a linear classifier on
  it is trained on each group's data in turn. Only this classifier can forget.
- ``deep_prior_ncm``: nearest class mean on the same embedding. Each class mean is computed
  once from that class's training rows and never changed, so nothing is forgotten.
- ``finetune``: the same network (same initial weights) trained end to end, group by group.

Reported after each group: the accuracy on each group seen, their average, and forgetting: for
each earlier group, the best accuracy it had after any earlier step minus its accuracy now,
averaged over the earlier groups (not defined after the first group). All training goes through
``training.fit``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..core import Architecture, SearchSpace, Task, derive_seed
from ..errors import ConfigError
from ..evaluators.deep_prior import DeepPriorEvaluator, deep_prior_network, make_classifier
from ..training import Data, TrainConfig, fit, predict_batches
from . import write_csv

METHODS = ("deep_prior_linear", "deep_prior_ncm", "finetune")


def class_groups(num_classes: int, n_tasks: int) -> list[list[int]]:
    """The classes split into ``n_tasks`` consecutive, near-equal groups."""
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or not 2 <= n_tasks <= num_classes:
        raise ConfigError(f"n_tasks = {n_tasks!r}; expected an integer in 2..{num_classes} "
                          f"(the task has {num_classes} classes)")
    return [[int(c) for c in part] for part in np.array_split(np.arange(num_classes), n_tasks)]


def subset(data: Data, classes: Sequence[int]) -> Data:
    """The rows of ``data`` whose label is in ``classes``."""
    x, y = data
    mask = torch.isin(y, torch.as_tensor(list(classes), dtype=y.dtype))
    return x[mask], y[mask]


def masked_accuracy(logits: torch.Tensor, y: torch.Tensor, seen: Sequence[int]) -> float:
    """Accuracy when predicting only among the ``seen`` classes."""
    mask = torch.full((logits.shape[1],), -math.inf)
    mask[list(seen)] = 0.0
    return float(((logits.float() + mask).argmax(1) == y).float().mean())


def forgetting(history: Sequence[Sequence[float]]) -> float:
    """Average forgetting after the last step of ``history`` (``history[step][group]``)."""
    t = len(history) - 1
    if t < 1:
        return math.nan
    drops = [max(history[step][j] for step in range(j, t)) - history[t][j] for j in range(t)]
    return float(np.mean(drops))


class NearestClassMean(torch.nn.Module):
    """Logits = minus the squared distance to each class mean (classes without a mean: -inf)."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.register_buffer("means", torch.zeros(num_classes, features))
        self.register_buffer("known", torch.zeros(num_classes, dtype=torch.bool))

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Set the mean of every class present in ``y`` from its rows of ``x``."""
        for c in torch.unique(y).tolist():
            self.means[c] = x[y == c].mean(0)
            self.known[c] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x, self.means).pow(2)
        return torch.where(self.known, -d, torch.full_like(d, -math.inf))


def continual(arch: Architecture, space: SearchSpace, task: Task, *, n_tasks: int = 5,
              seed: int = 0, epochs: int = 30, evaluator: DeepPriorEvaluator | None = None,
              finetune: TrainConfig | None = None, methods: Sequence[str] = METHODS
              ) -> list[dict[str, Any]]:
    """Rows ``{method, step, classes, avg_acc, forgetting, acc_task_1..n}``, one per method, step.

    The deep prior uses ``evaluator``'s init, batch norm and classifier training options (with
    ``epochs`` per step); ``finetune`` (default: Adam, lr 1e-3, batch 64, ``epochs`` per step)
    trains the network with the same initial weights end to end.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"methods {list(methods)!r}; expected some of {', '.join(METHODS)}")
    groups = class_groups(int(task.num_classes), n_tasks)
    evaluator = evaluator or DeepPriorEvaluator()
    probe_cfg = TrainConfig(**{**evaluator.config.__dict__, "epochs": epochs,
                               "early_stop_epoch": None, "early_stop_threshold": None})
    finetune = finetune or TrainConfig(lr=1e-3, batch_size=64, epochs=epochs)
    rows: list[dict[str, Any]] = []
    emb = None
    if any(m.startswith("deep_prior") for m in methods):
        emb = evaluator.embedding(arch, space, task, seed=seed)
    for method in methods:
        if method == "finetune":
            model: torch.nn.Module = deep_prior_network(
                arch, space, task, seed=seed, init=evaluator.init,
                batch_norm=evaluator.batch_norm, frozen=False)
            data = {s: task.split(s) for s in ("train", "val", "test")}
        else:
            assert emb is not None
            data = {s: emb.split(s) for s in ("train", "val", "test")}
            kind = "linear" if evaluator.classifier == "head" else evaluator.classifier
            model = (NearestClassMean(emb.features, int(task.num_classes))
                     if method == "deep_prior_ncm" else
                     make_classifier(kind, emb.features, int(task.num_classes),
                                     hidden=evaluator.hidden, seed=derive_seed(seed, 1)))
        history: list[list[float]] = []
        seen: list[int] = []
        for step, classes in enumerate(groups):
            seen += classes
            train, val = subset(data["train"], classes), subset(data["val"], classes)
            if isinstance(model, NearestClassMean):
                model.add(*train)
            else:
                cfg = finetune if method == "finetune" else probe_cfg
                fit(model, train, val if val[0].shape[0] else None, cfg,
                    seed=derive_seed(seed, 2, step), device=evaluator.device)
            accs = []
            for earlier in groups[:step + 1]:
                x, y = subset(data["test"], earlier)
                device = "cpu" if isinstance(model, NearestClassMean) else evaluator.device
                logits = predict_batches(model, x, device=device)
                accs.append(masked_accuracy(logits, y, seen))
            history.append(accs)
            row = {"method": method, "step": step + 1, "classes": json.dumps(classes),
                   "avg_acc": float(np.mean(accs)), "forgetting": forgetting(history)}
            row.update({f"acc_task_{j + 1}": (accs[j] if j < len(accs) else math.nan)
                        for j in range(len(groups))})
            rows.append(row)
    return rows


def plot_continual(rows: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Average accuracy and forgetting after each step, one line per method."""
    from ..report import _pyplot

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        steps = [r["step"] for r in mine]
        left.plot(steps, [r["avg_acc"] for r in mine], marker="o", label=method)
        right.plot(steps, [r["forgetting"] for r in mine], marker="o", label=method)
    left.set_xlabel("tasks learned")
    left.set_ylabel("average accuracy on the tasks seen")
    right.set_xlabel("tasks learned")
    right.set_ylabel("average forgetting")
    for ax in (left, right):
        ax.set_xticks(sorted({r["step"] for r in rows}))
        ax.legend(fontsize=8)
    fig.suptitle(title or "class-incremental learning")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_continual(arch: Architecture, space: SearchSpace, task: Task, out: Path, *,
                  n_tasks: int = 5, seed: int = 0, epochs: int = 30,
                  evaluator: DeepPriorEvaluator | None = None,
                  methods: Sequence[str] = METHODS) -> dict[str, Any]:
    """``continual`` and its files in ``out``: continual.csv, continual.png, meta.json."""
    rows = continual(arch, space, task, n_tasks=n_tasks, seed=seed, epochs=epochs,
                     evaluator=evaluator, methods=methods)
    files = {"summary": write_csv(out / "continual.csv", rows),
             "plot": plot_continual(rows, out / "continual.png",
                                    title=f"class-incremental {task.name}, {n_tasks} tasks: "
                                          f"{arch}")}
    meta = {"experiment": "continual", "arch": str(arch), "task": task.name, "n_tasks": n_tasks,
            "seed": seed, "epochs": epochs,
            "groups": class_groups(int(task.num_classes), n_tasks)}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    files["meta"] = out / "meta.json"
    return {"rows": rows, "files": files}


__all__ = ["continual", "run_continual", "plot_continual", "class_groups", "forgetting",
           "NearestClassMean", "METHODS"]
