"""Models from elsewhere: sources, weights files, factories and their one-line errors."""

from __future__ import annotations

import re
import sys
import textwrap

import pytest
import torch
from torch import nn

from fairquant._io import sha256_file
from fairquant.errors import CheckpointError, ConfigError
from fairquant.models.load import ModelSource, load_model, parse_model_source

torchvision = pytest.importorskip("torchvision")


def _squeezenet(num_classes=3, in_channels=3) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model("squeezenet1_1", weights=None, num_classes=num_classes)
    if in_channels != 3:
        from fairquant.models.load import adapt_first_conv

        adapt_first_conv(model, in_channels)
    return model.eval()


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [
        ("torchvision:resnet18", "torchvision", "resnet18"),
        ("timm:resnet10t", "timm", "resnet10t"),
        ("my_pkg.models:build", "factory", "my_pkg.models:build"),
    ],
)
def test_parse_model_source(tmp_path, text, kind, name):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    source = parse_model_source(text, weights=weights)
    assert (source.kind, source.name, source.weights) == (kind, name, str(weights))


def test_unknown_model_source_names_the_forms(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown model source 'resnet18'; expected torchvision"):
        parse_model_source("resnet18")
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x")
    with pytest.raises(ConfigError, match="use --checkpoint"):
        parse_model_source(str(ckpt))


def test_architecture_needs_weights_and_files_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="needs --weights FILE"):
        parse_model_source("torchvision:resnet18")
    with pytest.raises(ConfigError, match="does not exist"):
        parse_model_source("torchvision:resnet18", weights=tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="ONNX file does not exist"):
        parse_model_source(str(tmp_path / "m.onnx"))


def test_torchvision_state_dict_round_trip(tmp_path):
    model = _squeezenet()
    path = tmp_path / "sq.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(
        parse_model_source("torchvision:squeezenet1_1", weights=path), num_classes=3, in_channels=3
    )
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), model(x))
    assert loaded.notes == []
    record = loaded.source.to_dict()
    assert record["weights_sha256"] == sha256_file(path)
    assert record["name"] == "torchvision:squeezenet1_1"


def test_torchvision_first_conv_adapted_to_the_data_channels(tmp_path):
    model = _squeezenet(in_channels=1)
    path = tmp_path / "gray.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(
        ModelSource("torchvision", "squeezenet1_1", str(path)), num_classes=3, in_channels=1
    )
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded.model(x), model(x))
    assert "first convolution features.0 was replaced" in loaded.notes[0]


def test_safetensors_and_data_parallel_prefix(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    model = _squeezenet()
    path = tmp_path / "sq.safetensors"
    safetensors.save_file({f"module.{k}": v for k, v in model.state_dict().items()}, str(path))
    loaded = load_model(
        ModelSource("torchvision", "squeezenet1_1", str(path)), num_classes=3, in_channels=3
    )
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), model(x))
    assert "'module.' prefix" in loaded.notes[0]


def test_state_dict_that_does_not_fit_names_missing_and_unexpected_keys(tmp_path):
    state = _squeezenet().state_dict()
    state["extra.weight"] = state.pop("features.0.weight")
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_model(
            ModelSource("torchvision", "squeezenet1_1", str(path)), num_classes=3, in_channels=3
        )
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert "missing keys: features.0.weight" in message
    assert "unexpected keys: extra.weight" in message


def test_state_dict_with_other_classes_names_the_shape(tmp_path):
    path = tmp_path / "five.pt"
    torch.save(_squeezenet(num_classes=5).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"shape mismatches: classifier.1.weight \(5, "):
        load_model(
            ModelSource("torchvision", "squeezenet1_1", str(path)), num_classes=3, in_channels=3
        )


