"""docs/findings/mitigate-utkface.md from examples/mitigate-utkface/.

    python bench/findings/mitigate_utkface.py --check   # or --write

Reads the comparison's ``results.csv`` (per seed), ``tests.csv`` (its paired tests with Holm
over the run directory) and ``config.yaml``, written by ``fairquant mitigate``; the training
group sizes come from ``examples/utkface-explain/factors.csv`` (the same split).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import yaml
from _page import Study, main, num, pval, span, thousands, words

from fairquant.metrics import ALPHA, ALTERNATIVE, across_seeds, sign_flip_floor

DATA = "examples/mitigate-utkface"
TRAINING = ("gt", "re", "over", "weighted", "fairqat")  # the mitigations that change training
RAN_AS = {"fairqat": {"int4": "int4-fl8"}}  # a mitigation that runs another precision


def _ran(mitigation: str, precision: str) -> str:
    return RAN_AS.get(mitigation, {}).get(precision, precision)


def _pm(row: pd.Series, digits: int) -> str:
    """``mean ± half-width`` of the 95% interval across seeds."""
    return f"{num(row.value, digits)} ± {num((row.ci_high - row.ci_low) / 2, digits)}"


def values(root: Path) -> dict[str, str]:
    base = root / DATA
    results = pd.read_csv(base / "results.csv", dtype={"precision": str, "group": str})
    tests = pd.read_csv(base / "tests.csv", dtype={"precision": str})
    config = yaml.safe_load((base / "config.yaml").read_text())
    factors = pd.read_csv(root / "examples/utkface-explain/factors.csv")
    summary = across_seeds(results)
    seeds = results.seed.nunique()
    vs = tests[tests.comparison.str.endswith(" vs none")]

    def cell(mitigation, method, precision, metric, group="all") -> pd.Series:
        sel = summary[
            (summary.mitigation == mitigation)
            & (summary.method == method)
            & (summary.precision == _ran(mitigation, precision))
            & (summary.metric == metric)
            & (summary.group == group)
        ]
        if len(sel) != 1:
            raise ValueError(f"results.csv: {len(sel)} rows for {mitigation, method, precision}")
        return sel.iloc[0]

    def test(mitigation, method, precision, metric) -> pd.Series:
        sel = vs[
            (vs.mitigation == mitigation)
            & (vs.method == method)
            & (vs.precision == _ran(mitigation, precision))
            & (vs.metric == metric)
        ]
        if len(sel) != 1:
            raise ValueError(f"tests.csv: {len(sel)} rows for {mitigation, method, precision}")
        return sel.iloc[0]

    def per_seed(mitigation, method, precision, metric) -> pd.Series:
        """The candidate's value minus none's, per seed."""

        def pick(m: str, p: str) -> pd.Series:
            sel = results[
                (results.mitigation == m)
                & (results.method == method)
                & (results.precision == p)
                & (results.metric == metric)
                & (results.group == "all")
            ]
            return sel.set_index("seed").value

        return pick(mitigation, _ran(mitigation, precision)) - pick("none", precision)

    v: dict[str, str] = {}
    fp32 = factors[factors.precision == "fp32"].set_index("group")
    n_test = results[(results.metric == "n") & (results.precision == "fp32")]
    n_test = n_test[(n_test.mitigation == "none") & (n_test.seed == n_test.seed.min())]
    n_test = n_test.set_index("group").value
    v["n_train"] = thousands(fp32.n_train.sum())
    v["n_test"] = thousands(n_test["all"])
    v["epochs"] = str(config["training"]["epochs"])
    v["qat_epochs"] = str(next(m["epochs"] for m in config["methods"] if m["name"] == "qat"))
    v["seeds"] = str(seeds)
    v["n_tests"] = str(len(tests))
    v["floor"] = f"{sign_flip_floor(seeds, ALTERNATIVE):g}"
    v["n_sig"] = (
        "none of them is significant there"
        if (tests.p_holm >= ALPHA).all()
        else f"{int((tests.p_holm < ALPHA).sum())} of them are significant there"
    )

    # the worst group: lowest fp32 accuracy under none
    acc = summary[
        (summary.mitigation == "none")
        & (summary.precision == "fp32")
        & (summary.metric == "accuracy")
        & (summary.group != "all")
    ]
    worst = acc.set_index("group").value.idxmin()
    v["worst"] = worst
    v["worst_train"] = thousands(fp32.n_train[worst])
    # worst throughout: the group is the lowest in every mitigation, method and precision
    accs = summary[(summary.metric == "accuracy") & (summary.group != "all")]
    lowest = accs.loc[accs.groupby(["mitigation", "method", "precision"]).value.idxmin()]
    v["worst_throughout"] = (
        "is the worst group throughout"
        if (lowest.group == worst).all()
        else "is the worst group under none"
    )

    rows = []
    for m in config["mitigations"]:
        if m == "balanced-calib":
            continue
        label = f"{m} ({_ran(m, 'int4')})" if m in RAN_AS else m
        row = [label]
        for method, precision in (("none", "fp32"), ("ptq", "int4"), ("qat", "int4")):
            row.append(_pm(cell(m, method, precision, "accuracy"), 1))
            row.append(_pm(cell(m, method, precision, "accuracy", worst), 1))
            if precision != "fp32":
                row.append(_pm(cell(m, method, precision, "phi"), 2))
        rows.append(row)
    head = ["mitigation", "fp32 all", f"fp32 {worst}", "PTQ int4 all", f"PTQ int4 {worst}"]
    head += ["PTQ int4 φ(D)", "QAT int4 all", f"QAT int4 {worst}", "QAT int4 φ(D)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if "balanced-calib" in config["mitigations"]:
        ran = results[results.mitigation == "balanced-calib"].method.unique()
        qat = "| (not run: = none) | | |" if "qat" not in ran else "| | | |"
        lines.append("| balanced-calib | = none | | = none | | | " + qat.lstrip("| "))
    v["table"] = "\n".join(lines)

    # --- the worst group's accuracy: every training mitigation, every method and precision
    settings = [
        ("none", "fp32"),
        ("ptq", "int8"),
        ("ptq", "int4"),
        ("qat", "int8"),
        ("qat", "int4"),
    ]
    everywhere = all(
        (per_seed(m, meth, p, "worst_group_accuracy") > 0).all()
        for m in TRAINING
        for meth, p in settings
    )
    v["wg_every_seed"] = (
        "raises the worst group's accuracy in every seed, at every method and precision"
        if everywhere
        else "raises the worst group's accuracy on average, but not in every seed everywhere"
    )

    def gains(method: str, precision: str) -> str:
        g = {m: test(m, method, precision, "worst_group_accuracy").difference for m in TRAINING}
        lo, hi = min(g, key=g.get), max(g, key=g.get)
        return f"{num(g[lo], 1)} points ({lo}) to {num(g[hi], 1)} ({hi})"

    v["wg_fp32"] = gains("none", "fp32")
    v["wg_ptq4"] = gains("ptq", "int4")
    wg = vs[(vs.metric == "worst_group_accuracy") & vs.mitigation.isin(TRAINING)]
    v["wg_holm"] = (
        f"none survives Holm over the {len(tests)} comparisons (smallest adjusted p "
        f"{pval(wg.p_holm.min())})"
        if (wg.p_holm >= ALPHA).all()
        else "some survive Holm"
    )

    # --- overall accuracy
    acc_t = vs[(vs.metric == "accuracy") & vs.mitigation.isin(TRAINING)]

    def acc_span(ms: list[str], cost: bool) -> str:
        d = acc_t[acc_t.mitigation.isin(ms)].difference
        return span(-d, 1) if cost else span(d, 1, sign=True)

    gt_re = acc_t[acc_t.mitigation.isin(["gt", "re"])]
    v["gt_re_acc"] = acc_span(["gt", "re"], cost=False)
    v["gt_re_sig"] = (
        "no change is significant, raw or after Holm"
        if (gt_re.p_value >= ALPHA).all()
        else "no change survives Holm"
        if (gt_re.p_holm >= ALPHA).all()
        else "some changes survive Holm"
    )
    costs = []
    for m in ("over", "weighted", "fairqat"):
        d = acc_t[acc_t.mitigation == m].difference
        if (d >= 0).any():
            raise ValueError(f"{m} no longer costs overall accuracy in every setting")
        costs.append(f"{m} {acc_span([m], cost=True)}")
    v["acc_costs"] = words(costs)

    # --- φ(D) at PTQ int4
    phi4 = {m: test(m, "ptq", "int4", "phi") for m in TRAINING}
    low = min(phi4, key=lambda m: phi4[m].difference)
    lowered = [m for m in TRAINING if phi4[m].difference < 0 and phi4[m].p_holm < ALPHA]
    v["phi_lowered"] = "None lowers" if not lowered else f"{words(lowered)} lower"
    v["phi_low"] = (
        f"{low}'s {num(phi4[low].difference, 2, sign=True)} (p = {pval(phi4[low].p_value)})"
    )
    raised = [m for m in ("gt", "re", "over") if phi4[m].difference > 0]
    v["phi_raised"] = words(raised)
    v["phi_raised_by"] = span([phi4[m].difference for m in raised], 2)
    v["phi_raised_wide"] = (
        "with seed intervals that include 0"
        if all(phi4[m].ci_low < 0 for m in raised)
        else "some with seed intervals above 0"
    )
    fq = per_seed("fairqat", "ptq", "int4", "phi")
    v["fq_ptq4"] = (
        f"raises it in every seed ({num(phi4['fairqat'].mean_candidate, 2)} against "
        f"{num(phi4['fairqat'].mean_baseline, 2)}; p = {pval(phi4['fairqat'].p_value)}, "
        f"{pval(phi4['fairqat'].p_holm)} after Holm)"
        if (fq > 0).all()
        else "does not raise it in every seed"
    )
    v["fq_name"] = _ran("fairqat", "int4")

    # --- φ(D) under QAT
    over = per_seed("over", "qat", "int4", "phi")
    t_over = test("over", "qat", "int4", "phi")
    v["qat_over"] = (
        f"over raises φ(D) in every seed ({num(t_over.mean_candidate, 2)} against "
        f"{num(t_over.mean_baseline, 2)} at int4)"
        if (over > 0).all()
        else "over does not raise φ(D) in every seed"
    )
    w8, w4 = (per_seed("weighted", "qat", p, "phi") for p in ("int8", "int4"))
    tw8, tw4 = (test("weighted", "qat", p, "phi") for p in ("int8", "int4"))
    v["qat_weighted"] = (
        f"weighted lowers it in every seed (by {num(-tw8.difference, 2)} at int8 and "
        f"{num(-tw4.difference, 2)} at int4; p = {pval(tw8.p_value)} and {pval(tw4.p_value)})"
        if (w8 < 0).all() and (w4 < 0).all()
        else "weighted does not lower it in every seed"
    )
    tf = test("fairqat", "qat", "int4", "phi")
    v["qat_fq"] = (
        f"fairqat's {num(tf.difference, 2, sign=True)} is not significant (p = {pval(tf.p_value)})"
        if tf.p_value >= ALPHA
        else f"fairqat's {num(tf.difference, 2, sign=True)} has raw p = {pval(tf.p_value)}"
    )

    # --- balanced calibration
    bc = [test("balanced-calib", "ptq", p, "phi") for p in ("int8-a8", "int4-a8")]
    v["bc"] = (
        "changes nothing measurable"
        if all(t.p_value >= ALPHA for t in bc)
        else "changes φ(D) measurably"
    )
    v["bc_phi"] = " and ".join(num(t.difference, 3, sign=True) for t in bc)
    same = vs[(vs.mitigation == "balanced-calib") & ~vs.precision.str.endswith("-a8")]
    if not (same.difference.abs() < 1e-9).all():
        raise ValueError("balanced-calib differs from none where nothing is calibrated")

    # --- against the papers
    qat_wg = test("fairqat", "qat", "int4", "worst_group_accuracy")
    v["fq_qat_gain"] = num(qat_wg.difference, 1)
    v["fq_qat_wg"] = num(qat_wg.mean_candidate, 1)
    v["none_qat_wg"] = num(qat_wg.mean_baseline, 1)
    v["weighted_qat_wg"] = num(
        test("weighted", "qat", "int4", "worst_group_accuracy").mean_candidate, 1
    )
    v["fq_qat_cost"] = num(-test("fairqat", "qat", "int4", "accuracy").difference, 1)
    widths = {
        m: (lambda r: r.ci_high - r.ci_low)(cell(m, "qat", "int4", "accuracy"))
        for m in ("none", *TRAINING)
    }
    v["fq_least"] = (
        "varies least across seeds of any mitigation"
        if min(widths, key=widths.get) == "fairqat"
        else "does not vary least across seeds"
    )
    v["fq_qat_acc"] = _pm(cell("fairqat", "qat", "int4", "accuracy"), 1)
    v["fq_phi_sig"] = (
        "does not change significantly"
        if all(
            test("fairqat", meth, p, "phi").p_value >= ALPHA
            for meth, p in (("qat", "int8"), ("qat", "int4"))
        )
        else "changes under QAT at raw p < 0.05"
    )
    return v


STUDY = Study("mitigate-utkface", values)

if __name__ == "__main__":
    sys.exit(main(STUDY))
