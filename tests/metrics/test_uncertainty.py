"""Across seeds: the one summary, the paired test (calibrated by simulation), exact Spearman."""

import itertools
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fairquant.errors import ConfigError
from fairquant.metrics.policy import ALPHA, holm, significant
from fairquant.metrics.uncertainty import (
    SEED_TEST,
    SIGN_FLIP_TEST,
    _sign_flip_p,
    across_seeds,
    paired_seed_test,
    paired_t_p,
    seed_interval,
    sign_flip_floor,
    spearman_p_error,
    spearman_test,
)


def _seed_table(values_a, values_b, metric="phi"):
    rows = []
    for seed, (a, b) in enumerate(zip(values_a, values_b, strict=True)):
        for precision, v in (("int8", a), ("int4", b)):
            rows.append(("ptq", precision, int(precision[3:]), "all", metric, v, seed))
    return pd.DataFrame(
        rows, columns=["method", "precision", "bits", "group", "metric", "value", "seed"]
    )


def _test(table, metric="phi", **options):
    return paired_seed_test(
        table, metric, baseline={"precision": "int8"}, candidate={"precision": "int4"}, **options
    )


def test_paired_seed_test_is_the_two_sided_paired_t_test_with_the_sign_flip_beside_it():
    rng = np.random.default_rng(0)
    base = rng.normal(0.2, 0.05, 8)
    cand = base + 0.1 + rng.normal(0, 0.01, 8)
    effect = _test(_seed_table(base, cand))
    d = cand - base
    t = d.mean() / (d.std(ddof=1) / np.sqrt(8))
    assert effect.p_value == pytest.approx(2 * stats.t.sf(abs(t), 7), rel=1e-9)
    assert effect.alternative == "two-sided" and effect.min_p_value == 0
    # every seed one way: the exact two-sided sign-flip p is its floor, 2 / 2^8
    assert effect.p_sign_flip == pytest.approx(2 / 256) == sign_flip_floor(8)
    assert effect.ci_low > 0 and effect.effect_size > 3
    # the interval and the test agree: p < ALPHA exactly when the 95% interval excludes 0
    null = _test(_seed_table(base, base + rng.normal(0, 0.05, 8)))
    assert null.p_value > ALPHA and null.ci_low < 0 < null.ci_high
    one_sided = _test(_seed_table(base, cand), alternative="greater")
    assert one_sided.p_value == pytest.approx(effect.p_value / 2)
    with pytest.raises(ConfigError, match="alternative must be"):
        _test(_seed_table(base, cand), alternative="bigger")


def test_the_same_difference_every_seed_is_an_infinite_effect_tested_by_sign_flips():
    # a + 0.2 - a is not 0.2 exactly for every a: the sd of the differences is rounding noise
    a = [0.1, 0.7, 3.3]
    effect = _test(_seed_table(a, [v + 0.2 for v in a]))
    assert effect.effect_size == np.inf and effect.difference == pytest.approx(0.2)
    # t is undefined; its limit p = 0 would survive any correction, so the sign-flip p stands
    assert effect.test == SIGN_FLIP_TEST and np.isnan(paired_t_p([0.2, 0.2, 0.2]))
    assert effect.p_value == effect.p_sign_flip == effect.min_p_value == pytest.approx(0.25)
    same = _test(_seed_table(a, a))
    assert same.p_value == 1 and same.effect_size == 0 and same.test == SEED_TEST
    d = np.random.default_rng(1).normal(0.3, 1.0, size=(50, 4))
    for alternative in ("two-sided", "greater", "less"):
        reference = stats.ttest_1samp(d, 0.0, axis=1, alternative=alternative).pvalue
        assert paired_t_p(d, alternative) == pytest.approx(reference, rel=1e-9)


def _rejections(draw, n_seeds, repeats, rng):
    return float(np.mean(paired_t_p(draw(rng, (repeats, n_seeds))) < ALPHA))


#: Null models of the per-seed difference candidate - baseline when the candidate changes
#: nothing, so the two runs of a seed are exchangeable: differences of two runs' values drawn
#: from the same distribution (normal; skewed like φ(D); a run that collapses 20% of the time).
NULLS = {
    "normal": lambda rng, n: rng.normal(size=n),
    "lognormal runs": lambda rng, n: rng.lognormal(0, 1, n) - rng.lognormal(0, 1, n),
    "collapsing runs": lambda rng, n: (
        np.where(rng.random(n) < 0.2, 0, 10 + rng.normal(size=n))
        - np.where(rng.random(n) < 0.2, 0, 10 + rng.normal(size=n))
    ),
}


@pytest.mark.parametrize("n_seeds", [3, 5, 10])
def test_false_positive_rate_under_the_null_is_at_most_alpha(n_seeds):
    rng = np.random.default_rng(n_seeds)
    repeats = 20000
    slack = 3 * np.sqrt(ALPHA * (1 - ALPHA) / repeats)  # Monte Carlo error of the rate
    for name, draw in NULLS.items():
        rate = _rejections(draw, n_seeds, repeats, rng)
        assert rate <= ALPHA + slack, (name, rate)


