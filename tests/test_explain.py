"""Impact flow, weight statistics, the bound terms and `fairquant explain` end to end."""

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fairquant._explain import _correlations
from fairquant.cli import app
from fairquant.metrics.diagnostics import flow_metrics
from fairquant.metrics.uncertainty import spearman_test
from fairquant.quant import parse_precisions, quantize_model, quantized_layers
from fairquant.quant.stats import weight_delta, weight_stats

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_flow_counts_zero_logits_instead_of_nan():
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    reference = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = flow_metrics(logits, reference, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), 2)
    assert out["zero_logits"].tolist() == [1.0, 1.0]
    assert out["cosine_distance"][0].item() == pytest.approx(1 - 2 / (2 * 2**0.5))
    assert torch.isnan(out["cosine_distance"][1])  # no defined sample: callers drop it
    assert out["true_prob"][1].item() == pytest.approx(1 / 3)
    assert out["correct"].tolist() == [1.0, 0.0]  # all-zero logits: argmax is class 0


def test_weight_stats_error_and_induced_sparsity():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -0.4, 0.0, 0.2]]))
    stats = weight_stats(nn.Sequential(layer), parse_precisions("fp32,int2"))
    int2 = stats[(stats.precision == "int2") & (stats.layer == "all")].iloc[0]
    assert int2.step == 1.0 and int2.abs_error_sum == pytest.approx(0.6)
    assert int2.zero_fraction == 0.75 and int2.induced_sparsity == 0.5
    fp32 = stats[(stats.precision == "fp32") & (stats.layer == "all")].iloc[0]
    assert fp32.abs_error_sum == 0 and fp32.induced_sparsity == 0
    delta = weight_delta(nn.Sequential(layer), parse_precisions("int2")[0])
    assert delta.tolist() == pytest.approx([0.0, 0.4, 0.0, -0.2])


def test_explain_cli_end_to_end(tmp_path):
    ck = tmp_path / "m.pt"
    args = ["--model", "cnn", "--width", "2", "--epochs", "1", "--image-size", "8"]
    r = runner.invoke(app, ["train", "--out", str(ck), *args, "--quiet"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "explain"
    r = runner.invoke(
        app,
        [
            "explain",
            "--checkpoint",
            str(ck),
            "--precisions",
            "fp32,int4,int2",
            "--out",
            str(out),
            "--samples-per-group",
            "4",
            "--probes",
            "10",
            "--rtol",
            "0.5",
            "--quiet",
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    assert "grad_norm" in r.output and "spearman trace@fp32 vs n_train" in r.output
    names = {p.name for p in out.iterdir()}
    for name in (
        "factors.csv",
        "flow.csv",
        "weights.csv",
        "correlations.csv",
        "factor_proportions.png",
        "output_distributions.png",
        "curvature_accuracy.png",
        "weight_stats.png",
    ):
        assert name in names
    f = pd.read_csv(out / "factors.csv")
    assert set(f.precision) == {"fp32", "int4", "int2"} and len(f) == 30
    cols = ["grad_norm", "trace", "trace_se", "lambda_max", "accuracy", "excess_loss"]
    assert not f[cols].isna().any().any()
    q = f[f.precision != "fp32"]
    # Cauchy-Schwarz with ||δ|| <= ½√n s_max: the gradient term of the bound always holds
    assert (q.bound_grad >= q.taylor_grad.abs()).all()
    assert (q.delta_norm <= 0.5 * q.n_quantized**0.5 * q.s_max + 1e-6).all()
    rho = pd.read_csv(out / "correlations.csv")
    assert {"n_train", "accuracy_drop@int4", "accuracy_drop@int2"} <= set(rho.against)
    assert rho.rho.between(-1, 1).all()


def test_explain_rejects_bad_curvature(tmp_path):
    ck = tmp_path / "m.pt"
    args = ["--model", "cnn", "--width", "2", "--epochs", "1", "--image-size", "8", "--quiet"]
    assert runner.invoke(app, ["train", "--out", str(ck), *args]).exit_code == 0
    r = runner.invoke(app, ["explain", "--checkpoint", str(ck), "--curvature", "fisher"])
    assert r.exit_code == 2 and "'fisher' is not one of" in " ".join(r.output.split())


def test_weight_stats_follow_mixed_and_per_channel_precisions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    for name in ("int2-fl8", "int3-pc"):
        p = parse_precisions(name)[0]
        q = quantize_model(model, p)
        expected = torch.cat(
            [
                (qm.weight - m.weight).detach().reshape(-1)
                for (_, m), (_, qm) in zip(
                    quantized_layers(model), quantized_layers(q), strict=True
                )
            ]
        )
        torch.testing.assert_close(weight_delta(model, p), expected)
    stats = weight_stats(model, parse_precisions("int2-fl8")).set_index("layer")
    # first and last layers at 8 bits: a step ~64x finer than the ternary middle layer's
    assert stats.loc["0", "step"] < stats.loc["2", "step"] / 20


def test_correlations_over_a_few_groups_have_exact_p_values():
    """Five groups, the factor falling as the group grows: rho = -1, whose exact two-sided p is
    2/120 (scipy's large-sample approximation says 1.4e-24)."""
    groups = ["a", "b", "c", "d", "e"]
    rows = []
    for precision, drop in (("fp32", [0.0] * 5), ("int4", [3.0, 1.0, 2.0, 0.5, -1.0])):
        for group, n, d in zip(groups, [500, 300, 200, 100, 50], drop, strict=True):
            rows.append(
                {"precision": precision, "group": group, "n_train": n, "accuracy_drop": d,
                 "grad_norm": 1000 / n, "trace": 1000 / n + d, "lambda_max": d}
            )  # fmt: skip
    order = parse_precisions("fp32,int4")
    notes = []
    rho = _correlations(pd.DataFrame(rows), order, notes).set_index(["precision", "factor"])
    row = rho[rho.against == "n_train"].loc[("fp32", "grad_norm")]
    assert row.rho == pytest.approx(-1) and row.p_value == pytest.approx(2 / 120)
    for (precision, factor), r in rho.iterrows():
        factors = pd.DataFrame(rows).set_index(["precision", "group"])
        x = factors.loc[precision][factor]
        if r.against == "n_train":
            y = factors.loc["fp32"]["n_train"]
        else:
            y = factors.loc[r.against.split("@")[1]]["accuracy_drop"]
        assert (r.rho, r.p_value) == pytest.approx(spearman_test(x, y))
    assert any("lambda_max@fp32" in n for n in notes)  # a constant column: no correlation
