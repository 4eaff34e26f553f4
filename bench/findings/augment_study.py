"""docs/findings/augment-study.md and the README's section from examples/augment-study/.

    python bench/findings/augment_study.py --check   # or --write

Reads ``trend.csv`` (mean and 95% Student-t interval across seeds), ``tests.csv`` (the paired
tests of each run directory with their Holm-adjusted p), ``curves.csv`` (validation accuracy per
epoch) and each length's ``config.yaml`` and ``results.csv``, all written by
``bench/augment_study.py``.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import pandas as pd
import yaml
from _page import Study, interval, main, num, pval, span, table, thousands, words

from fairquant.metrics import ALPHA, ALTERNATIVE, sign_flip_floor

DATA = "examples/augment-study"
SETTINGS = [("none", "fp32"), ("ptq", "int8"), ("ptq", "int4"), ("qat", "int8"), ("qat", "int4")]


def _setting(method: str, precision: str) -> str:
    return "fp32" if precision == "fp32" else f"{method.upper()} {precision}"


def _load(root: Path) -> dict:
    base = root / DATA
    trend = pd.read_csv(base / "trend.csv", dtype={"precision": str, "group": str})
    tests = pd.read_csv(base / "tests.csv", dtype={"precision": str})
    curves = pd.read_csv(base / "curves.csv")
    lengths = sorted(trend.length.unique())
    configs = {
        n: yaml.safe_load((base / f"epochs-{n}" / "config.yaml").read_text()) for n in lengths
    }
    results = pd.read_csv(base / f"epochs-{lengths[0]}" / "results.csv", dtype={"precision": str})
    return dict(
        trend=trend, tests=tests, curves=curves, lengths=lengths, configs=configs, results=results
    )


def _trend(trend: pd.DataFrame, length, mitigation, method, precision, metric, group="all"):
    sel = trend[
        (trend.length == length)
        & (trend.mitigation == mitigation)
        & (trend.method == method)
        & (trend.precision == precision)
        & (trend.metric == metric)
        & (trend.group == group)
    ]
    if len(sel) != 1:
        raise ValueError(f"trend.csv: {len(sel)} rows for {length, mitigation, method, precision}")
    return sel.iloc[0]


def _test(tests: pd.DataFrame, length, mitigation, method, precision, metric):
    sel = tests[
        (tests.length == length)
        & (tests.comparison == f"{mitigation} vs none")
        & (tests.method == method)
        & (tests.precision == precision)
        & (tests.metric == metric)
    ]
    if len(sel) != 1:
        raise ValueError(f"tests.csv: {len(sel)} rows for {length, mitigation, method, precision}")
    return sel.iloc[0]


def values(root: Path) -> dict[str, str]:
    d = _load(root)
    trend, tests, curves, lengths, configs = (
        d["trend"],
        d["tests"],
        d["curves"],
        d["lengths"],
        d["configs"],
    )
    cfg = configs[lengths[0]]
    mitigations = list(cfg["mitigations"])
    others = [m for m in mitigations if m != "none"]
    seeds = len(cfg["seeds"])
    v: dict[str, str] = {}
    v["n_lengths"] = {2: "two", 3: "three", 4: "four"}.get(len(lengths), str(len(lengths)))
    v["lengths"] = words([str(n) for n in lengths])
    v["train_limit"] = thousands(cfg["datasets"][0]["options"]["limit"]["train"])
    v["val_pct"] = f"{cfg['training']['val_size'] * 100:.0f}"
    res = d["results"]
    n = res[(res.metric == "n") & (res.precision == "fp32") & (res.seed == res.seed.min())]
    n = n[n.mitigation == "none"].set_index("group").value
    v["n_test"] = thousands(n["all"])
    v["width"] = str(cfg["models"][0]["width"])
    v["image_size"] = str(cfg["datasets"][0]["image_size"])
    v["qat_epochs"] = str(next(m["epochs"] for m in cfg["methods"] if m["name"] == "qat"))
    v["seeds"] = str(seeds)
    per_length = tests.groupby("length").size()
    if per_length.nunique() != 1:
        raise ValueError(f"tests.csv: different numbers of comparisons per length {per_length}")
    v["n_comparisons"] = str(per_length.iloc[0])
    v["alpha"] = f"{ALPHA:g}"
    qat_precisions = [p for p in cfg["precisions"] if p != "fp32"]
    v["n_trainings"] = str(len(lengths) * len(mitigations) * seeds * (1 + len(qat_precisions)))

    # --- the φ(D) table: every mitigation against none, per length, method and precision
    rows = []
    for length in lengths:
        for method in ("ptq", "qat"):
            for precision in qat_precisions:
                row = [str(length), method, precision]
                for m in mitigations:
                    t = _trend(trend, length, m, method, precision, "phi")
                    row.append(interval(t.value, t.ci_low, t.ci_high, 3))
                for m in others:
                    t = _test(tests, length, m, method, precision, "phi")
                    row.append(
                        f"{num(t.difference, 3, sign=True)}, {pval(t.p_value)}, {pval(t.p_holm)}"
                    )
                rows.append(row)
    head = ["epochs", "method", "precision", *mitigations]
    head += [f"{m} − none: diff, p, p Holm" for m in others]
    v["phi_table"] = table(head, rows)

    # --- fp32 accuracy and worst-group accuracy
    rows = []
    for length in lengths:
        row = [str(length)]
        for metric in ("accuracy", "worst_group_accuracy"):
            for m in mitigations:
                t = _trend(trend, length, m, "none", "fp32", metric)
                row.append(interval(t.value, t.ci_low, t.ci_high, 1))
        rows.append(row)
    head = ["epochs", *(f"{m} accuracy" for m in mitigations)]
    head += [f"{m} worst group" for m in mitigations]
    v["accuracy_table"] = table(head, rows)

    # --- validation curves at the longest length: final accuracy and gain over the last third
    longest = lengths[-1]
    c = curves[curves.length == longest]

    def last_third(part: pd.DataFrame) -> pd.Series:
        part = part.sort_values("epoch")
        third = part.val_accuracy.iloc[max(0, len(part) - 1 - max(1, len(part) // 3))]
        return pd.Series(
            {"final": part.val_accuracy.iloc[-1], "gain": part.val_accuracy.iloc[-1] - third}
        )

    per_seed = c.groupby(["mitigation", "seed"])[["epoch", "val_accuracy"]].apply(last_third)
    mean = per_seed.groupby("mitigation").mean()
    v["longest"] = str(longest)
    v["curve_final"] = words([f"{m} {num(mean.final[m], 1)} %" for m in mitigations])
    if not (mean.gain > 0).all():
        raise ValueError("curves.csv: validation accuracy no longer rises over the last third")
    v["curve_gain"] = span(mean.gain, 1)
    v["third"] = str(max(1, longest // 3))

    # --- what reproduces: φ(D) against none
    phi = tests[(tests.metric == "phi") & tests.comparison.str.endswith(" vs none")]
    lowered = phi[(phi.difference < 0) & (phi.p_holm < ALPHA)]
    v["phi_lowered"] = (
        "at no length and no precision does "
        + words(others, "or")
        + " lower φ(D) significantly after Holm"
        if lowered.empty
        else "φ(D) is lowered significantly after Holm in "
        + words(
            [
                f"{r.mitigation} at {r.length} epochs, {_setting(r.method, r.precision)}"
                for r in lowered.itertuples()
            ]
        )
    )
    ptq4 = phi[(phi.method == "ptq") & (phi.precision == "int4")]
    raised = (ptq4.difference > 0).all()
    best = ptq4.loc[ptq4.p_value.idxmin()]
    at_best = ptq4[ptq4.length == best.length].set_index("mitigation")
    v["ptq4_direction"] = (
        f"at PTQ int4 {'both' if len(others) == 2 else 'all'} raise it on average at every length"
        if raised
        else "at PTQ int4 the average change has no common sign"
    )
    v["ptq4_detail"] = f"{best.length} epochs: " + "; ".join(
        f"{m} {num(at_best.difference[m], 2, sign=True)}, raw p = {pval(at_best.p_value[m])}"
        for m in others
    )
    v["ptq4_holm"] = (
        f"none survives Holm over each length's {v['n_comparisons']} comparisons"
        if (ptq4.p_holm >= ALPHA).all()
        else "some survive Holm"
    )

    # --- the worst group
    fp32 = trend[
        (trend.precision == "fp32") & (trend.group != "all") & (trend.metric == "accuracy")
    ]
    worst = fp32[fp32.mitigation == "none"].groupby("group").value.mean().idxmin()
    v["worst_group"] = worst
    v["worst_n"] = thousands(n[worst])
    wg = {
        m: [_trend(trend, n_, m, "none", "fp32", "worst_group_accuracy").value for n_ in lengths]
        for m in mitigations
    }
    v["none_worst"] = span(wg["none"], 1, unit=" %")
    v["gt_worst"] = span(wg["gt"], 1, unit=" %")
    v["re_worst"] = span(wg["re"], 1, unit=" %")
    lift = tests[(tests.metric == "worst_group_accuracy") & (tests.comparison == "gt vs none")]
    if not (lift[lift.precision == "fp32"].ci_low > 0).all():
        raise ValueError("tests.csv: gt's fp32 worst-group lift is not above 0 at every length")
    fp32_lift = lift[lift.precision == "fp32"].set_index("length")
    sig_lengths = [n_ for n_ in lengths if fp32_lift.p_holm[n_] < ALPHA]
    not_lengths = [n_ for n_ in lengths if n_ not in sig_lengths]
    v["gt_fp32_holm"] = (
        f"significant after Holm at fp32 at {words([str(x) for x in sig_lengths])} epochs "
        f"(p_Holm {words([pval(fp32_lift.p_holm[x]) for x in sig_lengths])})"
        if sig_lengths
        else "significant after Holm at fp32 at no length"
    ) + (
        f", not at {words([str(x) for x in not_lengths])} "
        f"(p_Holm {words([pval(fp32_lift.p_holm[x]) for x in not_lengths])})"
        if not_lengths and sig_lengths
        else ""
    )
    counts = []
    for n_ in lengths:
        k = sum(
            _test(tests, n_, "gt", m, p, "worst_group_accuracy").p_holm < ALPHA for m, p in SETTINGS
        )
        counts.append(f"{k} at {n_} epochs")
    v["gt_settings_holm"] = words(counts)
    v["n_settings"] = str(len(SETTINGS))
    never = [
        (m, p)
        for m, p in SETTINGS
        if all(
            _test(tests, n_, "gt", m, p, "worst_group_accuracy").p_holm >= ALPHA for n_ in lengths
        )
    ]
    v["gt_never"] = (
        "; it never survives at "
        + words(
            [
                f"{_setting(m, p)} (p_Holm "
                + span(
                    [_test(tests, n_, "gt", m, p, "worst_group_accuracy").p_holm for n_ in lengths],
                    2,
                    minus="-",
                )
                + ")"
                for m, p in never
            ]
        )
        if never
        else ""
    )
    re_lift = tests[(tests.metric == "worst_group_accuracy") & (tests.comparison == "re vs none")]
    v["re_holm"] = (
        "in no setting at any length" if (re_lift.p_holm >= ALPHA).all() else "in some settings"
    )

    # --- the cost in overall accuracy
    acc = tests[(tests.metric == "accuracy") & (tests.precision == "fp32")]
    parts = []
    for n_ in lengths:
        t = acc[(acc.length == n_) & (acc.comparison == "gt vs none")].iloc[0]
        if t.ci_high < 0:
            parts.append(
                f"falls by {interval(-t.difference, -t.ci_high, -t.ci_low, 1)} points at {n_} "
                f"epochs (raw p {pval(t.p_value)}, {pval(t.p_holm)} after Holm)"
            )
        else:
            parts.append(
                f"changes by {interval(t.difference, t.ci_low, t.ci_high, 1, sign=True)} at {n_}"
            )
    v["gt_cost"] = words(parts)
    re_acc = acc[acc.comparison == "re vs none"]
    v["re_cost"] = (
        "re shows no loss at any length"
        if (re_acc.ci_high >= 0).all()
        else "re also costs accuracy at some length"
    ) + f" (change {span(re_acc.difference, 1, sign=True)} points, no 95 % interval wholly below 0)"

    # --- the trend with training length at PTQ int4, and int8
    seqs, grows = [], True
    for m in mitigations:
        means = [_trend(trend, n_, m, "ptq", "int4", "phi").value for n_ in lengths]
        grows &= all(a < b for a, b in pairwise(means))
        seqs.append(f"{m} " + " → ".join(num(x, 2) for x in means))
    v["trend_phrase"] = (
        "grows with longer training for every mitigation"
        if grows
        else "does not grow with training length for every mitigation"
    )
    v["trend_seqs"] = "; ".join(seqs)
    int8 = trend[(trend.metric == "phi") & (trend.precision == "int8") & (trend.method == "ptq")]
    v["int8_span"] = span(int8.value, 3)
    floor = Fraction(sign_flip_floor(seeds, ALTERNATIVE)).limit_denominator(1 << 20)
    v["sign_flip_floor"] = f"{floor.numerator}/{floor.denominator}"

    # --- README cells: PTQ int4 φ(D) (raw p and Holm where the raw p is below α) and fp32
    # worst-group accuracy
    rows = []
    for length in lengths:
        row = [str(length)]
        for m in mitigations:
            t = _trend(trend, length, m, "ptq", "int4", "phi")
            cell = interval(t.value, t.ci_low, t.ci_high, 2)
            if m != "none":
                s = _test(tests, length, m, "ptq", "int4", "phi")
                if s.p_value < ALPHA:
                    cell += f" (p {pval(s.p_value)}, Holm {pval(s.p_holm)})"
            row.append(cell)
        for m in mitigations:
            t = _trend(trend, length, m, "none", "fp32", "worst_group_accuracy")
            row.append(interval(t.value, t.ci_low, t.ci_high, 1))
        rows.append(row)
    head = ["epochs", *(f"φ(D) PTQ int4: {m}" if m == "none" else m for m in mitigations)]
    head += [f"worst-group fp32 accuracy (%): {m}" if m == "none" else m for m in mitigations]
    v["readme_table"] = table(head, rows)
    return v


STUDY = Study("augment-study", values, readme=True)

if __name__ == "__main__":
    sys.exit(main(STUDY))
