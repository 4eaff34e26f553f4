"""The verdict: tolerances, pass/fail/inconclusive per precision, and its calibration."""

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fairquant.errors import ConfigError
from fairquant.metrics.frame import FairnessFrame
from fairquant.metrics.paired import exact_exceed_p, exact_exceed_rate
from fairquant.metrics.policy import ALPHA, CONFIDENCE, holm
from fairquant.metrics.samples import PerSample
from fairquant.metrics.uncertainty import percentile_interval
from fairquant.metrics.verdict import MAX_FORESEEN, Tolerance, Verdict, samples_needed, verdict


def synthetic(
    sizes, rates, *, models=("int4",), seed=0, accuracy=0.9
) -> tuple[PerSample, list[str]]:
    """Paired predictions with known per-group effects.

    ``rates[model][a] = (p_lost, p_gained)``: the chance a sample of group ``a`` is correct at
    fp32 only / at the quantized model only; the rest are correct in both with ``accuracy``.
    Losses: 0 where correct, 1 where wrong (so G(a) is minus the accuracy change, a fraction).
    """
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes)), sizes)
    y = np.zeros(len(g), dtype=np.int64)
    u = rng.random(len(g))
    preds = {"fp32": np.where(u < accuracy, 0, 1)}
    for name in models:
        lost, gained = (np.array(r)[g] for r in zip(*rates[name], strict=True))
        v = rng.random(len(g))
        p = preds["fp32"].copy()
        ok = p == 0
        # of fp32's correct samples a share lost / P(ok) flips to wrong, and vice versa
        p[ok & (v < lost / accuracy)] = 1
        p[~ok & (v < gained / (1 - accuracy))] = 0
        preds[name] = p
    losses = {k: (p != y).astype(float) for k, p in preds.items()}
    return PerSample(y, g, preds, losses), [f"g{a}" for a in range(len(sizes))]


# ---- tolerance -------------------------------------------------------------------------------


def test_tolerance_parse():
    tol = Tolerance.parse(["2", "Others=1", "a=b=0.5"], max_phi=0.3)
    assert tol.max_drop == 2 and tol.max_phi == 0.3
    assert dict(tol.per_group) == {"Others": 1.0, "a=b": 0.5}
    assert tol.for_group("Others") == 1 and tol.for_group("x") == 2
    assert Tolerance.parse([], None) is None
    assert Tolerance.parse(None, None) is None


