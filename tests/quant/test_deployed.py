"""Deployed precision names, and building them: PyTorch's int8 kernels, errors, missing extras."""

from __future__ import annotations

import sys

import pytest
import torch

from fairquant.errors import ConfigError
from fairquant.quant import parse_precision, quantize_model
from fairquant.quant.configs import FORMS, TorchInt8Config
from fairquant.quant.cpu import x86_without_vnni
from fairquant.quant.deployed import build_deployed
from fairquant.quant.ort import OrtDynamicConfig, OrtStaticConfig
from fairquant.quant.torchao import TorchaoConfig


@pytest.mark.parametrize(
    ("name", "toolchain", "bits", "twin", "config"),
    [
        ("torch:int8", "torch", 8, "int8-a8-bn", TorchInt8Config()),
        ("torch:int8-rr", "torch", 8, "int8-a7-bn", TorchInt8Config(reduce_range=True)),
        ("ort:int8", "ort", 8, "int8-a8-bn", OrtStaticConfig()),
        ("ort:int8-pc", "ort", 8, "int8-pc-a8", OrtStaticConfig(per_channel=True)),
        ("ORT:int8-entropy-pc", "ort", 8, "int8-pc-a8", OrtStaticConfig(True, "entropy")),
        ("ort:int8-percentile", "ort", 8, "int8-a8-bn", OrtStaticConfig(calibration="percentile")),
        ("ort:int8-minmax-rr", "ort", 7, "int7-a8-bn", OrtStaticConfig(reduce_range=True)),
        ("ort:int8-dynamic", "ort", 8, "int8-da8-bn", OrtDynamicConfig()),
        ("ort:int8-pc-dynamic", "ort", 8, "int8-pc-da8", OrtDynamicConfig(per_channel=True)),
        ("torchao:int8wo", "torchao", 8, "int8-pc", TorchaoConfig("int8wo")),
        ("torchao:int8dq", "torchao", 8, "int8-pc-da8", TorchaoConfig("int8dq")),
        ("torchao:int4wo", "torchao", 4, None, TorchaoConfig("int4wo", 128)),
        ("torchao:int4wo-g32", "torchao", 4, None, TorchaoConfig("int4wo", 32)),
    ],
)
def test_names_parse_to_their_toolchain_config_and_twin(name, toolchain, bits, twin, config):
    p = parse_precision(name)
    assert (p.name, p.toolchain, p.bits, p.twin, p.config) == (
        name.lower(),
        toolchain,
        bits,
        twin,
        config,
    )
    assert p.deployed
    if twin is not None:
        parse_precision(twin)  # every twin is a simulated precision fairquant has


@pytest.mark.parametrize(
    "name",
    [
        "ort:int4",
        "torch:int4",
        "torch:int8-pc",
        "tensorrt:int8",
        "ort:int8-entropy-dynamic",  # dynamic quantization has no calibrator
        "ort:int8-pc-pc",
        "ort:int8-entropy-percentile",
        "ort:int8-kl",
        "torchao:int8wo-g32",
        "torchao:int4wo-g48",
        "torchao:int4wo-32",
    ],
)
def test_an_unknown_name_lists_the_valid_forms(name):
    with pytest.raises(ConfigError, match=f"unknown deployed precision '{name}'") as err:
        parse_precision(name)
    assert all(form in str(err.value) for form in FORMS)


def test_simulated_names_are_not_deployed():
    assert not any(parse_precision(n).deployed for n in ("fp32", "int8-a8", "int4-pc-fl8"))


def test_torch_int8_runs_pytorchs_kernels_close_to_its_twin(digits_cnn, tmp_path):
    built = build_deployed(
        parse_precision("torch:int8"), digits_cnn.model, digits_cnn.calibration, workdir=tmp_path
    )
    twin = quantize_model(
        digits_cnn.model, parse_precision("int8-a8-bn"), calibration=digits_cnn.calibration
    )
    with torch.inference_mode():
        expected = twin(digits_cnn.test).argmax(1)
    # measured: 99.4 % of 500 predictions agree (the kernels also quantize the outputs of
    # pooling and of the head, which the simulation leaves float)
    assert (built.predict(digits_cnn.test).argmax(1) == expected).float().mean() >= 0.97
    assert built.notes[0] == "PyTorch int8 kernels (x86): ConvReLU2d x4, Linear x1"
    assert (len(built.notes) == 2) == x86_without_vnni()  # the saturation note
    assert built.size_bytes == built.artifact.stat().st_size
    fp32_bytes = sum(p.numel() * 4 for p in digits_cnn.model.parameters())
    assert built.size_bytes < fp32_bytes


def test_torch_int8_refuses_dict_inputs_and_onnx_models(digits_cnn, tmp_path):
    x = {"image": digits_cnn.calibration}
    with pytest.raises(ConfigError, match="torch:int8 calibrates on a tensor input"):
        build_deployed(parse_precision("torch:int8"), digits_cnn.model, x, workdir=tmp_path)
    pytest.importorskip("onnxruntime")
    from fairquant.models.onnx import OnnxModel
    from fairquant.quant.ort import export_onnx

    path = export_onnx(digits_cnn.model, digits_cnn.calibration[:4], tmp_path / "m.onnx").path
    with pytest.raises(ConfigError, match="quantizes a PyTorch module; an ONNX model takes"):
        build_deployed(
            parse_precision("torchao:int8wo"),
            OnnxModel(path),
            digits_cnn.calibration,
            workdir=tmp_path,
        )


