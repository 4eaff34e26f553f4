"""CEV and SDE (Blakeney et al.) against a direct implementation of the published formulas.

The reference implementation below is written from the definitions, one class at a time in plain
Python: per class the point (ΔFPR_c, ΔFNR_c) of relative changes (FPR_c(θ~) - FPR_c(θ)) / FPR_c(θ)
(likewise FNR), or of absolute changes for the ``*_abs`` variant; CEV is the mean squared
Euclidean distance of the points from their centroid, SDE the mean of |ΔFNR_c - ΔFPR_c|; classes
whose change is undefined are left out.
"""

import math

import numpy as np
import pytest
import torch

from fairquant._audit import audit_model
from fairquant.data import Split
from fairquant.errors import ConfigError
from fairquant.metrics.fairness import (
    cev_sde_from_counts,
    combined_error_variance,
    symmetric_distance_error,
)
from fairquant.metrics.frame import FairnessFrame, UndefinedMetricWarning
from fairquant.metrics.uncertainty import percentile_interval, stratified_bootstrap_sums
from fairquant.quant import parse_precisions


def published(fp, fn, fp_ref, fn_ref, pos, neg, *, relative=True):
    """(CEV, SDE, classes used) by the published formulas; (nan, nan, []) if no class is left."""
    points, used = [], []
    for c in range(len(pos)):
        if pos[c] == 0 or neg[c] == 0:
            continue  # no FNR or no FPR for this class
        fpr, fnr = fp[c] / neg[c], fn[c] / pos[c]
        fpr_ref, fnr_ref = fp_ref[c] / neg[c], fn_ref[c] / pos[c]
        if relative:
            if fpr_ref == 0 or fnr_ref == 0:
                continue  # the relative change is undefined
            points.append(((fpr - fpr_ref) / fpr_ref, (fnr - fnr_ref) / fnr_ref))
        else:
            points.append((fpr - fpr_ref, fnr - fnr_ref))
        used.append(c)
    if not points:
        return math.nan, math.nan, []
    centroid = (
        sum(p[0] for p in points) / len(points),
        sum(p[1] for p in points) / len(points),
    )
    cev = sum(math.dist(p, centroid) ** 2 for p in points) / len(points)
    sde = sum(abs(p[1] - p[0]) for p in points) / len(points)
    return cev, sde, used


def counts_from_labels(y, ref, pred, num_classes):
    """One-vs-rest counts per class by a direct loop over classes and samples."""
    out = {k: [0] * num_classes for k in ("fp", "fn", "fp_ref", "fn_ref", "pos", "neg")}
    for c in range(num_classes):
        for t, r, p in zip(y, ref, pred, strict=True):
            out["pos"][c] += t == c
            out["neg"][c] += t != c
            out["fp"][c] += p == c and t != c
            out["fn"][c] += p != c and t == c
            out["fp_ref"][c] += r == c and t != c
            out["fn_ref"][c] += r != c and t == c
    return out


# Hand-built counts for six classes: class 2 has a zero reference FPR, class 3 a zero reference
# FNR (both left out of the relative variant only), class 4 has no positive test sample (left
# out of both).
COUNTS = {
    "fp": [5, 2, 3, 2, 4, 7],
    "fn": [4, 5, 2, 1, 0, 12],
    "fp_ref": [3, 4, 0, 2, 1, 7],
    "fn_ref": [2, 5, 1, 0, 0, 6],
    "pos": [10, 20, 5, 8, 0, 30],
    "neg": [90, 80, 95, 92, 100, 70],
}


@pytest.mark.parametrize("relative", [True, False])
def test_counts_match_the_published_formulas(relative):
    cev, sde, used = published(**COUNTS, relative=relative)
    assert used == ([0, 1, 5] if relative else [0, 1, 2, 3, 5])
    got = cev_sde_from_counts(*(np.array(v) for v in COUNTS.values()), relative=relative)
    assert got[0] == pytest.approx(cev, rel=1e-12) and got[1] == pytest.approx(sde, rel=1e-12)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("relative", [True, False])
def test_batched_counts_equal_one_at_a_time(relative):
    """Leading batch axes (bootstrap replicates x models) give each row's own CEV/SDE, and a row
    where no class is left is NaN, not inf."""
    rng = np.random.default_rng(3)
    pos, neg = rng.integers(0, 15, (4, 1, 5)), rng.integers(1, 15, (4, 1, 5))
    fp_ref, fn_ref = rng.integers(0, neg + 1), rng.integers(0, pos + 1)
    fp, fn = rng.integers(0, neg + 1, (4, 3, 5)), rng.integers(0, pos + 1, (4, 3, 5))
    fp_ref[0], fn_ref[0] = 0, 0  # row 0: every reference rate is 0
    pos[1] = 0  # row 1: no positives anywhere
    cev, sde = cev_sde_from_counts(fp, fn, fp_ref, fn_ref, pos, neg, relative=relative)
    assert cev.shape == sde.shape == (4, 3)
    for b in range(4):
        for m in range(3):
            args = (fp[b, m], fn[b, m], fp_ref[b, 0], fn_ref[b, 0], pos[b, 0], neg[b, 0])
            want_cev, want_sde, _ = published(*args, relative=relative)
            np.testing.assert_allclose([cev[b, m], sde[b, m]], [want_cev, want_sde], rtol=1e-12)
    assert np.isnan(cev[1]).all() and (np.isnan(cev[0]).all() or not relative)
    assert not np.isinf(cev).any() and not np.isinf(sde).any()


