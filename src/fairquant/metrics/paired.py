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
- :func:`exact_exceed_p`, :func:`exact_lower_bound`: the *exact unconditional* test that the
  drop exceeds a margin (Sidik 2003), valid at any level however few losses are expected, and
  the lower confidence bound that inverts it; the verdict's "exceeds" decisions use it.
- :func:`margin_excess`: ``(lost − gained)/n − margin`` in exact rational arithmetic, so a drop
  that equals its tolerance is equal even when the tolerance (2.8 points) is not a binary float.
- :func:`decision_rates`: the exact chance that a group is judged within or above its
  tolerance, for planning a test set (power) and for checking the error rates.
- :func:`samples_to_decide`: how many samples a group would need for the interval to leave the
  margin, if the observed rates of lost and gained samples held.
- :func:`gap_pair_tests`: whether φ (the spread of the groups' excess losses) exceeds a margin,
  through the differences of pairs of groups.

The verdict's bootstrap intervals (excess loss per group, change of φ, accuracy gap and
worst-group accuracy) are not computed here: they read the replicates of
:class:`~fairquant.metrics.frame.FairnessFrame`, the one source of bootstrap replicates.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import stats
from scipy.special import bdtrc, gammaln, xlog1py, xlogy

__all__ = [
    "CONTINUITY",
    "decision_rates",
    "drop_interval",
    "drop_statistic",
    "drop_tests",
    "exact_exceed_p",
    "exact_exceed_rate",
    "exact_lower_bound",
    "gap_pair_tests",
    "margin_excess",
    "mcnemar_exact",
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


def _bisect(rejects, lo, hi, split, *, halvings: int) -> np.ndarray:
    """The boundary between the margins a test rejects and those it keeps, by bisection from
    ``lo`` (rejected) to ``hi`` (kept). With ``split`` (the tolerance) the test there is run
    first and the bracket cut at it, so the returned bound lies strictly on the side of
    ``split`` that the test's own decision at ``split`` gives, whatever the rounding: an
    interval and a decision at the tolerance can never disagree."""
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    if split is not None:
        split = np.broadcast_to(np.asarray(split, dtype=np.float64), lo.shape)
        at = rejects(split)
        lo = np.where(at, np.maximum(lo, split), lo)
        hi = np.where(~at, np.minimum(hi, split), hi)
        hi = np.where(at & (hi <= lo), np.maximum(split, 1.0), hi)
        lo = np.where(~at & (lo >= hi), np.minimum(split, -1.0), lo)
    for _ in range(halvings):
        mid = (lo + hi) / 2.0
        at = rejects(mid)
        lo, hi = np.where(at, mid, lo), np.where(at, hi, mid)
    return (lo + hi) / 2.0


def drop_interval(
    lost, gained, n, *, confidence: float, split=None
) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided ``confidence`` interval of the drop ``δ`` (fractions): every ``δ0`` that the
    score test of :func:`drop_statistic` does not reject, found by bisection (40 halvings, so
    exact to 2e-12; the statistic decreases in ``δ0``). With ``split`` (margins, e.g. the
    tolerances) each end lies strictly on the side of ``split`` the test at ``split`` decides."""
    b, c, n = _float(lost, gained, n)
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    ones = np.ones(b.shape)

    def end(target: float) -> np.ndarray:
        return _bisect(
            lambda d: drop_statistic(b, c, n, d) > target, -ones, ones, split, halvings=40
        )

    return end(z), end(-z)


def margin_excess(lost, gained, n, points) -> tuple[np.ndarray, np.ndarray]:
    """``(sign, size)`` of the observed drop minus a tolerance of ``points`` accuracy points,
    ``(lost − gained)/n − points/100``, in exact rational arithmetic: ``sign`` is −1, 0 or 1
    exactly and ``size`` its absolute value rounded once to float64.

    A tolerance is read as the decimal its float prints (``2.8`` is 14/5, not the binary
    2.79999999999999982…), so 14 lost of 500 *equals* 2.8 points: in floating point the two
    differ by 3.5e-18, and the samples that would decide such a group came out as 10³⁵.

    >>> margin_excess([14, 15], [0, 0], 500, 2.8)[0].tolist()
    [0, 1]
    """
    b, c, m, pts = (np.asarray(v) for v in np.broadcast_arrays(lost, gained, n, points))
    sign, size = np.zeros(b.shape, dtype=np.int64), np.zeros(b.shape)
    for value in np.unique(pts):
        num, den = Fraction(repr(float(value))).as_integer_ratio()
        at = pts == value
        bb, cc, mm = (v[at].astype(np.int64).astype(object) for v in (b, c, m))
        top = (bb - cc) * (100 * den) - num * mm  # Python integers: no overflow, no rounding
        bottom = mm * (100 * den)
        sign[at] = (top > 0).astype(np.int64) - (top < 0).astype(np.int64)
        size[at] = np.abs(top / bottom).astype(np.float64)  # int / int rounds once, correctly
    return sign, size


def _score(b, c, n, margin) -> np.ndarray:
    """Tango's score statistic without continuity correction: the ordering of the exact test."""
    var = n * (2.0 * _constrained_p21(b, c, n, margin) + margin * (1.0 - margin))
    num = b - c - n * margin
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, num / np.sqrt(np.maximum(var, 0.0)), np.sign(num) * np.inf)
    return np.where(num == 0, 0.0, z)


