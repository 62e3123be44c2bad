"""DARTS-CC at CPU scale: a family of genotypes from one search, and the family against random
genotypes, DARTS and GDAS (issue 10, targets 1 and 2).

    python benchmarks/darts_cc.py family --task digits          (target 1)
    python benchmarks/darts_cc.py family --task mnist1d         (target 1, 1-D cells)
    python benchmarks/darts_cc.py front  --task digits --seeds 0 1 2   (target 2)
    python benchmarks/darts_cc.py family --reference ...        (the reference's λ unit and range)

``family`` (target 1): one ``darts_cc`` run (search, then the genotypes at λ̃ = 0, .25, .5, .75,
1 trained from scratch by the ``train`` evaluator). Reports the distinct genotypes, their
parameter counts against λ (strictly falling?, ratio λ̃ = 0 over λ̃ = 1), the search's time and
the time to train the distinct genotypes from scratch (wall and CPU seconds: the machine this
ran on has 2 cores shared with other jobs, so wall times are inflated by the load; CPU seconds
are those of this process, one torch thread).

``front`` (target 2): per seed, one ``darts_cc`` run with ``--random`` random genotypes (the
i-th with a fraction i/(N-1) of parameter-free operations) trained the same way, then a
``darts`` and a ``gdas`` run with the same supernet size, search length and training of the
derived genotype. A point (params, val_acc) is on or above the random front when no random
genotype dominates it: none has at most as many parameters and at least its validation accuracy,
one of the two strictly (until 2026-12-02 08:30 UTC an equally accurate random genotype with
fewer parameters did not count). The same verdict on test accuracy is reported beside it
(``*_on_or_above_test``), never used to choose anything.

Defaults are the **CPU-scale preset** (``configs/darts_cc_digits_cpu.yaml``, chosen on the
search's behaviour on the training split, see ``docs/darts.md``): 3 cells, C = 4, 4 nodes, the 8
operations, the full training split, first-order architecture steps, the complexity term
relative to the cells' largest parameter count (``complexity: relative``) with λ in [3e-2, 1e1],
every architecture step at all 5 anchors of α(λ̃) on copies of one batch with common Gumbel
noise (``--lambda-sampling coupled --lambda-jitter 0``, third revision, 2026-12-02 14:00 UTC),
architecture learning rate 0.03, fixed pivots of α(λ̃), DARTS-CC search batch 128 with
architecture batch 64 (320 rows per call) and weights' learning rate 0.1 (``--cc-batch 128
--arch-batch 64 --lr 0.1``), the family from the final α (``--alpha-average 0``), 20 search epochs of which 10 warm-up epochs train the weights only (``--cc-epochs 20
--warmup 10``; DARTS and GDAS in ``front`` search ``--epochs 10 --oneshot-warmup 3`` at
``--batch``: ``configs/darts_digits_cpu.yaml`` and ``configs/gdas_digits_cpu.yaml``; results
before 2026-12-02 08:30 UTC ran them 8 epochs without warm-up), Gumbel temperature 1 → 0.24
over the search; each genotype trained from scratch as the ``train``
evaluator's defaults (Adam 3e-3, batch 64, 20 epochs, cosine), scored on the validation split.
Results made before these defaults: files without ``cc_batch`` in their ``args`` ran ``--lr
0.025`` with the search batch ``--batch`` for both steps; files without ``lambda_sampling`` ran
``--lambda-max 100 --lambda-sampling uniform --warmup 0 --cc-epochs 0``; files without
``alpha_average`` in their ``args`` (the second revision) ran ``--lambda-sampling anchors
--lambda-jitter 1 --arch-batch 512``.
``--reference`` switches the DARTS-CC options back to the reference's (raw parameter count,
λ in [1e-8, 1e-4], arch lr 1e-3, second order, learned pivots, uniform λ̃, no warm-up).

``front --reuse FILE`` takes each seed's random genotypes, DARTS and GDAS results from an
earlier ``front`` result instead of training them again (they do not depend on DARTS-CC's
options); it refuses (exit 2) a file made with another task, sizes, search length or training.
``front --reuse FILE --rerun darts gdas`` does the opposite: it keeps each seed's random genotypes
and DARTS-CC family from FILE and searches DARTS and / or GDAS again with this run's ``--epochs``,
``--batch``, ``--arch-lr`` and ``--oneshot-warmup`` (FILE must match in task, sizes, number of
random genotypes and their training only).

Raw results go to ``--out`` (default ``benchmarks/results/darts_cc_<target>_<task>.json``,
written after every seed; an existing file is never overwritten: exit 2), plots to the folder
next to it (``..._plots/``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from nasforge.config import make_config
from nasforge.run.rundir import Run

REFERENCE = {"complexity": "params", "lambda_min": 1e-8, "lambda_max": 1e-4, "arch_lr": 1e-3,
             "order": 2, "pivots": "learned", "lambda_sampling": "uniform", "warmup_epochs": 0,
             "lr": 0.025, "arch_batch_size": None, "alpha_average_epochs": 0}
#: the arguments that fix the random genotypes and their training, and DARTS's and GDAS's runs:
#: a ``front`` result may be reused (``--reuse``) only when they are the same
#: the CPU preset's DARTS-CC search batch, architecture batch and weights' learning rate
#: (``configs/darts_cc_digits_cpu.yaml``)
CC_BATCH, ARCH_BATCH, WEIGHT_LR = 128, 64, 0.1
REUSE_KEYS = ("task", "C", "epochs", "train_epochs", "train_batch", "random", "derive", "limit",
              "batch", "arch_lr", "oneshot_warmup")
#: what fixes the random genotypes and their training alone: ``--rerun`` (DARTS and / or GDAS
#: searched again with this run's options, the rest taken over) checks only these
RANDOM_KEYS = ("task", "C", "train_epochs", "train_batch", "random", "limit")
#: the value of a key that results made before it existed ran with
KEY_DEFAULTS = {"oneshot_warmup": 0}


def reusable(args: argparse.Namespace, path: Path) -> dict[int, dict[str, Any]]:
    """The per-seed entries of an earlier ``front`` result whose random genotypes, DARTS and
    GDAS results this run takes over (``--reuse``): they depend on the seed, the space, the
    search length and the training only, not on DARTS-CC's options. Exit 2 when the file is
    not such a result or was made with other values of ``REUSE_KEYS`` or lacks a seed."""
    def fail(why: str) -> None:
        print(f"darts_cc.py: --reuse {path}: {why}", file=sys.stderr)
        sys.exit(2)

    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"not a readable JSON file ({exc}); expected the results of an earlier front run")
    if not isinstance(earlier, dict) or earlier.get("args", {}).get("target") != "front":
        fail("not the results of a front run; expected a file written by "
             "`darts_cc.py front`")
    rerun = getattr(args, "rerun", None) or []
    for key in RANDOM_KEYS if rerun else REUSE_KEYS:
        value, ours = earlier["args"].get(key, KEY_DEFAULTS.get(key)), \
            getattr(args, key, KEY_DEFAULTS.get(key))
        if value != ours:
            fail(f"made with {key} = {value!r}, this run has {ours!r}; expected "
                 "the same value (random genotypes" + ("" if rerun else ", DARTS and GDAS")
                 + " would differ)")
    entries = {e["seed"]: e for e in earlier.get("per_seed", [])}
    for seed in args.seeds:
        e = entries.get(seed)
        if e is None or len(e.get("random", [])) != args.random or \
                (rerun and "family" not in e) or \
                any(m not in args.skip and m not in rerun and m not in e
                    for m in ("darts", "gdas")):
            fail(f"has no complete entry for seed {seed} (random genotypes, family, DARTS, "
                 f"GDAS); seeds there: {sorted(entries)}")
    return entries


def config(args: argparse.Namespace, seed: int, method: str, options: dict[str, Any]) -> dict:
    return {"task": args.task, "task_options": {"limit": args.limit} if args.limit else {},
            "space": "darts",
            "space_options": {"C": args.C, "layers": 3, "nodes": 4, "allow_none": True},
            "method": method, "method_options": options,
            "evaluator": "train",
            "evaluator_options": {"epochs": args.train_epochs, "batch_size": args.train_batch,
                                  "measure_latency": False},
            "objective": ["max:val_acc", "min:params"], "seed": seed}


def darts_cc_options(args: argparse.Namespace, random: int = 0) -> dict[str, Any]:
    epochs = args.cc_epochs or args.epochs
    batch = args.cc_batch or args.batch
    options = {"epochs": epochs, "batch_size": batch, "arch_batch_size": args.arch_batch or batch,
               "lr": args.lr, "random_baseline": random,
               "tau_decay": 0.8 / epochs, "tau_min": 0.2, "arch_lr": args.arch_lr,
               "derive": args.derive, "lambda_min": args.lambda_min,
               "lambda_max": args.lambda_max, "complexity": args.complexity,
               "order": args.order, "pivots": args.pivots,
               "lambda_sampling": args.lambda_sampling, "lambda_jitter": args.lambda_jitter,
               "warmup_epochs": args.warmup, "alpha_average_epochs": args.alpha_average,
               "plots": False}  # this script draws them, outside the CPU seconds it measures
    if args.reference:
        options.update(REFERENCE)
    return options


def run(cfg: dict, out: Path) -> tuple[list, dict, float]:
    """The run's trials, the method's metadata and the CPU seconds of this process for it."""
    cpu = time.process_time()
    with Run.create(make_config(cfg), out) as r:
        trials = r.search()
        meta = r.store.get_meta(cfg["method"]) or {}
    return trials, meta, time.process_time() - cpu


def family_stats(trials: list, meta: dict, cpu_total: float) -> dict[str, Any]:
    """The family's parameters against λ, distinct genotypes, search and training times."""
    fam = sorted((t for t in trials if t.info.get("role") == "family"),
                 key=lambda t: t.info["lambda"])
    params = [t.result.cost.get("params") for t in fam]
    trained = [t for t in fam if "same_as" not in t.info]
    train_seconds = sum(t.result.cost.get("train_seconds", 0.0) for t in trained)
    search_cpu = meta.get("search_cpu_seconds_this_process")
    randoms = [t for t in trials if t.info.get("role") == "random"]
    distinct = len({str(t.arch) for t in fam})
    strictly = all(a > b for a, b in zip(params, params[1:]))
    ratio = params[0] / params[-1] if params and params[-1] else None
    out = {"lambdas": [t.info["lambda"] for t in fam],
           "lambda_tilde": [t.info["lambda_tilde"] for t in fam], "params": params,
           "val_acc": [t.result.metrics.get("val_acc") for t in fam],
           "test_acc": [t.result.metrics.get("test_acc") for t in fam],
           "expected_params_of_alpha": meta.get("expected_params"),
           "distinct_genotypes": distinct,
           "params_strictly_falling": strictly,
           "params_non_increasing": all(a >= b for a, b in zip(params, params[1:])),
           "params_ratio_lambda0_over_lambda1": ratio,
           "search_seconds": meta.get("search_seconds"),
           "search_cpu_seconds": search_cpu,
           "family_train_seconds": train_seconds,
           "family_train_seconds_each": [t.result.cost.get("train_seconds") for t in trained],
           "genotypes": [str(t.arch) for t in fam]}
    history = meta.get("history") or []
    if meta.get("alpha_average_epochs") and history:
        # the family is the averaged α(λ)'s; the final α's own genotypes, for comparison
        out["alpha_average_epochs"] = meta["alpha_average_epochs"]
        out["final_alpha_genotypes"] = history[-1]["genotypes"]
    if search_cpu is not None and not randoms:  # the run trained the family only
        # the run's CPU seconds less the search's: the family's training, plus loading the
        # task and building the supernet (a few seconds; an overestimate of the training)
        out["family_train_cpu_seconds"] = cpu_total - search_cpu
    out["target1"] = {
        "at_least_4_distinct": distinct >= 4, "strictly_falling": strictly,
        "ratio_at_least_1.5": ratio is not None and ratio >= 1.5,
        "search_faster_wall": (meta.get("search_seconds") or math.inf) < train_seconds}
    if "family_train_cpu_seconds" in out:
        out["target1"]["search_faster_cpu"] = search_cpu < out["family_train_cpu_seconds"]
    return out


