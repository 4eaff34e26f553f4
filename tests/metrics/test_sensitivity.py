"""Per-layer, per-group sensitivity: the Taylor terms against exact float64 derivatives, the
measured excess, and the pooled (one-group) sensitivity as the count-weighted group mean."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev

from fairquant.data import Split
from fairquant.errors import ConfigError
from fairquant.metrics.curvature import GroupCurvature, ggn_diagonal
from fairquant.metrics.sensitivity import (
    diagonal_excess,
    group_sensitivity,
    layer_trace_sensitivity,
    measured_excess,
    measured_layer_excess,
    predict_excess,
    taylor_excess,
)
from fairquant.mitigate.allocate import allocate_precision
from fairquant.quant import parse_precision, quantize_model, quantized_layers
from fairquant.quant.functional import quantize_symmetric
from fairquant.quant.mixed import layer_deltas

pytestmark = pytest.mark.usefixtures("one_thread")
GROUPS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def tiny(tanh_groups):
    """A 2-layer tanh MLP in float64 and 90 samples in 3 groups."""
    return tanh_groups(12)


def _group_loss(model, x, y, g, a):
    """Group ``a``'s mean cross-entropy as a function of the flat quantized weights."""
    layers = quantized_layers(model)
    shapes = [m.weight.shape for _, m in layers]

    def loss(flat):
        params, start = {}, 0
        for (name, _), shape in zip(layers, shapes, strict=True):
            params[f"{name}.weight"] = flat[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return nn.functional.cross_entropy(functional_call(model, params, (x[g == a],)), y[g == a])

    flat = torch.cat([m.weight.detach().reshape(-1) for _, m in layers])
    return loss, flat


def _flat_delta(model, name, d):
    parts = [
        d.reshape(-1) if n == name else torch.zeros(m.weight.numel(), dtype=d.dtype)
        for n, m in quantized_layers(model)
    ]
    return torch.cat(parts)


def test_taylor_terms_are_exact_in_float64(tiny):
    model, x, y, g = tiny
    op = GroupCurvature(model, x, y, g, 3)
    table = taylor_excess(op, model, GROUPS, [2, 4, 8], block=4).set_index(
        ["layer", "bits", "group"]
    )
    assert len(table) == 2 * 3 * 3
    exact = []
    for a in range(3):
        loss, flat = _group_loss(model, x, y, g, a)
        exact.append((grad(loss)(flat), hessian(loss)(flat)))
    for name, b, d in layer_deltas(model, [2, 4, 8]):
        delta = _flat_delta(model, name, d)
        for (g_a, h_a), group in zip(exact, GROUPS, strict=True):
            first = g_a @ delta
            second = 0.5 * delta @ h_a @ delta
            row = table.loc[(name, b, group)]
            assert row.first == pytest.approx(first.item(), rel=1e-9, abs=1e-12)
            assert row.second == pytest.approx(second.item(), rel=1e-9, abs=1e-12)
            assert row.predicted == pytest.approx(row.first + row.second, abs=1e-15)


def test_diagonal_terms_are_exact_in_float64(tiny):
    """``first = g_a·δ`` and ``second = ½ Σ_k (G_a)_kk δ_k²`` against the full float64 GGN
    ``1/n Σ J_iᵀ (diag p_i - p_i p_iᵀ) J_i`` from Jacobians."""
    model, x, y, g = tiny
    curv = ggn_diagonal(model, x, y, g, 3)
    table = diagonal_excess(curv, model, GROUPS, [2, 4, 8]).set_index(["layer", "bits", "group"])
    assert len(table) == 2 * 3 * 3
    exact = []
    for a in range(3):
        loss, flat = _group_loss(model, x, y, g, a)
        layers = quantized_layers(model)

        def logits(v, a=a, layers=layers):
            params, start = {}, 0
            for name, m in layers:
                n = m.weight.numel()
                params[f"{name}.weight"] = v[start : start + n].reshape(m.weight.shape)
                start += n
            return functional_call(model, params, (x[g == a],))

        jac = jacrev(logits)(flat)
        p = logits(flat).softmax(1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        ggn = torch.einsum("ncp,ncd,ndq->pq", jac, lam, jac) / len(p)
        exact.append((grad(loss)(flat), ggn.diagonal()))
    for name, b, d in layer_deltas(model, [2, 4, 8]):
        delta = _flat_delta(model, name, d)
        for (g_a, diag), group in zip(exact, GROUPS, strict=True):
            row = table.loc[(name, b, group)]
            assert row.first == pytest.approx((g_a @ delta).item(), rel=1e-10, abs=1e-13)
            second = 0.5 * (diag * delta**2).sum().item()
            assert row.second == pytest.approx(second, rel=1e-10, abs=1e-13)
            assert row.predicted == pytest.approx(row.first + row.second, abs=1e-15)


def test_layer_trace_sensitivity_is_hawq_v2_on_a_relu_network():
    """``trace`` is ``Tr(H_l)/n_l`` (the Hessian's: the network is piecewise linear), ``error``
    is ``||Q_b(w_l) - w_l||²`` and ``score`` their product; the groups are pooled."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    data = Split(
        torch.randn(50, 1, 2, 3, dtype=torch.float64), torch.arange(50) % 3, torch.arange(50) % 2
    )
    table = layer_trace_sensitivity(model, data, [2, 8]).set_index(["layer", "bits"])
    assert len(table) == 4
    y = data.y
    for name, m in quantized_layers(model):
        w = m.weight.detach()

        def loss(v, name=name):
            return nn.functional.cross_entropy(
                functional_call(model, {f"{name}.weight": v}, (data.x,)), y
            )

        trace = torch.trace(hessian(loss)(w).reshape(w.numel(), w.numel())).item()
        for b in (2, 8):
            row = table.loc[(name, b)]
            error = (quantize_symmetric(w, b) - w).square().sum().item()
            assert row.numel == w.numel()
            assert row.trace == pytest.approx(trace / w.numel(), rel=1e-10)
            assert row.error == pytest.approx(error, rel=1e-12)
            assert row.score == pytest.approx(row.trace * row.error, rel=1e-12)
    assert (table.xs(2, level="bits").error > table.xs(8, level="bits").error).all()
    groups = ggn_diagonal(model, data.x, data.y, data.g, 2)
    reused = layer_trace_sensitivity(model, data, [2, 8], curvature=groups)
    assert np.allclose(reused.trace, table.trace, rtol=1e-12, atol=0)


def test_taylor_prediction_error_is_third_order(tiny):
    """Along t * δ the prediction t g·δ + t² ½δᵀHδ misses the exact loss change by O(t³)."""
    model, x, y, g = tiny
    op = GroupCurvature(model, x, y, g, 3)
    table = taylor_excess(op, model, GROUPS, [3]).set_index(["layer", "group"])
    name, _, d = layer_deltas(model, [3])[0]
    delta = _flat_delta(model, name, d)
    loss, flat = _group_loss(model, x, y, g, 0)
    row = table.loc[(name, "a")]
    errors = []
    for t in (0.2, 0.1):
        exact = (loss(flat + t * delta) - loss(flat)).item()
        errors.append(abs(exact - (t * row.first + t * t * row.second)))
    assert 6.0 < errors[0] / errors[1] < 10.0  # halving t divides a cubic error by ~8


@pytest.mark.parametrize("sensitivity", ["predicted", "diagonal", "measured"])
def test_pooled_sensitivity_is_the_count_weighted_group_mean(sensitivity):
    """All samples in one group give the pooled, loss-only sensitivity of HAWQ and AIMET: the
    count-weighted mean of the groups' (the loss is a mean over samples), so the ``"loss"``
    objective with count weights allocates as the pooled table does."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).eval()
    g = torch.tensor([0] * 50 + [1] * 30 + [2] * 10)
    data = Split(torch.randn(90, 1, 2, 3), torch.randint(0, 4, (90,)), g)
    pooled_data = Split(data.x, data.y, torch.zeros_like(g))
    pooled = group_sensitivity(model, pooled_data, ["all"], [2, 4], sensitivity=sensitivity)
    groups = group_sensitivity(model, data, GROUPS, [2, 4], sensitivity=sensitivity)
    shares = {"a": 50 / 90, "b": 30 / 90, "c": 10 / 90}
    weighted = groups.excess * groups.group.map(shares)
    mean = weighted.groupby([groups.layer, groups.bits]).sum()
    keyed = pooled.set_index(["layer", "bits"]).excess.loc[mean.index]
    assert np.allclose(keyed, mean, rtol=1e-4, atol=1e-7)
    for budget in (3.0, 3.5):
        one = allocate_precision(model, pooled, objective="loss", budget_bits=budget)
        split = allocate_precision(
            model, groups, objective="loss", budget_bits=budget, weights=shares
        )
        assert one.layers.bits.tolist() == split.layers.bits.tolist()


def test_measured_per_layer_excess_of_a_one_layer_model_is_its_whole_excess():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    data = Split(torch.randn(60, 1, 4, 4), torch.arange(60) % 3, torch.arange(60) // 20)
    table = measured_layer_excess(model, data, GROUPS, [2, 4])
    whole = measured_excess(model, data, GROUPS, parse_precision("int4"))
    four = table[table.bits == 4].set_index("group").excess
    assert np.allclose(four.loc[whole.index], whole, atol=1e-6)
    assert predict_excess(table, {"1": 4}, column="excess").loc[GROUPS].tolist() == pytest.approx(
        four.loc[GROUPS].tolist()
    )
    with pytest.raises(ConfigError, match="differ from the table's layers"):
        predict_excess(table, {"0": 4}, column="excess")


def test_measured_drop_is_each_groups_accuracy_loss_in_points():
    """``drop`` is fp32 accuracy minus the accuracy with only that layer quantized, per group."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    data = Split(torch.randn(60, 1, 4, 4), torch.arange(60) % 3, torch.arange(60) // 20)
    table = measured_layer_excess(model, data, GROUPS, [2, 8])
    assert list(table.columns) == ["layer", "bits", "numel", "group", "excess", "drop"]
    with torch.no_grad():
        base = model(data.x).argmax(1) == data.y
        for b in (2, 8):
            quantized = parse_precision(f"int{b}")
            hits = quantize_model(model, quantized)(data.x).argmax(1) == data.y
            for a, group in enumerate(GROUPS):
                row = table[(table.bits == b) & (table.group == group)].iloc[0]
                mask = data.g == a
                expected = 100 * (base[mask].double().mean() - hits[mask].double().mean())
                assert row["drop"] == pytest.approx(expected.item(), abs=1e-9)
    assert table[table.bits == 2]["drop"].abs().sum() > 0  # 2 bits moves some predictions


def test_diagonal_sensitivity_has_the_allocation_columns(tiny):
    model, x, y, g = tiny
    table = group_sensitivity(model, Split(x, y, g), GROUPS, [2, 4], sensitivity="diagonal")
    assert {"layer", "bits", "numel", "group", "excess"} <= set(table.columns)
    assert len(table) == 2 * 2 * 3
    assert allocate_precision(model, table, objective="worst-group", budget_bits=3.0).size_bytes


def test_unknown_sensitivity_is_named():
    data = Split(torch.randn(6, 1, 1, 3), torch.arange(6) % 2, torch.arange(6) % 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="sensitivity must be one of"):
        group_sensitivity(model, data, ["a", "b"], [4], sensitivity="guessed")  # type: ignore[arg-type]
