import math
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from fairquant._audit import COLUMNS, EmptyGroupWarning, audit_model
from fairquant.data import Split
from fairquant.metrics import group_mean, per_sample_loss
from fairquant.metrics.frame import FairnessFrame
from fairquant.quant import parse_precisions


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