def points(trials: list, role: str | None = None) -> list[list[float]]:
    """``[params, val_acc, test_acc]`` of the ok trials (of ``role`` when given)."""
    return [[t.result.cost["params"], t.result.metrics["val_acc"], t.result.metrics.get("test_acc")]
            for t in trials if t.status == "ok" and (role is None or t.info.get("role") == role)]


def dominates(r: list[float], point: list[float], metric: int = 1) -> bool:
    """``r`` has at most as many parameters and at least the accuracy of ``point`` (``metric``:
    1 validation, 2 test), one of the two strictly (Pareto dominance)."""
    p, a = point[0], point[metric]
    return r[0] <= p and r[metric] >= a and (r[0] < p or r[metric] > a)


def on_or_above(point: list[float], randoms: list[list[float]], metric: int = 1) -> bool:
    """``point`` lies on or above the random genotypes' front: no random genotype dominates it
    (``dominates``) on validation accuracy (``metric`` 1, the verdict) or test accuracy (2,
    reported only)."""
    return not any(dominates(r, point, metric) for r in randoms)


def verdicts(entry: dict[str, Any], key: str) -> None:
    """``<key>_on_or_above`` (validation) and ``<key>_on_or_above_test`` of ``entry[key]``."""
    entry[f"{key}_on_or_above"] = [on_or_above(p, entry["random"]) for p in entry[key]]
    if all(q[2] is not None for q in entry[key] + entry["random"]):
        entry[f"{key}_on_or_above_test"] = [on_or_above(p, entry["random"], 2)
                                            for p in entry[key]]


