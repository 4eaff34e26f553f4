"""fairquant.quantize: one factory for every precision; what it saves, the bare toolchain loads."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

import fairquant
from fairquant.errors import ConfigError
from fairquant.quant.precision import FLOAT_BITS, parse_precision

has_ort = importlib.util.find_spec("onnxruntime") is not None
has_torchao = importlib.util.find_spec("torchao") is not None


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    ).eval()


X = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_every_spelling_parses_in_one_place():
    assert not parse_precision("int4-pc").deployed
    assert parse_precision("ort:int8").deployed
    assert parse_precision("ort:int8").toolchain == "ort"
    assert parse_precision("int4").toolchain == "fairquant"


def test_a_simulated_precision_saves_a_state_dict_that_reloads(tmp_path):
    model = _model()
    q = fairquant.quantize(model, "int4-pc")
    path = q.save(tmp_path / "int4.pt")
    fresh = _model()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh(X), q.predict(X))
    assert not torch.equal(model(X), q.predict(X))  # it did quantize


def test_layers_keep_chosen_layers_in_float_for_the_simulator():
    model = _model()
    whole = fairquant.quantize(model, "int2")
    head_float = fairquant.quantize(model, "int2", layers={"5": None})
    assert head_float.precision.float_layers == ("5",)
    assert torch.equal(head_float.module[5].weight, model[5].weight)
    assert not torch.equal(whole.module[5].weight, model[5].weight)
    assert head_float.size_bytes > whole.size_bytes
    by_filter = fairquant.quantize(model, "int2", layers=lambda m, name: name != "5")
    assert torch.equal(by_filter.predict(X), head_float.predict(X))
    assert dict(by_filter.precision.layers)["5"] == FLOAT_BITS


def test_layers_naming_no_weight_layer_is_refused():
    with pytest.raises(ConfigError, match=r"layers names \['9'\]"):
        fairquant.quantize(_model(), "int4", layers={"9": None})


@pytest.mark.skipif(not has_ort, reason="needs onnxruntime (the ort extra)")
def test_ort_saves_an_onnx_a_bare_session_runs_with_the_same_predictions(tmp_path):
    import onnxruntime as ort

    q = fairquant.quantize(_model(), "ort:int8", calibration=X, layers={"5": None})
    assert any("kept in float" in n for n in q.notes)
    assert q.precision.config.nodes_to_exclude == ("/5/Gemm",)
    path = q.save(tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (bare,) = session.run(None, {session.get_inputs()[0].name: X.numpy()})
    np.testing.assert_array_equal(bare, q.predict(X).numpy())


@pytest.mark.skipif(not has_ort, reason="needs onnxruntime (the ort extra)")
def test_ort_cannot_express_other_bits_per_layer():
    with pytest.raises(ConfigError, match="cannot express"):
        fairquant.quantize(_model(), "ort:int8", calibration=X, layers={"5": 4})


def test_torch_int8_saves_torchscript_that_runs_without_fairquant(tmp_path):
    q = fairquant.quantize(_model(), "torch:int8", calibration=X, layers={"0": None})
    path = q.save(tmp_path / "model.ts")
    with pytest.warns(FutureWarning):  # torch announces TorchScript's deprecation
        loaded = torch.jit.load(str(path))
    assert torch.equal(loaded(X).float(), q.predict(X))
    assert "Conv" not in q.notes[0]  # the kernels: the convolution stayed in float
    assert "Conv" in fairquant.quantize(_model(), "torch:int8", calibration=X).notes[0]


@pytest.mark.skipif(not has_torchao, reason="needs torchao (the torchao extra)")
def test_torchao_saves_a_state_dict_loaded_with_assign(tmp_path):
    q = fairquant.quantize(_model(), "torchao:int8wo", calibration=X, layers={"5": None})
    assert "quantized 1 of 3" in q.notes[0]
    path = q.save(tmp_path / "model.pt")
    fresh = _model()
    fresh.load_state_dict(torch.load(path, weights_only=True), assign=True)
    assert torch.equal(fresh(X), q.predict(X))


@pytest.mark.skipif(not has_ort, reason="needs onnxruntime (the ort extra)")
def test_the_saved_onnx_predicts_what_the_audit_reports(tmp_path):
    """The file fairquant.quantize saves is the model the audit measured: a bare ONNX Runtime
    session's predicted classes equal the audit's, sample by sample, with a layer kept in float
    (the audit takes the precision quantize returns, its nodes_to_exclude included)."""
    import onnxruntime as ort

    from fairquant.data.base import Split

    model = _model()
    y = model(X).argmax(1).detach()
    test = Split(X, y, torch.arange(len(X)) % 2)
    q = fairquant.quantize(model, "ort:int8", calibration=X[:16], layers={"3": None})
    assert q.precision.config.nodes_to_exclude == ("/3/Gemm",)
    result = fairquant.audit(
        model, test, precisions=[q.precision], calibration=X[:16], n_bootstrap=0
    )
    session = ort.InferenceSession(str(q.save(tmp_path / "m.onnx")))
    (logits,) = session.run(None, {session.get_inputs()[0].name: X.numpy()})
    np.testing.assert_array_equal(logits.argmax(1), result.samples.predictions["ort:int8"])
    assert any("kept in float" in note for note in result.notes)


def _bare_torchscript(path):
    with pytest.warns(FutureWarning):  # torch announces TorchScript's deprecation
        return torch.jit.load(str(path))


def _bare_state_dict(path):
    fresh = _model()
    fresh.load_state_dict(torch.load(path, weights_only=True), assign=True)
    return fresh


@pytest.mark.parametrize(
    ("precision", "load"),
    [
        ("torch:int8", _bare_torchscript),
        pytest.param(
            "torchao:int8dq",
            _bare_state_dict,
            marks=pytest.mark.skipif(not has_torchao, reason="needs torchao (the torchao extra)"),
        ),
    ],
)
def test_pytorch_and_torchao_files_predict_what_the_audit_reports(tmp_path, precision, load):
    """Saved the toolchain's own way and loaded without fairquant, the model's predicted classes
    equal the audit's, sample by sample."""
    from fairquant.data.base import Split

    model = _model()
    test = Split(X, model(X).argmax(1).detach(), torch.arange(len(X)) % 2)
    result = fairquant.audit(model, test, precisions=precision, calibration=X[:16], n_bootstrap=0)
    q = fairquant.quantize(model, precision, calibration=X[:16])
    bare = load(q.save(tmp_path / "model.pt"))
    with torch.inference_mode():
        got = bare(X).float().argmax(1).numpy()
    np.testing.assert_array_equal(got, result.samples.predictions[precision])