def _labels_with_a_class_the_reference_never_confuses(seed=0, n=300, c=4):
    """Labels, reference and compressed predictions; the reference never predicts class 3 for
    another class (FPR_3 = 0), the compressed model sometimes does."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    g = rng.integers(0, 2, n)
    ref = np.where(rng.random(n) < 0.75, y, rng.integers(0, c - 1, n))
    ref = np.where((ref == c - 1) & (y != c - 1), 0, ref)
    pred = np.where(rng.random(n) < 0.8, ref, rng.integers(0, c, n))
    return y, g, ref, pred


def test_functional_entries_match_the_published_formulas():
    y, _, ref, pred = _labels_with_a_class_the_reference_never_confuses()
    counts = counts_from_labels(y, ref, pred, 4)
    cev, sde, used = published(**counts)
    assert used == [0, 1, 2]
    with pytest.warns(UndefinedMetricWarning, match=r"leave out classes \[3\]"):
        assert combined_error_variance(y, ref, pred) == pytest.approx(cev, rel=1e-12)
    with pytest.warns(UndefinedMetricWarning):
        assert symmetric_distance_error(y, ref, pred) == pytest.approx(sde, rel=1e-12)
    cev_abs, sde_abs, used = published(**counts, relative=False)
    assert used == [0, 1, 2, 3]
    assert combined_error_variance(y, ref, pred, relative=False) == pytest.approx(cev_abs)
    assert symmetric_distance_error(y, ref, pred, relative=False) == pytest.approx(sde_abs)


def test_functional_entries_reject_bad_input():
    with pytest.raises(ConfigError, match="no class has positive and negative samples and"):
        combined_error_variance([0, 1], [0, 1], [1, 0])  # a perfect reference: rates are 0
    with pytest.raises(ConfigError, match="same length"):
        symmetric_distance_error([0, 1], [0, 1], [1])
    with pytest.raises(ConfigError, match="num_classes=2, but a label or prediction is 2"):
        combined_error_variance([0, 1], [0, 2], [1, 0], num_classes=2)
    with pytest.raises(ConfigError, match="integer class codes"):
        combined_error_variance([0.5, 1], [0, 1], [1, 0])


def test_frame_leaves_out_a_class_with_zero_reference_rate_with_a_note():
    y, g, ref, pred = _labels_with_a_class_the_reference_never_confuses()
    with pytest.warns(UndefinedMetricWarning, match="leave out 1 of 4 classes"):
        frame = FairnessFrame(
            y_true=y, groups=g, predictions={"fp32": ref, "q": pred}, n_bootstrap=200
        )
    assert any("fp32 has false-positive rate 0 for classes [3]," in note for note in frame.notes)
    with pytest.warns(UndefinedMetricWarning, match="leave out 1 of 4 classes"):
        named = FairnessFrame(
            y_true=y,
            groups=g,
            predictions={"fp32": ref, "q": pred},
            class_names=["cat", "dog", "owl", "yak"],
            n_bootstrap=0,
        )
    # a class is named by its name where the frame has names (issue 25), not by its code
    assert any("false-positive rate 0 for classes ['yak']," in note for note in named.notes)
    overall = frame.overall().loc["q"]
    counts = counts_from_labels(y, ref, pred, 4)
    for suffix, relative in (("", True), ("_abs", False)):
        cev, sde, _ = published(**counts, relative=relative)
        assert overall[f"cev{suffix}"] == pytest.approx(cev, rel=1e-12)
        assert overall[f"sde{suffix}"] == pytest.approx(sde, rel=1e-12)
    assert frame.overall().loc["fp32", ["cev", "sde", "cev_abs", "sde_abs"]].tolist() == [0] * 4
    cells = frame.table[["value", "ci_low", "ci_high"]].to_numpy()
    assert np.isfinite(cells).all()


def test_no_class_left_means_absent_with_a_note():
    y = np.array([0, 0, 1, 1, 2, 2])
    ref = y.copy()  # a perfect reference: every FPR and FNR is 0
    pred = np.array([0, 1, 1, 1, 2, 0])
    with pytest.warns(UndefinedMetricWarning, match="cev and sde are undefined"):
        frame = FairnessFrame(
            y_true=y, groups=[0, 1] * 3, predictions={"fp32": ref, "q": pred}, n_bootstrap=0
        )
    metrics = set(frame.table.metric)
    assert {"cev", "sde"}.isdisjoint(metrics) and {"cev_abs", "sde_abs"} <= metrics
    assert "cev_abs and sde_abs use absolute changes" in frame.notes[-1]
    assert not frame.table.value.isna().any()


def test_bootstrap_replicates_apply_the_same_rule():
    """Each replicate leaves out the classes whose reference rate is 0 in that resample (class 0
    below has a single reference false positive, absent from about a third of the resamples), so
    the interval is the percentile interval of the published formula on every resample."""
    rng = np.random.default_rng(1)
    n, c = 240, 3
    y = rng.integers(0, c, n)
    g = np.repeat([0, 1], [150, 90])
    ref = np.where(rng.random(n) < 0.8, y, 1 + rng.integers(0, c - 1, n) % (c - 1))
    ref[np.flatnonzero(y == 2)[0]] = 0  # class 0's only reference false positive
    pred = np.where(rng.random(n) < 0.85, ref, rng.integers(0, c, n))
    b = 300
    frame = FairnessFrame(
        y_true=y, groups=g, predictions={"fp32": ref, "q": pred}, n_bootstrap=b, random_state=5
    )
    # the frame's resamples: the same seeded draws, as counts of each sample
    weights, _ = stratified_bootstrap_sums(np.eye(n), g, 2, n_bootstrap=b, random_state=5)
    weights = weights.sum(1)  # (b, n): how often each sample is drawn
    reps = {"cev": [], "sde": []}
    left_out = 0
    for w in weights:
        counts = {k: [0.0] * c for k in ("fp", "fn", "fp_ref", "fn_ref", "pos", "neg")}
        for k in range(c):
            for t, r, p, wi in zip(y, ref, pred, w, strict=True):
                counts["pos"][k] += wi * (t == k)
                counts["neg"][k] += wi * (t != k)
                counts["fp"][k] += wi * (p == k and t != k)
                counts["fn"][k] += wi * (p != k and t == k)
                counts["fp_ref"][k] += wi * (r == k and t != k)
                counts["fn_ref"][k] += wi * (r != k and t == k)
        cev, sde, used = published(**counts)
        left_out += 0 not in used
        reps["cev"].append(cev)
        reps["sde"].append(sde)
    assert 0.2 * b < left_out < 0.5 * b  # class 0 is often left out of a replicate
    rows = frame.table[frame.table.model == "q"].set_index("metric")
    for name, values in reps.items():
        values = np.array(values)
        assert np.isfinite(values).all()
        low, high = percentile_interval(values)
        assert rows.loc[name, ["ci_low", "ci_high"]].tolist() == pytest.approx([low, high])


def test_replicates_without_any_class_are_counted_in_the_notes():
    """Binary target, one reference error of each kind: a resample missing either leaves no
    class with a relative change; those replicates drop out of the interval, and a note says how
    many."""
    y = np.array([0] * 20 + [1] * 20)
    ref = y.copy()
    ref[0], ref[20] = 1, 0
    pred = np.where(np.arange(40) % 7 == 0, 1 - y, y)
    with pytest.warns(UndefinedMetricWarning, match=r"cev and sde: in \d+ of 400 bootstrap"):
        frame = FairnessFrame(
            y_true=y,
            groups=np.arange(40) % 2,
            predictions={"fp32": ref, "q": pred},
            n_bootstrap=400,
        )
    cells = frame.table.loc[frame.table.metric.isin(["cev", "sde"]), ["ci_low", "ci_high"]]
    assert np.isfinite(cells.to_numpy()).all()


def test_audit_cev_sde_equal_the_formulas_on_its_predictions():
    """On a real (tiny) audit the relative and absolute CEV/SDE of every precision equal the
    published formulas applied to the audit's own per-sample predictions."""
    torch.manual_seed(0)
    n = 300
    x = torch.randn(n, 1, 2, 3)
    y = (x.flatten(1)[:, :3].argmax(1) + (torch.rand(n) < 0.2).long()) % 3
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3))
    test = Split(x, y, torch.arange(n) % 2)
    result = audit_model(
        model, test, ["a", "b"], parse_precisions("int4,int3"), show_progress=False, n_bootstrap=0
    )
    samples = result.samples
    table = result.table[result.table.group == "all"].set_index(["precision", "metric"]).value
    for precision in ("int4", "int3"):
        counts = counts_from_labels(
            samples.y, samples.predictions["fp32"], samples.predictions[precision], 3
        )
        assert counts["fp_ref"] != counts["fp"]  # the precision changed some predictions
        for suffix, relative in (("", True), ("_abs", False)):
            cev, sde, used = published(**counts, relative=relative)
            assert used == [0, 1, 2]
            assert table[(precision, f"cev{suffix}")] == pytest.approx(cev, rel=1e-9)
            assert table[(precision, f"sde{suffix}")] == pytest.approx(sde, rel=1e-9)