#: Nuisance values ``s = min(p_lost, p_gained)`` tried by the exact test, as shares of their range
#: ``[0, (1 − |δ0|)/2]``: geometric near 0 (few expected gains, where the score test failed) and
#: even elsewhere (129 steps: the tail probability has several local maxima); around each of the
#: best :data:`_PEAKS` local maxima the grid is then refined twice, 9 steps between neighbours.
_NUISANCE = np.unique(np.concatenate([[0.0], np.geomspace(1e-6, 1.0, 25), np.linspace(0, 1, 129)]))
_PEAKS, _REFINE, _REFINE_STEPS = 3, 2, 9
_CELLS = 1 << 22  # tables x nuisance values x discordant counts held at once


def _thresholds(t, n, margin) -> np.ndarray:
    """Per table (sizes ``n``, K) and discordant count ``D = 0..max(n)``: the smallest
    ``lost`` with ``Z(lost, D − lost) >= t`` (``D + 1`` if none); ``Z`` increases in ``lost``
    at fixed ``D`` (``tests/metrics``). Counts ``D > n`` are never used."""
    d = np.arange(int(n.max()) + 1)
    lo = np.full((len(t), len(d)), -1)
    hi = np.broadcast_to(d + 1, lo.shape).copy()
    while (hi - lo > 1).any():
        mid = (lo + hi) // 2
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = _score(mid, d - mid, n[:, None], margin[:, None]) >= t[:, None]
        open_ = hi - lo > 1
        hi, lo = np.where(open_ & ok, mid, hi), np.where(open_ & ~ok, mid, lo)
    return hi


def _log_choose(n, width: int) -> np.ndarray:
    """``log C(n_k, D)`` per table (K,) for ``D = 0..width − 1`` (``−inf`` beyond ``n_k``)."""
    d = np.arange(width, dtype=np.float64)
    size = n.astype(np.float64)[:, None]
    with np.errstate(invalid="ignore"):
        out = gammaln(size + 1.0) - gammaln(d + 1.0) - gammaln(size - d + 1.0)
    return np.where(d <= size, out, -np.inf)