@pytest.mark.parametrize(
    ("n_seeds", "effect", "power"),
    [(3, 3.0, 0.70), (5, 2.0, 0.85), (10, 1.0, 0.75)],
)
def test_power_at_a_stated_effect_where_the_sign_flip_test_has_none(n_seeds, effect, power):
    """Normal differences with mean ``effect`` standard deviations (Cohen's d_z): the t-test's
    power is the non-central t's (0.75, 0.91, 0.80); a two-sided exact sign-flip test at these
    seed counts has a floor of 0.25 and 0.0625 and cannot reject at all below 6 seeds."""
    rng = np.random.default_rng(100 + n_seeds)
    draw = lambda rng, n: effect + rng.normal(size=n)  # noqa: E731
    assert _rejections(draw, n_seeds, 5000, rng) >= power
    delta = effect * np.sqrt(n_seeds)
    crit = stats.t.ppf(1 - ALPHA / 2, n_seeds - 1)
    exact = stats.nct.sf(crit, n_seeds - 1, delta) + stats.nct.cdf(-crit, n_seeds - 1, delta)
    assert exact >= power
    if n_seeds <= 5:
        assert sign_flip_floor(n_seeds) > ALPHA


def test_across_seeds_is_one_summary_for_one_and_several_seeds():
    rng = np.random.default_rng(0)
    base = rng.normal(0.2, 0.05, 8)
    summary = across_seeds(_seed_table(base, base + 0.1))
    assert list(summary.columns) == [
        "method", "precision", "bits", "group", "metric",
        "n_seeds", "value", "std", "ci_low", "ci_high", "interval",
    ]  # fmt: skip
    int8 = summary[summary.precision == "int8"].iloc[0]
    assert int8.n_seeds == 8 and int8["value"] == pytest.approx(base.mean())
    low, high = stats.t.interval(0.95, 7, loc=base.mean(), scale=stats.sem(base))
    assert (int8.ci_low, int8.ci_high) == pytest.approx((low, high))
    assert int8.interval == "seeds"
    two = pd.concat(
        [_seed_table(base, base).assign(mitigation=m) for m in ("none", "re")], ignore_index=True
    )
    by_mitigation = across_seeds(two)
    assert sorted(by_mitigation.mitigation) == ["none", "none", "re", "re"]
    assert (by_mitigation.n_seeds == 8).all()
    # one seed: its bootstrap interval as stored, or none; the table's order kept
    one = _seed_table([0.1], [0.3]).assign(ci_low=[0.05, np.nan], ci_high=[0.2, np.nan])
    single = across_seeds(one)
    assert list(single.precision) == ["int8", "int4"] and (single.n_seeds == 1).all()
    assert list(single.interval) == ["bootstrap", "none"]
    assert single.value.tolist() == [0.1, 0.3] and single.ci_high.iloc[0] == 0.2
    with pytest.raises(ConfigError, match="several rows for one number and seed"):
        across_seeds(pd.concat([one, one]))


def test_seed_inputs_are_refused_clearly():
    with pytest.raises(ConfigError, match="at least 2 seeds, got 1"):
        seed_interval([0.3])
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        _test(_seed_table([0.1], [0.2]))


def _brute_force(x, y):
    """Two-sided p of Spearman's rho by every re-pairing, one at a time (scipy's definition:
    twice the smaller one-sided share). Re-pairing x permutes its (average) ranks."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rho = np.corrcoef(rx, ry)[0, 1]
    null = np.array(
        [np.corrcoef(rx[list(p)], ry)[0, 1] for p in itertools.permutations(range(len(x)))]
    )
    greater, less = np.mean(null >= rho - 1e-12), np.mean(null <= rho + 1e-12)
    return rho, min(1.0, 2 * min(greater, less))


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]),  # rho = -1 over 5 groups: p = 2/120
        ([8062, 3621, 2747, 3180, 1354], [8.1, 13.4, 12.4, 18.3, 35.9]),  # README's -0.7
        ([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]),
        ([1, 2, 3, 4, 5], [1.2, 1.2, 0.3, 3.3, 0.3]),  # ties
        ([3, 1, 4, 1, 5, 9], [2, 7, 1, 8, 2, 8]),  # ties in both
        ([3, 1, 4, 1, 5, 9, 2], [2, 7, 1, 8, 2, 8, 1]),
    ],
)
def test_spearman_p_is_the_exact_permutation_p(x, y):
    rho, p = spearman_test(x, y)
    ref_rho, ref_p = _brute_force(x, y)
    assert rho == pytest.approx(ref_rho, abs=1e-12) and p == pytest.approx(ref_p, abs=1e-12)


def test_spearman_p_at_five_and_ten_groups_is_exact_and_never_the_t_approximation():
    """rho = -1 over 10 groups: scipy's t approximation printed 6.6e-64; exact 2 / 10!."""
    assert spearman_test([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])[1] == pytest.approx(2 / 120)
    x = np.arange(10.0)
    assert stats.spearmanr(x, -x).pvalue < 1e-60
    assert spearman_test(x, -x)[1] == pytest.approx(2 / 3628800, rel=1e-12)
    assert spearman_p_error(10, 5.5e-7) == 0.0
    with pytest.raises(ConfigError, match="constant"):
        spearman_test([1, 1, 1], [1, 2, 3])
    with pytest.raises(ConfigError, match="at least 3 values"):
        spearman_test([1, 2], [1, 2])


