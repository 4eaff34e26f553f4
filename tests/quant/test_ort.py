"""ONNX Runtime int8 against fairquant's simulated twins, and the options reaching ORT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from fairquant.errors import ConfigError
from fairquant.quant import parse_precision, quantize_model
from fairquant.quant.cpu import VNNI_FLAGS, x86_without_vnni
from fairquant.quant.deployed import build_deployed

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fairquant.models.onnx import OnnxModel  # noqa: E402
from fairquant.quant.ort import OrtStaticConfig, export_onnx, quantize_onnx  # noqa: E402


def _twin_logits(trained, name: str) -> Tensor:
    twin = quantize_model(trained.model, parse_precision(name), calibration=trained.calibration)
    with torch.inference_mode():
        return twin(trained.test)


def _agreement(a: Tensor, b: Tensor) -> float:
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


def test_int8_pc_agrees_with_its_simulated_twin(digits_cnn, tmp_path):
    # measured on this model: 98.8 % of 500 test predictions agree with int8-pc-a8 (ORT also
    # quantizes the outputs of Add, pooling and the logits, which the simulator leaves float)
    built = build_deployed(
        parse_precision("ort:int8-pc"), digits_cnn.model, digits_cnn.calibration, workdir=tmp_path
    )
    twin = _twin_logits(digits_cnn, built.precision.twin)
    assert built.precision.twin == "int8-pc-a8"
    assert _agreement(built.predict(digits_cnn.test), twin) >= 0.97
    assert built.notes[0] == "ONNX Runtime quantized 5 of 5 weight layers (Conv, Gemm, MatMul)"


def test_dynamic_int8_equals_its_twin(digits_cnn, tmp_path):
    # dynamic ORT quantizes exactly what int8-da8-bn simulates (the inputs of Conv and Gemm with
    # the batch's min-max range, BN-folded per-tensor weights): the logits agree to float error,
    # except where a value lies on a rounding tie that the two summation orders (threads) break
    # differently: one int8 step there, on a handful of the 5,000 logits
    built = build_deployed(
        parse_precision("ort:int8-dynamic"),
        digits_cnn.model,
        digits_cnn.calibration,
        workdir=tmp_path,
    )
    got = built.predict(digits_cnn.test)
    diff = (got - _twin_logits(digits_cnn, "int8-da8-bn")).abs()
    assert (diff > 2e-3).float().mean() < 0.01 and diff.max() < 0.1, diff.max()
    assert not torch.allclose(got, digits_cnn.model(digits_cnn.test), atol=2e-3)


def _weight_scales(path) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(weight shape, scale shape) of every Conv weight dequantized from int8 in a QDQ graph."""
    graph = onnx.load(str(path)).graph
    stored = {t.name: tuple(t.dims) for t in graph.initializer}
    conv_weights = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    return [
        (stored[n.input[0]], stored[n.input[1]])
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.output[0] in conv_weights
    ]


def test_per_channel_weights_have_a_scale_per_output_channel(digits_cnn, tmp_path):
    shapes = {}
    for name in ("ort:int8", "ort:int8-pc"):
        built = build_deployed(
            parse_precision(name),
            digits_cnn.model,
            digits_cnn.calibration,
            workdir=tmp_path / name.replace(":", "_"),
        )
        shapes[name] = _weight_scales(built.artifact)
    assert len(shapes["ort:int8"]) == len(shapes["ort:int8-pc"]) == 4
    assert all(scale == () for _, scale in shapes["ort:int8"])
    assert all(scale == (weight[0],) for weight, scale in shapes["ort:int8-pc"])


def test_calibration_method_reaches_onnx_runtime(digits_cnn, tmp_path):
    source = export_onnx(digits_cnn.model, digits_cnn.calibration[:8], tmp_path / "fp32.onnx")
    ranges = {}
    for method in ("minmax", "percentile", "entropy"):
        folder = tmp_path / method
        folder.mkdir()
        q, _ = quantize_onnx(
            OrtStaticConfig(calibration=method), source, digits_cnn.calibration, folder
        )
        graph = onnx.load(str(q.path)).graph
        ranges[method] = {
            t.name: onnx.numpy_helper.to_array(t).item()
            for t in graph.initializer
            if t.name.endswith("_scale") and not t.dims
        }
    # a percentile range clips the extremes, so some activation scale shrinks
    shrunk = [k for k in ranges["minmax"] if ranges["percentile"][k] < 0.99 * ranges["minmax"][k]]
    assert shrunk
    # ORT 1.31's quantize_static gives its entropy calibrator as many histogram bins as
    # quantized bins (128): one candidate threshold, the min-max range (docs/precisions.md)
    assert ranges["entropy"] == ranges["minmax"]