def test_weights_files_that_are_not_state_dicts(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load_model(
            ModelSource("torchvision", "squeezenet1_1", str(path)), num_classes=3, in_channels=3
        )
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"format": "fairquant-checkpoint"}, ckpt)
    with pytest.raises(ConfigError, match="is a fairquant checkpoint; audit it with --checkpoint"):
        load_model(
            ModelSource("torchvision", "squeezenet1_1", str(ckpt)), num_classes=3, in_channels=3
        )
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        load_model(
            ModelSource("torchvision", "squeezenet1_1", str(garbage)), num_classes=3, in_channels=3
        )


def test_unknown_torchvision_name_suggests_close_ones(tmp_path):
    with pytest.raises(ConfigError, match="did you mean squeezenet1_1"):
        load_model(ModelSource("torchvision", "squeezenet1_2", None), num_classes=3, in_channels=3)


def test_timm_model_with_channels_and_classes(tmp_path):
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_resnet", pretrained=False, num_classes=4, in_chans=1).eval()
    path = tmp_path / "t.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(
        parse_model_source("timm:test_resnet", weights=path), num_classes=4, in_channels=1
    )
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded.model(x), model(x))
    with pytest.raises(ConfigError, match="timm has no model 'test_resnett'"):
        load_model(ModelSource("timm", "test_resnett", None), num_classes=4, in_channels=1)


def test_timm_absent_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ConfigError, match=r"pip install 'fairquant\[timm\]'"):
        load_model(ModelSource("timm", "test_resnet", None), num_classes=4, in_channels=1)


def test_safetensors_absent_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ConfigError, match=r"pip install 'fairquant\[safetensors\]'"):
        load_model(
            ModelSource("torchvision", "squeezenet1_1", str(path)), num_classes=3, in_channels=3
        )


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module ``fq_user_models`` in the working folder (not on sys.path)."""
    (tmp_path / "fq_user_models.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn

            def mlp(num_classes, in_channels):
                return nn.Sequential(nn.Linear(in_channels, 8), nn.ReLU(),
                                     nn.Linear(8, num_classes))

            def fixed():
                return nn.Linear(4, 2)

            def not_a_model(num_classes):
                return "a string"

            def broken(**kwargs):
                raise RuntimeError("boom")
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("fq_user_models", None)


def test_factory_gets_classes_and_channels_and_weights(user_module):
    loaded = load_model(ModelSource("factory", "fq_user_models:mlp"), num_classes=3, in_channels=5)
    assert loaded.model(torch.zeros(2, 5)).shape == (2, 3)
    path = user_module / "mlp.pt"
    torch.save(loaded.model.state_dict(), path)
    again = load_model(
        ModelSource("factory", "fq_user_models:mlp", str(path)), num_classes=3, in_channels=5
    )
    x = torch.randn(2, 5)
    torch.testing.assert_close(again.model(x), loaded.model(x))
    # a factory that takes no arguments is called without them
    fixed = load_model(ModelSource("factory", "fq_user_models:fixed"), num_classes=2, in_channels=4)
    assert isinstance(fixed.model, nn.Linear)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fq_no_such_module:build", r"cannot import module 'fq_no_such_module' \(ModuleNotFound"),
        ("fq_user_models:missing", "module 'fq_user_models' has no function 'missing'"),
        ("fq_user_models:not_a_model", "returned str; expected a torch.nn.Module"),
        ("fq_user_models:broken", r"broken\(num_classes=3, in_channels=5\) raised RuntimeError"),
    ],
)
def test_factory_errors(user_module, spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_model(ModelSource("factory", spec), num_classes=3, in_channels=5)
    assert spec in str(err.value) and "\n" not in str(err.value)


def test_onnx_without_runtime_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "fairquant.models.onnx", None)
    with pytest.raises(ConfigError, match=r"pip install 'fairquant\[onnx\]'"):
        load_model(parse_model_source(str(path)), num_classes=3, in_channels=3)


# ---- a model from elsewhere audited on a folder: class order and preprocessing ------------

ORACLE = """
import torch
import torch.nn as nn

