import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fairquant._audit import audit_model
from fairquant.data import Split
from fairquant.errors import ConfigError
from fairquant.metrics import group_mean, per_sample_loss
from fairquant.metrics.frame import EmptyGroupWarning, FairnessFrame
from fairquant.quant import parse_precisions
from fairquant.schema import COLUMNS


@pytest.mark.filterwarnings("ignore::fairquant.metrics.fairness.UndefinedMetricWarning")
def test_phi_on_hand_built_tables():
    """φ(D) = max_{a,a'} |G(a) - G(a')| over the groups with samples, checked against the
    definition on excess losses built by hand."""
    g = [0.3, -0.1, 1.2, 0.05]
    y = [0, 1, 0, 1, 0, 1, 0, 1]
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    reference = [0.5] * 8
    quantized = [0.5 + g[a] + d for a, d in zip(groups, [0.1, -0.1] * 4, strict=True)]
    with pytest.warns(EmptyGroupWarning, match="'e' has no test samples"):
        frame = FairnessFrame(
            y_true=y,
            groups=groups,
            group_names=["a", "b", "c", "d", "e"],  # "e" is empty: left out of phi
            predictions={"fp32": y, "q": y},
            losses={"fp32": reference, "q": quantized},
            n_bootstrap=0,
        )
    assert frame.by_group("excess_loss")["q"].tolist() == pytest.approx(g)
    phi = frame.overall()["phi"]
    assert phi["q"] == pytest.approx(max(abs(a - b) for a in g for b in g))
    assert phi["fp32"] == 0.0


def test_group_mean_and_loss():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0])
    groups = torch.tensor([0, 0, 0, 2])
    out = group_mean(values, groups, 3)
    assert out[0] == 2.0 and out[2] == 10.0 and torch.isnan(out[1])
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    expected = [math.log(1 + math.exp(-2.0)), math.log(2.0)]
    torch.testing.assert_close(
        per_sample_loss(logits, torch.tensor([0, 1])), torch.tensor(expected)
    )


