"""k-shot fine-tuning from GHN-predicted parameters against random initialisation, at equal steps.

    python benchmarks/ghn_kshot.py --ghn GHN.pt [--archs 20] [--k 10] [--steps 60] [--lr 1e-3]
        [--seed 0] [--threads 2]

On digits: ``--archs`` architectures of the chain space ``benchmarks/ghn_search.py`` uses (not in
the GHN's training pool; ``--source generator``: the first ``--archs`` networks of the GHN
generator's ``test`` split for digits, seed ``--seed``, whose cells no training network has),
each fine-tuned twice on ``--k`` training images per class for
``--steps`` Adam steps (same batches, same seed, the one training engine): once from the GHN's
predicted parameters (batch-norm statistics from the k-shot images only), once from the same
architecture's random initialisation. Reports test accuracy before and after fine-tuning (mean
and 95% interval over architectures) and how many architectures the predicted start wins.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ghn", required=True)
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features", default="16,32,64")
    ap.add_argument("--kernels", default="1,3,5")
    ap.add_argument("--max-conv", type=int, default=4)
    ap.add_argument("--ghn-archs", type=int, default=256, help="size of the GHN's training pool "
                    "(its architectures are excluded)")
    ap.add_argument("--source", default="chain", choices=("chain", "generator"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from nasforge.core import derive_seed
    from nasforge.data import load_task
    from nasforge.evaluators.ghn import load_ghn
    from nasforge.evaluators.train import build_network
    from nasforge.ghn.train import architectures
    from nasforge.ghn.uses import kshot_compare
    from nasforge.spaces.chain import ChainSpace

    task = load_task("digits")
    space = ChainSpace(input_shape=task.input_shape, features=tuple(int(v) for v in args.features.split(",")),
                       kernels=tuple(int(v) for v in args.kernels.split(",")), max_conv=args.max_conv,
                       batch_norm=True)
    pool = {t for t, _ in architectures("space", task, args.ghn_archs, seed=args.seed, split="train",
                                        space=space)}
    rng = np.random.default_rng(derive_seed(args.seed, 0x5407))
    archs, seen = [], set(pool)
    while len(archs) < args.archs:
        a = space.sample(rng)
        if str(a) not in seen:
            seen.add(str(a))
            archs.append(a)
    models = [(str(a), lambda a=a, i=i: build_network(space, a, task, seed=derive_seed(args.seed, i)))
              for i, a in enumerate(archs)]
    what = "unseen chain architectures"
    if args.source == "generator":
        from nasforge.ghn.generator import ArchGenerator, description_key

        gen = ArchGenerator(task, seed=args.seed, sizes={"test": args.archs})
        models = [(description_key(d), lambda d=d: gen.build(d))
                  for d in gen.descriptions("test", args.archs)]
        what = "generator test-split architectures"
    res = kshot_compare(load_ghn(args.ghn), models, task, k=args.k, steps=args.steps, lr=args.lr,
                        seed=args.seed)
    s = res.summary()
    print(f"# ghn_kshot  {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}  ghn {args.ghn}  digits, "
          f"{s['archs']} {what}, k={args.k} per class, {s['steps']} Adam steps "
          f"(lr {args.lr})")
    print(f"test accuracy before fine-tuning: predicted {100 * s['predicted_start']:.1f} +- "
          f"{100 * s['predicted_start_ci95']:.1f}, random {100 * s['random_start']:.1f} +- "
          f"{100 * s['random_start_ci95']:.1f}")
    print(f"test accuracy after fine-tuning:  predicted {100 * s['predicted']:.1f} +- "
          f"{100 * s['predicted_ci95']:.1f}, random {100 * s['random']:.1f} +- "
          f"{100 * s['random_ci95']:.1f}; predicted start better on {s['wins']}/{s['archs']}")


if __name__ == "__main__":
    main()
