"""OpenVINO int8 through NNCF: names, the audit beside its twin, the saved IR, float layers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import fairquant
from fairquant.data.base import Split
from fairquant.errors import ConfigError, DataError
from fairquant.quant.configs import FORMS
from fairquant.quant.deployed import build_deployed
from fairquant.quant.openvino import OpenVinoConfig
from fairquant.quant.precision import parse_precision

_MISSING = [
    m for m in ("openvino", "nncf", "onnx", "onnxruntime") if not importlib.util.find_spec(m)
]
needs_openvino = pytest.mark.skipif(
    bool(_MISSING), reason=f"the openvino extra is not installed (missing {_MISSING})"
)


def _test_labels() -> torch.Tensor:
    """The classes of ``digits_cnn.test`` (the conftest's permutation of scikit-learn's digits)."""
    y = torch.tensor(load_digits().target)
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))][1297:]


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("openvino:int8", OpenVinoConfig()),
        ("OpenVINO:int8-mixed", OpenVinoConfig(preset="mixed")),
        ("openvino:int8-bc", OpenVinoConfig(fast_bias_correction=False)),
        ("openvino:int8-bc-mixed", OpenVinoConfig("mixed", fast_bias_correction=False)),
    ],
)
def test_names_parse_to_an_openvino_config_with_a_per_channel_twin(name, config):
    p = parse_precision(name)
    assert (p.name, p.toolchain, p.bits, p.twin, p.config) == (
        name.lower(),
        "openvino",
        8,
        "int8-pc-a8",
        config,
    )


@pytest.mark.parametrize(
    "name",
    ["openvino:int3", "openvino:int8-pc", "openvino:int8-mixed-mixed", "openvino:int4", "ov:int8"],
)
def test_an_unknown_openvino_name_is_one_line_listing_the_forms(name):
    with pytest.raises(ConfigError, match=f"unknown deployed precision '{name}'") as err:
        parse_precision(name)
    assert "\n" not in str(err.value)
    assert "openvino:int8[-mixed][-bc]" in str(err.value) and all(
        f in str(err.value) for f in FORMS
    )


def test_the_audit_refuses_an_unknown_openvino_name_before_building(digits_cnn):
    data = Split(digits_cnn.test, _test_labels(), _test_labels())
    with pytest.raises(ConfigError, match="unknown deployed precision 'openvino:int3'"):
        fairquant.audit(digits_cnn.model, data, precisions=["openvino:int3"], n_bootstrap=0)


@pytest.mark.parametrize("missing", ["openvino", "nncf"])
def test_without_openvino_or_nncf_the_error_names_the_extra(
    digits_cnn, monkeypatch, tmp_path, missing
):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(
        ConfigError,
        match=rf"^openvino:int8 needs {missing} .*pip install 'fairquant\[openvino\]'$",
    ):
        build_deployed(
            parse_precision("openvino:int8"),
            digits_cnn.model,
            digits_cnn.calibration,
            workdir=tmp_path,
        )


def test_the_cli_error_line_shows_the_extra_in_brackets(digits_cnn, monkeypatch, tmp_path, capsys):
    # the CLI prints errors with rich, whose markup took "[openvino]" for a style tag and
    # printed "pip install 'fairquant'"
    import typer

    from fairquant.cli._app import user_errors

    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(typer.Exit) as exit_, user_errors():
        build_deployed(
            parse_precision("openvino:int8"),
            digits_cnn.model,
            digits_cnn.calibration,
            workdir=tmp_path,
        )
    assert exit_.value.exit_code == 2
    assert "install it with: pip install 'fairquant[openvino]'" in capsys.readouterr().err


@needs_openvino
def test_audit_runs_openvino_beside_its_twin_and_the_saved_ir_predicts_the_same(
    digits_cnn, tmp_path
):
    import openvino as ov

    y = _test_labels()
    result = fairquant.audit(
        digits_cnn.model,
        Split(digits_cnn.test, y, y),
        precisions=["int8-pc-a8", "openvino:int8"],
        calibration=digits_cnn.calibration,
        workdir=tmp_path,
        n_bootstrap=0,
    )
    table = result.table[(result.table.group == "all")].set_index(["precision", "metric"]).value
    # measured on this model (200 calibration images, 500 test images): 99.6 % of the
    # predictions agree with int8-pc-a8; both 93.0 % accurate, fp32 93.2 % (93.2 % for
    # openvino:int8 when the suite runs on 2 threads); agreement and accuracy are in %
    assert table["openvino:int8", "agreement_twin"] >= 98.0
    assert abs(table["openvino:int8", "accuracy"] - table["int8-pc-a8", "accuracy"]) <= 1.0
    assert any(n.startswith("openvino:int8: NNCF quantized 5 of 5") for n in result.notes)
    ir = tmp_path / "openvino_int8" / "model.xml"
    assert table["openvino:int8", "artifact_bytes"] == sum(
        p.stat().st_size for p in (ir, ir.with_suffix(".bin"))
    )
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(ir)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    logits = compiled(digits_cnn.test.numpy())[compiled.output(0)]
    assert (logits.argmax(1) == result.samples.predictions["openvino:int8"]).all()


def _fake_quantized_inputs(model) -> dict[str, bool]:
    """For each weight layer of an ``openvino.Model``: whether a FakeQuantize feeds its input,
    directly or through the ops that commute with it (max pooling, reshapes)."""
    from fairquant.quant.openvino import WEIGHT_OPS

    def source(node):
        while node.get_type_name() in ("MaxPool", "Reshape"):
            node = node.input_value(0).get_node()
        return node.get_type_name()

    return {
        op.get_friendly_name(): source(op.input_value(0).get_node()) == "FakeQuantize"
        for op in model.get_ordered_ops()
        if op.get_type_name() in WEIGHT_OPS
    }


def _int8_weight_bound(model, layer: str) -> int:
    """The largest |int8 weight| of the named layer of an ``openvino.Model``."""
    op = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == layer)
    node = op.input_value(1).get_node()
    while node.get_type_name() != "Constant":
        node = node.input_value(0).get_node()
    assert node.get_element_type().get_type_name() == "i8"
    return int(abs(node.get_data().astype(int)).max())


@needs_openvino
def test_ignored_scope_keeps_the_named_layers_in_float(digits_cnn, tmp_path):
    import nncf
    import openvino as ov

    from fairquant.quant.openvino import (
        OpenVinoModel,
        int8_weight_layers,
        quantize_openvino,
        weight_layers,
    )
    from fairquant.quant.ort import export_onnx

    source = export_onnx(digits_cnn.model, digits_cnn.calibration[:8], tmp_path / "fp32.onnx")
    layers = weight_layers(ov.Core().read_model(str(source.path)))
    assert len(layers) == 5
    kept = (layers[0], layers[-1])  # the first convolution and the classifier
    calibration = digits_cnn.calibration[:64]
    built, notes = quantize_openvino(
        OpenVinoConfig(ignored_scope=kept), source, calibration, tmp_path
    )
    assert notes == [
        "NNCF quantized 3 of 5 weight layers (Convolution, MatMul)",
        f"NNCF {nncf.__version__}, OpenVINO {ov.__version__.split('-')[0]} on the CPU, float "
        "operations in f32",
        f"kept in float (ignored_scope): {kept[0]}, {kept[1]}",
    ]
    saved = ov.Core().read_model(str(built.path))  # the IR on disk
    assert int8_weight_layers(saved) == layers[1:-1]
    fed = _fake_quantized_inputs(saved)
    assert fed == {name: name not in kept for name in layers}
    # the same graph quantized whole: every layer int8, every input fake-quantized
    (tmp_path / "all").mkdir()
    whole, _ = quantize_openvino(OpenVinoConfig(), source, calibration, tmp_path / "all")
    assert int8_weight_layers(whole.model) == layers
    assert all(_fake_quantized_inputs(whole.model).values())
    # NNCF's overflow fix: the first convolution's weights on half the int8 range
    assert [_int8_weight_bound(whole.model, name) for name in layers] == [63, 127, 127, 127, 127]
    # the float layers' weights stay float32 in the IR (fairquant saves with
    # compress_to_fp16=False; OpenVINO 2026.4 also leaves a quantized model's float constants
    # float32 with its default True, measured, while it halves those of a float model)
    for op in saved.get_ordered_ops():
        if op.get_friendly_name() in kept:
            weight = op.input_value(1).get_node()
            assert (weight.get_type_name(), weight.get_element_type().get_type_name()) == (
                "Constant",
                "f32",
            )
    # the float layers change the predictions only a little; the IR saved elsewhere and loaded
    # again repeats them
    again = OpenVinoModel(built.save(tmp_path / "copy" / "ir")).predict(digits_cnn.test)
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["ir.bin", "ir.xml"]
    assert torch.equal(again, built.predict(digits_cnn.test))
    agree = (again.argmax(1) == whole.predict(digits_cnn.test).argmax(1)).float().mean()
    assert agree >= 0.97


@needs_openvino
def test_an_onnx_model_is_quantized_as_the_module_it_was_exported_from(digits_cnn, tmp_path):
    from fairquant.quant.ort import export_onnx

    source = export_onnx(digits_cnn.model, digits_cnn.calibration[:8], tmp_path / "fp32.onnx")
    calibration = digits_cnn.calibration[:32]
    precision = parse_precision("openvino:int8")
    from_file = build_deployed(precision, source, calibration, workdir=tmp_path / "file")
    from_module = build_deployed(
        precision, digits_cnn.model, calibration, workdir=tmp_path / "module"
    )
    assert torch.equal(from_file.predict(digits_cnn.test), from_module.predict(digits_cnn.test))
    assert sorted(p.name for p in (tmp_path / "module").iterdir()) == ["model.bin", "model.xml"]
    assert from_file.artifact == tmp_path / "file" / "model.xml"


@needs_openvino
def test_the_configs_options_reach_nncf(digits_cnn, tmp_path, monkeypatch):
    import nncf

    seen = {}
    quantize = nncf.quantize

    def spy(model, dataset, **options):
        seen.update(options, items=len(list(dataset.get_inference_data())))
        return quantize(model, dataset, **options)

    monkeypatch.setattr(nncf, "quantize", spy)
    build_deployed(
        parse_precision("openvino:int8-mixed-bc"),
        digits_cnn.model,
        digits_cnn.calibration[:16],
        workdir=tmp_path,
    )
    assert seen["preset"] == nncf.QuantizationPreset.MIXED
    assert seen["fast_bias_correction"] is False
    assert (seen["subset_size"], seen["items"]) == (16, 16)  # one sample per item, all of them
    assert seen["advanced_parameters"].overflow_fix == nncf.OverflowFix.FIRST_LAYER


@needs_openvino
def test_without_the_overflow_fix_the_first_layer_has_the_full_int8_range(digits_cnn, tmp_path):
    from fairquant.quant.openvino import quantize_openvino, weight_layers

    built, _ = quantize_openvino(
        OpenVinoConfig(overflow_fix="disable"),
        digits_cnn.model,
        digits_cnn.calibration[:16],
        tmp_path,
    )
    first = weight_layers(built.model)[0]
    assert _int8_weight_bound(built.model, first) == 127


@needs_openvino
@pytest.mark.parametrize(
    ("config", "message"),
    [
        (OpenVinoConfig(subset_size=17), "subset_size 17: expected 1 to the 16 calibration"),
        (OpenVinoConfig(subset_size=0), "subset_size 0: expected 1 to the 16 calibration"),
        (
            OpenVinoConfig(ignored_scope=("features.0",)),
            r"ignored_scope names \['features.0'\], which are not nodes .* weight layers are: ",
        ),
    ],
)
def test_bad_configs_are_one_clear_error(digits_cnn, tmp_path, config, message):
    from fairquant.quant.openvino import quantize_openvino

    with pytest.raises(ConfigError, match=message):
        quantize_openvino(config, digits_cnn.model, digits_cnn.calibration[:16], Path(tmp_path))


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(3, 4)

    def forward(self, features: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return self.a(features) + self.b(extra)


@needs_openvino
def test_a_dict_input_model_takes_its_inputs_by_name(tmp_path):
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    x = {"extra": torch.randn(64, 3), "features": torch.randn(64, 6)}
    built = build_deployed(parse_precision("openvino:int8"), model, x, workdir=tmp_path)
    assert built.notes[0] == "NNCF quantized 2 of 2 weight layers (Convolution, MatMul)"
    with torch.inference_mode():
        expected = model(**x)
    # measured: median |error| 0.04, largest 1.49: NNCF's activation ranges, the mean of each
    # sample's min and max, clip the Gaussian tails (features to +-1.77 where the data reach
    # 4.10, each Linear's output to about +-0.95)
    error = (built.predict(x) - expected).abs()
    assert error.median() < 0.1
    reordered = {"features": x["features"], "extra": x["extra"]}
    assert torch.equal(built.predict(reordered), built.predict(x))
    with pytest.raises(DataError, match="give a dict of tensors with those names, not one tensor"):
        built.predict(x["features"])
