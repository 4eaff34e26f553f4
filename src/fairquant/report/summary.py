"""What a run shows and how sure it is, in words.

The numbers come from the one across-seed summary
(:func:`~fairquant.metrics.uncertainty.across_seeds`: with two or more training seeds the mean
with its Student-t interval across seeds, with one seed that seed's bootstrap interval over test
samples) and the comparisons from :func:`~fairquant.experiments.findings.findings` (the paired
t-test across seeds, Holm-adjusted over the run directory, as ``fairquant mitigate`` prints
them). This module writes the sentences the report leads with.
"""

from __future__ import annotations

import pandas as pd

from fairquant.experiments.findings import INTERVAL_TEST, SEED_TESTED, metric_words
from fairquant.metrics.policy import ALPHA, CONFIDENCE, CORRECTION

#: Keys of one audited model (fp32 and its quantized copies).
CELL = ["dataset", "model", "mitigation"]

_WORSE = {"greater": "larger", "less": "smaller"}


def headlines(table: pd.DataFrame, *, seeded: bool = True) -> list[str]:
    """Plain-word lines of :func:`~fairquant.experiments.findings.findings` for one dataset and
    model: per kind of comparison and metric, in how many cases the difference went which way
    and how many were significant. ``seeded``: whether the run has training seeds at all (an
    audit of a given model has none: "one model", not "one seed").

    >>> rows = pd.DataFrame({"comparison": ["QAT vs PTQ"] * 2, "metric": ["phi"] * 2,
    ...     "alternative": ["two-sided"] * 2, "difference": [-0.1, 0.2],
    ...     "significant": [False, False], "test": [SEED_TESTED] * 2})
    >>> headlines(rows)
    ['QAT vs PTQ, φ(D): lower in 1 of 2, higher in 1 (none significant).']
    """
    lines = []
    for (comparison, metric, alternative), part in table.groupby(
        ["comparison", "metric", "alternative"], sort=False
    ):
        n, d = len(part), part.difference.to_numpy(dtype=float)
        count = int(part.significant.sum())
        tested = (part.test == SEED_TESTED).any()
        verdict = (
            f"{count} significant"
            if count
            else (
                "none significant"
                if tested
                else f"no paired test: one {'seed' if seeded else 'audited model'}"
            )
        )
        words = metric_words(metric)
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


def describe_tests(part: pd.DataFrame, family: int, *, seeded: bool = True) -> tuple[str, str]:
    """The headline and the table caption of one dataset and model's comparisons (rows of
    :func:`~fairquant.experiments.findings.findings`); ``family``: how many comparisons of the
    whole run directory were tested (Holm's ``m``); ``seeded``: whether the run has training
    seeds (an audit of a given model has none)."""
    one = "One seed" if seeded else "One audited model (not trained in this run)"
    level = f"{CONFIDENCE:.0%}"
    paired = part[part.test == SEED_TESTED]
    if not paired.empty:
        seeds = "/".join(dict.fromkeys(paired.n_seeds.astype(str)))
        headline = (
            f"{len(paired)} comparisons tested with two-sided paired t-tests across {seeds} "
            f"seeds; {int(paired.significant.sum())} significant at α = {ALPHA} after "
            f"{CORRECTION.capitalize()}'s correction over the {family} tested comparisons of "
            "this run directory."
        )
        caption = (
            f"Difference = candidate − baseline, with its {level} Student-t interval across "
            f"seeds; p: two-sided paired t-test across seeds, {CORRECTION.capitalize()}-adjusted "
            f"over the run directory's {family} tested comparisons (docs/statistics.md)."
        )
    elif (part.verdict == "not assessed").all():
        headline = (
            f"{one} and no bootstrap intervals (audited with bootstrap 0): no difference "
            "can be assessed; the differences below are as measured, without any test."
        )
        caption = f"Difference = candidate − baseline, {one.lower()}, no interval, no test."
    else:
        headline = (
            f"{one}: no paired test is possible. The comparisons only say whether two "
            f"{level} bootstrap intervals over test samples overlap, which is weaker evidence "
            "and never called significant."
        )
        caption = (
            f"Difference = candidate − baseline on {one[0].lower() + one[1:]}; verdict: whether "
            f"the two {level} bootstrap intervals over test samples overlap ({INTERVAL_TEST})."
        )
    return headline, caption
