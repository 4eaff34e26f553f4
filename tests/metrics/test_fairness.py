"""Fairness metrics against Fairlearn, bootstrap coverage, paired tests and bad input."""

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
import torch
from fairlearn import metrics as flm

from fairquant._audit import audit_model
from fairquant.data import Split
from fairquant.errors import ConfigError
from fairquant.metrics.frame import (
    EmptyGroupWarning,
    FairnessFrame,
    UndefinedMetricWarning,
)
from fairquant.metrics.uncertainty import (
    percentile_interval,
    seed_interval,
    stratified_bootstrap_sums,
)
from fairquant.quant import parse_precisions
from fairquant.schema import COLUMNS


def _binary_case(seed=0, n=300):
    rng = np.random.default_rng(seed)
    g = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    y = rng.integers(0, 2, n)
    flip = rng.random(n) < np.where(g == "c", 0.35, 0.15)
    ref = np.where(rng.random(n) < 0.1, 1 - y, y)
    return y, ref, np.where(flip, 1 - y, y), g


def _fairlearn_reference(y, p, g):
    fpr = flm.MetricFrame(
        metrics=flm.false_positive_rate, y_true=y, y_pred=p, sensitive_features=g
    ).difference()
    return {
        "demographic_parity_difference": flm.demographic_parity_difference(
            y, p, sensitive_features=g
        ),
        "demographic_parity_ratio": flm.demographic_parity_ratio(y, p, sensitive_features=g),
        "equalized_odds_difference": flm.equalized_odds_difference(y, p, sensitive_features=g),
        "equal_opportunity_difference": flm.equal_opportunity_difference(
            y, p, sensitive_features=g
        ),
        "predictive_equality_difference": fpr,
    }


def test_binary_metrics_equal_fairlearn():
    """The frame computes Fairlearn's numbers from weighted sums (what its bootstrap reuses)."""
    y, ref, p, g = _binary_case()
    expected = _fairlearn_reference(y, p, g)
    acc = flm.MetricFrame(metrics=skm.accuracy_score, y_true=y, y_pred=p, sensitive_features=g)
    frame = FairnessFrame(y_true=y, groups=g, predictions={"fp32": ref, "q": p}, n_bootstrap=0)
    overall = frame.overall().loc["q"]
    for name, value in expected.items():
        assert overall[name] == pytest.approx(value, abs=1e-12), name
    assert overall["accuracy_gap"] == pytest.approx(100 * acc.difference())
    assert overall["worst_group_accuracy"] == pytest.approx(100 * acc.group_min())
    sel = flm.MetricFrame(
        metrics=flm.selection_rate, y_true=y, y_pred=p, sensitive_features=g
    ).by_group
    pd.testing.assert_series_equal(
        frame.by_group("selection_rate")["q"], sel, check_names=False, check_index_type=False
    )


def test_one_vs_rest_metrics_and_exemplars():
    rng = np.random.default_rng(1)
    n, c = 400, 4
    y = rng.integers(0, c, n)
    g = rng.integers(0, 2, n)
    ref = np.where(rng.random(n) < 0.8, y, rng.integers(0, c, n))
    q = np.where(rng.random(n) < 0.7, ref, rng.integers(0, c, n))
    frame = FairnessFrame(
        y_true=y, groups=g, predictions={"fp32": ref, "q": q}, pos_label=2, n_bootstrap=0
    )
    # pos_label=2: class 2 against the rest, as Fairlearn's binary metrics see it
    expected = _fairlearn_reference((y == 2).astype(int), (q == 2).astype(int), g)
    overall = frame.overall().loc["q"]
    for name, value in expected.items():
        assert overall[name] == pytest.approx(value, abs=1e-12), name
    # compression-identified exemplars (Hooker et al.): predictions that differ from fp32's
    counts = [int(((ref != q) & (g == a)).sum()) for a in (0, 1)]
    assert frame.by_group("exemplars")["q"].tolist() == counts
    assert overall["exemplars"] == sum(counts)


