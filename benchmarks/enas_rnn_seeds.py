"""The recurrent cell search with every default: ``enas`` (LSTM controller) against random search
with the same shared weights, over seeds, on MNIST-1D (issue 12: the recurrent search must learn).

For each seed and controller this runs, in a new process with one torch thread,

    nasforge search --method enas --space enas_rnn --task mnist1d --seed S \\
        -o method.controller=lstm|random --out RUNS/<controller>-s<S> -q

(skipped when that run directory already holds a finished run, so an interrupted benchmark
continues), then reads each run's trials: the shared-weight validation accuracy of the ranked
samples (best, mean), and the retrained best cell's validation and test accuracy. CPU seconds of
each search process (user + system, children included) are measured: the machine is shared, so
wall time would measure the neighbours; they are written to ``RUNS/<controller>-s<S>.cpu``
and read back when a finished run is reused. Mean and 95% t interval over seeds.

    python benchmarks/enas_rnn_seeds.py --seeds 0 1 2 --runs /tmp/enas_rnn_runs \\
        --out benchmarks/results/enas_rnn_mnist1d.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enas_compare import interval  # the same 95% t interval  # noqa: E402

CONTROLLERS = ("lstm", "random")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def search(run_dir: Path, seed: int, controller: str, extra: list[str]) -> float | None:
    """Run the search unless ``run_dir`` holds a finished one; its CPU seconds, kept in
    ``<run_dir>.cpu`` beside it (None for a reused run without that file)."""
    record = run_dir.with_suffix(".cpu")
    if (run_dir / "run.db").is_file() and read_run(run_dir) is not None:
        return float(record.read_text()) if record.is_file() else None
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    before = children_cpu()
    subprocess.run([sys.executable, "-m", "nasforge", "search", "--method", "enas", "--space",
                    "enas_rnn", "--task", "mnist1d", "--seed", str(seed), "-o",
                    f"method.controller={controller}", *extra, "--out", str(run_dir), "-q"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    cpu = children_cpu() - before
    record.write_text(f"{cpu:.2f}\n")
    return cpu


def read_run(run_dir: Path) -> dict | None:
    """Shared-weight scores of the ranked samples and the retrained cell's accuracies."""
    db = sqlite3.connect(f"file:{run_dir / 'run.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("select arch, metrics, info, cost from trials").fetchall()
    finally:
        db.close()
    shared, retrained = [], []
    for arch, metrics, info, cost in rows:
        metrics, info, cost = json.loads(metrics), json.loads(info), json.loads(cost or "{}")
        if info.get("phase") == "shared":
            shared.append((metrics["shared_val_acc"], cost.get("search_seconds")))
        elif info.get("phase") == "retrain" and "test_acc" in metrics:
            retrained.append((arch, metrics))
    if not shared or not retrained:
        return None
    arch, metrics = retrained[0]
    scores = [s for s, _ in shared]
    return {"arch": arch, "shared_best": max(scores), "shared_mean": statistics.fmean(scores),
            "distinct_ranked": len(scores), "search_wall_s": shared[0][1],
            "val_acc": metrics["val_acc"], "test_acc": metrics["test_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, required=True, help="folder of the run directories")
    parser.add_argument("--option", "-o", action="append", default=[],
                        help="extra GROUP.NAME=VALUE passed to every search")
    parser.add_argument("--out", type=Path, help="JSON file for rows and summary (new file)")
    args = parser.parse_args()
    if args.out is not None and args.out.exists():
        parser.error(f"--out {args.out} exists; name a new file (results are never overwritten)")
    extra = [x for o in args.option for x in ("-o", o)]
    rows = []
    for seed in args.seeds:
        for controller in CONTROLLERS:
            run_dir = args.runs / f"{controller}-s{seed}"
            cpu = search(run_dir, seed, controller, extra)
            row = read_run(run_dir)
            if row is None:
                raise SystemExit(f"{run_dir}: no finished enas run there")
            row.update(seed=seed, controller=controller, search_process_cpu_s=cpu)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for controller in CONTROLLERS:
        mine = [r for r in rows if r["controller"] == controller]
        entry = {"seeds": len(mine)}
        for key in ("test_acc", "val_acc", "shared_best", "shared_mean"):
            mean, half = interval([r[key] for r in mine])
            entry[key], entry[key + "_ci95"] = mean, half
        cpus = [r["search_process_cpu_s"] for r in mine if r["search_process_cpu_s"] is not None]
        entry["process_cpu_s"] = statistics.fmean(cpus) if cpus else None
        summary[controller] = entry
        print(f"{controller:7s} test {entry['test_acc']:.4f} ± {entry['test_acc_ci95']:.4f}  "
              f"val {entry['val_acc']:.4f} ± {entry['val_acc_ci95']:.4f}  shared best "
              f"{entry['shared_best']:.3f} mean {entry['shared_mean']:.3f}  ({len(mine)} seeds)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {"seeds": args.seeds, "options": args.option},
                                        "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
