"""Table of the variance-reduction probes of DARTS-CC (``benchmarks/results/darts_cc_probes_vr``).

    python benchmarks/darts_cc_vr_summary.py [FOLDER]

Each probe file (``benchmarks/darts_cc_probe.py --out FOLDER/<config>_<task>_s<seed>.json``, run
with ``alpha_average_epochs`` on) holds two families of one search: the final α(λ)'s
(``params_final_alpha``) and the one of α(λ) averaged over the last epochs (``params``). The
table gives both, with target 1's shape (at least 4 distinct, strictly falling, λ̃ = 0 over
λ̃ = 1 at least 1.5), per configuration and seed, and the count of seeds meeting it. Everything
here comes from the search on the training split.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from darts_cc_probe import target_shape  # noqa: E402


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(__file__).parent / "results" / "darts_cc_probes_vr"
    rows, tally = [], defaultdict(lambda: [0, 0, 0])
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        config = path.stem.rsplit("_s", 1)[0]
        opts = r["options"]
        label = (f"{opts['lambda_sampling']}, jitter {opts['lambda_jitter']:g}, "
                 f"arch batch {opts['arch_batch_size']}, "
                 f"average last {opts.get('alpha_average_epochs', 0)}")
        final, avg = r["params_final_alpha"], r["params"]
        tally[config][0] += 1
        tally[config][1] += target_shape(final)
        tally[config][2] += target_shape(avg)
        rows.append(f"| {config} | {r['task']} {r['seed']} | {label} | "
                    f"{', '.join(map(str, final))} | {'yes' if target_shape(final) else 'no'} | "
                    f"{', '.join(map(str, avg))} | {'yes' if target_shape(avg) else 'no'} | "
                    f"{r['search_cpu_seconds']:.0f} |")
    print("| config | task, seed | options | final α: parameters at λ̃ = 0 … 1 | T1 shape "
          "| averaged α | T1 shape | search CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    for config, (n, final, avg) in sorted(tally.items()):
        print(f"{config}: {n} searches; target 1's shape: final α {final}/{n}, averaged {avg}/{n}")


if __name__ == "__main__":
    main()