class Fixed(nn.Module):
    """Logits given by the input's first pixels: the audit's arithmetic can be checked by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.3], [0.0, 1.0]]))

    def forward(self, x):
        return self.fc(x.flatten(1)[:, :2])


def _split():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [0.2, 1.0]]).view(4, 1, 1, 2)
    y = torch.tensor([0, 1, 0, 0])
    g = torch.tensor([0, 0, 1, 1])
    return Split(x, y, g)


def test_audit_by_hand():
    model = Fixed()
    test = _split()
    result = audit_model(model, test, ["a", "b"], parse_precisions("int2"), show_progress=False)
    assert list(result.table.columns) == COLUMNS
    assert [p.name for p in result.precisions] == ["fp32", "int2"]
    # int2: s = 1.0, weights become [[1, 0], [0, 1]]
    wq = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = model.fc.weight.detach()
    x = test.x.flatten(1)
    loss_fp = per_sample_loss(x @ w.T, test.y)
    loss_q = per_sample_loss(x @ wq.T, test.y)
    g_a = (loss_q[:2] - loss_fp[:2]).mean().item()
    g_b = (loss_q[2:] - loss_fp[2:]).mean().item()
    excess = result.by_group("excess_loss")["int2"]
    assert excess["a"] == pytest.approx(g_a, abs=1e-6)
    assert excess["b"] == pytest.approx(g_b, abs=1e-6)
    assert result.phi()["int2"] == pytest.approx(abs(g_a - g_b), abs=1e-6)
    assert result.phi()["fp32"] == 0.0
    acc = result.by_group("accuracy")
    # fp32 predicts [0, 1, 0, 1]: group a 100%, group b 50%; int2 predicts [0, 1, 0, 1] too
    assert acc.loc["a", "fp32"] == 100.0 and acc.loc["b", "fp32"] == 50.0
    assert result.overall().loc["fp32", "accuracy"] == 75.0
    fp32_rows = result.table[result.table.precision == "fp32"]
    assert set(fp32_rows.method) == {"none"}
    assert set(result.table[result.table.precision == "int2"].method) == {"ptq"}


def test_empty_group_is_reported_not_nan(tmp_path):
    test = _split()
    with pytest.warns(EmptyGroupWarning, match="'c' has no test samples"):
        result = audit_model(
            Fixed(), test, ["a", "b", "c"], parse_precisions("int4"), show_progress=False
        )
    assert not result.table.value.isna().any()
    assert result.notes and "'c'" in result.notes[0]
    c_rows = result.table[result.table.group == "c"]
    assert set(c_rows.metric) == {"n"} and (c_rows.value == 0).all()
    csv = pd.read_csv(result.to_csv(tmp_path / "r.csv"))
    assert not csv.value.isna().any()
    assert "c" not in result.by_group("accuracy").index


def test_audit_without_any_samples():
    empty = Split(
        torch.zeros(0, 1, 1, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyGroupWarning)
        with pytest.raises(ValueError, match="no samples"):
            audit_model(Fixed(), empty, ["a"], parse_precisions("int4"), show_progress=False)


# ---- agreement and the replicates ----------------------------------------------------------


@pytest.mark.filterwarnings("ignore::fairquant.metrics.fairness.UndefinedMetricWarning")
def test_agreement_with_the_reference_and_a_twin_by_hand():
    """Agreement (%) per group and overall; a sample without a class (-1, counted wrong for
    non-finite logits) agrees with nothing, not even another -1."""
    y = [0, 1, 2, 0, 1, 2]
    frame = FairnessFrame(
        y_true=y,
        groups=["a", "a", "a", "b", "b", "b"],
        predictions={
            "fp32": [0, 1, 2, 0, 1, -1],
            "int8": [0, 1, 1, 0, 1, -1],  # agrees with fp32 on 2 of a, 2 of b (not the -1)
            "ort:int8": [0, 2, 1, -1, 1, 2],  # with int8: 2 of a, 1 of b; with fp32: 1 and 1
        },
        twins={"ort:int8": "int8"},
        n_bootstrap=0,
    )
    agree = frame.by_group("agreement")
    assert agree.loc["a"].tolist() == pytest.approx([100.0, 200 / 3, 100 / 3])
    assert agree.loc["b"].tolist() == pytest.approx([200 / 3, 200 / 3, 100 / 3])
    assert frame.overall()["agreement"].tolist() == pytest.approx([500 / 6, 400 / 6, 200 / 6])
    twin = frame.table[frame.table.metric == "agreement_twin"]
    assert set(twin.model) == {"ort:int8"}
    assert twin.set_index("group").value.to_dict() == pytest.approx(
        {"a": 200 / 3, "b": 100 / 3, "all": 50.0}
    )
    plain = FairnessFrame(y_true=y, groups=[0] * 6, predictions={"m": y}, n_bootstrap=0)
    assert "agreement_twin" not in set(plain.table.metric)
    with pytest.raises(ConfigError, match=r"twins: twin 'int3' \(of 'm': 'int3'\) is not one of"):
        FairnessFrame(y_true=y, groups=[0] * 6, predictions={"m": y}, twins={"m": "int3"})


@pytest.mark.filterwarnings("ignore::fairquant.metrics.fairness.UndefinedMetricWarning")
def test_replicates_resample_every_model_alike():
    """A quantized model identical to fp32: on every replicate its excess loss and its change
    of φ, accuracy gap and worst-group accuracy are exactly 0, and it agrees 100 % (the same
    resampled samples for every model and metric); an empty group has no replicates."""
    rng = np.random.default_rng(0)
    g = rng.integers(0, 3, 300)
    y = rng.integers(0, 2, 300)
    pred = np.where(rng.random(300) < 0.8, y, 1 - y)
    loss = rng.random(300)
    with pytest.warns(EmptyGroupWarning):
        frame = FairnessFrame(
            y_true=y,
            groups=g,
            group_names=["a", "b", "c", "d"],
            predictions={"fp32": pred, "q": pred},
            losses={"fp32": loss, "q": loss},
            n_bootstrap=200,
        )
    excess = frame.replicates("excess_loss")
    assert excess.shape == (200, 2, 5) and not excess.flags.writeable
    assert np.isnan(excess[:, :, 3]).all()  # group "d" has no samples
    assert np.array_equal(excess[:, 1, :3], np.zeros((200, 3)))
    for name in ("phi", "accuracy_gap", "worst_group_accuracy"):
        reps = frame.replicates(name)[:, :, -1]
        assert np.array_equal(reps[:, 1] - reps[:, 0], np.zeros(200))
    assert (frame.replicates("agreement")[:, :, [0, 1, 2, 4]] == 100.0).all()
    with pytest.raises(ConfigError, match="unknown metric 'agreement_twin'"):
        frame.replicates("agreement_twin")
    with pytest.raises(ConfigError, match="no bootstrap replicates"):
        FairnessFrame(y_true=y, groups=g, predictions={"m": y}, n_bootstrap=0).replicates("n")


@pytest.mark.filterwarnings("ignore::fairquant.metrics.fairness.UndefinedMetricWarning")
def test_excess_loss_interval_covers():
    """Simulated: per-sample loss changes with a known group mean G(a) = 0.1 (skewed, gamma);
    the frame's 95% percentile interval of the excess loss covers it in at least 90% of 200 test
    sets (percentile intervals of a mean run slightly short of nominal at 100 samples). The
    verdict's excess-loss intervals are these (tests/metrics/test_verdict.py)."""
    rng = np.random.default_rng(0)
    g = np.repeat([0, 1], 100)
    y = np.zeros(200, dtype=np.int64)
    covered = 0
    for seed in range(200):
        dloss = rng.gamma(0.5, 0.2, 200)  # mean 0.1
        frame = FairnessFrame(
            y_true=y,
            groups=g,
            predictions={"fp32": y, "q": y},
            losses={"fp32": np.zeros(200), "q": dloss},
            n_bootstrap=400,
            random_state=seed,
        )
        row = frame.table.query("model == 'q' and group == '0' and metric == 'excess_loss'")
        covered += row.ci_low.iloc[0] <= 0.1 <= row.ci_high.iloc[0]
    assert covered / 200 >= 0.90


