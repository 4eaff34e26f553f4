"""What a run shows and how sure it is: numbers over seeds, and the tests behind each claim.

Two kinds of interval, never mixed up: with two or more training seeds a number is the mean
over seeds with its Student-t interval (:func:`~fairquant.metrics.uncertainty.across_seeds`,
training noise); with one seed it is that seed's group-stratified bootstrap interval over test
samples (test-set noise only).

A comparison ("φ(D) is larger at int4 than at int8", "QAT is fairer than PTQ", "oversampling
lowers φ(D)") is *tested* only with two or more seeds: a paired sign-flip permutation test
across seeds (:func:`~fairquant.metrics.uncertainty.paired_seed_test`). From one seed's rows of
``results.csv`` there is no paired test (the bootstrap replicates are not stored); the report
then only says whether the two bootstrap intervals overlap, which is weaker evidence and never
called significant.

φ(D) = max_a G(a) - min_a G(a) with G(a) the excess loss over fp32, so φ(D) at fp32 is 0 by
definition and "φ(D) larger than at fp32" would hold trivially. Precisions are therefore
compared with fp32 on the worst-group accuracy and the accuracy gap, and φ(D) of each precision
with the next higher precision of the same method.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd

from fairquant.metrics.frame import ALL
from fairquant.metrics.uncertainty import across_seeds, paired_seed_test

#: The significance level a test's p-value is compared with.
ALPHA = 0.05
#: Keys of one number in a summary (``seed`` averaged out).
SUMMARY_KEYS = ["dataset", "model", "mitigation", "method", "precision", "bits", "group", "metric"]
#: Keys of one audited model (fp32 and its quantized copies).
CELL = ["dataset", "model", "mitigation"]
#: (metric, the direction that means "worse", words) compared against fp32.
AGAINST_FP32 = (
    ("worst_group_accuracy", "less", "worst-group accuracy"),
    ("accuracy_gap", "greater", "accuracy gap between groups"),
)
FINDING_COLUMNS = [
    "dataset",
    "model",
    "mitigation",
    "comparison",
    "metric",
    "alternative",
    "baseline",
    "candidate",
    "n_seeds",
    "test",
    "mean_baseline",
    "mean_candidate",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "min_p_value",
    "significant",
    "verdict",
    "text",
]


def summarise(results: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """One row per number of ``results`` over seeds: :data:`SUMMARY_KEYS`, ``n_seeds``,
    ``value`` (mean over seeds), ``ci_low``, ``ci_high`` and ``interval`` (``"seeds"``: Student-t
    across seeds; ``"bootstrap"``: one seed's bootstrap interval; ``"none"``: one seed audited
    without intervals)."""
    counts = results.groupby(SUMMARY_KEYS, sort=False).seed.nunique().rename("n_seeds")
    out = results.join(counts, on=SUMMARY_KEYS)
    single = out[out.n_seeds == 1].drop(columns="seed")
    single = single.assign(
        interval=np.where(single.ci_low.isna(), "none", "bootstrap"),
    )
    frames = [single]
    multi = out[out.n_seeds > 1]
    if not multi.empty:
        stats = across_seeds(multi[[*SUMMARY_KEYS, "seed", "value"]], confidence=confidence).rename(
            columns={"mean": "value"}
        )
        frames.append(stats.drop(columns="std").assign(interval="seeds"))
    summary = pd.concat(frames, ignore_index=True)
    # keep the order in which results.csv lists the numbers
    order = results.drop_duplicates(SUMMARY_KEYS)[SUMMARY_KEYS].reset_index(drop=True)
    order["_order"] = np.arange(len(order))
    summary = summary.merge(order, on=SUMMARY_KEYS).sort_values("_order", kind="stable")
    return summary[
        [*SUMMARY_KEYS, "n_seeds", "value", "ci_low", "ci_high", "interval"]
    ].reset_index(drop=True)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def _label(selection: dict[str, object]) -> str:
    """``fp32``, ``ptq int4``, ``over: qat int8``."""
    text = str(selection["precision"])
    if selection.get("method", "none") != "none":
        text = f"{selection['method']} {text}"
    if "mitigation" in selection:
        text = f"{selection['mitigation']}: {text}"
    return text


def _compare(
    results: pd.DataFrame,
    *,
    metric: str,
    where: dict[str, object],
    baseline: dict[str, object],
    candidate: dict[str, object],
    alternative: str,
    comparison: str,
    mitigation: str,
    words: str,
) -> dict | None:
    """One comparison of ``metric`` (group ``all``) between two selections of one cell."""
    rows = results[(results.metric == metric) & (results.group == ALL)]
    for column, value in where.items():
        rows = rows[rows[column] == value]

    def pick(selection: dict[str, object]) -> pd.DataFrame:
        mask = np.ones(len(rows), dtype=bool)
        for column, value in selection.items():
            mask &= (rows[column] == value).to_numpy()
        return rows[mask]

    a, b = pick(baseline), pick(candidate)
    if a.empty or b.empty:
        return None
    seeds = sorted(set(a.seed) & set(b.seed))
    base = {
        "dataset": where["dataset"],
        "model": where["model"],
        "mitigation": mitigation,
        "comparison": comparison,
        "metric": metric,
        "alternative": alternative,
        "baseline": _label(baseline),
        "candidate": _label(candidate),
        "n_seeds": len(seeds),
    }
    worse = "larger" if alternative == "greater" else "smaller"
    if len(seeds) >= 2:
        test = paired_seed_test(
            rows[rows.seed.isin(seeds)],
            metric,
            baseline=baseline,
            candidate=candidate,
            alternative=alternative,  # type: ignore[arg-type]
        )
        significant = test.p_value < ALPHA
        kind = "one-sided" if alternative != "two-sided" else "two-sided"
        question = (
            f"Is {words} {worse} at {base['candidate']} than at {base['baseline']}?"
            if alternative != "two-sided"
            else f"Does {words} differ between {base['candidate']} and {base['baseline']}?"
        )
        verdict = "significant" if significant else "not significant"
        floor = (
            f" ({test.n_seeds} seeds cannot give p below {test.min_p_value:.3g})"
            if test.min_p_value >= ALPHA
            else ""
        )
        text = (
            f"{question} {_fmt(test.mean_candidate)} vs {_fmt(test.mean_baseline)}, difference "
            f"{test.difference:+.3g} (95% CI across seeds {test.ci_low:+.3g} to "
            f"{test.ci_high:+.3g}); p = {test.p_value:.3g}, {kind} paired sign-flip test over "
            f"{test.n_seeds} seeds: {verdict}{floor}."
        )
        return {
            **base,
            "test": f"paired sign-flip permutation, {kind}",
            "mean_baseline": test.mean_baseline,
            "mean_candidate": test.mean_candidate,
            "difference": test.difference,
            "ci_low": test.ci_low,
            "ci_high": test.ci_high,
            "p_value": test.p_value,
            "min_p_value": test.min_p_value,
            "significant": significant,
            "verdict": verdict,
            "text": text,
        }
    # one seed in common: only the bootstrap intervals of the two numbers are at hand
    seed = seeds[0] if seeds else None
    ra = a[a.seed == seed].iloc[0] if seed is not None else a.iloc[0]
    rb = b[b.seed == seed].iloc[0] if seed is not None else b.iloc[0]
    if np.isnan([ra.ci_low, ra.ci_high, rb.ci_low, rb.ci_high]).any():
        verdict = "not assessed"
        evidence = "no intervals were computed (audited with --bootstrap 0): not assessed"
    elif rb.ci_low > ra.ci_high or rb.ci_high < ra.ci_low:
        verdict = "intervals apart (no test)"
        evidence = (
            "their 95% bootstrap intervals do not overlap (weaker evidence than a paired "
            "test: one seed, test-set noise only; not called significant)"
        )
    else:
        verdict = "intervals overlap"
        evidence = "their 95% bootstrap intervals overlap: no evidence of a difference"
    text = (
        f"{words[0].upper()}{words[1:]}: {_fmt(rb.value)} [{_fmt(rb.ci_low)}, "
        f"{_fmt(rb.ci_high)}] for "
        f"{base['candidate']} vs {_fmt(ra.value)} [{_fmt(ra.ci_low)}, {_fmt(ra.ci_high)}] for "
        f"{base['baseline']}; {evidence}."
    )
    return {
        **base,
        "n_seeds": len(seeds),
        "test": "bootstrap intervals compared (no test)",
        "mean_baseline": float(ra.value),
        "mean_candidate": float(rb.value),
        "difference": float(rb.value - ra.value),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "p_value": float("nan"),
        "min_p_value": float("nan"),
        "significant": False,
        "verdict": verdict,
        "text": text,
    }


def _precisions(part: pd.DataFrame, method: str) -> list[str]:
    """The precisions of ``method`` in ``part``, highest bits first (order of appearance on
    ties)."""
    here = part[part.method == method].drop_duplicates("precision")
    return list(here.sort_values("bits", ascending=False, kind="stable").precision)


def _comparisons(results: pd.DataFrame) -> Iterator[dict]:
    quantized = results[results.method != "none"]
    for (dataset, model, mitigation), part in results.groupby(CELL, sort=False):
        where = {"dataset": dataset, "model": model, "mitigation": mitigation}
        fp32 = {"method": "none", "precision": "fp32"}
        for method in part[part.method != "none"].method.unique():
            names = _precisions(part, method)
            for name in names:
                for metric, alternative, words in AGAINST_FP32:
                    yield _compare(
                        part,
                        metric=metric,
                        where=where,
                        baseline=fp32,
                        candidate={"method": method, "precision": name},
                        alternative=alternative,
                        comparison=f"{method} vs fp32",
                        mitigation=mitigation,
                        words=words,
                    )
            for higher, lower in itertools.pairwise(names):
                yield _compare(
                    part,
                    metric="phi",
                    where=where,
                    baseline={"method": method, "precision": higher},
                    candidate={"method": method, "precision": lower},
                    alternative="greater",
                    comparison=f"lower precision ({method})",
                    mitigation=mitigation,
                    words="φ(D)",
                )
        if {"ptq", "qat"} <= set(part.method):
            for name in _precisions(part, "qat"):
                if name in set(part[part.method == "ptq"].precision):
                    yield _compare(
                        part,
                        metric="phi",
                        where=where,
                        baseline={"method": "ptq", "precision": name},
                        candidate={"method": "qat", "precision": name},
                        alternative="two-sided",
                        comparison="QAT vs PTQ",
                        mitigation=mitigation,
                        words="φ(D)",
                    )
    mitigations = list(results.mitigation.unique())
    if "none" in mitigations and len(mitigations) > 1:
        for (dataset, model), part in quantized.groupby(["dataset", "model"], sort=False):
            for mitigation in (m for m in mitigations if m != "none"):
                for method, precision in (
                    part[["method", "precision"]].drop_duplicates().itertuples(index=False)
                ):
                    for metric, words in (
                        ("phi", "φ(D)"),
                        ("worst_group_accuracy", "worst-group accuracy"),
                    ):
                        yield _compare(
                            part,
                            metric=metric,
                            where={"dataset": dataset, "model": model},
                            baseline={
                                "mitigation": "none",
                                "method": method,
                                "precision": precision,
                            },
                            candidate={
                                "mitigation": mitigation,
                                "method": method,
                                "precision": precision,
                            },
                            alternative="two-sided",
                            comparison=f"{mitigation} vs none",
                            mitigation=mitigation,
                            words=words,
                        )


def findings(results: pd.DataFrame) -> pd.DataFrame:
    """Every comparison the report states, with its test (module docstring), one row each.

    Per dataset and model: each quantized precision against fp32 (worst-group accuracy, accuracy
    gap), φ(D) of each precision against the next higher one of the same method, QAT against
    PTQ at each precision both have, and each mitigation against ``none`` at each method and
    precision (φ(D), worst-group accuracy). ``significant`` is true only for a paired test
    across seeds with ``p < ALPHA``; no correction for multiple comparisons is made.
    """
    rows = [r for r in _comparisons(results) if r is not None]
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)


_WORSE = {"greater": "larger", "less": "smaller"}
_METRIC_WORDS = {
    "phi": "φ(D)",
    "worst_group_accuracy": "worst-group accuracy",
    "accuracy_gap": "accuracy gap",
}


def summary_words(metric: str) -> str:
    """How a metric is named in sentences (``phi`` -> ``φ(D)``)."""
    return _METRIC_WORDS.get(metric, metric)


def headlines(table: pd.DataFrame) -> list[str]:
    """Plain-word lines of :func:`findings` for one dataset and model: per kind of comparison
    and metric, in how many cases the difference went which way and how many were significant.

    >>> rows = pd.DataFrame({"comparison": ["QAT vs PTQ"] * 2, "metric": ["phi"] * 2,
    ...     "alternative": ["two-sided"] * 2, "difference": [-0.1, 0.2],
    ...     "significant": [False, False], "test": ["paired"] * 2})
    >>> headlines(rows)
    ['QAT vs PTQ, φ(D): lower in 1 of 2, higher in 1 (none significant).']
    """
    lines = []
    for (comparison, metric, alternative), part in table.groupby(
        ["comparison", "metric", "alternative"], sort=False
    ):
        n, d = len(part), part.difference.to_numpy(dtype=float)
        significant = int(part.significant.sum())
        tested = part.test.str.startswith("paired").any()
        verdict = (
            f"{significant} significant"
            if significant
            else ("none significant" if tested else "no paired test: one seed")
        )
        words = summary_words(metric)
        if alternative in _WORSE:
            worse = int((d > 0).sum() if alternative == "greater" else (d < 0).sum())
            lines.append(
                f"{comparison}, {words}: {_WORSE[alternative]} in {worse} of {n} ({verdict})."
            )
        else:
            lower, higher = int((d < 0).sum()), int((d > 0).sum())
            lines.append(
                f"{comparison}, {words}: lower in {lower} of {n}, higher in {higher} ({verdict})."
            )
    return lines
