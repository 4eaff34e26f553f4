"""fairquant.audit: the public entry, its record (audit.json) and the `audit` command."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import fairquant
from fairquant._audit import AUDIT_SCHEMA, audit, audit_model, read_audit_json
from fairquant.cli import app
from fairquant.data.preprocess import Preprocess
from fairquant.errors import ConfigError, DataError
from fairquant.models import SmallCNN
from fairquant.models.load import LoadedModel, ModelSource
from fairquant.quant import parse_precisions

pytestmark = pytest.mark.filterwarnings("ignore:cev and sde")


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, num_classes=3).eval()


def test_exported_from_the_package():
    assert fairquant.audit is audit
    assert fairquant.Preprocess is Preprocess
    assert fairquant.load_model.__name__ == "load_model"


def test_audit_equals_audit_model_on_a_split(tiny_dataset, model):
    old = audit_model(
        model,
        tiny_dataset.test,
        tiny_dataset.group_names,
        parse_precisions("int8,int4"),
        show_progress=False,
        n_bootstrap=0,
    )
    new = audit(model, tiny_dataset, precisions=["int8", "int4"], n_bootstrap=0)
    pd.testing.assert_frame_equal(old.table, new.table)
    assert new.record["data"]["spec"]["name"] == "tiny"


def test_record_round_trip(tmp_path, tiny_dataset, model):
    loaded = LoadedModel(model, ModelSource("checkpoint", str(tmp_path / "none.pt")))
    (tmp_path / "none.pt").write_bytes(b"weights")
    result = audit(loaded, tiny_dataset, precisions="int4", n_bootstrap=0, random_state=3)
    result.write_record(tmp_path / "audit.json")
    record = read_audit_json(tmp_path)
    assert record["schema"] == AUDIT_SCHEMA
    assert record["model"]["kind"] == "checkpoint"
    assert len(record["model"]["sha256"]) == 64
    assert record["precisions"] == ["fp32", "int4"]
    assert record["random_state"] == 3 and record["n_bootstrap"] == 0
    assert record["preprocessing"]["normalization"].startswith("the data's own")
    assert record["fairquant_version"] == fairquant.__version__
    (tmp_path / "other.json").write_text(json.dumps({"schema": "x/1"}))
    with pytest.raises(DataError, match=r"has schema 'x/1'; expected 'fairquant\.audit/1'"):
        read_audit_json(tmp_path / "other.json")


def test_preprocess_undoes_the_data_normalization(tiny_dataset, model):
    """mean/std given: the model sees (pixels - mean) / std, whatever the data applied."""
    pre = Preprocess(mean=(0.5,), std=(0.25,))
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x)
            return model(x)

    data = tiny_dataset
    data.mean, data.std = (0.2,), (2.0,)
    result = audit(Spy(), data, precisions="fp32", preprocess=pre, n_bootstrap=0)
    expected = ((data.test.x * 2.0 + 0.2) - 0.5) / 0.25
    torch.testing.assert_close(torch.cat(seen), expected)
    assert result.record["preprocessing"]["mean"] == [0.5]


def test_gray_images_repeated_for_a_three_channel_model(tiny_dataset):
    torch.manual_seed(0)
    rgb = SmallCNN(in_channels=3, num_classes=3).eval()
    result = audit(
        rgb, tiny_dataset, precisions="fp32", preprocess=Preprocess(channels=3), n_bootstrap=0
    )
    expected = rgb(tiny_dataset.test.x.expand(-1, 3, -1, -1)).argmax(1).numpy()
    assert (result.samples.predictions["fp32"] == expected).all()


def test_output_width_that_differs_from_the_classes(tiny_dataset):
    torch.manual_seed(0)
    four = SmallCNN(in_channels=1, num_classes=4)
    with pytest.raises(ConfigError, match="outputs 4 values per sample but the data has 3"):
        audit(four, tiny_dataset, precisions="fp32", n_bootstrap=0)


def test_bad_model_and_precision_arguments(tiny_dataset, model):
    with pytest.raises(ConfigError, match=r"a path must name an \.onnx file"):
        audit("model.pt", tiny_dataset)
    with pytest.raises(ConfigError, match="precision 'int9x'"):
        audit(model, tiny_dataset, precisions="int8,int9x")


def test_deployed_precision_has_agreement_and_artifact_size(random_images, model):
    pytest.importorskip("fairquant.quant.deployed")
    data = random_images(40, 30, 8)
    result = audit(model, data, precisions="int8-a8,torch:int8", n_bootstrap=200)
    table = result.table[result.table.precision == "torch:int8"]
    metrics = set(table.metric)
    assert {"agreement_fp32", "artifact_bytes", "accuracy"} <= metrics
    agree = table[(table.metric == "agreement_fp32") & (table.group == "all")].iloc[0]
    fp32 = result.samples.predictions["fp32"]
    expected = 100 * np.mean(result.samples.predictions["torch:int8"] == fp32)
    assert agree.value == pytest.approx(expected)
    assert agree.ci_low <= agree.value <= agree.ci_high
    assert table[table.metric == "artifact_bytes"].value.iloc[0] > 0


# ---- the command --------------------------------------------------------------------------


@pytest.fixture
def table_and_factory(tmp_path, monkeypatch):
    """A CSV with a real group column and a user's MLP factory in the working folder."""
    rng = np.random.default_rng(0)
    n = 120
    x = rng.normal(size=(n, 3))
    frame = pd.DataFrame(x, columns=["f1", "f2", "f3"])
    frame["label"] = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)
    frame["sex"] = np.where(rng.random(n) < 0.3, "female", "male")
    frame.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "fq_cli_models.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn

            def mlp(num_classes, in_channels):
                return nn.Sequential(nn.Linear(in_channels, 8), nn.ReLU(),
                                     nn.Linear(8, num_classes))
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    import sys

    sys.modules.pop("fq_cli_models", None)