class Oracle(nn.Module):
    '''Knows each class by its images' gray level, expects (pixels - 0.5) / 0.25 and outputs
    its classes in its own order: White, Black, Asian.'''

    def __init__(self, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, 1, bias=False)
        nn.init.constant_(self.conv.weight, 1.0 / in_channels)

    def forward(self, x):
        pixel = self.conv(x).mean((1, 2, 3)) * 0.25 + 0.5
        centres = torch.tensor([0.8, 0.2, 0.5])
        return -10 * (pixel[:, None] - centres).abs()

def make(in_channels):
    return Oracle(in_channels)

def fixed3():
    return Oracle(3)
"""
SHADES = {"White": 204, "Black": 51, "Asian": 128}


@pytest.fixture
def faces(tmp_path, monkeypatch):
    """A folder CSV naming its classes (sorted: Asian, Black, White) and the oracle's module."""
    from PIL import Image

    rows = ["path,label,group"]
    for name, shade in SHADES.items():
        for i in range(10):
            Image.new("RGB", (8, 8), (shade,) * 3).save(tmp_path / f"{name}{i}.png")
            rows.append(f"{name}{i}.png,{name},{'ab'[i % 2]}")
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "fq_oracle.py").write_text(ORACLE)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("fq_oracle", None)


def _spec(root, **options):
    from fairquant.data import DataSpec

    return DataSpec("folder", root=str(root / "faces.csv"), test_size=0.5, options=options)


def _fp32(target):
    from fairquant import audit

    return audit(
        target.model, target.data, precisions="fp32", preprocess=target.preprocess, n_bootstrap=0
    )


def test_the_models_class_order_maps_its_outputs(faces):
    from fairquant._audit import load_target

    target = load_target(
        model="fq_oracle:make",
        spec=_spec(faces),
        mean=(0.5,),
        std=(0.25,),
        class_order=["White", "Black", "Asian"],
    )
    result = _fp32(target)
    assert result.overall().loc["fp32", "accuracy"] == 100.0
    assert result.record["data"]["coding"]["classes"] == {"0": "White", "1": "Black", "2": "Asian"}
    assert result.record["data"]["coding"]["groups"] == {"0": "a", "1": "b"}
    assert result.record["data"]["class_order"] == "given: White,Black,Asian"
    assert not [n for n in result.notes if "majority" in n]
    # 5 test samples a class: the small-cell rule names each class in the notes and the record
    assert "'White' (5), 'Black' (5), 'Asian' (5)" in " ".join(result.notes)
    assert result.record["notes"] == result.notes


def test_a_wrong_class_order_is_a_loud_warning(faces):
    from fairquant._audit import load_target

    target = load_target(model="fq_oracle:make", spec=_spec(faces), mean=(0.5,), std=(0.25,))
    with pytest.warns(UserWarning, match="at or below the majority-class rate"):
        result = _fp32(target)
    assert result.overall().loc["fp32", "accuracy"] == pytest.approx(100 / 3)
    (note,) = [n for n in result.notes if "majority-class rate" in n]
    assert "class order" in note and "preprocessing" in note
    assert "0=Asian, 1=Black, 2=White" in note
    assert result.record["data"]["class_order"] == "the data's own coding"


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (["White", "Black", "Asian", "Purple"], "names 'Purple', which the data lacks"),
        (["White", "Black"], "the data's class 'Asian' is not in the class order"),
    ],
)
def test_a_class_order_that_does_not_fit_the_data_names_the_value(faces, order, message):
    from fairquant._audit import load_target

    with pytest.raises(ConfigError, match=message):
        load_target(
            model="fq_oracle:make", spec=_spec(faces), mean=(0.5,), std=(0.25,), class_order=order
        )


