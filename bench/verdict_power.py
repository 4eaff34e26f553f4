"""How often the verdict passes and fails one group, by its test samples and its true drop.

Exact probabilities (every likely table of lost/gained samples summed, no simulation) of the
rule in :func:`fairquant.verdict`: a group is *within* its tolerance when the upper end of the
95 % paired interval of its accuracy drop lies below it, and *exceeds* it when the exact test of
"drop <= tolerance" rejects after Holm's correction (shown for 1 test and, as Bonferroni's first
step of Holm, for 20 tests: 20 groups of one precision). The family-wise false-FAIL rate over
many groups is ``bench/verdict_familywise.py``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/verdict_power.py [--max-drop 2 --gained 1]
"""

from __future__ import annotations

import argparse

from fairquant.metrics import ALPHA, decision_rates

SIZES = (20, 50, 100, 200, 500, 1000, 2000)
DROPS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-drop", type=float, default=2.0, help="tolerance, points")
    parser.add_argument(
        "--gained",
        type=float,
        default=1.0,
        help="%% of samples only the quantized model gets right",
    )
    parser.add_argument(
        "--tests",
        type=int,
        default=20,
        help="Holm family size (groups of one precision) for the fail side",
    )
    args = parser.parse_args()
    margin, gained = args.max_drop / 100, args.gained / 100
    print(
        f"Tolerance {args.max_drop:g} points; {args.gained:g} % of samples gained; "
        f"P(pass) / P(fail) in %, fail with 1 | {args.tests} tests (alpha {ALPHA})\n"
    )
    print("| true drop | " + " | ".join(f"n = {n:,}" for n in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for drop in DROPS:
        cells = []
        for n in SIZES:
            within, exceeds = decision_rates(
                n, gained + drop / 100, gained, margin, alpha=ALPHA, n_tests=1
            )
            _, exceeds_m = decision_rates(
                n, gained + drop / 100, gained, margin, alpha=ALPHA, n_tests=args.tests
            )
            cells.append(f"{100 * within:.0f} / {100 * exceeds:.0f} \\| {100 * exceeds_m:.0f}")
        print(f"| {drop:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
