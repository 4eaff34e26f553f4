"""Paired tests of one model against fp32 on the same samples: exact references and calibration.

Error rates are computed *exactly* (:func:`decision_rates`), summing the trinomial probability of
every likely table of lost, gained and unchanged samples (no Monte Carlo noise); the simulations
of whole audits are in test_verdict.py.
"""

from itertools import product

import numpy as np
import pytest
from scipy import optimize, stats
from scipy.special import comb, gammaln, xlog1py, xlogy

from fairquant.metrics.paired import (
    _constrained_p21,
    _score,
    _tail_at,
    _thresholds,
    decision_rates,
    drop_interval,
    drop_statistic,
    drop_tests,
    exact_exceed_p,
    exact_exceed_rate,
    exact_lower_bound,
    gap_pair_tests,
    margin_excess,
    mcnemar_exact,
    samples_to_decide,
    table_probabilities,
)
from fairquant.metrics.policy import ALPHA, CONFIDENCE


def false_fail_rate(n: int, margin: float, p_gained: float) -> float:
    """P(the verdict's rule claims "drop > margin") when the true drop equals the margin."""
    return decision_rates(n, p_gained + margin, p_gained, margin, alpha=ALPHA)[1]


def test_table_probabilities_sum_to_one():
    for n, p_lost, p_gained in [(20, 0.3, 0.2), (2000, 0.025, 0.005), (2000, 0.2, 0.3)]:
        b, c, prob = table_probabilities(n, p_lost, p_gained)
        assert prob.sum() == pytest.approx(1.0, abs=1e-9)
        assert (b + c <= n).all()


# ---- McNemar --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lost", "gained"), [(0, 0), (1, 0), (5, 0), (0, 7), (3, 3), (10, 2), (2, 9), (40, 25)]
)
def test_mcnemar_equals_brute_force_binomial(lost, gained):
    d = lost + gained
    pmf = np.array([comb(d, k, exact=True) for k in range(d + 1)], dtype=float) / 2.0**d
    brute = pmf[pmf <= pmf[lost] * (1 + 1e-12)].sum() if d else 1.0
    got = float(mcnemar_exact(lost, gained))
    assert got == pytest.approx(min(1.0, brute), rel=1e-12)
    assert got == pytest.approx(stats.binomtest(lost, d, 0.5).pvalue if d else 1.0, rel=1e-12)


def test_mcnemar_is_vectorised_and_symmetric():
    b = np.array([[0, 4], [9, 1]])
    c = np.array([[6, 4], [1, 0]])
    assert np.array_equal(mcnemar_exact(b, c), mcnemar_exact(c, b))
    assert mcnemar_exact(b, c).shape == (2, 2)


# ---- Tango's score statistic and interval ----------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "n", "delta"),
    [(5, 2, 20, 0.1), (3, 7, 50, -0.05), (10, 0, 20, 0.3), (1, 4, 30, 0.02), (40, 3, 2000, 0.01)],
)
def test_restricted_estimate_maximises_the_likelihood(b, c, n, delta):
    def nll(p):  # trinomial with p_lost = p + delta, p_gained = p
        return -(b * np.log(p + delta) + c * np.log(p) + (n - b - c) * np.log(1 - 2 * p - delta))

    lo, hi = max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12
    best = optimize.minimize_scalar(
        nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}
    )
    assert float(_constrained_p21(b, c, n, delta)) == pytest.approx(best.x, abs=1e-7)


def test_statistic_at_zero_is_mcnemars_up_to_the_continuity_correction():
    b, c = 12, 4
    assert float(drop_statistic(b, c, 100, 0.0)) == pytest.approx((b - c - 0.5) / np.sqrt(b + c))


def test_statistic_decreases_in_the_margin():
    grid = np.linspace(-0.99, 0.99, 1001)
    for b, c, n in [(5, 2, 20), (0, 0, 20), (20, 0, 20), (3, 3, 2000), (19, 1, 20)]:
        assert (np.diff(drop_statistic(b, c, n, grid)) <= 1e-12).all()


