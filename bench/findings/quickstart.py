"""docs/quickstart.md's table and the README's quickstart section from the golden copy.

    python bench/findings/quickstart.py --check   # or --write

Reads the golden copy the tests check on the processor it was made on,
``tests/golden/quickstart_results.GenuineIntel-6-207.csv`` (``fairquant quickstart
--bootstrap 0`` under ``tests/test_golden.py``'s pinned kernels), and that run's
``examples/quickstart/verdict.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from _page import Study, main, num, pval, table, words

from fairquant.report import outward

GOLDEN = "tests/golden/quickstart_results.GenuineIntel-6-207.csv"
VERDICT = "examples/quickstart/verdict.json"
SHOWN = ["fp32", "int8", "int4", "int3", "int2"]  # the excerpt's precisions
EXCERPT = ["0", "1", "6", "8", "9"]  # the majority digits and the rare ones


def _p(p: float) -> str:
    text = pval(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _interval(g: dict) -> str:
    """``change [low, high]`` with the ends rounded outward, as the verdict prints them."""
    low, high = outward(g["ci_low"], up=False), outward(g["ci_high"], up=True)
    return f"{num(g['change'], 1)} points [{num(low, 1)}, {num(high, 1)}]"


def _train_counts() -> list[int]:
    """Training images per digit of the quickstart's long-tailed split (seeded, from sklearn)."""
    from fairquant.data import default_digits_spec, load_dataset

    return [int(n) for n in load_dataset(default_digits_spec()).counts()["train"]]


def values(root: Path) -> dict[str, str]:
    r = pd.read_csv(root / GOLDEN, dtype={"precision": str, "group": str})
    verdict = json.loads((root / VERDICT).read_text())
    acc = r[r.metric == "accuracy"].pivot(index="group", columns="precision", values="value")
    phi = r[(r.metric == "phi") & (r.group == "all")].set_index("precision").value
    digits = [str(d) for d in range(10)]
    train_n = _train_counts()

    def rows(which: list[str]) -> list[list[str]]:
        out = [[d, str(train_n[int(d)]), *(num(acc.loc[d, p], 1) for p in SHOWN)] for d in which]
        out.append(["all", str(sum(train_n)), *(num(acc.loc["all", p], 1) for p in SHOWN)])
        out.append(["φ(D)", "", "0", *(f"{phi[p]:.3g}" for p in SHOWN[1:])])
        return out

    head = ["digit", "training images", *SHOWN]
    v = {"excerpt": table(head, rows(EXCERPT)), "full": table(head, rows(digits))}
    # the precision that costs a group most while the model still works (overall >= 50 %)
    working = [p for p in SHOWN[1:] if acc.loc["all", p] >= 50]
    drop = {p: (acc.loc[digits, "fp32"] - acc.loc[digits, p]) for p in working}
    worst = max(working, key=lambda p: drop[p].max())
    d = drop[worst].idxmax()
    v["worst"] = worst
    v["overall_loss"] = num(acc.loc["all", "fp32"] - acc.loc["all", worst], 1)
    v["digit"] = d
    v["digit_train"] = str(train_n[int(d)])
    v["digit_from"] = num(acc.loc[d, "fp32"], 0)
    v["digit_to"] = num(acc.loc[d, worst], 0)
    v["digit_drop"] = num(drop[worst][d], 0)
    majority = max(digits, key=lambda g: train_n[int(g)])
    v["majority"] = majority
    v["majority_change"] = (
        "holds" if drop[worst][majority] <= 0 else f"loses {num(drop[worst][majority], 1)} points"
    )
    collapsed = [p for p in SHOWN[1:] if acc.loc["all", p] < 50]
    v["collapsed"] = (
        f"at {words(collapsed)} the model collapses "
        f"(overall {words([num(acc.loc['all', p], 1) + ' %' for p in collapsed])})"
        if collapsed
        else "no precision collapses"
    )
    status = {p["precision"]: p for p in verdict["precisions"]}
    failed = [p for p in status if status[p]["status"] == "fail"]
    v["failed"] = words(failed) if failed else "no precision"
    v["fail_verb"] = "FAILs" if len(failed) == 1 else "FAIL"
    lines = []
    for p in failed:
        bad = [g for g in status[p]["groups"] if g["status"] == "fail"]
        g = min(bad, key=lambda g: g["change"])
        lines.append(
            f"{p}: digit {g['group']} {_interval(g)}, {_p(g['p_exceed_holm'])}"
            + (f", and {len(bad) - 1} more digits" if len(bad) > 1 else "")
        )
    v["fail_lines"] = "; ".join(lines)
    others = [p for p in status if status[p]["status"] == "inconclusive"]
    v["inconclusive"] = words(others)
    zero = [
        g["n_needed"]
        for p in others
        for g in status[p]["groups"]
        if g["status"] == "inconclusive" and g["lost"] == g["gained"] == 0
    ]
    v["needed"] = str(max(set(zero), key=zero.count)) if zero else "more"
    sizes = [g["n"] for g in verdict["precisions"][0]["groups"]]
    v["n_range"] = f"{min(sizes)}–{max(sizes)}"
    v["tests"] = str(verdict["statistics"]["n_tests"])
    return v


STUDY = Study("quickstart", values, readme=True, path="docs/quickstart.md")

if __name__ == "__main__":
    sys.exit(main(STUDY))
