"""OnnxModel: ONNX Runtime predictions, and one-line errors for data that does not fit."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import Tensor, nn

from fairquant.errors import CheckpointError, ConfigError, DataError
from fairquant.models import SmallCNN
from fairquant.models.onnx import OnnxModel

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _export(model: nn.Module, args: tuple, path, names: list[str], batch: bool = True) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(),
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={n: {0: "batch"} for n in names} if batch else None,
            dynamo=False,
        )


@pytest.fixture
def cnn_file(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(in_channels=3, num_classes=4, width=4).eval()
    path = tmp_path / "cnn.onnx"
    _export(model, (torch.randn(2, 3, 8, 8),), path, ["image"])
    return model, path


def test_predicts_what_the_module_does(cnn_file):
    model, path = cnn_file
    onnx_model = OnnxModel(path)
    x = torch.randn(5, 3, 8, 8)
    got = onnx_model.predict(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, model(x).detach(), atol=1e-5, rtol=1e-4)
    assert onnx_model.path == path
    assert [i.name for i in onnx_model.inputs] == ["image"]


@pytest.mark.parametrize(
    ("x", "given"),
    [
        (torch.randn(2, 1, 8, 8), r"\(2, 1, 8, 8\) float32"),  # gray data, color model
        (torch.randn(2, 3, 8), r"\(2, 3, 8\) float32"),  # missing a dimension
        (torch.randn(2, 3, 8, 8).double(), r"\(2, 3, 8, 8\) float64"),  # wrong dtype
    ],
)
def test_input_that_does_not_fit_names_the_file_and_the_expected_input(cnn_file, x, given):
    _, path = cnn_file
    model = OnnxModel(path)
    expected = rf"ONNX model {path}: input 'image' expects \(\?, 3, 8, 8\) float32; the data gives "
    with pytest.raises(DataError, match=expected + given) as err:
        model.check_input(x)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="expects"):
        model.predict(x)


def test_fixed_dimensions_are_checked(tmp_path):
    path = tmp_path / "fixed.onnx"
    _export(
        SmallCNN(in_channels=3, num_classes=4, width=4),
        (torch.randn(2, 3, 8, 8),),
        path,
        ["image"],
        batch=False,
    )
    model = OnnxModel(path)
    model.check_input(torch.randn(2, 3, 8, 8))
    with pytest.raises(DataError, match=r"expects \(2, 3, 8, 8\) float32; the data gives \(4, 3"):
        model.check_input(torch.randn(4, 3, 8, 8))


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 3), nn.Embedding(10, 3)

    def forward(self, features: Tensor, token: Tensor) -> Tensor:
        return self.a(features) + self.b(token)


def test_a_multi_input_graph_takes_a_dict_by_input_name(tmp_path):
    torch.manual_seed(0)
    module = _TwoInputs()
    path = tmp_path / "two.onnx"
    x = {"features": torch.randn(4, 5), "token": torch.randint(0, 10, (4,))}
    _export(module, (x["features"], x["token"]), path, ["features", "token"])
    model = OnnxModel(path)
    torch.testing.assert_close(model.predict(x), module(**x).detach(), atol=1e-5, rtol=1e-4)
    with pytest.raises(DataError, match=r"has inputs \['features', 'token'\]; give a dict"):
        model.predict(x["features"])
    with pytest.raises(DataError, match=r"the data gives \['features', 'tokens'\]"):
        model.predict({"features": x["features"], "tokens": x["token"]})
    with pytest.raises(DataError, match=r"input 'token' expects \(\?\) int64; .* float32"):
        model.predict({"features": x["features"], "token": x["token"].float()})


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"ONNX model {tmp_path / 'no.onnx'} does not exist"):
        OnnxModel(tmp_path / "no.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError, match=f"{bad} is not a model ONNX Runtime can run") as err:
        OnnxModel(bad)
    assert "\n" not in str(err.value)


def test_without_onnxruntime_the_error_names_the_extra(cnn_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    with pytest.raises(ConfigError, match=r"pip install 'fairquant\[onnx\]'"):
        OnnxModel(cnn_file[1])
