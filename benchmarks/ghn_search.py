"""GHN ranking, GHN-guided search and property prediction on unseen architectures (issue 11).

    python benchmarks/ghn_search.py --ghn GHN.pt [--archs 200] [--epochs 5] [--top-k 10]
        [--seed 0] [--out benchmarks/results/ghn_search.json] [--threads 2]

On digits, ``--archs`` architectures of the chain space (``--features``, ``--kernels``,
``--max-conv``, batch norm; sampled from a seed the GHN's training pool does not use) are

1. scored by the ``ghn`` evaluator (accuracy of predicted parameters, no training), and
2. trained by the ``train`` evaluator for ``--epochs`` epochs (validation / test accuracy,
   per-epoch curves, latency).

Reported: Kendall's tau between the GHN score and trained validation accuracy (95% bootstrap
interval over architectures); GHN-guided search: the best trained accuracy among the ``--top-k``
best-ranked architectures against the best of all of them (target: within 1 point while training
at most 10), and the same for ``--top-k`` random picks (mean over 2,000 draws); property
prediction: an RBF-SVR on the GHN's mean node embeddings, fitted on half of the architectures
and scored on the other half (both ways, tau averaged), for trained accuracy, inference time
(``latency_ms``) and convergence (first epoch within 1 point of the run's best); accuracy of
predicted parameters against random initialisation. Results are written to ``--out`` after
every architecture, and a rerun continues from it. ``--train-only`` trains the architectures
without any GHN (the expensive part, which does not depend on it); a later run with ``--ghn``
adds the GHN scores to the same rows (recomputed when the GHN file changes).

``--source generator`` uses the first ``--archs`` networks of the GHN generator's ``test`` split
(``ArchGenerator(digits, seed=--seed)``; their cells are in no training split) instead of chain
architectures: trained with the ``train`` evaluator's recipe (Adam, cosine, best validation epoch
kept), scored like the ``ghn`` evaluator. ``--part K/N`` (with ``--train-only``) trains every
N-th architecture so N processes can share the work, each with its own ``--out``; merge the
files' ``rows`` (and set ``config.out``) before the run with ``--ghn``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch


def bootstrap_tau(a: np.ndarray, b: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    from nasforge.ghn.uses import kendall_tau

    rng = np.random.default_rng(seed)
    taus = [kendall_tau(a[idx], b[idx]) for idx in (rng.integers(len(a), size=len(a)) for _ in range(reps))]
    return kendall_tau(a, b), float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))


def train_module(net: torch.nn.Module, train_eval, task, seed: int) -> dict:
    """The chain path's row fields for a ready-made module (generator networks): random-init
    validation accuracy, then the ``train`` evaluator's recipe (best validation epoch kept)."""
    from nasforge.cost import count_params, measure_latency_ms
    from nasforge.training import TrainConfig, evaluate_metrics, fit

    net.eval()
    rand = evaluate_metrics(net, task.val, TrainConfig())["acc"]
    config = train_eval.config.for_task(task.kind)
    try:
        fitted = fit(net, task.train, task.val, config, seed=seed)
    except Exception as exc:  # a diverged network is a failed row, as with the evaluator
        return {"random_val_acc": rand, "val_acc": None, "train_status": f"failed: {exc}"}
    test = evaluate_metrics(net, task.test, config)
    return {"random_val_acc": rand, "val_acc": fitted.best_val_acc, "test_acc": test["acc"],
            "latency_ms": measure_latency_ms(net, task.input_shape), "params": float(count_params(net)),
            "val_curve": list(fitted.curves["val_acc"]), "train_status": "ok"}


