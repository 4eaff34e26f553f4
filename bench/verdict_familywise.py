"""The verdict's family-wise false-FAIL rate, exactly: every group's true drop at its tolerance.

A precision's verdict fails when Holm over its ``m`` groups rejects "drop <= tolerance" for some
group. With every group's true drop exactly at the tolerance (the least favourable null), the
chance of any FAIL is ``P(min_a p_a < alpha / m)`` (Holm's first step decides whether it rejects
at all), which for independent groups of equal size and rates is ``1 − (1 − r)^m``, ``r`` the
exact rate at which one group's p falls below ``alpha / m``, summed over every likely table of
lost and gained samples (no simulation). The rows vary the share of samples the quantized model
*gains* (it loses that share plus the tolerance): few expected gains are where the normal-theory
score test failed. ``--compare`` prints the same for the former rule (continuity-corrected score
test and McNemar's exact test); ``--simulate N`` checks the largest cell against N simulated audits
through ``exact_exceed_p`` and ``holm``, the functions ``fairquant.verdict`` calls.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/verdict_familywise.py --max-drop 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fairquant.metrics import (
    ALPHA,
    drop_tests,
    exact_exceed_p,
    exact_exceed_rate,
    holm,
    mcnemar_exact,
    table_probabilities,
)


def _numbers(text: str, kind=float) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def exact_rate(n: int, p_lost: float, p_gained: float, margin: float, level: float) -> float:
    """The verdict's fail rule's exact rate: the exact test below ``level``."""
    return exact_exceed_rate(n, p_lost, p_gained, margin, level=level)


def former_rate(n: int, p_lost: float, p_gained: float, margin: float, level: float) -> float:
    """The former fail rule's exact rate: score test and McNemar both below ``level``."""
    b, c, prob = table_probabilities(n, p_lost, p_gained)
    p_exceed, _ = drop_tests(b, c, n, margin)
    return float(prob[(p_exceed < level) & (mcnemar_exact(b, c) < level)].sum())


def table(sizes, gains, groups, margin, rate) -> tuple[list[str], float, tuple]:
    """The markdown table of P(any FAIL), its largest value and that cell (n, gained, m)."""
    lines = ["| groups | gained | " + " | ".join(f"n = {n:,}" for n in sizes) + " |"]
    lines.append("|---|---|" + "---|" * len(sizes))
    worst, cell = -1.0, (sizes[0], gains[0], groups[0])
    for m in groups:
        for gained in gains:
            cells = []
            for n in sizes:
                r = rate(n, gained + margin, gained, margin, ALPHA / m)
                fwer = 1.0 - (1.0 - r) ** m
                if fwer > worst:
                    worst, cell = fwer, (n, gained, m)
                cells.append(f"{100 * fwer:.2f}")
            lines.append(f"| {m} | {100 * gained:g} % | " + " | ".join(cells) + " |")
    return lines, worst, cell


def simulate(n: int, gained: float, margin: float, m: int, audits: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [gained + margin, gained, 1 - margin - 2 * gained], (audits, m))
    tables, index = np.unique(counts[..., :2].reshape(-1, 2), axis=0, return_inverse=True)
    p = exact_exceed_p(tables[:, 0], tables[:, 1], n, margin)[index].reshape(audits, m)
    return float(np.mean([(holm(row) < ALPHA).any() for row in p]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-drop", type=float, default=2.0, help="tolerance, points")
    parser.add_argument("--sizes", default="20,50,100,200,500,1000,2000", help="group sizes")
    parser.add_argument("--gains", default="0.1,0.5,1,2,5,10", help="%% of samples gained")
    parser.add_argument("--groups", default="5,20,70,100", help="groups in the Holm family")
    parser.add_argument("--compare", action="store_true", help="also the former rule")
    parser.add_argument(
        "--simulate",
        type=int,
        default=0,
        metavar="N",
        help="check the exact test's largest cell by N simulated audits",
    )
    args = parser.parse_args()
    sizes = _numbers(args.sizes, int)
    gains = [g / 100 for g in _numbers(args.gains)]
    groups = _numbers(args.groups, int)
    margin = args.max_drop / 100
    start = time.perf_counter()
    print(
        f"P(any FAIL) in %, every group's true drop at the tolerance of {args.max_drop:g} points; "
        f"exact test, Holm over the groups of one precision (alpha {ALPHA})\n"
    )
    lines, worst, cell = table(sizes, gains, groups, margin, exact_rate)
    print("\n".join(lines))
    print(f"\nlargest: {100 * worst:.2f} % (alpha {100 * ALPHA:g} %)")
    if args.compare:
        print(
            "\nThe former rule (continuity-corrected score test and McNemar's), the same cells:\n"
        )
        lines, former_worst, _ = table(sizes, gains, groups, margin, former_rate)
        print("\n".join(lines))
        print(f"\nlargest: {100 * former_worst:.2f} % (alpha {100 * ALPHA:g} %)")
    if args.simulate:
        n, gained, m = cell
        exact = (
            1 - (1 - exact_exceed_rate(n, gained + margin, gained, margin, level=ALPHA / m)) ** m
        )
        simulated = simulate(n, gained, margin, m, args.simulate, seed=0)
        se = np.sqrt(simulated * (1 - simulated) / args.simulate)
        print(
            f"\nsimulated ({args.simulate:,} audits of {m} groups of {n}, {100 * gained:g} % "
            f"gained): {100 * simulated:.2f} % ± {100 * se:.2f} (exact {100 * exact:.2f} %)"
        )
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