@pytest.mark.parametrize(
    ("items", "phi", "message"),
    [
        (["2", "3"], None, "given twice for every group"),
        (["Others=1"], None, "give the points every group may lose"),
        ([], 0.2, "--max-phi needs --max-drop"),
        (["x"], None, "expected a number of accuracy points"),
        (["2", "=1"], None, "expected POINTS or GROUP=POINTS"),
        (["2", "a=1", "a=2"], None, "group 'a' is given twice"),
        (["-1"], None, "expected accuracy points in [0, 100)"),
        (["2"], -0.1, "expected a finite number >= 0"),
    ],
)
def test_tolerance_parse_errors(items, phi, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Tolerance.parse(items, phi)


# ---- decisions -------------------------------------------------------------------------------


def test_verdict_per_precision():
    sizes = [1000, 1000, 600]
    rates = {
        "int8": [(0.002, 0.002)] * 3,  # no change anywhere: pass
        "int4": [(0.01, 0.01), (0.01, 0.01), (0.2, 0.01)],  # g2 loses 19 points: fail
        "int3": [(0.01, 0.01), (0.01, 0.01), (0.03, 0.01)],  # g2 loses 2 of 2 allowed
    }
    samples, names = synthetic(sizes, rates, models=tuple(rates))
    v = verdict(samples, Tolerance(2.0), group_names=names, n_bootstrap=200)
    assert isinstance(v, Verdict)
    assert v.status == {"int8": "pass", "int4": "fail", "int3": "inconclusive"}
    assert v.overall == "fail"
    rows = v.table.set_index(["precision", "group"])
    fail = rows.loc[("int4", "g2")]
    assert fail.status == "fail" and fail.change < -10 and fail.ci_high < -2
    assert fail.p_exceed_holm < ALPHA
    assert fail.p_exceed == exact_exceed_p(fail.lost, fail.gained, fail.n, 0.02)
    assert pd.isna(fail.n_needed)
    undecided = rows.loc[("int3", "g2")]
    assert undecided.status == "inconclusive" and undecided.n_needed > 600
    assert list(v.by_group().columns) == ["int8", "int4", "int3"]
    assert list(v.by_group().index) == names
    # one Holm family per precision: its 3 groups
    assert v.n_tests == 3 and v.family == "precision"
    for precision in rates:
        part = v.table[v.table.precision == precision]
        assert np.allclose(part.p_exceed_holm, holm(part.p_exceed.to_numpy()))
        assert np.allclose(part.p_mcnemar_holm, holm(part.p_mcnemar.to_numpy()))
    pooled = verdict(samples, Tolerance(2.0), group_names=names, n_bootstrap=0, family="audit")
    assert pooled.n_tests == 9 and pooled.family == "audit"
    assert np.allclose(pooled.table.p_exceed_holm, holm(pooled.table.p_exceed.to_numpy()))
    assert (pooled.table.p_exceed_holm >= v.table.p_exceed_holm).all()
    with pytest.raises(ConfigError, match="family 'all': expected one of"):
        verdict(samples, group_names=names, family="all")
    # intervals of the excess loss contain it (losses are 0/1, so G(a) = -change / 100)
    assert np.allclose(rows.excess_loss, -rows.change / 100)
    assert (rows.excess_loss_low <= rows.excess_loss).all()
    assert (rows.excess_loss <= rows.excess_loss_high).all()
    gaps = v.gaps.set_index(["precision", "metric"])
    assert gaps.loc[("int4", "worst_group_accuracy"), "ci_high"] < 0
    assert (gaps.status == "not judged").all()


@pytest.mark.filterwarnings("ignore::fairquant.metrics.fairness.UndefinedMetricWarning")
def test_bootstrap_intervals_are_the_audits_frame_replicates():
    """The verdict's excess-loss and gap intervals are percentile intervals of the audit's own
    FairnessFrame replicates (no resampling of its own); another n_bootstrap or random_state
    builds a frame of the samples, whose seeded resamples are the audit's at the same seed."""
    rates = {"int8": [(0.002, 0.002)] * 3, "int4": [(0.01, 0.01), (0.03, 0.0), (0.2, 0.01)]}
    samples, names = synthetic([300, 200, 100], rates, models=tuple(rates))
    frame = FairnessFrame(
        y_true=samples.y,
        groups=samples.g,
        group_names=names,
        predictions=samples.predictions,
        losses=samples.losses,
        n_bootstrap=200,
        random_state=5,
    )
    result = SimpleNamespace(samples=samples, group_names=names, frame=frame)
    v = verdict(result, precisions=["int4"])
    assert v.n_bootstrap == 200
    low, high = percentile_interval(frame.replicates("excess_loss")[:, 2, :3], CONFIDENCE)
    assert np.array_equal(v.table.excess_loss_low, low)
    assert np.array_equal(v.table.excess_loss_high, high)
    gaps = v.gaps.set_index("metric")
    for metric in ("phi", "accuracy_gap", "worst_group_accuracy"):
        reps = frame.replicates(metric)[:, :, -1]
        low, high = percentile_interval(reps[:, 2] - reps[:, 0], CONFIDENCE)
        assert (gaps.loc[metric, "ci_low"], gaps.loc[metric, "ci_high"]) == (low, high)
    same = verdict(samples, group_names=names, precisions=["int4"], n_bootstrap=200, random_state=5)
    assert same.table.equals(v.table) and same.gaps.equals(v.gaps)
    other = verdict(result, precisions=["int4"], n_bootstrap=300)
    assert other.n_bootstrap == 300
    assert not np.array_equal(other.table.excess_loss_low, v.table.excess_loss_low)
    assert verdict(result, precisions=["int4"], n_bootstrap=0).table.excess_loss_low.isna().all()


def test_per_group_override_and_phi_bound():
    samples, names = synthetic([1500, 1500], {"int4": [(0.01, 0.0), (0.06, 0.0)]})
    loose = verdict(samples, Tolerance(10.0), group_names=names, n_bootstrap=0)
    assert loose.status == {"int4": "pass"}
    strict = verdict(samples, Tolerance(10.0, {"g1": 1.0}), group_names=names, n_bootstrap=0)
    assert strict.status == {"int4": "fail"}
    # G(g1) - G(g0) = 0.05 > 0.01: phi exceeds; and far below 0.2
    phi = verdict(samples, Tolerance(10.0, max_phi=0.01), group_names=names, n_bootstrap=0)
    assert phi.status == {"int4": "fail"} and phi.n_tests == 3  # 2 groups and phi
    row = phi.gaps.set_index("metric").loc["phi"]
    assert row.status == "fail" and np.isnan(row.ci_low)  # no bootstrap: no interval
    ok = verdict(samples, Tolerance(10.0, max_phi=0.2), group_names=names, n_bootstrap=0)
    assert ok.status == {"int4": "pass"}


def test_small_groups_are_inconclusive_with_samples_needed():
    samples, names = synthetic([20, 20], {"int4": [(0.0, 0.0), (0.05, 0.0)]})
    v = verdict(samples, Tolerance(2.0), group_names=names, n_bootstrap=0)
    assert v.status == {"int4": "inconclusive"}
    assert (v.table.n_needed.dropna() > 20).all()


def test_empty_group_blocks_a_pass_and_says_so():
    samples, _ = synthetic([500, 500], {"int4": [(0.0, 0.0), (0.0, 0.0)]})
    v = verdict(samples, Tolerance(5.0), group_names=["a", "b", "nobody"], n_bootstrap=100)
    assert v.status == {"int4": "inconclusive"}
    assert any("'nobody' has no test samples" in note for note in v.notes)
    row = v.table.set_index("group").loc["nobody"]
    assert row.n == 0 and row.status == "inconclusive"


def test_clear_errors():
    samples, names = synthetic([50, 50], {"int4": [(0.0, 0.0)] * 2})
    with pytest.raises(ConfigError, match=r"precisions \['int2'\] are not in the audit"):
        verdict(samples, group_names=names, precisions=["int2"])
    with pytest.raises(ConfigError, match=r"overrides for unknown groups \['Others'\]"):
        verdict(samples, Tolerance(2, {"Others": 1}), group_names=names)
    with pytest.raises(ConfigError, match="nothing to judge"):
        verdict(samples, group_names=names, precisions=["fp32"])

    class NoSamples:
        samples = None
        group_names = names

    with pytest.raises(ConfigError, match="keeps no per-sample predictions"):
        verdict(NoSamples())


# ---- calibration -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [20, 200])
def test_familywise_false_fail_rate_with_holm(n):
    """5 groups of one precision, every true drop exactly at the tolerance (2 points): the chance
    that the verdict fails the precision is at most alpha (simulated, 2,000 audits; the exact
    p-value of each distinct table computed once)."""
    rng = np.random.default_rng(n)
    p_gained, margin = 0.01, 0.02
    counts = rng.multinomial(n, [p_gained + margin, p_gained, 1 - margin - 2 * p_gained], (2000, 5))
    tables, index = np.unique(counts[..., :2].reshape(-1, 2), axis=0, return_inverse=True)
    p_exceed = exact_exceed_p(tables[:, 0], tables[:, 1], n, margin)[index].reshape(2000, 5)
    fails = [(holm(pe) < ALPHA).any() for pe in p_exceed]
    assert np.mean(fails) <= ALPHA


@pytest.mark.parametrize(("n", "groups"), [(2000, 5), (2000, 100)])
def test_familywise_false_fail_rate_exact(n, groups):
    """The same at 2,000 samples, exactly: with independent groups Holm fails some group under
    the global null with probability 1 − (1 − r)^m, r the exact rate at alpha / m."""
    rate = exact_exceed_rate(n, 0.03, 0.01, 0.02, level=ALPHA / groups)
    assert 1 - (1 - rate) ** groups <= ALPHA / 2


def test_issue_26_many_groups_with_few_expected_gains():
    """70 groups at a 2.8-point tolerance, 499 samples each, 0.1 % gains: the continuity-corrected
    score test failed some group with probability 7.3 % (exact); the exact test keeps it below
    alpha / 2 (groups independent: 1 − (1 − r)^70 with r its exact rate at alpha / 70)."""
    rate = exact_exceed_rate(499, 0.029, 0.001, 0.028, level=ALPHA / 70)
    assert rate <= ALPHA / 70 / 2
    assert 1 - (1 - rate) ** 70 <= ALPHA / 2


def test_end_to_end_false_fail_rate_on_synthetic_predictions():
    """verdict() itself on 20 synthetic audits (groups of 20, 200 and 400 samples), each
    group's true drop at its tolerance of 2 points: fails at most alpha of them (the rates are
    computed exactly in the tests above; this checks the plumbing)."""
    rates = {"int4": [(0.03, 0.01)] * 3}
    fails = 0
    for seed in range(20):
        samples, names = synthetic([20, 200, 400], rates, seed=seed)
        v = verdict(samples, Tolerance(2.0), group_names=names, n_bootstrap=0)
        fails += v.status["int4"] == "fail"
    assert fails / 20 <= ALPHA


# ---- exact margins ---------------------------------------------------------------------------


def one_group(n: int, lost: int, gained: int = 0) -> PerSample:
    y, g = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    fp32 = np.zeros(n, dtype=np.int64)
    fp32[lost : lost + gained] = 1  # wrong at fp32, right at int8: gained
    q = np.zeros(n, dtype=np.int64)
    q[:lost] = 1  # right at fp32, wrong at int8: lost
    preds = {"fp32": fp32, "int8": q}
    return PerSample(y, g, preds, {k: (p != y).astype(float) for k, p in preds.items()})


def test_a_drop_equal_to_a_tolerance_inexact_in_binary_does_not_overflow():
    """14 lost of 500 is exactly 2.8 points; 2.8 / 100 is not 0.028 in binary (issue 26)."""
    v = verdict(one_group(500, 14), Tolerance(2.8), n_bootstrap=0)
    row = v.table.iloc[0]
    assert row.status == "inconclusive" and pd.isna(row.n_needed)
    assert any("exactly its tolerance" in note for note in v.notes)


def test_no_tolerance_and_size_overflows():
    """Every tolerance 0.1 to 20 points (step 0.1) x every group size 20 to 2,000, with the drop
    nearest the tolerance (equal to it wherever tolerance x size / 100 is whole): the samples
    needed are a whole number or missing, never an overflow; equal drops are found exactly."""
    points = np.round(np.arange(1, 201) / 10, 1)[:, None]
    n = np.arange(20, 2001)[None, :]
    lost = np.rint(points * n / 100).astype(np.int64)
    side, _, needed = samples_needed(lost, 0, n, points, ALPHA, 100)
    exact = lost * 1000 == np.rint(points * 10).astype(np.int64) * n  # k / n = (p10 / 10) / 100
    assert exact.sum() > 1000 and ((side == 0) == exact).all()
    assert np.isnan(needed[exact]).all()
    whole = needed[~np.isnan(needed)]
    assert (whole == np.floor(whole)).all() and whole.max() <= MAX_FORESEEN
    pd.array(np.where(np.isnan(needed), pd.NA, needed).ravel().tolist(), dtype="Int64")


@pytest.mark.parametrize(("n", "lost", "points"), [(500, 14, 2.8), (20, 1, 5.0), (300, 21, 7.0)])
def test_verdict_on_drops_equal_to_their_tolerance(n, lost, points):
    v = verdict(one_group(n, lost), Tolerance(points), n_bootstrap=0)
    assert v.status == {"int8": "inconclusive"} and pd.isna(v.table.n_needed.iloc[0])


def random_audit(seed: int, groups: int = 30) -> tuple[PerSample, list[str], Tolerance]:
    """One precision, ``groups`` groups of 20 to 300 samples with random rates of lost and gained
    samples, and a random tolerance (0.1 to 20 points) per group."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(20, 301, groups)
    lost_rate = rng.choice([0.0, 0.01, 0.03, 0.08, 0.2], groups) * rng.random(groups) * 2
    gained_rate = rng.choice([0.0, 0.005, 0.02, 0.05], groups)
    samples, names = synthetic(
        sizes, {"int4": list(zip(lost_rate.clip(0, 0.45), gained_rate, strict=True))}, seed=seed
    )
    tolerance = Tolerance(2.0, {a: float(np.round(rng.uniform(0.1, 20), 1)) for a in names})
    return samples, names, tolerance


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("family", ["precision", "audit"])
def test_printed_interval_agrees_with_every_decision(seed, family):
    """Over many random groups: PASS exactly when the interval lies wholly within the tolerance,
    FAIL exactly when wholly beyond it, INCONCLUSIVE exactly when it contains the tolerance."""
    samples, names, tolerance = random_audit(seed)
    v = verdict(samples, tolerance, group_names=names, n_bootstrap=0, family=family)
    t = v.table
    assert set(t.status) >= {"inconclusive"} and len(set(t.status)) >= 2
    within = t.ci_low > -t.max_drop
    beyond = t.ci_high < -t.max_drop
    assert ((t.status == "pass") == within).all()
    assert ((t.status == "fail") == beyond).all()
    assert ((t.status == "inconclusive") == ~within & ~beyond).all()
    assert (t.ci_low <= t.change + 1e-9).all() and (t.change <= t.ci_high + 1e-9).all()
