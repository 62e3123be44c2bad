"""How much of the target-2 verdict is training noise: retrain the genotypes of one seed of a
``benchmarks/darts_cc.py front`` result with several training seeds (issue 10, target 2).

    python benchmarks/front_retrain.py --front benchmarks/results/darts_cc_front_digits_oneshot_w3.json \\
        --also benchmarks/results/darts_cc_front_digits_anchors.json --seed 2 --train-seeds 5

The front's protocol trains every genotype once (one training seed) and scores it by its best
validation accuracy over the epochs (180 validation rows on digits with ``--limit 600``: one row
is 0.0056). This script trains the same genotypes — the seed's 10 random genotypes (regenerated
exactly as the ``darts_cc`` method draws them, ``random_genotypes(..., rng(seed, 0xDA7D))``, and
checked against the parameter counts in the file), DARTS's and GDAS's genotypes of ``--front``
and of every ``--also`` file, and with ``--family`` the DARTS-CC family — with ``--train-seeds``
training seeds each, the same seeds for every genotype, with the front's training (the ``train``
evaluator, ``--train-epochs`` epochs, batch ``--train-batch``). It reports each genotype's mean
and standard deviation of validation and test accuracy, and whether DARTS's and GDAS's mean
lies on or above the front of the random genotypes' means (validation; test reported).
Nothing here is chosen: it measures.

``--reuse FILE ...`` takes genotypes already retrained in earlier results of this script instead
of training them again (matched by genotype text; for example the random genotypes, DARTS and
GDAS when retraining a new DARTS-CC family). A reused file must have been made with the same
training: the same seed, the same task, C, row limit, training epochs and batch, and training
seeds that are this run's first ones (``--train-seeds 10`` extends a 5-seed file: the first five
seeds are the same, so only seeds 6-10 are trained); otherwise the script stops with exit 2 before
training anything.

Two verdicts are reported for each non-random genotype. ``mean_front``: its mean accuracy lies on
or above the front of the random genotypes' means (no random genotype has at most its parameters
and a mean at least as high, one of the two strictly). ``front_95``: no random genotype with at
most its parameters is better by a margin whose 95% interval excludes zero — the interval of the
mean paired difference over the training seeds (every genotype is trained with the same seeds,
so the differences are paired), Student's t with n - 1 degrees of freedom. The second verdict
says whether a miss of the first is more than training noise.

``--summarise FILE ...`` prints both verdicts of earlier results of this script and trains
nothing.

Results go to ``--out`` (default ``benchmarks/results/front_retrain_<task>_seed<seed>.json``,
written after every genotype; an existing file is never overwritten: exit 2).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def front_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_darts_cc", HERE / "darts_cc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def fail(message: str) -> None:
    print(f"front_retrain.py: {message}", file=sys.stderr)
    sys.exit(2)


def read_front(path: Path, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{path}: not a readable JSON file ({exc}); expected a darts_cc.py front result")
    if not isinstance(result, dict) or result.get("args", {}).get("target") != "front":
        fail(f"{path}: not a darts_cc.py front result")
    entry = {e["seed"]: e for e in result.get("per_seed", [])}.get(seed)
    if entry is None:
        fail(f"{path}: no entry for seed {seed}; seeds there: "
             f"{[e['seed'] for e in result.get('per_seed', [])]}")
    return result, entry


TRAINING_KEYS = ("task", "C", "limit", "train_epochs", "train_batch")


def read_reuse(path: Path, seed: int, seeds: list[int],
               fargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rows of an earlier result of this script, by genotype text, after checking that they
    were trained as this run trains (same seed, training seeds and training settings)."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"--reuse {path}: not a readable JSON file ({exc}); expected a front_retrain.py "
             "result")
    if not isinstance(earlier, dict) or not {"rows", "train_seeds", "front_args"} <= set(earlier):
        fail(f"--reuse {path}: not a front_retrain.py result (expected keys rows, train_seeds, "
             "front_args)")
    if earlier.get("args", {}).get("seed") != seed:
        fail(f"--reuse {path}: made for seed {earlier.get('args', {}).get('seed')!r}, this run "
             f"retrains seed {seed}; expected the same seed")
    if earlier["train_seeds"] != seeds[:len(earlier["train_seeds"])]:
        fail(f"--reuse {path}: trained with training seeds {earlier['train_seeds']}, this run "
             f"with {seeds}; expected this run's first training seeds (same --seed, "
             "--train-seeds at least as many)")
    for key in TRAINING_KEYS:
        if earlier["front_args"].get(key) != fargs.get(key):
            fail(f"--reuse {path}: trained with {key} = {earlier['front_args'].get(key)!r}, "
                 f"--front with {fargs.get(key)!r}; expected the same training")
    return {row["genotype"]: row for row in earlier["rows"] if "val" in row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--front", type=Path, help="a darts_cc.py front result")
    parser.add_argument("--also", type=Path, nargs="*", default=[],
                        help="more front results (same task and training) whose DARTS and GDAS "
                             "genotypes to retrain too")
    parser.add_argument("--seed", type=int, default=2, help="the front's seed to retrain")
    parser.add_argument("--train-seeds", type=int, default=5)
    parser.add_argument("--family", action="store_true", help="retrain the DARTS-CC family too")
    parser.add_argument("--reuse", type=Path, nargs="*", default=[],
                        help="earlier results of this script (same seed and training) whose "
                             "retrained genotypes to take instead of training them again")
    parser.add_argument("--summarise", type=Path, nargs="*", default=None,
                        help="print the verdicts of earlier results of this script; train "
                             "nothing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.summarise is not None:
        summarise(args.summarise)
        return
    if args.front is None:
        fail("--front is required (or --summarise FILE ...)")
    if args.train_seeds < 2:
        fail(f"--train-seeds {args.train_seeds}; expected at least 2 (a spread needs two)")
    result, entry = read_front(args.front, args.seed)
    fargs = result["args"]
    for other in args.also:
        oargs = read_front(other, args.seed)[0]["args"]
        for key in TRAINING_KEYS:
            if oargs.get(key) != fargs.get(key):
                fail(f"--also {other}: made with {key} = {oargs.get(key)!r}, --front with "
                     f"{fargs.get(key)!r}; expected the same task and training")
    from nasforge.core import derive_seed

    seeds = [derive_seed(args.seed, 0x5EED, k) for k in range(args.train_seeds)]
    reused: dict[str, dict[str, Any]] = {}
    for path in args.reuse:
        for text, row in read_reuse(path, args.seed, seeds, fargs).items():
            reused.setdefault(text, {**row, "reused_from": str(path)})
    out = args.out or HERE / "results" / f"front_retrain_{fargs['task']}_seed{args.seed}.json"
    if out.exists():
        fail(f"--out {out} exists; expected a new file (results are never overwritten)")
    torch.set_num_threads(args.threads)

    from nasforge.data import load_task
    from nasforge.evaluators.train import TrainEvaluator
    from nasforge.methods.darts_cc import random_genotypes
    from nasforge.spaces.darts import DartsSpace

    bench = front_module()
    space = DartsSpace(C=fargs["C"], layers=3, nodes=4, allow_none=True)
    task = load_task(fargs["task"], seed=args.seed,
                     **({"limit": fargs["limit"]} if fargs.get("limit") else {}))
    evaluator = TrainEvaluator(epochs=fargs["train_epochs"], batch_size=fargs["train_batch"],
                               measure_latency=False)
    genotypes: list[tuple[str, str, list[float]]] = []  # (label, text, the front's point)
    rng = np.random.default_rng(derive_seed(args.seed, 0xDA7D))
    drawn = random_genotypes(fargs["random"], space.ops, space.nodes, fargs["derive"], rng)
    for i, ((geno, _), point) in enumerate(zip(drawn, entry["random"])):
        genotypes.append((f"random{i}", str(geno), point))
    for path in [args.front, *args.also]:
        e = read_front(path, args.seed)[1]
        for method in ("darts", "gdas"):
            for text, point in zip(e.get(f"{method}_genotype", []), e.get(method, [])):
                genotypes.append((f"{method}@{path.stem}", text, point))
    if args.family:
        for lt, text, p in zip(entry["lambda_tilde"], entry["genotypes"], entry["family"]):
            genotypes.append((f"family{lt}", text, p))
    rows: list[dict[str, Any]] = []
    report = {"args": {k: [str(x) for x in v] if isinstance(v, list) else
                       str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "front_args": fargs, "train_seeds": seeds, "rows": rows,
              "date": datetime.now(timezone.utc).isoformat()}
    done: dict[str, dict[str, Any]] = {}
    for label, text, point in genotypes:
        if text in done:  # the same genotype under another label: trained once
            rows.append({**done[text], "label": label, "front_point": point})
            continue
        old = reused.get(text)
        if old is not None and int(old["params"]) != int(point[0]):
            fail(f"{label}: {int(old['params'])} parameters in {old['reused_from']}, the "
                 f"front file says {int(point[0])}; expected the same genotype")
        if old is not None and len(old["val"]) == len(seeds):  # nothing left to train
            row = {**old, "label": label, "front_point": point}
            done[text] = row
            rows.append(row)
            print(f"{label:28s} {int(row['params']):6d}  val {row['val_mean']:.3f} ± "
                  f"{row['val_sd']:.3f}  reused from {row['reused_from']}", flush=True)
            continue
        arch = space.parse(text)
        vals = list(old["val"]) if old else []
        tests = list(old["test"]) if old else []
        params = old["params"] if old else None
        cpu = time.process_time() - (old["cpu_seconds"] if old else 0.0)
        for s in seeds[len(vals):]:
            r = evaluator.evaluate(arch, space, task, seed=s, workdir=None)
            if r.status != "ok":
                fail(f"{label}: training failed ({r.reason})")
            vals.append(r.metrics["val_acc"])
            tests.append(r.metrics["test_acc"])
            params = r.cost["params"]
        if int(params) != int(point[0]):
            fail(f"{label}: {int(params)} parameters, the front file says {int(point[0])}; "
                 "expected the same genotype (another space or code version?)")
        row = {"label": label, "genotype": text, "params": params, "front_point": point,
               "val": vals, "test": tests, "val_mean": statistics.mean(vals),
               "val_sd": statistics.stdev(vals), "test_mean": statistics.mean(tests),
               "test_sd": statistics.stdev(tests), "cpu_seconds": time.process_time() - cpu,
               **({"extended_from": old["reused_from"]} if old else {})}
        done[text] = row
        rows.append(row)
        print(f"{label:28s} {int(params):6d}  val {row['val_mean']:.3f} ± {row['val_sd']:.3f} "
              f"(front {point[1]:.3f})  test {row['test_mean']:.3f} ± {row['test_sd']:.3f} "
              f"(front {point[2]:.3f})", flush=True)
        bench.save(out, report)
    report.update(judge(rows))
    bench.save(out, report)
    print_verdicts(report)


def paired_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of ``a[k] - b[k]`` and its 95% interval (Student's t, n - 1 degrees of freedom)."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean, n = float(d.mean()), len(d)
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)) if n > 1 else np.inf
    return mean, mean - half, mean + half


def significantly_dominated(row: dict[str, Any], randoms: list[dict[str, Any]],
                            key: str) -> list[str]:
    """The random genotypes with at most ``row``'s parameters whose accuracy (``key``: ``val``
    or ``test``) is higher by a paired 95% interval that excludes zero."""
    return [r["label"] for r in randoms
            if r["params"] <= row["params"] and paired_interval(r[key], row[key])[1] > 0]


def judge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Both verdicts (see the module text) for every non-random row, and the family counts."""
    randoms = [r for r in rows if r["label"].startswith("random")]
    means = [[r["params"], r["val_mean"], r["test_mean"]] for r in randoms]
    bench = front_module()
    out: dict[str, Any] = {"mean_front": {}, "front_95": {}}
    for r in rows:
        if r["label"].startswith("random"):
            continue
        point = [r["params"], r["val_mean"], r["test_mean"]]
        out["mean_front"][r["label"]] = {"val": bench.on_or_above(point, means),
                                         "test": bench.on_or_above(point, means, 2)}
        out["front_95"][r["label"]] = {
            key: {"ok": not significantly_dominated(r, randoms, key),
                  "dominated_by": significantly_dominated(r, randoms, key),
                  "closest": closest_margin(r, randoms, key)}
            for key in ("val", "test")}
    family = [k for k in out["mean_front"] if k.startswith("family")]
    if family:
        out["family_on_or_above"] = {
            "val": sum(out["mean_front"][k]["val"] for k in family),
            "test": sum(out["mean_front"][k]["test"] for k in family), "of": len(family)}
        out["family_front_95"] = {
            "val": sum(out["front_95"][k]["val"]["ok"] for k in family),
            "test": sum(out["front_95"][k]["test"]["ok"] for k in family), "of": len(family)}
    return out