def ghn_module(ghn_path: str, net: torch.nn.Module, task, seed: int, bn_seeds: int = 1) -> dict:
    """GHN score of a ready-made module, as the ``ghn`` evaluator computes it. With
    ``bn_seeds`` > 1, instead of test accuracy: the scores under ``bn_seeds`` draws of the
    batch-norm batches (the prediction itself is deterministic; only the statistics change),
    each with validation accuracy and loss and the accuracy and loss on the first
    ``TRAIN_SCORE`` training images (``ghn_scores``, one entry per draw)."""
    from nasforge.core import derive_seed
    from nasforge.evaluators.ghn import bn_batches_of, fill_with_ghn, load_ghn
    from nasforge.ghn.model import estimate_bn_stats
    from nasforge.training import TrainConfig, evaluate_metrics

    try:
        secs = fill_with_ghn(load_ghn(ghn_path), net, task, seed=seed)
    except Exception as exc:
        return {"ghn_val_acc": None, "ghn_status": f"failed: {exc}"}
    net.eval()
    val = evaluate_metrics(net, task.val, TrainConfig())
    out = {"ghn_val_acc": val["acc"], "ghn_val_loss": val["loss"], "predict_seconds": secs,
           "ghn_status": "ok"}
    if bn_seeds <= 1:
        out["ghn_test_acc"] = evaluate_metrics(net, task.test, TrainConfig())["acc"]
        return out
    part = (task.train[0][:TRAIN_SCORE], task.train[1][:TRAIN_SCORE])
    scores = []
    for k in range(bn_seeds):
        if k > 0:
            estimate_bn_stats(net, bn_batches_of(task, 4, 64, derive_seed(seed, 0xB5, k)))
            net.eval()
            val = evaluate_metrics(net, task.val, TrainConfig())
        tr = evaluate_metrics(net, part, TrainConfig())
        scores.append({"val_acc": val["acc"], "val_loss": val["loss"], "train_acc": tr["acc"],
                       "train_loss": tr["loss"]})
    return {**out, "ghn_scores": scores}