def test_an_onnx_file_is_quantized_as_it_is(digits_cnn, tmp_path):
    source = export_onnx(digits_cnn.model, digits_cnn.calibration[:8], tmp_path / "model.onnx")
    built = build_deployed(
        parse_precision("ort:int8"),
        OnnxModel(source.path),
        digits_cnn.calibration,
        workdir=tmp_path / "q",
    )
    assert built.size_bytes == built.artifact.stat().st_size
    assert built.size_bytes < source.path.stat().st_size  # int8 weights, plus QDQ nodes
    assert _agreement(built.predict(digits_cnn.test), digits_cnn.model(digits_cnn.test)) > 0.97


class _TwoInputs(nn.Module):
    """A model of named inputs, called as ``model(**x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(3, 4)

    def forward(self, features: Tensor, extra: Tensor) -> Tensor:
        return self.a(features) + self.b(extra)


def test_a_dict_input_model_exports_one_input_per_key(tmp_path):
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    x = {"features": torch.randn(32, 6), "extra": torch.randn(32, 3)}
    # -rr: on x86 CPUs without VNNI 8-bit weights saturate ORT's kernels on these inputs (below)
    built = build_deployed(parse_precision("ort:int8-dynamic-rr"), model, x, workdir=tmp_path)
    torch.testing.assert_close(built.predict(x), model(**x), atol=0.05, rtol=0)
    assert built.notes[0].startswith("ONNX Runtime quantized 2 of 2")


@pytest.mark.skipif(not x86_without_vnni(), reason="needs an x86 CPU without VNNI")
def test_eight_bit_weights_saturate_without_vnni_and_seven_do_not(tmp_path):
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    x = {"features": torch.randn(32, 6), "extra": torch.randn(32, 3)}
    errors = {}
    for name in ("ort:int8-dynamic", "ort:int8-dynamic-rr"):
        built = build_deployed(parse_precision(name), model, x, workdir=tmp_path / name[4:])
        errors[name] = (built.predict(x) - model(**x)).abs().max().item()
        assert any("no VNNI" in n for n in built.notes) == (name == "ort:int8-dynamic")
    # measured 0.89 and 0.02: 16-bit sums of uint8 x int8 products saturate, of uint8 x int7 not
    assert errors["ort:int8-dynamic"] > 0.3 > 0.1 > errors["ort:int8-dynamic-rr"]


def _vnni() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return bool(set(line.partition(":")[2].split()) & VNNI_FLAGS)


@pytest.mark.skipif(not _vnni(), reason="needs an x86 CPU with VNNI")
def test_with_vnni_eight_bit_weights_do_not_saturate_and_rr_is_told_so(tmp_path):
    """The case above on a CPU with VNNI: 32-bit sums, so 8-bit weights need no -rr (measured
    on an AVX-512 VNNI Xeon: max error 0.018 at 8 bits, 0.022 with -rr)."""
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    x = {"features": torch.randn(32, 6), "extra": torch.randn(32, 3)}
    errors, notes = {}, {}
    for name in ("ort:int8-dynamic", "ort:int8-dynamic-rr"):
        built = build_deployed(parse_precision(name), model, x, workdir=tmp_path / name[4:])
        errors[name] = (built.predict(x) - model(**x)).abs().max().item()
        notes[name] = " ".join(built.notes)
    assert errors["ort:int8-dynamic"] < 0.1 and errors["ort:int8-dynamic-rr"] < 0.1
    assert "no VNNI" not in notes["ort:int8-dynamic"]
    assert "only for x86 CPUs without VNNI" in notes["ort:int8-dynamic-rr"]


def test_static_quantization_needs_calibration(digits_cnn, tmp_path):
    source = export_onnx(digits_cnn.model, digits_cnn.calibration[:8], tmp_path / "fp32.onnx")
    with pytest.raises(ConfigError, match="calibration"):
        quantize_onnx(OrtStaticConfig(), source, digits_cnn.calibration[:0], tmp_path)


def test_export_refuses_a_model_onnx_cannot_express(tmp_path):
    class Singular(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.linalg.svdvals(x.view(-1, 3, 3))  # no ONNX op for it

    with pytest.raises(ConfigError, match=r"cannot export Singular to ONNX: .*svdvals"):
        export_onnx(Singular(), torch.randn(4, 9), tmp_path / "m.onnx")