def closest_margin(row: dict[str, Any], randoms: list[dict[str, Any]],
                   key: str) -> dict[str, Any] | None:
    """The random genotype with at most ``row``'s parameters and the highest mean accuracy, and
    its paired margin over ``row`` with the 95% interval (None when every random one is larger)."""
    smaller = [r for r in randoms if r["params"] <= row["params"]]
    if not smaller:
        return None
    best = max(smaller, key=lambda r: statistics.mean(r[key]))
    mean, lo, hi = paired_interval(best[key], row[key])
    return {"label": best["label"], "params": best["params"], "margin": mean,
            "interval": [lo, hi]}


def print_verdicts(report: dict[str, Any]) -> None:
    rows = {r["label"]: r for r in report["rows"]}
    n = len(report["train_seeds"])
    print(f"{'genotype':32s} {'params':>6s} {'val mean':>8s} {'mean front':>10s} "
          f"{'95% front':>9s}  best smaller random: margin [95% CI] (val)")
    for label, verdict in report["mean_front"].items():
        r, v95 = rows[label], report["front_95"][label]["val"]
        c = v95["closest"]
        near = ("none smaller" if c is None else
                f"{c['label']} {int(c['params'])}: {c['margin']:+.4f} "
                f"[{c['interval'][0]:+.4f}, {c['interval'][1]:+.4f}]")
        print(f"{label:32s} {int(r['params']):6d} {r['val_mean']:8.4f} "
              f"{'yes' if verdict['val'] else 'NO':>10s} {'yes' if v95['ok'] else 'NO':>9s}  "
              f"{near}")
    if "family_on_or_above" in report:
        f, g = report["family_on_or_above"], report["family_front_95"]
        print(f"family, {n} training seeds: on or above the front of the random means "
              f"{f['val']} of {f['of']} (validation), {f['test']} (test); not dominated at 95% "
              f"{g['val']} (validation), {g['test']} (test)")


def summarise(paths: list[Path]) -> None:
    for path in paths:
        try:
            report = json.loads(path.read_text())
            rows = report["rows"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"--summarise {path}: not a front_retrain.py result ({exc})")
        print(f"== {path} (front seed {report['args'].get('seed')})")
        print_verdicts({**report, **judge(rows)})


if __name__ == "__main__":
    main()