def test_interval_inverts_the_tests():
    b, c, n = np.array([5, 0, 14, 30]), np.array([2, 0, 0, 31]), np.array([20, 20, 962, 2000])
    low, high = drop_interval(b, c, n, confidence=CONFIDENCE)
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    assert np.allclose(drop_statistic(b, c, n, low), z, atol=1e-6)
    assert np.allclose(drop_statistic(b, c, n, high), -z, atol=1e-6)
    # p_exceed < alpha exactly when the margin lies below the interval (and p_within above it)
    for margin in (low - 1e-9, low + 1e-9, high - 1e-9, high + 1e-9):
        p_exceed, p_within = drop_tests(b, c, n, margin)
        assert np.array_equal(p_exceed < ALPHA, margin < low)
        assert np.array_equal(p_within < ALPHA, margin > high)


def test_no_discordant_sample_gives_the_closed_form_bound():
    """b = c = 0: p̃_c = 0 for δ > 0, so the upper end solves (nδ − ½)² = z² n δ (1 − δ)."""
    n, z = 20, stats.norm.ppf(0.975)
    low, high = drop_interval(0, 0, n, confidence=0.95)
    a, b, c = n * n + z * z * n, -(n + z * z * n), 0.25  # a δ² + b δ + c = 0, larger root
    assert float(high) == pytest.approx((-b + np.sqrt(b * b - 4 * a * c)) / (2 * a), abs=1e-9)
    assert float(low) == pytest.approx(-float(high), abs=1e-9)


# ---- calibration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "margin", "p_gained"),
    [
        (20, 0.02, 0.05),
        (20, 0.1, 0.2),
        (50, 0.02, 0.05),
        (200, 0.02, 0.0025),  # few expected lost samples: uncorrected Tango reached 5.2 % here
        (200, 0.02, 0.01),
        (1000, 0.005, 0.001),  # the worst case found on a grid of 880 settings: 3.4 %
        (2000, 0.02, 0.0),
        (2000, 0.02, 0.05),
    ],
)
def test_false_fail_rate_at_the_tolerance_is_below_alpha(n, margin, p_gained):
    """The verdict's fail rule (the exact test) at the tolerance: at most alpha / 2, the one end
    of a two-sided interval (the continuity-corrected score test reached 3.4 %)."""
    assert false_fail_rate(n, margin, p_gained) <= ALPHA / 2


def test_the_score_test_is_not_valid_at_alpha_over_m():
    """Why the exact test (issue 26): 70 groups of 499 at a 2.8-point tolerance, 0.1 % gains. The
    continuity-corrected score test with McNemar's (the former fail rule) at Holm's first level
    fails some group with probability 7.3 %, above alpha, computed exactly."""
    n, margin, level = 499, 0.028, ALPHA / 70
    b, c, prob = table_probabilities(n, 0.029, 0.001)
    p_exceed, _ = drop_tests(b, c, n, margin)
    rate = prob[(p_exceed < level) & (mcnemar_exact(b, c) < level)].sum()
    assert 1 - (1 - rate) ** 70 == pytest.approx(0.073, abs=0.001)


def test_uncorrected_score_test_would_be_too_liberal():
    """Why the continuity correction: without it the same case fails 5.2 % of good models."""
    b, c, prob = table_probabilities(200, 0.0225, 0.0025)
    var = 200 * (2 * _constrained_p21(b, c, 200, 0.02) + 0.02 * 0.98)
    z = (b - c - 200 * 0.02) / np.sqrt(var)
    hit = z > stats.norm.ppf(0.975)
    rate = (prob[hit] * (mcnemar_exact(b[hit], c[hit]) < ALPHA)).sum()
    assert rate > ALPHA > ALPHA / 2 > false_fail_rate(200, 0.02, 0.0025)


@pytest.mark.parametrize(
    ("n", "drop", "p_gained"),
    [*product([20, 200], [0.0, 0.02, 0.1], [0.01, 0.2]), (2000, 0.02, 0.05)],
)
def test_interval_coverage_and_false_pass_rate(n, drop, p_gained):
    b, c, prob = table_probabilities(n, p_gained + drop, p_gained)
    low, high = drop_interval(b, c, n, confidence=CONFIDENCE)
    coverage = prob[(low <= drop) & (drop <= high)].sum()
    assert coverage >= 0.95
    _, p_within = drop_tests(b, c, n, drop)  # a tolerance equal to the true drop: passing errs
    assert prob[p_within < ALPHA].sum() <= ALPHA / 2


