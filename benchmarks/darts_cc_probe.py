"""A DARTS-CC search probe: the family's parameter counts after every epoch of one search.

    python benchmarks/darts_cc_probe.py --task digits --seed 0 \
        --options '{"lambda_min": 0.03, "lambda_max": 10}' --out probe.json

Runs ``benchmarks/darts_cc.py``'s preset search (its defaults: ``darts_cc_options``) with the
DARTS-CC options in ``--options`` (a JSON object) replacing the preset's, trains the family
for one epoch only (their parameter counts are what counts here, not their accuracies), and
reports the parameters of the genotypes derived at λ̃ = 0, .25, .5, .75, 1 after every epoch
of the search (from the search's history) and the softmax-expected parameter count of α(λ̃).
Everything it reports comes from the search on the training split: this is how the CPU preset
was chosen without looking at validation or test data (``docs/darts.md``). ``last6`` in the
output counts the last six epochs whose family meets target 1's shape (at least 4 distinct
genotypes, parameters strictly falling, λ̃ = 0 over λ̃ = 1 at least 1.5): how stable the result
is, not only where the search happened to stop. An existing ``--out`` is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import darts_cc as bench  # the preset's options and run helper

from nasforge.cost import count_params
from nasforge.data import load_task
from nasforge.spaces.darts import build_network, parse_genotype


def target_shape(params: list[int]) -> bool:
    """Target 1's shape: >= 4 distinct, strictly falling, first over last >= 1.5."""
    return (len(set(params)) >= 4 and all(a > b for a, b in pairwise(params))
            and params[0] / params[-1] >= 1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="cap the training split")
    parser.add_argument("--options", default="{}",
                        help="JSON object of darts_cc options replacing the preset's")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists():
        print(f"darts_cc_probe.py: --out {args.out} exists; expected a new file", file=sys.stderr)
        sys.exit(2)
    try:
        options = json.loads(args.options)
    except ValueError as exc:
        options = exc
    if not isinstance(options, dict):
        print(f"darts_cc_probe.py: --options {args.options!r}; expected a JSON object of "
              f"darts_cc options ({options})", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    preset = bench.main_defaults()
    preset.update(task=args.task, limit=args.limit, train_epochs=1)
    ns = argparse.Namespace(**preset)
    merged = {**bench.darts_cc_options(ns), **options}
    if "epochs" in options and "tau_decay" not in options:
        merged["tau_decay"] = 0.8 / merged["epochs"]  # the preset's 1 -> 0.2 over the search
    cfg = bench.config(ns, args.seed, "darts_cc", merged)
    work = Path(tempfile.mkdtemp(prefix="darts_cc_probe_"))
    trials, meta, _ = bench.run(cfg, work / "run")
    task = load_task(args.task, seed=args.seed, **({"limit": args.limit} if args.limit else {}))
    space = cfg["space_options"]

    def count(text: str) -> int:
        return count_params(build_network(parse_genotype(text), task.input_shape,
                                          task.num_classes, C=space["C"],
                                          layers=space["layers"]))

    fam = sorted((t for t in trials if t.info.get("role") == "family"),
                 key=lambda t: t.info["lambda"])
    params = [int(t.result.cost["params"]) for t in fam]
    history = [[count(g) for g in h["genotypes"]] for h in meta["history"]]
    arch_epochs = history[merged.get("warmup_epochs", 0):]
    result = {"task": args.task, "seed": args.seed, "limit": args.limit, "options": merged,
              "params": params, "target_shape": target_shape(params),
              "expected_params": [round(e) for e in meta["expected_params"]],
              "params_per_epoch": history,
              "expected_params_per_epoch": [[round(e) for e in h["expected_params"]]
                                            for h in meta["history"]],
              "last6": [sum(map(target_shape, arch_epochs[-6:])), len(arch_epochs[-6:])],
              # the final α's own family (with alpha_average_epochs, "params" is the averaged's)
              "params_final_alpha": history[-1],
              "target_shape_final_alpha": target_shape(history[-1]),
              "params_avg_per_epoch": [[count(g) for g in h["genotypes_avg"]]
                                       for h in meta["history"] if "genotypes_avg" in h],
              "search_cpu_seconds": meta.get("search_cpu_seconds_this_process"),
              "search_seconds": meta.get("search_seconds"),
              "genotypes": [str(t.arch) for t in fam]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("params", "target_shape", "last6",
                                              "params_final_alpha", "target_shape_final_alpha",
                                              "expected_params", "search_cpu_seconds")}))


if __name__ == "__main__":
    main()
