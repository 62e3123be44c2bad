"""Target 1's table for the third-revision DARTS-CC preset (coupled λ̃ sampling), from the
``benchmarks/darts_cc.py family`` results in ``benchmarks/results`` (``docs/darts.md``,
"Variance reduction").

    python benchmarks/darts_cc_t1_table.py

Target 1 per run: at least 4 distinct genotypes, parameters strictly falling from λ̃ = 0 to 1,
λ̃ = 0 over λ̃ = 1 at least 1.5, and the search's CPU seconds below the family's training's
(the wall times are printed beside; on a shared machine they follow the load).
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROWS = [("digits, seed 0", "darts_cc_family_digits_cpl_seed0.json"),
        ("digits, seed 1", "darts_cc_family_digits_cpl_seed1.json"),
        ("digits, seed 1, rerun (load 1-2)", "darts_cc_family_digits_cpl_seed1_rerun.json"),
        ("digits, seed 2", "darts_cc_family_digits_cpl_seed2_final.json"),
        ("digits, seed 2, `--alpha-average 5`", "darts_cc_family_digits_cpl_avg5_seed2.json"),
        ("MNIST-1D (`--limit 1200`)", "darts_cc_family_mnist1d_cpl.json")]


def main() -> None:
    print("| T1 run | parameters at λ̃ = 0, .25, .5, .75, 1 | strictly falling | λ̃=0 / λ̃=1 "
          "| expected parameters of α(λ̃) | search CPU s (wall) | family training CPU s (wall) "
          "| target 1 (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, file in ROWS:
        path = RESULTS / file
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        t = r["target1"]
        ok = all(t[k] for k in ("at_least_4_distinct", "strictly_falling", "ratio_at_least_1.5",
                                "search_faster_cpu"))
        params = ", ".join(str(int(x)) for x in r["params"])
        print(f"| {name} | {'**' + params + '**' if ok else params} "
              f"| {'yes' if t['strictly_falling'] else 'no'} "
              f"| {r['params_ratio_lambda0_over_lambda1']:.2f}x "
              f"| {', '.join(str(round(e)) for e in r['expected_params_of_alpha'])} "
              f"| {r['search_cpu_seconds']:.0f} ({r['search_seconds']:.0f}) "
              f"| {r['family_train_cpu_seconds']:.0f} ({r['family_train_seconds']:.0f}) "
              f"| {'**met**' if ok else 'no'} |")


if __name__ == "__main__":
    main()
