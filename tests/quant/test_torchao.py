"""torchao workflows: what they quantize here, and their errors where torchao cannot run."""

from __future__ import annotations

import copy
import importlib.util
import sys

import pytest
import torch
from torch import nn

from fairquant.errors import ConfigError
from fairquant.models import SmallCNN
from fairquant.quant.deployed import build_deployed
from fairquant.quant.precision import parse_precision


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def test_without_torchao_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao now fails
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    precision = parse_precision("torchao:int8wo")  # naming a precision needs no torchao
    with pytest.raises(ConfigError, match=r"torchao:int8wo needs torchao .*fairquant\[torchao\]"):
        build_deployed(precision, _mlp(), torch.randn(4, 64), workdir=tmp_path)


def _per_row_int8(model: nn.Module) -> nn.Module:
    """``model`` with each Linear weight on torchao's per-row symmetric int8 grid, computing in
    float64: s = max|w| / 127.5 (half the int8 range), q = clamp(round(w * (1 / s)), -128, 127)
    (rounded in float32, as torchao rounds)."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.Linear):
                s = m.weight.abs().amax(1, keepdim=True) / 127.5
                m.weight.copy_(torch.clamp(torch.round(m.weight * (1.0 / s)), -128, 127) * s)
    return ref.double()


def test_int8_weight_only_is_the_per_row_int8_grid(tmp_path):
    pytest.importorskip("torchao")
    model, x = _mlp(), torch.randn(256, 64)
    built = build_deployed(parse_precision("torchao:int8wo"), model, x, workdir=tmp_path)
    got = built.predict(x)
    with torch.inference_mode():
        expected = _per_row_int8(model)(x.double()).float()
        reference = model(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - reference).abs().max() > 1e-3  # the weights did change
    assert built.notes == ("torchao quantized 2 of 2 weight layers (nn.Linear only)",)
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert built.size_bytes == built.artifact.stat().st_size < fp32_bytes
    # its twin int8-pc differs only in the grid: fairquant's scale is max|w| / 127
    assert built.precision.twin == "int8-pc"


def test_int8_dynamic_runs_and_stays_close(tmp_path):
    pytest.importorskip("torchao")
    model, x = _mlp(), torch.randn(64, 64)
    built = build_deployed(parse_precision("torchao:int8dq"), model, x, workdir=tmp_path)
    got = built.predict(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, model(x).detach(), atol=0.05, rtol=0)
    assert not torch.equal(got, model(x).detach())


def test_a_cnn_gets_only_its_linear_head_quantized(tmp_path):
    pytest.importorskip("torchao")
    model = SmallCNN(in_channels=1, num_classes=3, width=4).eval()
    built = build_deployed(
        parse_precision("torchao:int8wo"), model, torch.randn(4, 1, 8, 8), workdir=tmp_path
    )
    assert built.notes == ("torchao quantized 1 of 5 weight layers (nn.Linear only)",)


def test_a_model_without_linear_layers_is_refused(tmp_path):
    pytest.importorskip("torchao")
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(ConfigError, match=r"nn\.Linear layers only .* Sequential has none"):
        build_deployed(
            parse_precision("torchao:int8wo"), model, torch.randn(2, 1, 8, 8), workdir=tmp_path
        )


def test_int4_groups_must_fit_a_layer(tmp_path):
    pytest.importorskip("torchao")
    model = nn.Sequential(nn.Linear(48, 10)).eval()
    with pytest.raises(ConfigError, match=r"groups of 32 inputs fit none .*\{'0': 48\}"):
        build_deployed(
            parse_precision("torchao:int4wo-g32"), model, torch.randn(2, 48), workdir=tmp_path
        )


@pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None or importlib.util.find_spec("mslk") is not None,
    reason="needs torchao without mslk (whose int4 kernels would then run)",
)
def test_int4_weight_only_says_torchao_has_no_cpu_kernel(tmp_path):
    model = nn.Sequential(nn.Linear(64, 10)).eval()
    with pytest.raises(ConfigError, match=r"torchao:int4wo: torchao cannot run on this CPU .*CUDA"):
        build_deployed(
            parse_precision("torchao:int4wo-g32"), model, torch.randn(2, 64), workdir=tmp_path
        )
