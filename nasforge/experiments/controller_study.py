"""Controller studies of an ENAS search: does the controller learn what random sampling with the
same shared weights does not, and does its hidden state encode the architecture it emitted?

Three studies (``nasforge controller-study RUN_DIR`` runs all of them on a finished ``enas`` run;
:func:`controller_study` runs them on any controller and scoring function):

(a) **trained vs untrained controller**: ``samples`` architectures sampled from the trained
    controller and as many from an untrained one (same seed as the search started with), each
    scored with the shared weights on the first ``eval_rows`` validation rows; both
    distributions plotted (``distributions.png``) and listed (``samples.csv``).
(b) **hidden states**: the controller's final LSTM hidden state after reading each of
    ``hidden_archs`` distinct architectures (sampled uniformly, the same set for every
    controller) as a heat map (``hidden_states.png``; each unit centred on its mean over the
    architectures, so the map shows what differs between them), for the trained and untrained
    controllers and for two controllers trained here from the untrained one for
    ``controller_steps`` REINFORCE steps on the same shared-weight rewards, identical except for
    the memorisation regulariser (weight 0 and ``memorization``).
(c) **embeddings vs similarity**: for every pair of those architectures, the Spearman
    correlation between the Euclidean distance of their hidden states and simple similarities:
    ``ops_in_common`` (positions with the same operation / activation), ``shared_connections``
    (positions with the same input connection) and ``activation_counts`` (minus the L1 distance
    between the counts of each operation). An embedding that follows the architecture gives a
    negative correlation (more similar, closer). Written as ``spearman.csv`` and
    ``spearman.md``.

``summary.json`` adds, per controller, how distinct the hidden states of different
architectures are (smallest and mean pairwise distance) and how well the first decision can be
read back from the final hidden state (5-fold accuracy of a logistic regression on
standardised states, against the majority-class rate): a hidden state that forgets early choices reads them back at chance.

Decisions are read through the space's sequential view: string decisions count as operations,
integer decisions as connections (the recurrent cell: activations and source nodes).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..core import Architecture, SearchSpace
from ..errors import ConfigError
from ..strategies.reinforce import ReinforceSearch

Data = tuple[torch.Tensor, torch.Tensor]
Scorer = Callable[[Architecture, Data], float]
SIMILARITIES = ("ops_in_common", "shared_connections", "activation_counts")
TABLE_COLUMNS = ("controller", "memorization", "similarity", "spearman_rho", "p_value", "pairs",
                 "mean_distance")


@dataclass
class StudyOptions:
    """How much each study samples and trains (see the module docstring)."""

    samples: int = 1000
    hidden_archs: int = 100
    memorization: float = 1.0
    controller_steps: int = 50
    controller_batch: int = 4
    val_batch: int = 64
    eval_rows: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("samples", "hidden_archs", "controller_batch", "val_batch", "eval_rows"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"controller-study: {key}={value!r}; expected an integer >= 1")
        if self.hidden_archs < 3:
            raise ConfigError(f"controller-study: hidden_archs={self.hidden_archs}; expected at "
                              "least 3 (pairs of architectures are correlated)")
        if isinstance(self.controller_steps, bool) or not isinstance(self.controller_steps, int) \
                or self.controller_steps < 0:
            raise ConfigError(f"controller-study: controller_steps={self.controller_steps!r}; "
                              "expected an integer >= 0")
        if not (isinstance(self.memorization, (int, float)) and self.memorization > 0
                and math.isfinite(self.memorization)):
            raise ConfigError(f"controller-study: memorization={self.memorization!r}; expected a "
                              "number > 0 (the study compares it with 0)")


# --------------------------------------------------------------------------------------------
# pieces


def similarities(space: SearchSpace, a: Architecture, b: Architecture) -> dict[str, float]:
    """The simple similarities of two architectures of ``space`` (see the module docstring)."""
    da, db = space.to_decisions(a), space.to_decisions(b)
    ops = conn = 0
    for x, y in zip(da, db):
        if x == y and type(x) is type(y):
            if isinstance(x, str):
                ops += 1
            elif isinstance(x, (int, np.integer)) and not isinstance(x, bool):
                conn += 1
    ca: dict[str, int] = {}
    cb: dict[str, int] = {}
    for seq, counts in ((da, ca), (db, cb)):
        for d in seq:
            if isinstance(d, str):
                counts[d] = counts.get(d, 0) + 1
    l1 = sum(abs(ca.get(k, 0) - cb.get(k, 0)) for k in set(ca) | set(cb))
    return {"ops_in_common": float(ops), "shared_connections": float(conn),
            "activation_counts": float(-l1)}


def distinct_archs(space: SearchSpace, n: int, rng: np.random.Generator) -> list[Architecture]:
    """Up to ``n`` distinct architectures sampled uniformly (fewer if the space is smaller)."""
    seen: dict[str, Architecture] = {}
    for _ in range(50 * n):
        arch = space.sample(rng)
        seen.setdefault(str(arch), arch)
        if len(seen) == n:
            break
    return list(seen.values())


def hidden_before_each_decision(controller: ReinforceSearch, arch: Architecture) -> torch.Tensor:
    """The controller's LSTM hidden state before each decision of ``arch`` is scored
    (``(decisions, hidden)``): row ``k`` has read the start token and decisions ``0..k-1``."""
    space = controller._require_space()
    decisions = space.to_decisions(arch)
    ids = controller._ids(decisions)
    h = torch.zeros(1, controller.hidden_size)
    state = (h, h.clone())
    rows = []
    with torch.no_grad():
        for token in [0] + [i + 1 for i in ids[:-1]]:
            state = controller.controller.step(torch.tensor([token]), state)
            rows.append(state[0][0].clone())
    return torch.stack(rows)


def spearman_rows(name: str, memorization: float, hidden: np.ndarray, space: SearchSpace,
                  archs: Sequence[Architecture]) -> list[dict[str, object]]:
    """One table row per similarity: Spearman rho of pairwise hidden-state distance vs it."""
    from scipy.stats import spearmanr

    n = len(archs)
    iu = np.triu_indices(n, 1)
    dist = np.linalg.norm(hidden[:, None, :] - hidden[None, :, :], axis=-1)[iu]
    sims = {k: np.empty(len(dist)) for k in SIMILARITIES}
    for p, (i, j) in enumerate(zip(*iu)):
        for k, v in similarities(space, archs[i], archs[j]).items():
            sims[k][p] = v
    rows = []
    for k in SIMILARITIES:
        if np.ptp(sims[k]) == 0 or np.ptp(dist) == 0:
            rho, pval = math.nan, math.nan
        else:
            res = spearmanr(dist, sims[k])
            rho, pval = float(res.statistic), float(res.pvalue)
        rows.append({"controller": name, "memorization": memorization, "similarity": k,
                     "spearman_rho": rho, "p_value": pval, "pairs": int(len(dist)),
                     "mean_distance": float(dist.mean())})
    return rows


def first_decision_probe(hidden: np.ndarray, space: SearchSpace,
                         archs: Sequence[Architecture]) -> dict[str, float]:
    """How well the first decision reads back from the final hidden state: 5-fold (fewer with
    few examples per class) logistic-regression accuracy, and the majority-class rate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.array([str(space.to_decisions(a)[0]) for a in archs])
    _, counts = np.unique(labels, return_counts=True)
    chance = float(counts.max() / len(labels))
    folds = int(min(5, counts.min()))
    if len(counts) < 2 or folds < 2:
        return {"probe_acc": math.nan, "chance": chance}
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    acc = cross_val_score(probe, hidden, labels, cv=cv)
    return {"probe_acc": float(acc.mean()), "chance": chance}