def test_samples_to_decide_decides_at_that_size_and_not_much_below():
    b, c, n, margin, z = 14, 0, 962, 0.02, stats.norm.ppf(0.975)
    needed = float(samples_to_decide(b, c, n, margin, z=z))
    scale = needed / n
    assert abs(float(drop_statistic(b * scale, c * scale, needed, margin))) >= z - 1e-9
    scale = (needed - 2) / n
    assert abs(float(drop_statistic(b * scale, c * scale, needed - 2, margin))) < z
    assert np.isinf(samples_to_decide(4, 2, 100, 0.02, z=z))  # observed drop = margin


# ---- between-group gaps ----------------------------------------------------------------------


def test_gap_pair_test_false_exceed_rate_at_the_margin():
    """Two groups whose excess losses differ by exactly the margin: "φ exceeds" at most alpha."""
    rng = np.random.default_rng(0)
    g = np.repeat([0, 1, 2], [50, 80, 200])
    shift = np.array([0.3, 0.1, 0.2])[g]  # φ = 0.2 exactly
    wrong = sum(
        gap_pair_tests(shift + rng.gamma(2.0, 0.1, len(g)), g, np.arange(3), 0.2, alpha=ALPHA)[0]
        < ALPHA
        for _ in range(400)
    )
    assert wrong / 400 <= ALPHA


def test_gap_pair_test_decides_clear_cases():
    g = np.repeat([0, 1], 200)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.05, 400)
    assert gap_pair_tests(noise + 0.5 * g, g, np.arange(2), 0.1, alpha=ALPHA)[0] < ALPHA
    assert gap_pair_tests(noise, g, np.arange(2), 0.1, alpha=ALPHA) == (1.0, True)


# ---- the exact test of "drop above the margin" -------------------------------------------------


def _trinomial_log_pmf(b, c, n, pb, pc):
    """log P(lost = b, gained = c) of n samples lost with probability pb and gained with pc."""
    return (
        gammaln(n + 1)
        - gammaln(b + 1)
        - gammaln(c + 1)
        - gammaln(n - b - c + 1)
        + xlogy(b, pb)
        + xlogy(c, pc)
        + xlog1py(n - b - c, -pb - pc)
    )


def brute_exact_p(b0: int, c0: int, n: int, margin: float) -> float:
    """The exact unconditional p by brute force: the trinomial probability of every table whose
    score is at least the observed one, maximised over a dense nuisance grid (4,001 values,
    geometric near 0 and even elsewhere)."""
    b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = b + c <= n
    b, c = b[keep], c[keep]
    region = _score(b * 1.0, c * 1.0, n, margin) >= _score(float(b0), float(c0), n, margin)
    span = (1 - abs(margin)) / 2
    grid = np.unique(np.r_[0.0, np.geomspace(1e-8, 1, 2000), np.linspace(0, 1, 2001)]) * span
    best = 0.0
    for s in grid:
        log_p = _trinomial_log_pmf(b, c, n, s + max(margin, 0.0), s + max(-margin, 0.0))
        best = max(best, float(np.exp(log_p[region]).sum()))
    return min(1.0, 2.0 * best)


@pytest.mark.parametrize(
    ("b", "c", "n", "margin"),
    [
        (5, 0, 30, 0.02),
        (8, 1, 40, 0.05),
        (3, 3, 20, 0.0),
        (12, 2, 60, -0.03),
        (20, 4, 80, 0.1),
        (2, 0, 50, 0.028),
        (9, 0, 45, 0.0),
    ],
)
def test_exact_p_equals_brute_force(b, c, n, margin):
    assert exact_exceed_p(b, c, n, margin) == pytest.approx(brute_exact_p(b, c, n, margin), 1e-5)


def test_tail_sums_only_the_likely_discordant_counts_exactly():
    """At 400 samples the tail probability sums a window of 178 discordant counts: equal to the
    full trinomial sum over the region."""
    n, margin, b0, c0 = 400, 0.02, 19, 2
    b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = b + c <= n
    b, c = b[keep], c[keep]
    t = _score(np.array([b0 * 1.0]), np.array([c0 * 1.0]), n, np.array([margin]))
    region = _score(b * 1.0, c * 1.0, n, margin) >= t[0]
    first = _thresholds(t, np.array([n]), np.array([margin]))
    for s in [0.0, 1e-4, 0.01, 0.2, 0.49]:
        full = np.exp(_trinomial_log_pmf(b, c, n, s + margin, s)[region]).sum()
        window = _tail_at(np.array([[s]]), first, np.array([n]), np.array([margin]))[0, 0]
        assert window == pytest.approx(full, rel=1e-9, abs=1e-12)