def test_bootstrap_sums_keep_group_sizes_and_are_seeded():
    x = np.arange(10.0)[:, None]
    g = np.array([0] * 7 + [1] * 3)
    sums, totals = stratified_bootstrap_sums(
        x, g, 3, n_bootstrap=200, random_state=3, totals=np.ones((10, 1))
    )
    assert (totals == 10).all()
    # group 1's replicate sums only use its own values 7, 8, 9 (three draws each)
    assert sums.shape == (200, 3, 1)
    assert ((sums[:, 1, 0] >= 21) & (sums[:, 1, 0] <= 27)).all()
    assert (sums[:, 2] == 0).all()
    again, _ = stratified_bootstrap_sums(x, g, 3, n_bootstrap=200, random_state=3)
    np.testing.assert_array_equal(sums, again)


def test_bootstrap_interval_covers_at_nominal_rate():
    """Over 400 simulated test sets, the 95% interval of the accuracy gap between two groups and
    of one group's accuracy covers the true value 95% +- 3% of the time."""
    rng = np.random.default_rng(2024)
    p = np.array([0.9, 0.75])  # true per-group accuracy
    g = np.repeat([0, 1], [200, 120])
    n = np.bincount(g)
    hits_gap = hits_acc = 0
    sims = 400
    for sim in range(sims):
        correct = (rng.random(len(g)) < p[g]).astype(float)[:, None]
        sums, _ = stratified_bootstrap_sums(correct, g, 2, n_bootstrap=1000, random_state=sim)
        acc = sums[:, :, 0] / n  # (replicates, groups)
        low, high = percentile_interval(acc[:, 0] - acc[:, 1])
        hits_gap += low <= p[0] - p[1] <= high
        low, high = percentile_interval(acc[:, 1])
        hits_acc += low <= p[1] <= high
    assert abs(hits_gap / sims - 0.95) <= 0.03, hits_gap / sims
    assert abs(hits_acc / sims - 0.95) <= 0.03, hits_acc / sims


@pytest.mark.filterwarnings("ignore:cev, sde, cev_abs and sde_abs are undefined")
def test_frame_intervals_are_the_bootstrap_of_its_values():
    """The frame's interval is the percentile interval of the same stratified replicates."""
    rng = np.random.default_rng(7)
    g = np.repeat(["a", "b"], [200, 120])
    correct = rng.random(len(g)) < np.where(g == "a", 0.9, 0.75)
    frame = FairnessFrame(
        y_true=np.zeros(len(g), int),
        groups=g,
        predictions={"m": np.where(correct, 0, 1)},
        num_classes=3,
        random_state=11,
    )
    sums, _ = stratified_bootstrap_sums(
        correct.astype(float)[:, None], (g == "b").astype(int), 2, n_bootstrap=1000, random_state=11
    )
    acc = 100 * sums[:, :, 0] / [200, 120]
    rows = frame.table.set_index(["group", "metric"])
    assert rows.loc[("b", "accuracy"), ["ci_low", "ci_high"]].tolist() == pytest.approx(
        list(percentile_interval(acc[:, 1]))
    )
    gap = percentile_interval(acc[:, 0] - acc[:, 1])
    assert rows.loc[("all", "accuracy_gap"), ["ci_low", "ci_high"]].tolist() == pytest.approx(
        list(gap)
    )


def test_compare_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(5)
    n = 600
    g = rng.integers(0, 2, n)
    y = rng.integers(0, 3, n)
    ref = np.where(rng.random(n) < 0.9, y, (y + 1) % 3)
    hurt = np.where((g == 1) & (rng.random(n) < 0.3), (y + 1) % 3, ref)  # group 1 loses 30%
    same = np.where(rng.random(n) < 0.05, (ref + 1) % 3, ref)  # random 5% flips, both groups
    frame = FairnessFrame(
        y_true=y, groups=g, predictions={"fp32": ref, "hurt": hurt, "same": same}, random_state=0
    )
    real = frame.compare("accuracy_gap", "fp32", "hurt")
    assert real.ci_low > 0 and real.p_value < 0.01 and real.effect_size > 3
    null = frame.compare("accuracy_gap", "fp32", "same")  # flips hit both groups alike
    assert null.ci_low < 0 < null.ci_high and null.p_value > 0.05
    gap = frame.difference("accuracy")
    assert gap.loc["hurt", "value"] == pytest.approx(frame.overall().loc["hurt", "accuracy_gap"])
    assert gap.loc["hurt", "ci_low"] <= gap.loc["hurt", "value"] <= gap.loc["hurt", "ci_high"]
    assert frame.worst_group("accuracy").loc["hurt", "group"] == "1"


