"""Paired comparisons of two models on the same test samples, one group at a time.

The verdict of :mod:`fairquant.metrics.verdict` asks of each group ``a``: did the quantized model
lose more accuracy than allowed, on *these* test samples? Every sample is seen by both models, so
the question is paired. Per group, with ``n`` samples, count

- ``lost``: samples fp32 classifies correctly and the quantized model does not (``b``),
- ``gained``: samples the quantized model classifies correctly and fp32 does not (``c``).

The accuracy drop is ``δ = p_b − p_c``, estimated by ``(b − c) / n``; the concordant samples
say nothing about it. Functions here are vectorised over arrays of tables (one per group,
precision, or simulated replicate) and return float64 arrays.

- :func:`mcnemar_exact`: McNemar's exact test of "no change" (``p_b = p_c``).
- :func:`drop_statistic`, :func:`drop_interval`, :func:`drop_tests`: Tango's (1998) score test
  and interval for ``δ`` against any margin, with a continuity correction (see
  :func:`drop_statistic` for why, measured).
- :func:`decision_rates`: the exact chance that a group is judged within or above its
  tolerance, for planning a test set (power) and for checking the error rates.
- :func:`samples_to_decide`: how many samples a group would need for the interval to leave the
  margin, if the observed rates of lost and gained samples held.
- :func:`gap_pair_tests`: whether φ (the spread of the groups' excess losses) exceeds a margin,
  through the differences of pairs of groups.
- :func:`paired_bootstrap`: the group-stratified bootstrap that resamples the same test samples
  for fp32 and every quantized model: excess loss per group, and the change of φ, the accuracy gap
  and the worst-group accuracy.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import gammaln

from fairquant.metrics.uncertainty import stratified_bootstrap_sums

__all__ = [
    "CONTINUITY",
    "decision_rates",
    "drop_interval",
    "drop_statistic",
    "drop_tests",
    "gap_pair_tests",
    "mcnemar_exact",
    "paired_bootstrap",
    "samples_to_decide",
    "table_probabilities",
]

#: Continuity correction on ``b − c`` (which moves in unit steps) in the score statistic.
CONTINUITY = 0.5


def _float(*arrays) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(*arrays)]


def mcnemar_exact(lost, gained) -> np.ndarray:
    """McNemar's exact two-sided p-value of "the accuracy did not change" per table.

    Under ``H0: p_b = p_c``, and given the number of discordant samples ``D = b + c``, each
    discordant sample is a loss or a gain with probability ½ independently of the others (the
    concordant ones carry no information about the difference), so ``b ~ Binomial(D, ½)``.
    McNemar's exact test is therefore the exact binomial test of ``b`` successes in ``D`` trials
    at ``½``: :func:`scipy.stats.binomtest` ``(b, D, 0.5).pvalue``. Its two-sided p-value sums
    the probabilities of outcomes no more likely than ``b``; the pmf at ``½`` is symmetric, so
    that is ``min(1, 2 P(Binomial(D, ½) <= min(b, c)))``, computed here in one vectorised call
    (binomtest is scalar: 5 ms a call on a loaded 2-core machine, too slow for the 10⁵ tables of
    the calibration tests, which check both against each other and against a brute-force sum).
    ``D = 0`` gives ``p = 1``.

    >>> mcnemar_exact([5, 3], [0, 3]).round(4).tolist()
    [0.0625, 1.0]
    """
    b, c = (np.asarray(v, dtype=np.int64) for v in np.broadcast_arrays(lost, gained))
    tail = stats.binom.cdf(np.minimum(b, c), np.maximum(b + c, 1), 0.5)
    return np.where(b + c > 0, np.minimum(1.0, 2.0 * tail), 1.0)


def _constrained_p21(b, c, n, delta) -> np.ndarray:
    """Tango's restricted maximum-likelihood estimate of ``p_c`` given ``p_b − p_c = delta``:
    the root in ``[0, 1]`` of ``2n p² + (−b − c + (2n − b + c) δ) p − c δ (1 − δ) = 0``."""
    a = 2.0 * n
    bq = -b - c + (2.0 * n - b + c) * delta
    cq = -c * delta * (1.0 - delta)
    return (np.sqrt(np.maximum(bq * bq - 4.0 * a * cq, 0.0)) - bq) / (2.0 * a)


def drop_statistic(lost, gained, n, margin) -> np.ndarray:
    """Tango's score statistic for ``H0: δ = margin``, continuity-corrected; large when the drop
    ``δ = p_b − p_c`` is above ``margin`` (a fraction, not points).

    ``Z = (|b − c − n δ0| − ½)₊ sign(·) / √(n (2 p̃_c + δ0 (1 − δ0)))`` with ``p̃_c`` the maximum
    likelihood estimate of ``p_c`` under ``δ = δ0`` (Tango 1998, *Stat. Med.* 17:891;
    recommended by Fagerland, Lydersen & Laake 2013, *Stat. Med.* 32:1700). At ``δ0 = 0`` the
    uncorrected statistic is McNemar's ``(b − c)/√(b + c)``.

    Why the ½: computed exactly over every table, the uncorrected one-sided 2.5 % test rejects
    ``δ <= margin`` at ``δ = margin`` with probability up to 5.2 % (200 samples, margin 2 points,
    0.25 % gained: when the expected numbers of lost and gained samples are small); corrected,
    at most 3.4 % over group sizes 20 to 2,000 and margins 0 to 20 points (tests/metrics).
    """
    b, c, n, d = _float(lost, gained, n, margin)
    var = n * (2.0 * _constrained_p21(b, c, n, d) + d * (1.0 - d))
    excess = b - c - n * d
    num = np.sign(excess) * np.maximum(np.abs(excess) - CONTINUITY, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, num / np.sqrt(np.maximum(var, 0.0)), np.sign(num) * np.inf)
    return np.where(num == 0, 0.0, z)


def drop_tests(lost, gained, n, margin) -> tuple[np.ndarray, np.ndarray]:
    """``(p_exceed, p_within)``: p-values that the drop is above / below ``margin``.

    Both follow the project's two-sided convention: ``p = min(1, 2 P(Z beyond z_obs))``, so
    ``p_exceed < α`` exactly when the lower end of the ``1 − α`` :func:`drop_interval` lies above
    ``margin``, and ``p_within < α`` when its upper end lies below. Each one-sided claim thus
    errs with probability at most ``α / 2`` nominally.
    """
    z = drop_statistic(lost, gained, n, margin)
    return np.minimum(1.0, 2.0 * stats.norm.sf(z)), np.minimum(1.0, 2.0 * stats.norm.cdf(z))


def drop_interval(lost, gained, n, *, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided ``confidence`` interval of the drop ``δ`` (fractions): every ``δ0`` that the
    score test of :func:`drop_statistic` does not reject, found by bisection (50 halvings, so
    exact to 2e-15; the statistic decreases in ``δ0``)."""
    b, c, n = _float(lost, gained, n)
    z = stats.norm.ppf(0.5 + confidence / 2.0)

    def solve(target: float) -> np.ndarray:
        lo, hi = np.full(b.shape, -1.0), np.full(b.shape, 1.0)
        for _ in range(50):
            mid = (lo + hi) / 2.0
            above = drop_statistic(b, c, n, mid) > target
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return (lo + hi) / 2.0

    return solve(z), solve(-z)