def _tail_at(s, first, n, margin) -> np.ndarray:
    """``P(Z >= t)`` for tables of sizes ``n`` (K,) whose rejection region starts at ``first``
    (K, max(n) + 1), at drop ``margin`` (K,) and nuisance ``s`` (K, G):
    ``Σ_D P(D) P(lost >= first_D | D)`` with ``D ~ Binomial(n, ψ)``,
    ``lost | D ~ Binomial(D, p_lost / ψ)``, ``ψ = p_lost + p_gained``.

    Only the ``D`` within Bernstein's bound ``t = 10 + √(100 + 15 n)`` of ``nψ`` are summed
    (beyond it ``P(D) < e^-30``): a window of ``2t + 2`` values, 370 of 2,001 at ``n = 2000``.
    """
    p_lost = s + np.maximum(margin, 0.0)[:, None]
    psi = 2.0 * s + np.abs(margin)[:, None]
    share = np.where(psi > 0, p_lost / np.where(psi > 0, psi, 1.0), 0.5)[..., None]
    psi = np.minimum(psi, 1.0)[..., None]
    size = n.astype(np.float64)[:, None, None]
    reach = 10.0 + np.sqrt(100.0 + 15.0 * size)
    width = int(min(n.max() + 1, (2 * np.ceil(reach) + 2).max()))
    start = np.clip(np.floor(size * psi - reach), 0, np.maximum(size + 1 - width, 0))
    d_index = start.astype(np.int64) + np.arange(width)  # (K, G, W)
    inside = d_index <= n[:, None, None]
    d_index = np.minimum(d_index, n[:, None, None])
    d = d_index.astype(np.float64)
    choose = np.take_along_axis(
        np.broadcast_to(
            _log_choose(n, first.shape[1])[:, None, :], k_shape := (*psi.shape[:2], first.shape[1])
        ),
        d_index,
        axis=2,
    )
    log_pmf = np.where(inside, choose + xlogy(d, psi) + xlog1py(size - d, -psi), -np.inf)
    k = np.take_along_axis(np.broadcast_to(first[:, None, :], k_shape), d_index, axis=2).astype(
        np.float64
    )
    share = np.broadcast_to(share, log_pmf.shape)
    # P(lost >= k | D) by the incomplete beta function (3.7 µs each) only where it matters: D
    # not negligible (P(D) > 1e-13) and k within Bernstein's bound of the conditional mean;
    # beyond it the tail is 0 or 1 to 1e-13, which is what it is set to (over 2,001 values of
    # D at most 3e-10 in all)
    mean, var = d * share, d * share * (1.0 - share)
    above, below = k - mean, mean - (k - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        far_above = (above > 0) & (above * above > 60.0 * (var + above / 3.0))
        far_below = (below > 0) & (below * below > 60.0 * (var + below / 3.0))
    tail = ((k <= 0) | (far_below & (k <= d))).astype(np.float64)
    part = (k > 0) & (k <= d) & ~far_above & ~far_below & (log_pmf > -30.0)
    tail[part] = bdtrc(k[part] - 1, d[part].astype(np.int64), share[part])
    return (np.exp(log_pmf) * tail).sum(-1)


def _exact_upper_tail(t, n, margin) -> np.ndarray:
    """``sup`` over the nuisance of ``P(Z >= t)`` at drop ``margin``, per table of size ``n``.

    The grid :data:`_NUISANCE` first; then around each of the best :data:`_PEAKS` local maxima,
    all at once, :data:`_REFINE` rounds of :data:`_REFINE_STEPS` points between the best point's
    neighbours."""
    out = np.empty(len(t))
    order = np.argsort(n, kind="stable")  # similar sizes share a chunk's padding
    per_table = len(_NUISANCE) * (2 * np.ceil(10.0 + np.sqrt(100.0 + 15.0 * n[order])) + 2)
    chunks = np.cumsum(per_table) // _CELLS
    for chunk in np.unique(chunks):
        part = order[chunks == chunk]
        tt, nn, mm = t[part], n[part], margin[part]
        first = _thresholds(tt, nn, mm)
        s = _NUISANCE[None, :] * ((1.0 - np.abs(mm)) / 2.0)[:, None]
        tail = _tail_at(s, first, nn, mm)
        best = tail.max(1)
        padded = np.pad(tail, ((0, 0), (1, 1)), constant_values=-1.0)
        peak = (tail >= padded[:, :-2]) & (tail >= padded[:, 2:])
        j = np.argsort(np.where(peak, -tail, np.inf), axis=1, kind="stable")[:, :_PEAKS]
        rows = np.arange(len(part))[:, None]
        left = s[rows, np.maximum(j - 1, 0)]  # (K, P)
        right = s[rows, np.minimum(j + 1, s.shape[1] - 1)]
        for _ in range(_REFINE):
            window = left[..., None] + (right - left)[..., None] * np.linspace(0, 1, _REFINE_STEPS)
            shape = window.shape  # (K, P, R)
            tail = _tail_at(window.reshape(len(part), -1), first, nn, mm).reshape(shape)
            best = np.maximum(best, tail.max((1, 2)))
            i = tail.argmax(2)[..., None]
            left = np.take_along_axis(window, np.maximum(i - 1, 0), 2)[..., 0]
            right = np.take_along_axis(window, np.minimum(i + 1, _REFINE_STEPS - 1), 2)[..., 0]
        out[part] = best
    return np.minimum(out, 1.0)


def exact_exceed_p(lost, gained, n, margin) -> np.ndarray:
    """The exact unconditional p-value that the drop ``δ = p_b − p_c`` is above ``margin``
    (fractions), in the project's two-sided convention ``min(1, 2 P)``.

    Under ``H0: δ <= margin`` the counts are trinomial with one unknown nuisance parameter
    besides ``δ``. The tables are ordered by Tango's score statistic ``Z`` at ``margin``
    (uncorrected, :func:`drop_statistic`'s without the ½), and ``P = sup P(Z >= z_obs)`` over
    the null (Sidik 2003, *Stat. Med.* 22:265; Berger & Boos 1994 for the principle). ``Z``
    rises with ``lost`` and falls with ``gained``, so the supremum lies on the boundary
    ``δ = margin`` (moving mass from the concordant samples to ``lost`` only enlarges the
    region's probability): one nuisance ``s = p_c ∈ [0, (1 − margin)/2]``, searched on a grid
    refined around its best point (:data:`_NUISANCE`; a 4,000-point grid agrees to 1e-5 relative
    in the tests). Given ``D = b + c ~ Binomial(n, 2s + margin)``, ``b | D`` is binomial, so each
    nuisance value costs one sum over ``D`` (``O(n)``).

    Unlike the normal approximation of :func:`drop_tests`, ``P(p < λ) <= λ/2`` at every level
    ``λ`` and every true rate of gains, which Holm's ``α/m`` for 100 groups needs
    (``docs/statistics.md``). ``n`` may differ between tables.
    """
    b, c, m, d = (np.asarray(v) for v in np.broadcast_arrays(lost, gained, n, margin))
    out = np.ones(b.shape, dtype=np.float64)
    t = _score(*_float(b, c, m, d))
    at = m > 0
    if at.any():
        tail = _exact_upper_tail(t[at], m[at].astype(np.int64), d[at].astype(np.float64))
        out[at] = np.minimum(1.0, 2.0 * tail)
    return out


def exact_lower_bound(lost, gained, n, *, level, split=None) -> np.ndarray:
    """The lower confidence bound of the drop that inverts :func:`exact_exceed_p`: the margin
    below which every margin is rejected at ``level`` (``p < level``; the lower end of a
    two-sided ``1 − level`` interval), by bisection. With ``split`` (the tolerances) the bound
    lies strictly above the tolerance exactly when the test at the tolerance rejects
    (:func:`_bisect`). The bracket is the score bound at the same level ± 1 point where the
    exact test confirms it (else ``[−1, observed drop]``), halved until it is exact to 1e-5
    (0.001 points; 11 halvings from the score bracket)."""
    b, c, m, lv = (np.asarray(v) for v in np.broadcast_arrays(lost, gained, n, level))
    shape = b.shape
    b, c, m, lv = b.ravel(), c.ravel(), m.ravel(), lv.ravel().astype(np.float64)
    sp = None if split is None else np.broadcast_to(split, shape).ravel().astype(np.float64)
    # identical tables (many groups of an audit lose and gain nothing) are solved once
    rows = np.stack([b, c, m, lv, np.zeros_like(lv) if sp is None else sp], axis=1)
    unique, inverse = np.unique(rows.astype(np.float64), axis=0, return_inverse=True)
    if len(unique) < len(rows):
        one = exact_lower_bound(
            unique[:, 0].astype(b.dtype),
            unique[:, 1].astype(c.dtype),
            unique[:, 2].astype(m.dtype),
            level=unique[:, 3],
            split=None if sp is None else unique[:, 4],
        )
        return one[inverse.ravel()].reshape(shape)
    bf, cf, mf = _float(b, c, np.where(m > 0, m, 1))
    observed = (bf - cf) / mf

    def rejects(d: np.ndarray) -> np.ndarray:
        return exact_exceed_p(b, c, m, d) < lv

    z = stats.norm.ppf(1.0 - lv / 2.0)
    guess = _bisect(
        lambda d: drop_statistic(bf, cf, mf, d) > z,
        -np.ones(b.shape),
        np.ones(b.shape),
        None,
        halvings=40,
    )
    lo, hi = np.maximum(guess - 0.01, -1.0), np.minimum(guess + 0.01, observed)
    good = (lo < hi) & rejects(lo) & ~rejects(hi)
    lo, hi = np.where(good, lo, -1.0), np.where(good, hi, observed)
    halvings = int(np.ceil(np.log2(max(float((hi - lo).max(initial=0.0)), 1e-5) / 1e-5)))
    return _bisect(rejects, lo, hi, sp, halvings=halvings).reshape(shape)


def samples_to_decide(lost, gained, n, margin, *, z: float, excess=None) -> np.ndarray:
    """Test samples a group would need for ``|Z| >= z`` at ``margin`` if its observed rates of
    lost and gained samples held: ``inf`` where the observed drop equals the margin.

    With both counts scaled from ``n`` to ``n'`` the restricted estimate ``p̃_c`` stays the
    same, so ``Z(n') = (n' |e| − ½) / (√n' s)`` with ``e = (b − c)/n − δ0`` and
    ``s = √(2 p̃_c + δ0(1 − δ0))``; ``n'`` solves the quadratic ``|e| x² − z s x − ½ = 0`` in
    ``x = √n'``. ``excess``: ``|e|`` computed exactly (:func:`margin_excess`), so a drop equal
    to a tolerance that is no binary float gives ``inf``, not 10³⁵; default from floats. The
    result is a float (it can exceed any integer type: compare it before converting).
    """
    b, c, n, d = _float(lost, gained, n, margin)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.abs((b - c) / n - d) if excess is None else np.abs(_float(excess, b)[0])
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
    within when the score test's ``p_within < alpha``; exceeds when the exact test's
    ``p_exceed < alpha / n_tests`` (Bonferroni: the first step of Holm over ``n_tests`` tests,
    so with other groups' effects Holm rejects at least this often). Sums over every likely
    table (:func:`exact_exceed_rate` for the exceeds side).
    """
    b, c, prob = table_probabilities(n, p_lost, p_gained)
    _, p_within = drop_tests(b, c, n, margin)
    exceeds = exact_exceed_rate(n, p_lost, p_gained, margin, level=alpha / n_tests)
    return float(prob[p_within < alpha].sum()), exceeds


def exact_exceed_rate(n: int, p_lost: float, p_gained: float, margin: float, *, level) -> float:
    """Exact ``P(exact_exceed_p < level)`` for one group of ``n`` samples lost with probability
    ``p_lost`` and gained with ``p_gained``, summed over every likely table.

    The p-value falls as the score ``Z`` rises (its region ``{Z >= z}`` shrinks), so the tables
    it rejects are those with ``Z`` at or above one critical value, found by bisection over the
    observed values of ``Z`` (a few dozen exact p-values, not one per table).
    """
    b, c, prob = table_probabilities(n, p_lost, p_gained)
    t = _score(*_float(b, c, n, margin))
    values = np.unique(t)

    def p(i: int) -> float:
        tail = _exact_upper_tail(values[i : i + 1], np.array([n]), np.array([margin], dtype=float))
        return min(1.0, 2.0 * float(tail[0]))

    lo, hi = -1, len(values)  # p(values[hi]) < level: rejected; values[lo] is not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if p(mid) < level else (mid, hi)
    return float(prob[t >= values[hi]].sum()) if hi < len(values) else 0.0


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