def test_cli_audits_a_factory_model_on_a_table(table_and_factory):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    torch.save(net.state_dict(), table_and_factory / "mlp.pt")
    args = [
        "audit",
        "--model",
        "fq_cli_models:mlp",
        "--weights",
        "mlp.pt",
        "--dataset",
        "table",
        "--root",
        "data.csv",
        "--group",
        "sex",
        "--precisions",
        "fp32,int8,int4",
        "--bootstrap",
        "0",
        "-q",
        "--out",
        "out",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(table_and_factory / "out" / "results.csv")
    assert set(table.group) == {"female", "male", "all"}
    record = read_audit_json(table_and_factory / "out")
    assert record["model"]["name"] == "fq_cli_models:mlp"
    assert record["data"]["spec"]["group"] == "sex"
    assert "help" not in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--model", "resnet18", "--dataset", "table", "--root", "data.csv"],
            "unknown model source 'resnet18'",
        ),
        (
            [
                "--model",
                "fq_cli_models:mlp",
                "--dataset",
                "table",
                "--root",
                "data.csv",
                "--num-classes",
                "3",
                "--group",
                "sex",
            ],
            "outputs 3 values per sample but the data has 2 classes",
        ),
        (["--model", "fq_cli_models:mlp"], "needs the data to audit it on"),
        (
            ["--model", "fq_cli_models:mlp", "--dataset", "table", "--root", "data.csv"],
            r"lacks column\(s\) \['group'\]",
        ),
        ([], "give either a checkpoint or a model source"),
    ],
)
def test_cli_errors_are_one_line(table_and_factory, extra, message):
    result = CliRunner().invoke(app, ["audit", *extra, "-q", "--bootstrap", "0"])
    assert result.exit_code == 2, result.output
    import re

    assert re.search(message, result.output.replace("\n", " ")), result.output


def test_cli_help_says_the_factory_runs_code():
    result = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "200"})
    assert "IMPORTS AND RUNS" in " ".join(result.output.split())  # wrapped by click
    assert "torch:int8" in result.output


# ---- non-finite logits ----------------------------------------------------------------------


class _NaNFor(nn.Module):
    """``model``'s logits, NaN for the samples whose first input value is below ``cut``."""

    def __init__(self, model: nn.Module, cut: float) -> None:
        super().__init__()
        self.model, self.cut = model, cut

    def forward(self, x):
        out = self.model(x)
        bad = x.flatten(1)[:, 0] < self.cut
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)


def _nan_at_int4(random_images, model):
    """A dataset and a quantizer whose int4 copy returns NaN logits for some samples."""
    data = random_images(30, 40, 8)
    bad = int((data.test.x.flatten(1)[:, 0] < -0.5).sum())
    assert 0 < bad < 40

    def quantize(m, p):
        from fairquant.quant.model import quantize_model

        q = quantize_model(m, p)
        return _NaNFor(q, -0.5) if p.name == "int4" else q

    return data, quantize, bad


def test_nonfinite_logits_are_an_error_naming_the_precision_and_count(random_images, model):
    data, quantize, bad = _nan_at_int4(random_images, model)
    with pytest.raises(ConfigError, match=rf"int4 returned non-finite logits .*{bad} of 40"):
        audit(model, data, precisions="int8,int4", quantize=quantize, n_bootstrap=0)