TRAIN_SCORE = 540  # training images also scored with --bn-seeds (3 x the validation split)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ghn", required=True, help="GHN file; trained here on the same chain space "
                    "(an architecture pool disjoint from the benchmark's) if it does not exist")
    ap.add_argument("--ghn-epochs", type=int, default=20)
    ap.add_argument("--ghn-archs", type=int, default=256)
    ap.add_argument("--archs", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features", default="16,32,64")
    ap.add_argument("--kernels", default="1,3,5")
    ap.add_argument("--max-conv", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/ghn_search.json")
    ap.add_argument("--train-only", action="store_true", help="only train the architectures "
                    "(no GHN needed; a later run adds the GHN's scores)")
    ap.add_argument("--source", default="chain", choices=("chain", "generator"),
                    help="chain: unseen chain-space architectures; generator: the first --archs "
                    "networks of the GHN generator's test split (cells no training network has)")
    ap.add_argument("--part", default="0/1", help="K/N: with --train-only, train only the "
                    "architectures i with i %% N == K (run N processes with their own --out, then "
                    "merge the files' rows)")
    ap.add_argument("--bn-seeds", type=int, default=1, help="generator source: also score each "
                    "network under this many draws of the batch-norm batches, with validation and "
                    "training-image accuracy and loss (for benchmarks/ghn_search_sets.py)")
    ap.add_argument("--report", action="store_true", help="only summarise the architectures "
                    "already in --out (e.g. of an interrupted run)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from nasforge import registry
    from nasforge.core import derive_seed
    from nasforge.data import load_task
    from nasforge.evaluators.ghn import load_ghn
    from nasforge.evaluators.train import build_network
    from nasforge.ghn.uses import convergence_epoch, graph_embeddings, property_prediction
    from nasforge.spaces.chain import ChainSpace
    from nasforge.training import TrainConfig, evaluate_metrics

    task = load_task("digits")
    space = ChainSpace(input_shape=task.input_shape, features=tuple(int(v) for v in args.features.split(",")),
                       kernels=tuple(int(v) for v in args.kernels.split(",")), max_conv=args.max_conv,
                       batch_norm=True)
    from nasforge.ghn.train import GHNTrainOptions, architectures, make_engine, make_ghn, training_meta

    opts = GHNTrainOptions(epochs=args.ghn_epochs, train_archs=args.ghn_archs, arch_source="space")
    pool = {text for text, _ in architectures("space", task, opts.train_archs, seed=args.seed,
                                              split="train", space=space)}
    if not Path(args.ghn).is_file() and not args.train_only:
        t0 = time.time()
        model = make_ghn(task, opts, args.seed)
        engine = make_engine(model, task, opts, args.seed, space=space, log=print)
        result = engine.fit(task.train, None, checkpoint=args.ghn + ".ckpt", resume=True)
        model.config.meta.update(training_meta(opts, args.seed, result, time.time() - t0))
        model.eval()
        model.save(args.ghn)
        print(f"trained GHN-2 on {len(pool)} chain architectures, {args.ghn_epochs} epochs, "
              f"{time.time() - t0:.0f} s -> {args.ghn}", flush=True)
    rng = np.random.default_rng(derive_seed(args.seed, 0xBE7C))
    archs: list = []
    seen: set[str] = set(pool)  # unseen: none of the GHN's training architectures
    gen = None
    if args.source == "generator":
        from nasforge.ghn.generator import ArchGenerator, description_key

        gen = ArchGenerator(task, seed=args.seed, sizes={"test": args.archs})
        descs = {description_key(d): d for d in gen.descriptions("test", args.archs)}
        archs = list(descs)
    while len(archs) < args.archs:
        a = space.sample(rng)
        if str(a) not in seen:
            seen.add(str(a))
            archs.append(a)
    ghn_eval = None if args.train_only else registry.create("evaluators", "ghn", ghn=args.ghn)
    ghn_id = None
    if not args.train_only:
        st = Path(args.ghn).stat()
        ghn_id = f"{Path(args.ghn).resolve()}:{st.st_size}:{int(st.st_mtime)}"
        if args.bn_seeds > 1:
            ghn_id += f":bn_seeds={args.bn_seeds}"
    train_eval = registry.create("evaluators", "train", epochs=args.epochs)
    out = Path(args.out)
    rows: dict[str, dict] = {}
    same = {k: v for k, v in vars(args).items()
            if k not in ("report", "threads", "train_only", "ghn", "ghn_epochs", "ghn_archs",
                                                        "part", "bn_seeds")}
    if args.source == "chain":
        same.pop("source")  # files written before --source existed stay valid
    else:
        for k in ("features", "kernels", "max_conv"):
            same.pop(k)
    if out.is_file():
        prev = json.loads(out.read_text())
        if prev.get("config") == same:
            rows = prev.get("rows", {})
    if args.report:
        archs = [a for a in archs if str(a) in rows]
    started = time.time()
    part_k, part_n = (int(v) for v in args.part.split("/"))
    for i, arch in enumerate(archs):
        key = str(arch)
        if args.train_only and i % part_n != part_k:
            continue
        row = rows.get(key, {})
        done_train = "val_acc" in row
        done_ghn = args.train_only or row.get("ghn_file") == ghn_id
        if done_train and done_ghn:
            continue
        seed = derive_seed(args.seed, i)
        if not done_train and gen is not None:
            row.update(train_module(gen.build(descs[key]), train_eval, task, seed))
        elif not done_train:
            t = train_eval.evaluate(arch, space, task, seed=seed)
            net = build_network(space, arch, task, seed=seed)
            net.eval()
            rand = evaluate_metrics(net, task.val, TrainConfig())["acc"]
            row.update({"random_val_acc": rand, "val_acc": t.metrics.get("val_acc"),
                        "test_acc": t.metrics.get("test_acc"), "latency_ms": t.cost.get("latency_ms"),
                        "params": t.cost.get("params"), "val_curve": t.curves.get("val_acc"),
                        "train_status": t.status})
        if not done_ghn and gen is not None:
            row.update(ghn_module(args.ghn, gen.build(descs[key]), task, seed, args.bn_seeds))
            row["ghn_file"] = ghn_id
        elif not done_ghn:
            g = ghn_eval.evaluate(arch, space, task, seed=seed)
            row.update({"ghn_val_acc": g.metrics.get("val_acc"), "ghn_test_acc": g.metrics.get("test_acc"),
                        "predict_seconds": g.cost.get("predict_seconds"), "ghn_status": g.status,
                        "ghn_file": ghn_id})
        row["status"] = [row.get("ghn_status"), row["train_status"]]
        rows[key] = row
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({"config": same, "rows": rows}))
        tmp.replace(out)
        print(f"{i + 1}/{len(archs)} ghn {row.get('ghn_val_acc')} trained {row['val_acc']} "
              f"({time.time() - started:.0f} s)", flush=True)
    if args.train_only:
        print(f"trained {len(archs)} architectures; rerun with --ghn to score them")
        return

    keys = [str(a) for a in archs if rows[str(a)]["status"] == ["ok", "ok"]]
    R = [rows[k] for k in keys]
    ghn = np.array([r["ghn_val_acc"] for r in R])
    val = np.array([r["val_acc"] for r in R])
    test = np.array([r["test_acc"] for r in R])
    tau, lo, hi = bootstrap_tau(ghn, val)
    order = np.argsort(-ghn, kind="stable")
    top = order[:args.top_k]
    best_all = val.max()
    best_top = val[top].max()
    draws = np.random.default_rng(1)
    rand_best = np.mean([val[draws.choice(len(val), args.top_k, replace=False)].max() for _ in range(2000)])
    what = (f"generator test split, seed {args.seed}" if gen is not None else
            f"chain, features {args.features}, kernels {args.kernels}, max_conv {args.max_conv}, BN")
    print(f"# ghn_search  {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}  ghn {args.ghn}  "
          f"{len(R)} architectures ({what}) on digits, trained {args.epochs} epochs")
    print(f"ranking: Kendall tau(GHN predicted val acc, trained val acc) = {tau:.3f} "
          f"[95% bootstrap {lo:.3f}, {hi:.3f}]")
    print(f"guided search: best trained val acc among GHN top-{args.top_k} = {100 * best_top:.2f}% "
          f"(test {100 * test[top][np.argmax(val[top])]:.2f}%); best of all {len(R)} = "
          f"{100 * best_all:.2f}% (test {100 * test[np.argmax(val)]:.2f}%); gap "
          f"{100 * (best_all - best_top):.2f} points; {args.top_k} random picks: "
          f"{100 * rand_best:.2f}% on average")
    m = lambda v: (100 * np.mean(v), 100 * 1.96 * np.std(v, ddof=1) / math.sqrt(len(v)))  # noqa: E731
    print("accuracy (val, mean +- 95%% CI over archs): predicted params %.1f +- %.1f, random init "
          "%.1f +- %.1f, trained %.1f +- %.1f" % (*m(ghn), *m([r["random_val_acc"] for r in R]), *m(val)))
    print(f"prediction time (graph + params + BN stats): median "
          f"{np.median([r['predict_seconds'] for r in R]):.3f} s")
    # property prediction: SVR on mean node embeddings, 2-fold, tau averaged
    from nasforge.evaluators.train import build_network as bn_
    ghn_model = load_ghn(args.ghn)
    nets = ([gen.build(descs[k]) for k in keys] if gen is not None else
            [bn_(space, space.parse(k), task, seed=0) for k in keys])
    emb = graph_embeddings(ghn_model, nets, task.input_shape)
    half = len(keys) // 2
    targets = {"trained val acc": val, "latency_ms": np.array([r["latency_ms"] for r in R]),
               "convergence epoch": np.array([convergence_epoch(r["val_curve"]) for r in R], float)}
    for name, y in targets.items():
        taus = [property_prediction(emb[a], y[a], emb[b], y[b])["tau"]
                for a, b in ((slice(0, half), slice(half, None)), (slice(half, None), slice(0, half)))]
        print(f"property prediction (SVR on GHN embeddings, 2-fold): {name}: tau = {np.mean(taus):.3f} "
              f"({taus[0]:.3f}, {taus[1]:.3f})")


if __name__ == "__main__":
    main()