@pytest.mark.filterwarnings("ignore::fairquant.metrics.fairness.UndefinedMetricWarning")
def test_agreement_interval_covers():
    """Simulated: each sample's prediction agrees with fp32's with probability 0.97 (group a,
    200 samples) or 0.9 (group b, 100); the frame's 95% interval of the agreement covers the true
    rate in at least 90% of 200 test sets, per group and overall (the audit's agreement_fp32 and
    agreement_twin intervals are these)."""
    rng = np.random.default_rng(1)
    g = np.repeat([0, 1], [200, 100])
    y = np.zeros(300, dtype=np.int64)
    rate = np.where(g == 0, 0.97, 0.9)
    truth = [97.0, 90.0, (200 * 97.0 + 100 * 90.0) / 300]  # "all": the samples' mean rate
    covered = np.zeros(3)
    for seed in range(200):
        q = np.where(rng.random(300) < rate, 0, 1)
        frame = FairnessFrame(
            y_true=y, groups=g, predictions={"fp32": y, "q": q}, n_bootstrap=400, random_state=seed
        )
        rows = frame.table.query("model == 'q' and metric == 'agreement'").set_index("group")
        for i, group in enumerate(["0", "1", "all"]):
            covered[i] += rows.ci_low[group] <= truth[i] <= rows.ci_high[group]
    assert (covered / 200 >= 0.90).all(), covered / 200