def test_score_is_monotone_so_the_supremum_lies_on_the_boundary():
    """Z rises with lost and falls with gained (Barnard's condition), so the region {Z >= z} only
    gains probability when mass moves to lost or away from gained: the supremum over the null
    drop <= margin lies at drop = margin, the one nuisance the exact test searches."""
    for n, margin in [(30, 0.0), (60, 0.02), (200, 0.1), (100, -0.05)]:
        b, c = np.meshgrid(np.arange(n + 1.0), np.arange(n + 1.0), indexing="ij")
        z = np.where(b + c <= n, _score(b, c, n, margin), np.nan)
        up_b, up_c = np.diff(z, axis=0), np.diff(z, axis=1)
        assert (up_b[~np.isnan(up_b)] >= -1e-12).all()
        assert (up_c[~np.isnan(up_c)] <= 1e-12).all()


@pytest.mark.parametrize(
    ("n", "margin", "p_gained", "groups"),
    [
        (20, 0.02, 0.05, 5),
        (200, 0.02, 0.0025, 20),
        (499, 0.028, 0.001, 70),
        (1000, 0.005, 0.001, 100),
        (2000, 0.02, 0.0, 100),
        (2000, 0.1, 0.1, 20),
    ],
)
def test_exact_test_is_valid_at_alpha_over_m(n, margin, p_gained, groups):
    """At the tolerance, the exact test's false "exceeds" rate at Holm's first level alpha / m is
    at most alpha / (2 m) (one end of a two-sided interval), however few losses are expected."""
    level = ALPHA / groups
    assert exact_exceed_rate(n, p_gained + margin, p_gained, margin, level=level) <= level / 2


def test_exact_rate_equals_the_rate_of_the_p_values():
    b, c, prob = table_probabilities(40, 0.05, 0.01)
    p = exact_exceed_p(b, c, 40, 0.04)
    assert exact_exceed_rate(40, 0.05, 0.01, 0.04, level=0.05) == pytest.approx(
        prob[p < 0.05].sum(), abs=1e-12
    )


def test_exact_lower_bound_inverts_the_test_and_respects_the_split():
    b, c, n, level = np.array([20, 40, 5, 9]), np.array([1, 3, 0, 0]), 500, 0.05 / 7
    low = exact_lower_bound(b, c, n, level=level)
    assert (exact_exceed_p(b, c, n, low - 1e-4) < level).all()
    assert (exact_exceed_p(b, c, n, low + 1e-4) >= level).all()
    split = np.array([0.028, 0.028, 0.0, 0.0])
    low = exact_lower_bound(b, c, n, level=level, split=split)
    assert ((low > split) == (exact_exceed_p(b, c, n, split) < level)).all()


def test_margin_excess_is_exact():
    sign, size = margin_excess([14, 15, 13, 7], [0, 0, 0, 0], [500, 500, 500, 250], 2.8)
    assert sign.tolist() == [0, 1, -1, 0] and size[0] == 0.0 and size[1] == pytest.approx(0.002)
    assert samples_to_decide(14, 0, 500, 0.028, z=2.0, excess=0.0) == np.inf


def test_identical_tables_share_one_exact_bound():
    """Repeated (lost, gained, n, level, tolerance) rows are solved once and give what each row
    gives alone, in the input order."""
    lost, gained, n = [0, 3, 0, 3, 0], [0, 1, 0, 1, 2], [54, 55, 54, 55, 54]
    level = [0.005, 0.01, 0.005, 0.01, 0.005]
    together = exact_lower_bound(lost, gained, n, level=level, split=0.02)
    alone = [
        exact_lower_bound([b], [c], [m], level=[lv], split=0.02)[0]
        for b, c, m, lv in zip(lost, gained, n, level, strict=True)
    ]
    np.testing.assert_array_equal(together, alone)
    assert together[0] == together[2] and together[1] == together[3]