def test_nonfinite_logits_counted_wrong_keep_every_row(random_images, model):
    data, quantize, bad = _nan_at_int4(random_images, model)
    result = audit(
        model, data, precisions="int8,int4", quantize=quantize, n_bootstrap=0, nonfinite="wrong"
    )
    nan = (data.test.x.flatten(1)[:, 0] < -0.5).numpy()
    y = data.test.y.numpy()
    pred = result.samples.predictions["int4"]
    assert (pred[nan] != y[nan]).all()  # counted wrong, never a class the model did not give
    assert (pred[nan] == -1).all()
    ref = result.samples.predictions["fp32"]
    expected = 100 * np.mean(np.where(nan, False, ref == y))
    assert result.overall().loc["int4", "accuracy"] == pytest.approx(expected)
    for metric in ("loss", "excess_loss", "phi", "accuracy_drop"):
        assert np.isfinite(result.overall().loc["int4", metric]), metric
    loss = result.samples.losses["int4"]
    floor = np.maximum(np.log(3), result.samples.losses["fp32"])
    np.testing.assert_allclose(loss[nan], floor[nan])
    assert np.isfinite(loss).all()
    assert any(f"int4: {bad} of 40" in n and "counted as wrong" in n for n in result.notes)
    assert result.record["nonfinite"] == {"rule": "wrong", "samples": {"int4": bad}}
    json.dumps(result.record, allow_nan=False)


def test_nonfinite_option_is_checked(tiny_dataset, model):
    with pytest.raises(ConfigError, match=r"nonfinite='drop'.*'error' or 'wrong'"):
        audit(model, tiny_dataset, precisions="int8", nonfinite="drop")


@pytest.fixture
def nan_factory(table_and_factory):
    (table_and_factory / "fq_cli_nan.py").write_text(
        textwrap.dedent(
            """
            import torch
            import torch.nn as nn

            class NaNTail(nn.Module):
                def __init__(self, num_classes, in_channels):
                    super().__init__()
                    self.fc = nn.Linear(in_channels, num_classes)

                def forward(self, x):
                    out = self.fc(x)
                    return torch.where(x[:, :1] > 0.5, torch.full_like(out, float("nan")), out)

            def mlp(num_classes, in_channels):
                return NaNTail(num_classes, in_channels)
            """
        )
    )
    yield table_and_factory
    import sys

    sys.modules.pop("fq_cli_nan", None)


def test_cli_nonfinite_logits_exit_2_before_writing(nan_factory):
    args = ["audit", "--model", "fq_cli_nan:mlp", "--dataset", "table", "--root", "data.csv"]
    args += ["--group", "sex", "--precisions", "int8", "--bootstrap", "0", "-q", "--out", "o"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert re.search(r"fp32 returned non-finite logits .* of 24", result.output), result.output
    assert "--nonfinite wrong" in result.output
    assert not (nan_factory / "o").exists() or not any((nan_factory / "o").iterdir())
    result = CliRunner().invoke(app, [*args, "--nonfinite", "wrong"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(nan_factory / "o" / "results.csv")
    assert {"loss", "phi", "excess_loss"} <= set(table[table.precision == "int8"].metric)
    assert "counted as wrong" in result.output.replace("\n", " ")
    assert read_audit_json(nan_factory / "o")["nonfinite"]["rule"] == "wrong"


# ---- precision names are unique -------------------------------------------------------------


def test_a_spec_cannot_shadow_a_built_in_precision(tmp_path, tiny_dataset, model):
    from fairquant.quant.precision import Precision

    path = Precision("mine", "int", 2).save(tmp_path / "mine.json")
    path.write_text(path.read_text().replace('"mine"', '"int8"'))
    with pytest.raises(ConfigError, match=rf"{path}.*'int8' is a built-in precision"):
        audit(model, tiny_dataset, precisions=f"int8,@{path}", n_bootstrap=0)
    with pytest.raises(ConfigError, match=rf"{path}.*'int8' is a built-in precision"):
        audit(model, tiny_dataset, precisions=f"@{path},int8", n_bootstrap=0)


@pytest.mark.parametrize(
    ("precisions", "message"),
    [
        ("int8,int8", r"'int8' is listed twice"),
        ("fp32,int8,fp32", r"'fp32' is listed twice"),
        ("int8-pc-a8-bn,int8-bn-a8-pc", r"is the same precision as 'int8-pc-a8-bn'"),
        ("ort:int8-pc-entropy,ort:int8-entropy-pc", r"is the same precision as"),
    ],
)
def test_duplicated_precisions_are_refused(tiny_dataset, model, precisions, message):
    with pytest.raises(ConfigError, match=message):
        audit(model, tiny_dataset, precisions=precisions, n_bootstrap=0)


def test_two_specs_with_one_name_are_refused(tmp_path, tiny_dataset, model):
    from fairquant.quant.precision import Precision

    a = Precision("mine", "int", 4).save(tmp_path / "a.json")
    b = Precision("mine", "int", 2).save(tmp_path / "b.json")
    with pytest.raises(ConfigError, match=r"'mine' is listed twice"):
        audit(model, tiny_dataset, precisions=f"@{a},@{b}", n_bootstrap=0)
    result = audit(model, tiny_dataset, precisions=f"fp32,int4,@{a}", n_bootstrap=0)
    assert [p.name for p in result.precisions] == ["fp32", "int4", "mine"]