def family(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="darts_cc_family_"))
    start = time.perf_counter()
    trials, meta, cpu = run(config(args, args.seeds[0], "darts_cc", darts_cc_options(args)),
                            work / "run")
    result = {"task": args.task, "seed": args.seeds[0], **family_stats(trials, meta, cpu),
              "total_wall_seconds": time.perf_counter() - start, "total_cpu_seconds": cpu,
              "run_dir": str(work / "run")}
    from nasforge.methods.darts_cc import write_plots

    state = {**meta, "lambdas": meta.get("lambdas", [])}
    write_plots(trials, state, plots_dir(out) / f"family_seed{args.seeds[0]}")
    return result


def one_shot_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The ``darts`` and ``gdas`` options of ``front``: the same supernet size, search length,
    batch and architecture learning rate (and ``--oneshot-warmup`` weight-only epochs)."""
    one_shot = {"epochs": args.epochs, "batch_size": args.batch, "supernet_val": False,
                "plots": False, "arch_lr": args.arch_lr, "warmup_epochs": args.oneshot_warmup}
    return {"darts": {**one_shot, "order": 1},
            "gdas": {**one_shot, "tau_max": 10.0, "tau_min": 0.1}}


def front(args: argparse.Namespace, out: Path, header: dict[str, Any]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="darts_cc_front_"))
    per_seed: list[dict[str, Any]] = []
    result = {**header, "task": args.task, "seeds": args.seeds, "per_seed": per_seed,
              "plots": str(plots_dir(out)), "work_dir": str(work)}
    earlier = reusable(args, args.reuse) if args.reuse else {}
    if args.reuse and args.rerun:
        result["reused_args"] = json.loads(args.reuse.read_text())["args"]
    methods = one_shot_options(args)
    for seed in args.seeds:
        old = earlier.get(seed)
        trials: list = []
        if args.rerun:  # random genotypes and family as they were; DARTS / GDAS searched again
            rerun_keys = {m + k for m in {*args.rerun, *args.skip}
                          for k in ("", "_genotype", "_search_seconds", "_cpu_seconds",
                                    "_on_or_above", "_on_or_above_test", "_options")}
            entry = {k: v for k, v in old.items() if k not in rerun_keys}
            entry["reused_from"] = str(args.reuse)
        else:
            n_random = 0 if old else args.random
            trials, meta, cpu = run(config(args, seed, "darts_cc", darts_cc_options(args, n_random)),
                                    work / f"cc{seed}")
            entry = {"seed": seed,
                     "random": points(trials, "random") if not old else old["random"],
                     "family": points(trials, "family"),
                     "darts_cc_cpu_seconds": cpu, **family_stats(trials, meta, cpu)}
            if old:
                entry["reused_from"] = str(args.reuse)
                for method in ("darts", "gdas"):
                    if method in old and method not in args.skip:
                        for key in ("", "_genotype", "_search_seconds", "_cpu_seconds"):
                            entry[method + key] = old[method + key]
        for key in ("family", "darts", "gdas"):
            if key in entry:
                verdicts(entry, key)
        per_seed.append(entry)
        save(out, result)  # results so far, if a later part dies
        for method, options in methods.items():
            if method in args.skip or (old and method not in args.rerun):
                continue
            mtrials, mmeta, mcpu = run(config(args, seed, method, options), work / f"{method}{seed}")
            entry[method] = points(mtrials)
            verdicts(entry, method)
            entry[f"{method}_genotype"] = [str(t.arch) for t in mtrials if t.status == "ok"]
            entry[f"{method}_search_seconds"] = mmeta.get("search_seconds")
            entry[f"{method}_cpu_seconds"] = mcpu
            entry[f"{method}_options"] = options
            save(out, result)
        if trials:
            from nasforge.methods.darts_cc import write_plots

            write_plots(trials, meta, plots_dir(out) / f"seed{seed}",
                        darts=[(p[0], p[1]) for p in entry.get("darts", [])])
    result["summary"] = front_summary(per_seed)
    front_figures(result, plots_dir(out))
    return result


def front_summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of the points on or above the random front, on validation (the verdict) and on
    test accuracy (reported only)."""
    summary = {"family_points": sum(len(e["family"]) for e in per_seed),
               "family_on_or_above": sum(sum(e["family_on_or_above"]) for e in per_seed),
               "family_on_or_above_test": sum(sum(e.get("family_on_or_above_test", []))
                                              for e in per_seed),
               "randoms_per_seed": [len(e["random"]) for e in per_seed]}
    for method in ("darts", "gdas"):
        if all(method in e for e in per_seed):
            for suffix in ("_on_or_above", "_on_or_above_test"):
                summary[method + suffix] = [e.get(method + suffix) for e in per_seed]
    return summary


