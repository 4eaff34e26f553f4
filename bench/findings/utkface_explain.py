"""docs/findings/utkface-explain.md from examples/utkface-explain/.

    python bench/findings/utkface_explain.py --check   # or --write

Reads ``factors.csv`` (per precision and group: training size, gradient norm, Hessian trace,
λ_max, accuracy, excess loss, Taylor terms and Theorem 4.1's bound) and ``correlations.csv``
(Spearman's ρ with its exact permutation p), written by ``fairquant explain``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
from _page import Study, main, num, span, table, thousands, words

DATA = "examples/utkface-explain"
FACTORS = {"grad_norm": "‖g_a‖", "trace": "Tr(H_a)", "lambda_max": "λ_max"}


def values(root: Path) -> dict[str, str]:
    base = root / DATA
    factors = pd.read_csv(base / "factors.csv")
    corr = pd.read_csv(base / "correlations.csv")
    fp32 = factors[factors.precision == "fp32"].set_index("group")
    int4 = factors[factors.precision == "int4"].set_index("group")
    v: dict[str, str] = {}
    accuracy = (fp32.accuracy * fp32.n_test).sum() / fp32.n_test.sum()
    v["accuracy"] = num(accuracy, 1)
    n_curv = factors.n_curvature.unique()
    if len(n_curv) != 1:
        raise ValueError(f"factors.csv: curvature sample sizes differ: {n_curv}")
    v["n_curvature"] = str(n_curv[0])

    rows = []
    for g in fp32.index:
        a, b = fp32.loc[g], int4.loc[g]
        rows.append(
            [
                g,
                thousands(a.n_train),
                num(a.grad_norm, 1),
                thousands(a.trace),
                num(a.lambda_max, 0),
                num(b.grad_norm, 1),
                thousands(b.trace),
                num(b.lambda_max, 0),
                f"{num(a.accuracy, 1)} → {num(b.accuracy, 1)}",
                num(b.excess_loss, 3),
            ]
        )
    head = ["group", "n_train", "‖g_a‖ fp32", "Tr(H_a) fp32", "λ_max fp32", "‖g_a‖ int4"]
    head += ["Tr(H_a) int4", "λ_max int4", "accuracy fp32 → int4", "G(a) int4"]
    v["table"] = table(head, rows)

    def rho(precision: str, factor: str, against: str) -> pd.Series:
        sel = corr[
            (corr.precision == precision) & (corr.factor == factor) & (corr.against == against)
        ]
        if len(sel) != 1:
            raise ValueError(f"correlations.csv: {len(sel)} rows for {precision, factor, against}")
        return sel.iloc[0]

    size = {f: rho("fp32", f, "n_train") for f in FACTORS}
    v["falls"] = (
        "both fall as the group grows"
        if size["grad_norm"].rho < 0 and size["trace"].rho < 0
        else "do not both fall as the group grows"
    )
    for f in FACTORS:
        v[f"rho_{f}"] = num(size[f].rho, 2)
        v[f"p_{f}"] = f"{size[f].p_value:.2g}"
    groups = corr.groups.unique()
    if len(groups) != 1:
        raise ValueError(f"correlations.csv: group counts differ: {groups}")
    k = int(groups[0])
    v["n_groups"] = str(k)
    v["n_groups_word"] = {5: "five"}.get(k, str(k))
    v["perms"] = str(math.factorial(k))
    v["p_floor"] = f"{2 / math.factorial(k):.3f}"
    v["rho4"] = words([num(rho("int4", f, "n_train").rho, 2) for f in FACTORS])

    drop = int4.accuracy_drop
    loser, gainer = drop.idxmax(), drop.idxmin()
    smallest = fp32.n_train.idxmin()
    v["loser"] = (
        f"the smallest group, {loser}," if loser == smallest else f"{loser} (not the smallest)"
    )
    v["loser_drop"] = num(drop[loser], 1)
    v["gainer"] = gainer
    v["gainer_gain"] = num(-drop[gainer], 1)
    v["phi4"] = num(int4.excess_loss.max() - int4.excess_loss.min(), 2)
    v["rank_fp32"] = num(rho("fp32", "trace", "accuracy_drop@int4").rho, 2)
    v["rank_int4"] = num(rho("int4", "trace", "accuracy_drop@int4").rho, 2)
    top = int4.excess_loss.idxmax()
    v["taylor_group"] = top
    v["taylor"] = num(int4.taylor[top], 3)
    v["measured"] = num(int4.excess_loss[top], 3)
    v["bound_rank"] = num(int4.bound.corr(int4.excess_loss, method="spearman"), 2)
    v["bound_span"] = span(int4.bound / 1e6, 2)
    v["g_max"] = num(int4.excess_loss.max(), 2)
    n_q = int4.n_quantized.unique()
    if len(n_q) != 1:
        raise ValueError(f"factors.csv: quantized weight counts differ: {n_q}")
    v["n_quantized"] = thousands(n_q[0])
    return v


STUDY = Study("utkface-explain", values)

if __name__ == "__main__":
    sys.exit(main(STUDY))