def train_controller(controller: ReinforceSearch, score: Scorer, val: Data, *, steps: int,
                     batch: int, val_batch: int, seed: int) -> list[float]:
    """``steps`` REINFORCE steps (``controller.learn``), each on ``batch`` sampled architectures
    rewarded by their shared-weight score on the next validation minibatch (minibatches drawn
    from ``seed``, so two controllers trained with the same seed see the same batches)."""
    n = val[0].shape[0]
    gen = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=gen), 0
    mean_rewards = []
    for _ in range(steps):
        archs = controller.ask(batch)
        rewards = []
        for arch in archs:
            if pos >= n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + val_batch]
            pos += val_batch
            rewards.append(score(arch, (val[0][idx], val[1][idx])))
        controller.learn(archs, rewards)
        mean_rewards.append(float(np.mean(rewards)))
    return mean_rewards


# --------------------------------------------------------------------------------------------
# the study


def controller_study(space: SearchSpace, trained: ReinforceSearch,
                     fresh: Callable[[], ReinforceSearch], score: Scorer, val: Data,
                     out_dir: str | Path, options: StudyOptions | None = None) -> dict:
    """Run studies (a), (b), (c) and write their files to ``out_dir`` (see the module docstring).

    ``trained`` is the search's controller, ``fresh()`` an untrained one as the search started
    it, ``score(arch, (x, y))`` the shared-weight score of an architecture on a batch, ``val``
    the validation split. ``trained`` is copied, not changed. Returns the summary.
    """
    opts = options or StudyOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    rows = min(opts.eval_rows, int(val[0].shape[0]))
    eval_data = (val[0][:rows], val[1][:rows])

    def copy(controller: ReinforceSearch) -> ReinforceSearch:
        twin = fresh()
        twin.load_state_dict(controller.state_dict())
        twin.generator.manual_seed(opts.seed)  # sampling for the study, from the study's seed
        return twin

    untrained = fresh()
    untrained.generator.manual_seed(opts.seed)

    # (a) distributions of shared-weight scores
    cache: dict[str, float] = {}
    samples: dict[str, list[tuple[str, float]]] = {}
    for name, ctrl in (("trained", copy(trained)), ("untrained", untrained)):
        scored = []
        for arch in ctrl.ask(opts.samples):
            text = str(arch)
            if text not in cache:
                cache[text] = float(score(arch, eval_data))
            scored.append((text, cache[text]))
        samples[name] = scored
    untrained = fresh()  # ask() advanced its generator; the studies below start from scratch

    # (b) hidden states: the run's controllers and a pair trained here with / without memory
    controllers: dict[str, tuple[float, ReinforceSearch]] = {
        "trained": (float(trained.memorization), trained), "untrained": (0.0, untrained)}
    curves = {}
    for name, weight in (("no_memorization", 0.0), ("memorization", float(opts.memorization))):
        ctrl = fresh()
        ctrl.memorization = weight
        curves[name] = train_controller(ctrl, score, val, steps=opts.controller_steps,
                                        batch=opts.controller_batch, val_batch=opts.val_batch,
                                        seed=opts.seed)
        controllers[name] = (weight, ctrl)
    archs = distinct_archs(space, opts.hidden_archs, rng)
    archs.sort(key=lambda a: tuple(str(d) for d in space.to_decisions(a)))
    hidden = {name: c.hidden_states(archs).numpy() for name, (_, c) in controllers.items()}

    # (c) Spearman table
    table = []
    for name, (weight, _) in controllers.items():
        table += spearman_rows(name, weight, hidden[name], space, archs)

    summary: dict = {"options": asdict(opts), "eval_rows": rows, "archs": len(archs),
                     "distributions": {}, "hidden_states": {}, "controller_training": {}}
    for name, scored in samples.items():
        values = np.array([s for _, s in scored])
        summary["distributions"][name] = {
            "mean": float(values.mean()), "std": float(values.std()),
            "median": float(np.median(values)), "max": float(values.max()),
            "distinct": len({t for t, _ in scored})}
    for name, h in hidden.items():
        d = np.linalg.norm(h[:, None] - h[None], axis=-1)[np.triu_indices(len(h), 1)]
        summary["hidden_states"][name] = {"memorization": controllers[name][0],
                                          "min_distance": float(d.min()),
                                          "mean_distance": float(d.mean()),
                                          **first_decision_probe(h, space, archs)}
    for name, curve in curves.items():
        summary["controller_training"][name] = {
            "steps": len(curve), "first_reward": curve[0] if curve else math.nan,
            "last_reward": curve[-1] if curve else math.nan}

    _write_samples(out / "samples.csv", samples)
    _write_table(out, table)
    _plot_distributions(out / "distributions.png", samples)
    _plot_hidden(out / "hidden_states.png", hidden, controllers)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_nan_safe) + "\n")
    return summary