def plots_dir(out: Path) -> Path:
    return out.with_name(out.stem + "_plots")


def front_figures(result: dict[str, Any], folder: Path) -> None:
    """Validation accuracy against parameters, one panel per seed (family, DARTS, GDAS, random
    genotypes); DARTS's and GDAS's accuracies (validation and test) per seed."""
    from nasforge.oneshot.plots import _pyplot

    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    seeds = result["per_seed"]
    fig, axes = plt.subplots(1, len(seeds), figsize=(4.5 * len(seeds), 4), squeeze=False)
    for ax, e in zip(axes[0], seeds):
        if e["random"]:
            ax.scatter([p[0] for p in e["random"]], [p[1] for p in e["random"]], c="grey",
                       marker="x", label="random genotypes")
        fam = e["family"]
        ax.plot([p[0] for p in fam], [p[1] for p in fam], "o-", c="tab:blue",
                label="DARTS-CC family (λ̃ = 0 … 1)")
        for method, style in (("darts", ("tab:red", "s")), ("gdas", ("tab:green", "^"))):
            if e.get(method):
                ax.scatter([p[0] for p in e[method]], [p[1] for p in e[method]], c=style[0],
                           marker=style[1], s=50, label=method.upper())
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{result['task']}, seed {e['seed']}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "acc_vs_params.png", dpi=100)
    plt.close(fig)
    rows = [(m, e["seed"], p) for e in seeds for m in ("darts", "gdas") for p in e.get(m, [])[:1]]
    if rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [f"{m.upper()}\nseed {s}" for m, s, _ in rows]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [p[1] for _, _, p in rows], 0.4, label="validation")
        ax.bar([x + 0.2 for x in xs], [p[2] or 0.0 for _, _, p in rows], 0.4, label="test")
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy of the derived genotype")
        ax.set_title(f"DARTS and GDAS on {result['task']} (trained from scratch)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "darts_gdas_accuracy.png", dpi=100)
        plt.close(fig)


def summary(result: dict[str, Any]) -> str:
    """Markdown tables of a ``front`` or ``family`` result (for docs/darts.md)."""
    seeds = result.get("per_seed") or [result]
    lines = ["| seed | parameters at λ̃ = 0, .25, .5, .75, 1 | distinct | strictly falling | "
             "λ̃=0 / λ̃=1 | val acc (family) | search s (CPU s) | family training s |",
             "|---|---|---|---|---|---|---|---|"]
    for e in seeds:
        lines.append(
            f"| {e['seed']} | {', '.join(str(int(p)) for p in e['params'])} | "
            f"{e['distinct_genotypes']} | {'yes' if e['params_strictly_falling'] else 'no'} | "
            f"{e['params_ratio_lambda0_over_lambda1']:.2f} | "
            f"{', '.join(f'{v:.3f}' for v in e['val_acc'])} | "
            f"{e['search_seconds']:.0f} ({e['search_cpu_seconds']:.0f}) | "
            f"{e['family_train_seconds']:.0f}"
            + (f" ({e['family_train_cpu_seconds']:.0f} CPU)" if "family_train_cpu_seconds" in e
               else "") + " |")
    if "per_seed" in result:
        lines += ["", "On or above the random front: validation accuracy (the verdict), test "
                  "accuracy in brackets (reported only).", "",
                  "| seed | random genotypes (params, val acc) | family on/above | DARTS "
                  "(params, val, test) | on/above | GDAS (params, val, test) | on/above |",
                  "|---|---|---|---|---|---|---|"]

        def verdict(e: dict[str, Any], key: str) -> str:
            test = e.get(f"{key}_on_or_above_test")
            val = e[f"{key}_on_or_above"]
            if key == "family":
                return f"{sum(val)}/{len(val)}" + (f" ({sum(test)}/{len(test)})" if test else "")
            word = {True: "yes", False: "no"}
            return word[all(val)] + (f" ({word[all(test)]})" if test is not None else "")

        for e in seeds:
            e = dict(e)
            for key in ("family", "darts", "gdas"):  # by the current definition, val and test
                if key in e:
                    verdicts(e, key)
            rnd = "; ".join(f"{int(p[0])} {p[1]:.3f}" for p in sorted(e["random"]))
            cells = [str(e["seed"]), rnd, verdict(e, "family")]
            for m in ("darts", "gdas"):
                pts = e.get(m, [])
                cells.append("; ".join(f"{int(p[0])}, {p[1]:.3f}, {p[2]:.3f}" for p in pts) or "-")
                cells.append(verdict(e, m) if pts else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)


def build_parser() -> argparse.ArgumentParser:
    """The command line; its defaults are the CPU preset."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=("family", "front", "summary"),
                        help="summary: markdown tables of the results in --out")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--C", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10,
                        help="DARTS and GDAS search epochs (and DARTS-CC's when --cc-epochs 0)")
    parser.add_argument("--train-epochs", type=int, default=20)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--pivots", default="fixed", choices=("learned", "fixed"))
    parser.add_argument("--arch-lr", type=float, default=0.03)
    parser.add_argument("--order", type=int, default=1, choices=(1, 2))
    parser.add_argument("--complexity", default="relative", choices=("params", "relative"))
    parser.add_argument("--derive", default="argmax", choices=("argmax", "top2"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--random", type=int, default=10)
    parser.add_argument("--skip", nargs="*", default=[], choices=("darts", "gdas"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="cap the training split")
    parser.add_argument("--batch", type=int, default=64, help="search batch size")
    parser.add_argument("--lambda-min", type=float, default=3e-2)
    parser.add_argument("--lambda-max", type=float, default=1e1)
    parser.add_argument("--lambda-sampling", default="coupled",
                        choices=("uniform", "anchors", "stratified", "coupled"),
                        help="λ̃ per step: uniform (the reference's), an anchor plus jitter, or one "
                             "λ̃ per anchor every step on groups of the batch (stratified) or on "
                             "copies of it with common Gumbel noise (coupled)")
    parser.add_argument("--alpha-average", type=int, default=0,
                        help="DARTS-CC: derive the family from the mean of α(λ)'s hypernetwork "
                             "over the architecture steps of the last N epochs (0: the final one)")
    parser.add_argument("--lambda-jitter", type=float, default=0.0,
                        help="with --lambda-sampling anchors: jitter, a fraction of the spacing")
    parser.add_argument("--cc-epochs", type=int, default=20,
                        help="DARTS-CC search epochs (0: --epochs, which DARTS and GDAS use)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="DARTS-CC search epochs that train the weights only")
    parser.add_argument("--oneshot-warmup", type=int, default=3,
                        help="DARTS and GDAS search epochs that train the weights only "
                             "(method option warmup_epochs; 0: DARTS's and GDAS's schedule)")
    parser.add_argument("--rerun", nargs="+", default=[], choices=("darts", "gdas"),
                        help="front, with --reuse: take each seed's random genotypes and DARTS-CC "
                             "family from the reused result and search these methods again with "
                             "this run's options (--epochs, --batch, --arch-lr, --oneshot-warmup)")
    parser.add_argument("--cc-batch", type=int, default=CC_BATCH,
                        help="DARTS-CC search batch (weight steps; 0: --batch, which DARTS and "
                             "GDAS use)")
    parser.add_argument("--arch-batch", type=int, default=ARCH_BATCH,
                        help="DARTS-CC architecture-step batch (0: the DARTS-CC search batch)")
    parser.add_argument("--lr", type=float, default=WEIGHT_LR,
                        help="DARTS-CC weights' learning rate (SGD; the reference's is 0.025)")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="front: take the random genotypes, DARTS and GDAS of each seed "
                             "from this earlier front result (same task, sizes, training)")
    parser.add_argument("--reference", action="store_true",
                        help="DARTS-CC's reference unit, λ range, arch lr, order, sampling")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (never overwritten)")
    return parser


def main_defaults() -> dict[str, Any]:
    """The command line's defaults (the CPU preset) as a dict (``benchmarks/darts_cc_probe.py``)."""
    return vars(build_parser().parse_args(["family"]))


def main() -> None:
    args = build_parser().parse_args()
    if args.target == "summary":
        if args.out is None or not args.out.is_file():
            print(f"darts_cc.py: summary needs --out FILE, the results of a run; got "
                  f"{args.out}", file=sys.stderr)
            sys.exit(2)
        print(summary(json.loads(args.out.read_text())))
        return
    out = args.out or Path(__file__).parent / "results" / f"darts_cc_{args.target}_{args.task}.json"
    if out.exists():
        print(f"darts_cc.py: --out {out} exists; expected a new file (results are never "
              "overwritten)", file=sys.stderr)
        sys.exit(2)
    if args.rerun and (args.target != "front" or args.reuse is None):
        print(f"darts_cc.py: --rerun {' '.join(args.rerun)} needs `front --reuse FILE` (the "
              "random genotypes and family to keep); expected --reuse", file=sys.stderr)
        sys.exit(2)
    if not 0 <= args.oneshot_warmup < args.epochs:
        print(f"darts_cc.py: --oneshot-warmup {args.oneshot_warmup}; expected 0 <= it < --epochs "
              f"({args.epochs})", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    header = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "date": datetime.now(timezone.utc).isoformat(),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)"}
    if args.target == "family":
        result = {**header, **family(args, out)}
    else:
        result = front(args, out, header)
    try:
        import os

        result["load_average_at_end"] = list(os.getloadavg())
    except OSError:
        pass
    save(out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