def test_a_model_from_elsewhere_needs_its_normalization(faces):
    from fairquant._audit import load_target

    with pytest.raises(ConfigError, match=r"--mean and --std.*--normalize data") as err:
        load_target(model="fq_oracle:make", spec=_spec(faces))
    assert "fq_oracle:make" in str(err.value)
    target = load_target(model="fq_oracle:make", spec=_spec(faces), normalize="data")
    result = _fp32(target)
    pre = result.record["preprocessing"]
    assert pre["normalize"] == "data"
    assert pre["normalization"].startswith("the data's own")
    assert pre["mean"] == pytest.approx(list(target.data.mean))
    with pytest.raises(ConfigError, match="--normalize data or --mean/--std, not both"):
        load_target(
            model="fq_oracle:make", spec=_spec(faces), normalize="data", mean=(0.5,), std=(0.25,)
        )


def test_timm_states_its_own_normalization(faces):
    timm = pytest.importorskip("timm")
    from fairquant._audit import load_target

    model = timm.create_model("test_resnet", pretrained=False, num_classes=3, in_chans=3)
    torch.save(model.state_dict(), faces / "t.pt")
    target = load_target(model="timm:test_resnet", weights=faces / "t.pt", spec=_spec(faces))
    cfg = model.pretrained_cfg
    assert target.preprocess.mean == tuple(cfg["mean"]) and target.preprocess.std == tuple(
        cfg["std"]
    )
    assert "pretrained_cfg" in target.preprocess.to_dict()["normalization"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mean", "0.5,0.5,0.5", "--std", "0.25", "--grayscale"],
         "--mean '0.5,0.5,0.5': 3 values for a model of 1 input channel; expected 1 value"),
        (["--mean", "0.5", "--std", "0.25", "--in-channels", "2"],
         "--in-channels 2: the data has 3 channels"),
        (["--mean", "0.5", "--std", "0.25", "--grayscale", "--model", "fq_oracle:fixed3"],
         "--model fq_oracle:fixed3 cannot take the data's input (2, 1, 8, 8)"),
        (["--mean", "0.5", "--std", "0.25", "--classes", "White,Black,Asian,Purple"],
         "names 'Purple', which the data lacks"),
        ([], "--mean and --std"),
    ],
)  # fmt: skip
def test_cli_bad_preprocessing_and_classes_are_one_line(faces, extra, message):
    from typer.testing import CliRunner

    from fairquant.cli import app

    args = ["audit", "--model", "fq_oracle:make", "--dataset", "folder", "--root", "faces.csv"]
    result = CliRunner().invoke(app, [*args, "--precisions", "fp32", "-q", *extra])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_cli_classes_from_a_file_and_the_summary(faces):
    from typer.testing import CliRunner

    from fairquant._audit import read_audit_json
    from fairquant.cli import app

    (faces / "classes.txt").write_text("White\nBlack\nAsian\n")
    args = ["audit", "--model", "fq_oracle:make", "--dataset", "folder", "--root", "faces.csv",
            "--mean", "0.5", "--std", "0.25", "--precisions", "fp32", "-q",
            "--bootstrap", "0"]  # fmt: skip
    good = CliRunner().invoke(app, [*args, "--classes", "@classes.txt", "--out", "good"])
    assert good.exit_code == 0, good.output
    assert read_audit_json(faces / "good")["data"]["coding"]["classes"]["0"] == "White"
    bad = CliRunner().invoke(app, [*args, "--out", "bad"])
    assert bad.exit_code == 0, bad.output
    summary = " ".join(bad.output.split())
    assert summary.count("WARNING: fp32 accuracy 33.3% is at or below the majority-class") == 2
    assert (
        len(re.findall(r"classes with fewer than 20 test samples .*?'Asian' \(\d\)", summary)) == 2
    )
    data = CliRunner().invoke(app, [*args[:7], "--normalize", "data", "-q", "--out", "data"])
    assert data.exit_code == 0, data.output
    assert read_audit_json(faces / "data")["preprocessing"]["normalize"] == "data"


def test_a_class_order_goes_with_a_model_from_elsewhere(tmp_path):
    from fairquant._audit import load_target

    with pytest.raises(ConfigError, match=r"--classes: checkpoint .* a class order goes with"):
        load_target(checkpoint=tmp_path / "model.pt", class_order=["a", "b"])