def _nan_safe(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def _write_samples(path: Path, samples: dict[str, list[tuple[str, float]]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["controller", "arch", "shared_score"])
        for name, scored in samples.items():
            w.writerows([name, text, f"{value:.6g}"] for text, value in scored)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _write_table(out: Path, table: list[dict[str, object]]) -> None:
    with open(out / "spearman.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        w.writeheader()
        w.writerows({k: _fmt(r[k]) for k in TABLE_COLUMNS} for r in table)
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |",
             "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in TABLE_COLUMNS) + " |" for r in table]
    (out / "spearman.md").write_text("\n".join(lines) + "\n")


def _plot_distributions(path: Path, samples: dict[str, list[tuple[str, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    values = {k: np.array([s for _, s in v]) for k, v in samples.items()}
    lo = min(v.min() for v in values.values())
    hi = max(v.max() for v in values.values())
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
    for name, v in values.items():
        ax.hist(v, bins=bins, alpha=0.55, label=f"{name} controller (n={len(v)}, "
                f"mean {v.mean():.3f})")
    ax.set_xlabel("shared-weight validation score")
    ax.set_ylabel("sampled architectures")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_hidden(path: Path, hidden: dict[str, np.ndarray],
                 controllers: dict[str, tuple[float, ReinforceSearch]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(hidden)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 4.5), squeeze=False)
    # each unit minus its mean over the architectures: what differs between architectures
    centred = {k: h - h.mean(0, keepdims=True) for k, h in hidden.items()}
    vmax = max(float(np.abs(h).max()) for h in centred.values()) or 1.0
    for ax, name in zip(axes[0], names):
        im = ax.imshow(centred[name], aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                       interpolation="nearest")
        ax.set_title(f"{name}\nmemorization {controllers[name][0]:g}", fontsize=9)
        ax.set_xlabel("hidden unit")
    axes[0][0].set_ylabel("architecture (sorted by decisions)")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8,
                 label="hidden state minus its mean over the architectures")
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["StudyOptions", "controller_study", "similarities", "spearman_rows",
           "hidden_before_each_decision", "first_decision_probe", "train_controller",
           "distinct_archs", "SIMILARITIES", "TABLE_COLUMNS"]