def test_spearman_beyond_ten_groups_is_a_seeded_permutation_test_within_its_error():
    """11 groups: the seeded Monte Carlo p lies within 4 standard errors of the exact one (the
    reference counts the 11! pairings by their sum(i * pi(i)), by dynamic programming)."""
    x = np.arange(11.0)
    y = np.array([3, 0, 5, 1, 8, 2, 4, 10, 6, 9, 7.0])
    _, p = spearman_test(x, y)
    assert spearman_test(x, y) == spearman_test(x, y, random_state=0)  # seeded
    assert spearman_test(x, y, random_state=1)[1] != p
    exact = _exact_spearman_two_sided_without_ties(y)
    assert 0.001 < exact < 0.1
    assert abs(p - exact) <= 4 * spearman_p_error(11, exact)
    assert 0 < spearman_p_error(11, exact) < 0.0016


def _exact_spearman_two_sided_without_ties(y) -> float:
    """Exact two-sided Spearman p for ranks without ties: the number of permutations pi of
    0..n-1 with each value of sum(i * pi(i)), by a DP over assignments (bitmask x sum)."""
    n = len(y)
    ranks = stats.rankdata(y).astype(int) - 1
    observed = int(np.dot(np.arange(n), ranks))
    top = sum(i * i for i in range(n))
    counts = {0: np.zeros(top + 1, dtype=np.int64)}
    counts[0][0] = 1
    for i in range(n):  # assign a value to position i
        nxt: dict[int, np.ndarray] = {}
        for mask, vec in counts.items():
            for v in range(n):
                if mask >> v & 1:
                    continue
                key = mask | 1 << v
                shifted = np.zeros_like(vec)
                shifted[i * v :] = vec[: top + 1 - i * v]
                nxt[key] = nxt.get(key, 0) + shifted
        counts = nxt
    dist = next(iter(counts.values()))
    total = dist.sum()
    greater = dist[observed:].sum() / total
    less = dist[: observed + 1].sum() / total
    return float(min(1.0, 2.0 * min(greater, less)))


def _exact_sign_flip_rational(pairs) -> float:
    """Two-sided sign-flip p of the differences b - a of decimal numbers, in exact fractions."""
    d = [Fraction(str(b)) - Fraction(str(a)) for a, b in pairs]
    observed = sum(d)
    sums = [
        sum(s * v for s, v in zip(signs, d, strict=True))
        for signs in itertools.product([1, -1], repeat=len(d))
    ]
    greater = Fraction(sum(v >= observed for v in sums), len(sums))
    less = Fraction(sum(v <= observed for v in sums), len(sums))
    return float(min(1, 2 * min(greater, less)))


@pytest.mark.parametrize(
    "pairs",
    [
        [(50.0, 50.35), (51.9, 51.5), (51.3, 50.95), (50.4, 51.05)],  # exact 1.0, was 0.875
        [(51.9, 51.35), (51.05, 51.2), (50.65, 50.9), (50.75, 50.85), (50.05, 50.6)],  # 0.625
        [(50.05, 50.7), (51.25, 50.2), (51.0, 51.25), (51.5, 51.85), (50.8, 50.85)],  # 0.9375
        [(0.8, 0.9), (0.7, 0.6), (0.3, 0.4)],
    ],
)
def test_sign_flip_counts_ties_that_differ_only_by_rounding(pairs):
    d = np.array([b - a for a, b in pairs])
    exact = _exact_sign_flip_rational(pairs)
    assert _sign_flip_p(d, "two-sided", 0) == pytest.approx(exact, abs=1e-12)
    table = _seed_table([a for a, _ in pairs], [b for _, b in pairs])
    assert _test(table).p_sign_flip == pytest.approx(exact, abs=1e-12)


def test_sign_flip_beyond_sixteen_seeds_is_seeded_monte_carlo():
    d = np.r_[np.full(17, 0.1), -0.05]
    p = _sign_flip_p(d, "two-sided", 0)
    assert p == _sign_flip_p(d, "two-sided", 0) and 0 < p < 0.01


def test_holm_controls_the_family_and_matches_a_hand_computation():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 with m = 4: 0.02, 0.03, 0.06, 0.06
    assert holm(p)[[4, 0, 2, 1]].tolist() == pytest.approx([0.02, 0.03, 0.06, 0.06])
    assert np.isnan(holm(p)[3])
    assert significant(holm(p)).tolist() == [True, False, False, False, True]
    # 20 true nulls: the chance of any Holm-significant one stays below ALPHA
    rng = np.random.default_rng(0)
    any_false = np.mean([significant(holm(rng.random(20))).any() for _ in range(4000)])
    assert any_false <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / 4000)