def test_building_needs_calibration_inputs(digits_cnn, tmp_path):
    for calibration in (None, digits_cnn.calibration[:0]):
        with pytest.raises(ConfigError, match="ort:int8-dynamic needs calibration inputs"):
            build_deployed(
                parse_precision("ort:int8-dynamic"), digits_cnn.model, calibration, workdir=tmp_path
            )


def test_without_onnxruntime_the_error_names_the_extra(digits_cnn, monkeypatch, tmp_path):
    for module in ("onnx", "onnxruntime", "onnxruntime.quantization"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=r"ort:int8 needs onnx .*pip install 'fairquant\[onnx\]'"):
        build_deployed(
            parse_precision("ort:int8"), digits_cnn.model, digits_cnn.calibration, workdir=tmp_path
        )


class _GlobalMean(torch.nn.Module):
    """Conv-BN-ReLU to a 1x1 map, its global mean, a Linear: torchvision's ShuffleNetV2 head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.BatchNorm2d(16), torch.nn.ReLU()
        )
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean([2, 3]))


def test_torch_int8_means_a_one_by_one_map(tmp_path):
    """PyTorch's x86 int8 conv writes channels-last; a 1x1 map's strides then read as both
    layouts and torch 2.14's quantized mean over H, W raised 'required rank 4 tensor to use
    channels_last format' on it (ShuffleNetV2 at 32 px)."""
    torch.manual_seed(0)
    model = _GlobalMean().eval()
    x = torch.randn(16, 3, 3, 3)
    built = build_deployed(parse_precision("torch:int8"), model, x, workdir=tmp_path)
    with torch.inference_mode():
        expected = model(x)
    got = built.predict(x)
    assert got.shape == (16, 3)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(built.predict(cl), got)


@pytest.mark.parametrize(
    "precision",
    [
        "torch:int8",
        "torch:int8-rr",
        "ort:int8",
        "ort:int8-dynamic",
        "torchao:int8dq",
    ],
)
def test_deployed_on_torchvision_shufflenet_at_32_px(tmp_path, random_images, precision):
    """The README's deployed example on random weights saved to a file, 12 test images, 32 px."""
    torchvision = pytest.importorskip("torchvision")
    toolchain = precision.partition(":")[0]
    for module in {"ort": ("onnx", "onnxruntime"), "torchao": ("torchao",)}.get(toolchain, ()):
        pytest.importorskip(module)
    from fairquant._audit import audit
    from fairquant.data.preprocess import Preprocess
    from fairquant.models.load import load_model, parse_model_source

    torch.manual_seed(0)
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=3)
    torch.save(net.state_dict(), tmp_path / "shufflenet.pt")
    source = parse_model_source(
        "torchvision:shufflenet_v2_x0_5", weights=tmp_path / "shufflenet.pt"
    )
    loaded = load_model(source, num_classes=3, in_channels=3)
    data = random_images(16, 12, 32)
    result = audit(
        loaded,
        data,
        precisions=precision,
        preprocess=Preprocess(channels=3),
        calib_size=8,
        n_bootstrap=0,
        workdir=tmp_path / "work",
    )
    rows = result.table[result.table.precision == precision]
    assert {"accuracy", "loss", "phi", "agreement_fp32", "artifact_bytes"} <= set(rows.metric)


@pytest.mark.parametrize("without_vnni", [True, False])
def test_rr_advice_follows_this_cpus_detection(digits_cnn, tmp_path, monkeypatch, without_vnni):
    """-rr is advised only where quant/cpu.py detects an x86 CPU without VNNI; elsewhere a run
    with -rr is told that it only gives up a bit."""
    import fairquant.quant.deployed as deployed

    monkeypatch.setattr(deployed, "x86_without_vnni", lambda: without_vnni)
    notes = {}
    for name in ("torch:int8", "torch:int8-rr"):
        built = build_deployed(
            parse_precision(name),
            digits_cnn.model,
            digits_cnn.calibration[:32],
            workdir=tmp_path / name[6:],
        )
        notes[name] = " ".join(built.notes[1:])
    assert ("no VNNI" in notes["torch:int8"]) == without_vnni
    assert ("-rr" in notes["torch:int8-rr"]) == (not without_vnni)
    if not without_vnni:
        assert "only for x86 CPUs without VNNI" in notes["torch:int8-rr"]


def test_help_gives_rr_only_for_cpus_without_vnni():
    from typer.testing import CliRunner

    from fairquant.cli import app

    text = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "400"}).output
    text = " ".join(text.replace("│", " ").split())
    assert "On x86 CPUs without VNNI use -rr." not in text
    assert "-rr only on x86 CPUs without VNNI" in text
