"""Every comparison a run directory's numbers support, each with its test: one family.

``fairquant mitigate`` (its ``tests.csv`` and paired-tests table) and ``fairquant report`` (its
findings) both call :func:`findings` on the run directory's ``results.csv``, so they state the
same comparisons with the same p-values. Per dataset and model:

- each quantized precision against fp32 of the same model: worst-group accuracy and the accuracy
  gap. φ(D) = max_a G(a) - min_a G(a) with G(a) the excess loss over fp32 is 0 at fp32 by
  definition, so "φ(D) differs from fp32" would hold trivially; instead
- φ(D) of each precision against the next higher precision of the same method;
- QAT against PTQ at each precision both have: φ(D);
- each mitigation against ``none`` at each method and precision ``none`` has: overall accuracy,
  worst-group accuracy and (not at fp32) φ(D). A mitigation that runs another precision
  (FairQAT's ``int4-fl8`` where ``int4`` was asked) is lined up with the requested one.

The test follows :mod:`fairquant.metrics.policy`: with two or more seeds in common, the paired
t-test across seeds (:func:`~fairquant.metrics.uncertainty.paired_seed_test`, two-sided; its
exact sign-flip p-value beside it, and in its place where every seed gave the same difference),
its p-values adjusted by Holm's method over every tested
comparison of the run directory, and a comparison is significant when the adjusted p-value is
below ``ALPHA``. From one seed's rows there is no paired test (``results.csv`` stores no
bootstrap replicates): the two numbers' bootstrap intervals are compared, which is weaker
evidence and never called significant. ``docs/statistics.md`` says what the test assumes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd

from fairquant.errors import ConfigError
from fairquant.metrics.policy import ALTERNATIVE, CONFIDENCE, holm, significant
from fairquant.metrics.uncertainty import paired_seed_test
from fairquant.mitigate.pipeline import parse_mitigation
from fairquant.quant.precision import parse_precision

__all__ = ["COLUMNS", "INTERVAL_TEST", "SEED_TESTED", "findings"]

ALL = "all"
#: The columns of :func:`findings` (and of a mitigation comparison's ``tests.csv``).
COLUMNS = [
    "dataset",
    "model",
    "comparison",
    "mitigation",
    "method",
    "precision",
    "metric",
    "baseline",
    "candidate",
    "n_seeds",
    "test",
    "alternative",
    "mean_baseline",
    "mean_candidate",
    "difference",
    "ci_low",
    "ci_high",
    "effect_size",
    "p_from",
    "p_value",
    "p_sign_flip",
    "p_holm",
    "significant",
    "verdict",
    "text",
]
#: ``test`` of a comparison with one seed in common: no test, two intervals compared.
INTERVAL_TEST = "bootstrap intervals compared (no test)"
#: ``test`` of a comparison tested across seeds; ``p_from`` says by which test: the paired
#: t-test, or the exact sign-flip test where every seed gave the same difference.
SEED_TESTED = "paired test across seeds, two-sided"
_WORDS = {
    "phi": "φ(D)",
    "accuracy": "overall accuracy",
    "worst_group_accuracy": "worst-group accuracy",
    "accuracy_gap": "accuracy gap",
}
#: Where a sentence names a metric at more length than a table or a headline does.
_SENTENCE_WORDS = {"accuracy_gap": "accuracy gap between groups"}


def metric_words(metric: str, *, sentence: bool = False) -> str:
    """How ``metric`` is named in words (``phi`` -> ``φ(D)``): in a table or a headline, or at
    more length in a ``sentence`` (the finding's ``text``)."""
    if sentence and metric in _SENTENCE_WORDS:
        return _SENTENCE_WORDS[metric]
    return _WORDS.get(metric, metric)


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


def _pick(rows: pd.DataFrame, selection: dict[str, object]) -> pd.DataFrame:
    mask = np.ones(len(rows), dtype=bool)
    for column, value in selection.items():
        mask &= (rows[column] == value).to_numpy()
    return rows[mask]


def _compare(
    rows: pd.DataFrame,
    *,
    metric: str,
    baseline: dict[str, object],
    candidate: dict[str, object],
    comparison: str,
    mitigation: str,
) -> dict | None:
    """One comparison of ``metric`` (group ``all``) between two selections of ``rows`` (one
    dataset and model); ``None`` when either has no rows."""
    rows = rows[(rows.metric == metric) & (rows.group == ALL)]
    a, b = _pick(rows, baseline), _pick(rows, candidate)
    if a.empty or b.empty:
        return None
    seeds = sorted(set(a.seed) & set(b.seed))
    base = {
        "dataset": rows.dataset.iloc[0],
        "model": rows.model.iloc[0],
        "comparison": comparison,
        "mitigation": mitigation,
        "method": candidate["method"],
        "precision": candidate["precision"],
        "metric": metric,
        "baseline": _label(baseline),
        "candidate": _label(candidate),
        "n_seeds": len(seeds),
        "alternative": ALTERNATIVE,
    }
    if len(seeds) >= 2:
        test = paired_seed_test(
            rows[rows.seed.isin(seeds)], metric, baseline=baseline, candidate=candidate
        )
        return {
            **base,
            "test": SEED_TESTED,
            "mean_baseline": test.mean_baseline,
            "mean_candidate": test.mean_candidate,
            "difference": test.difference,
            "ci_low": test.ci_low,
            "ci_high": test.ci_high,
            "effect_size": test.effect_size,
            "p_from": test.test,
            "p_value": test.p_value,
            "p_sign_flip": test.p_sign_flip,
        }
    # one seed in common: only the bootstrap intervals of the two numbers are at hand
    ra = a[a.seed == seeds[0]].iloc[0] if seeds else a.iloc[0]
    rb = b[b.seed == seeds[0]].iloc[0] if seeds else b.iloc[0]
    words = metric_words(metric, sentence=True)
    level = f"{CONFIDENCE:.0%}"
    if np.isnan([ra.ci_low, ra.ci_high, rb.ci_low, rb.ci_high]).any():
        verdict = "not assessed"
        evidence = "no intervals were computed (audited with --bootstrap 0): not assessed"
    elif rb.ci_low > ra.ci_high or rb.ci_high < ra.ci_low:
        verdict = "intervals apart (no test)"
        evidence = (
            f"their {level} bootstrap intervals do not overlap (weaker evidence than a paired "
            "test: one seed, test-set noise only; not called significant)"
        )
    else:
        verdict = "intervals overlap"
        evidence = f"their {level} bootstrap intervals overlap: no evidence of a difference"
    text = (
        f"{words[0].upper()}{words[1:]}: {_fmt(rb.value)} [{_fmt(rb.ci_low)}, "
        f"{_fmt(rb.ci_high)}] for {base['candidate']} vs {_fmt(ra.value)} [{_fmt(ra.ci_low)}, "
        f"{_fmt(ra.ci_high)}] for {base['baseline']}; {evidence}."
    )
    return {
        **base,
        "test": INTERVAL_TEST,
        "mean_baseline": float(ra.value),
        "mean_candidate": float(rb.value),
        "difference": float(rb.value - ra.value),
        "ci_low": np.nan,
        "ci_high": np.nan,
        "effect_size": np.nan,
        "p_from": np.nan,
        "p_value": np.nan,
        "p_sign_flip": np.nan,
        "verdict": verdict,
        "text": text,
    }


def _precisions(part: pd.DataFrame, method: str) -> list[str]:
    """The precisions of ``method`` in ``part``, highest bits first (order of appearance on
    ties)."""
    here = part[part.method == method].drop_duplicates("precision")
    return list(here.sort_values("bits", ascending=False, kind="stable").precision)


def _run_precision(mitigation: str, precision: str) -> str:
    """The precision ``mitigation`` ran for a requested ``precision`` (FairQAT: ``int4`` runs
    as ``int4-fl8``); the same name for a mitigation or precision fairquant does not know."""
    try:
        return parse_mitigation(mitigation).precision(parse_precision(precision)).name
    except ConfigError:
        return precision


def _within_cell(part: pd.DataFrame, mitigation: str) -> Iterator[dict | None]:
    fp32 = {"method": "none", "precision": "fp32"}
    methods = [m for m in part.method.unique() if m != "none"]
    for method in methods:
        names = _precisions(part, method)
        for name in names:
            for metric in ("worst_group_accuracy", "accuracy_gap"):
                yield _compare(
                    part,
                    metric=metric,
                    baseline=fp32,
                    candidate={"method": method, "precision": name},
                    comparison=f"{method} vs fp32",
                    mitigation=mitigation,
                )
        for higher, lower in itertools.pairwise(names):
            yield _compare(
                part,
                metric="phi",
                baseline={"method": method, "precision": higher},
                candidate={"method": method, "precision": lower},
                comparison=f"lower precision ({method})",
                mitigation=mitigation,
            )
    if {"ptq", "qat"} <= set(methods):
        ptq = set(part[part.method == "ptq"].precision)
        for name in (n for n in _precisions(part, "qat") if n in ptq):
            yield _compare(
                part,
                metric="phi",
                baseline={"method": "ptq", "precision": name},
                candidate={"method": "qat", "precision": name},
                comparison="QAT vs PTQ",
                mitigation=mitigation,
            )


def _against_none(part: pd.DataFrame) -> Iterator[dict | None]:
    none = part[part.mitigation == "none"]
    cells = none[["method", "precision"]].drop_duplicates().itertuples(index=False)
    cells = list(cells)
    for mitigation in (m for m in part.mitigation.unique() if m != "none"):
        for method, precision in cells:
            for metric in ("phi", "accuracy", "worst_group_accuracy"):
                if metric == "phi" and method == "none":
                    continue  # φ(D) is 0 at fp32 by definition
                yield _compare(
                    part,
                    metric=metric,
                    baseline={"mitigation": "none", "method": method, "precision": precision},
                    candidate={
                        "mitigation": mitigation,
                        "method": method,
                        "precision": _run_precision(mitigation, precision),
                    },
                    comparison=f"{mitigation} vs none",
                    mitigation=mitigation,
                )


def _comparisons(results: pd.DataFrame) -> Iterator[dict | None]:
    for _, part in results.groupby(["dataset", "model"], sort=False):
        for mitigation, cell in part.groupby("mitigation", sort=False):
            yield from _within_cell(cell, str(mitigation))
        yield from _against_none(part)


def _tested_text(r: pd.Series, verdict: str, family: int) -> str:
    words = metric_words(r.metric, sentence=True)
    return (
        f"Does {words} differ between {r.candidate} and {r.baseline}? {_fmt(r.mean_candidate)} "
        f"vs {_fmt(r.mean_baseline)}, difference {r.difference:+.3g} ({CONFIDENCE:.0%} CI "
        f"across seeds {r.ci_low:+.3g} to {r.ci_high:+.3g}); p = {r.p_value:.3g}, two-sided "
        f"{r.p_from} over {r.n_seeds} seeds (sign-flip p = {r.p_sign_flip:.3g}); Holm over the "
        f"{family} tested comparisons of this run: p = {r.p_holm:.3g}, {verdict}."
    )


def findings(results: pd.DataFrame) -> pd.DataFrame:
    """Every comparison of a run directory's ``results`` (module docstring), one row each
    (:data:`COLUMNS`): the two means, their difference with its interval across seeds, the
    paired t-test's p-value, the sign-flip p-value, the Holm-adjusted p-value over the run
    directory's tested comparisons, whether that is below ``ALPHA`` (``significant``), a
    ``verdict`` and a sentence (``text``).

    ``results`` has the run-directory columns of ``results.csv`` (``dataset``, ``model``,
    ``mitigation``, ``seed``, ``method``, ``precision``, ``bits``, ``group``, ``metric``,
    ``value``, ``ci_low``, ``ci_high``).
    """
    table = pd.DataFrame([r for r in _comparisons(results) if r is not None], columns=COLUMNS)
    tested = table.test == SEED_TESTED
    table["p_holm"] = holm(table.p_value.where(tested).to_numpy(dtype=np.float64))
    table["significant"] = significant(table.p_holm.to_numpy())
    family = int(tested.sum())
    verdict, text = table.verdict.astype(object), table.text.astype(object)
    for i, r in table[tested].iterrows():
        verdict[i] = "significant" if r.significant else "not significant"
        text[i] = _tested_text(r, verdict[i], family)
    table["verdict"], table["text"] = verdict, text
    return table