def test_bad_input_is_a_clear_error():
    y = np.array([0, 1, 0, 1])
    g = np.array(["a", "a", "b", "b"])
    with pytest.raises(ConfigError, match="at least 2 seeds, got 1"):
        seed_interval([0.3])
    with pytest.raises(ConfigError, match="n_bootstrap=10 is too few"):
        FairnessFrame(y_true=y, groups=g, predictions={"m": y}, n_bootstrap=10)
    with pytest.raises(ConfigError, match=r"groups \['c'\] are not in group_names"):
        FairnessFrame(y_true=y, groups=[*g[:3], "c"], predictions={"m": y}, group_names=["a", "b"])
    with pytest.raises(ConfigError, match="groups has 3 entries for 4 labels"):
        FairnessFrame(y_true=y, groups=g[:3], predictions={"m": y})
    with pytest.raises(ConfigError, match="compare needs bootstrap replicates"):
        FairnessFrame(y_true=y, groups=g, predictions={"m": y}, n_bootstrap=0).compare(
            "accuracy", "m", "m"
        )


def test_frame_reports_undefined_metrics_instead_of_nan():
    y = np.array([0, 1, 0, 1, 0, 0])
    g = np.array([0, 0, 1, 1, 2, 2])
    # a group absent from the data, and a model that never predicts the positive class
    with (
        pytest.warns(EmptyGroupWarning, match="'d' has no test samples"),
        pytest.warns(UndefinedMetricWarning) as caught,
    ):
        frame = FairnessFrame(
            y_true=y,
            groups=g,
            group_names=["a", "b", "c", "d"],
            predictions={"fp32": y, "int2": np.zeros(6, int)},
            n_bootstrap=200,
        )
    messages = " ".join(str(w.message) for w in caught)
    assert "int2: demographic_parity_ratio (disparate impact) is undefined" in messages
    assert "group 'c' has no positive samples" in messages
    assert not frame.table[["value", "ci_low", "ci_high"]].isna().any().any()
    overall = frame.overall()
    assert "demographic_parity_ratio" in overall and np.isnan(
        overall.loc["int2", "demographic_parity_ratio"]
    )
    assert set(frame.table[frame.table.group == "d"].metric) == {"n"}
    assert frame.overall().loc["fp32", "equal_opportunity_difference"] == 0.0


def test_percentile_interval_matches_numpy():
    reps = np.random.default_rng(0).normal(size=(5000, 3))
    low, high = percentile_interval(reps, 0.9)
    np.testing.assert_allclose(low, np.quantile(reps, 0.05, axis=0))
    np.testing.assert_allclose(high, np.quantile(reps, 0.95, axis=0))


def test_audit_carries_intervals_and_binary_metrics(tmp_path):
    torch.manual_seed(0)
    n = 240
    x = torch.randn(n, 1, 2, 2)
    y = (x.flatten(1).sum(1) > 0).long()
    g = torch.arange(n) % 3
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    test = Split(x, y, g)
    names = ["a", "b", "c"]
    result = audit_model(model, test, names, parse_precisions("int4"), show_progress=False)
    table = result.table
    assert list(table.columns) == COLUMNS and not table.isna().any().any()
    acc = table[table.metric == "accuracy"]
    assert ((acc.ci_low <= acc.value) & (acc.value <= acc.ci_high)).all()
    assert (acc.ci_high - acc.ci_low > 0).all()
    pred = model[1](x.flatten(1)).argmax(1)  # fp32 predictions
    dp = table.query("precision == 'fp32' and metric == 'demographic_parity_difference'")
    expected = flm.demographic_parity_difference(y, pred, sensitive_features=g)
    assert dp.value.item() == pytest.approx(expected)
    off = audit_model(
        model, test, names, parse_precisions("int4"), show_progress=False, n_bootstrap=0
    ).table
    assert off[["ci_low", "ci_high"]].isna().all().all()
    pd.testing.assert_series_equal(off.value, table.value)
    back = pd.read_csv(result.to_csv(tmp_path / "results.csv"))
    assert list(back.columns) == COLUMNS and len(back) == len(table)