def samples_to_decide(lost, gained, n, margin, *, z: float) -> np.ndarray:
    """Test samples a group would need for ``|Z| >= z`` at ``margin`` if its observed rates of
    lost and gained samples held: ``inf`` where the observed drop equals the margin.

    With both counts scaled from ``n`` to ``n'`` the restricted estimate ``p̃_c`` stays the
    same, so ``Z(n') = (n' |e| − ½) / (√n' s)`` with ``e = (b − c)/n − δ0`` and
    ``s = √(2 p̃_c + δ0(1 − δ0))``; ``n'`` solves the quadratic ``|e| x² − z s x − ½ = 0`` in
    ``x = √n'``.
    """
    b, c, n, d = _float(lost, gained, n, margin)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.abs((b - c) / n - d)
        s = np.sqrt(2.0 * _constrained_p21(b / n, c / n, 1.0, d) + d * (1.0 - d))
        x = (z * s + np.sqrt(z * z * s * s + 4.0 * e * CONTINUITY)) / (2.0 * e)
    return np.where(e > 0, np.ceil(x * x), np.inf)


def table_probabilities(
    n: int, p_lost: float, p_gained: float, *, sd: float = 10.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every likely ``(lost, gained)`` table of ``n`` samples with its trinomial probability:
    counts up to ``sd`` standard deviations above their means (the rest has probability far
    below 1e-9)."""

    def top(p: float) -> int:
        return int(min(n, np.ceil(n * p + sd * np.sqrt(n * p * (1 - p)) + sd)))

    b, c = np.meshgrid(np.arange(top(p_lost) + 1), np.arange(top(p_gained) + 1), indexing="ij")
    keep = b + c <= n
    b, c = b[keep], c[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = (
            gammaln(n + 1)
            - gammaln(b + 1)
            - gammaln(c + 1)
            - gammaln(n - b - c + 1)
            + np.where(b > 0, b * np.log(p_lost), 0.0)
            + np.where(c > 0, c * np.log(p_gained), 0.0)
            + (n - b - c) * np.log1p(-p_lost - p_gained)
        )
    return b, c, np.exp(log_p)


def decision_rates(
    n: int, p_lost: float, p_gained: float, margin: float, *, alpha: float, n_tests: int = 1
) -> tuple[float, float]:
    """Exact ``(P(within), P(exceeds))`` of one group of ``n`` samples whose samples are lost
    with probability ``p_lost`` and gained with ``p_gained`` (true drop ``p_lost − p_gained``),
    judged against ``margin`` (fractions) as :func:`fairquant.metrics.verdict.verdict` does:
    within when ``p_within < alpha``; exceeds when ``p_exceed`` and McNemar's p are below
    ``alpha / n_tests`` (Bonferroni: the first step of Holm over ``n_tests`` tests, so with
    other groups' effects Holm rejects at least this often). Sums over every likely table.
    """
    b, c, prob = table_probabilities(n, p_lost, p_gained)
    p_exceed, p_within = drop_tests(b, c, n, margin)
    level = alpha / n_tests
    hit = p_exceed < level
    exceeds = prob[hit][mcnemar_exact(b[hit], c[hit]) < level].sum()
    return float(prob[p_within < alpha].sum()), float(exceeds)


def gap_pair_tests(
    dloss: np.ndarray, g: np.ndarray, groups: np.ndarray, margin: float, *, alpha: float
) -> tuple[float, bool]:
    """Is φ = max_a G(a) − min_a G(a) above or below ``margin``? ``(p_exceed, within)``.

    φ exceeds the margin exactly when some ordered pair of groups has ``G(a) − G(a') > margin``,
    and lies below it when every pair does. ``G(a)`` is the mean of the per-sample loss changes
    ``dloss`` (quantized − fp32) over group ``a``'s samples; groups are disjoint sets of samples,
    so a pair's difference is a difference of independent means, tested by Welch's t (unlike the
    percentile bootstrap of the max − min, whose upward bias when groups are close would fail a
    model too often). ``p_exceed``: the smallest two-sided-convention p over the ``k(k − 1)``
    ordered pairs of ``groups`` times their number (Bonferroni, valid under any dependence);
    ``within``: every pair's upper ``1 − α`` bound is below the margin (an intersection-union
    test, which needs no correction). Groups with fewer than 2 samples cannot be tested: their
    pairs give ``p_exceed`` 1 and ``within`` False.
    """
    means, var, counts = [], [], []
    for a in groups:
        x = dloss[g == a]
        counts.append(len(x))
        means.append(x.mean() if len(x) else np.nan)
        var.append(x.var(ddof=1) / len(x) if len(x) > 1 else np.nan)
    m, v, k = np.array(means), np.array(var), len(groups)
    if k < 2:  # one group: φ is 0
        return 1.0, margin > 0
    i, j = np.where(~np.eye(k, dtype=bool))
    se2 = v[i] + v[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        df = se2**2 / (
            v[i] ** 2 / (np.array(counts)[i] - 1) + v[j] ** 2 / (np.array(counts)[j] - 1)
        )
        t = (m[i] - m[j] - margin) / np.sqrt(se2)
    t = np.where(se2 == 0, np.sign(m[i] - m[j] - margin) * np.inf, t)
    t = np.where(m[i] - m[j] == margin, 0.0, t)
    df = np.where(np.isfinite(df) & (df > 0), df, 1.0)
    testable = ~np.isnan(se2)
    p_exceed = np.where(testable, np.minimum(1.0, 2.0 * stats.t.sf(t, df)), 1.0)
    p_within = np.where(testable, np.minimum(1.0, 2.0 * stats.t.cdf(t, df)), 1.0)
    return float(min(1.0, len(i) * p_exceed.min())), bool((p_within < alpha).all())


def paired_bootstrap(
    correct: np.ndarray,
    dloss: np.ndarray,
    g: np.ndarray,
    num_groups: int,
    *,
    n_bootstrap: int,
    random_state: int | np.random.Generator = 0,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of per-group and between-group changes against the reference.

    ``correct`` is ``(M, N)`` correctness, the reference (fp32) first; ``dloss`` is
    ``(M − 1, N)`` per-sample loss changes of the other models. Each replicate draws ``n_a``
    samples with replacement within every group ``a`` and evaluates all models on that same
    draw, so every change is paired. Returns, with ``B = n_bootstrap``, ``Q = M − 1``, ``k``
    groups (metrics over groups use the groups that have samples; accuracies in %):

    - ``excess_loss`` ``(B, Q, k)``: ``G(a)``;
    - ``phi`` ``(B, Q)``: ``max_a G(a) − min_a G(a)`` (φ at fp32 is 0, so this is its change);
    - ``accuracy_gap`` ``(B, Q)``: change of ``max_a acc − min_a acc``;
    - ``worst_group_accuracy`` ``(B, Q)``: change of ``min_a acc``.
    """
    correct = np.asarray(correct, dtype=np.float64)
    dloss = np.asarray(dloss, dtype=np.float64)
    q = len(dloss)
    sums, _ = stratified_bootstrap_sums(
        np.concatenate([correct, dloss]).T,
        g,
        num_groups,
        n_bootstrap=n_bootstrap,
        random_state=random_state,
    )
    counts = np.bincount(g, minlength=num_groups).astype(np.float64)
    present = counts > 0
    sums, counts = sums[:, present], counts[present]
    acc = 100.0 * sums[..., : q + 1] / counts[:, None]  # (B, k', M)
    excess = sums[..., q + 1 :] / counts[:, None]  # (B, k', Q)
    full = np.full((n_bootstrap, q, num_groups), np.nan)
    full[:, :, present] = excess.transpose(0, 2, 1)
    gap = acc.max(1) - acc.min(1)  # (B, M)
    worst = acc.min(1)
    return {
        "excess_loss": full,
        "phi": excess.max(1) - excess.min(1),
        "accuracy_gap": gap[:, 1:] - gap[:, :1],
        "worst_group_accuracy": worst[:, 1:] - worst[:, :1],
    }
