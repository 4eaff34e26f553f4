"""The smallest-model search on a deployed base (each layer quantized by its toolchain or kept in
float), in Python and through `fairquant allocate --max-drop --precision`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fairquant.cli import app
from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.metrics.verdict import Tolerance
from fairquant.mitigate import search
from fairquant.mitigate.allocate import ToleranceUnreachable
from fairquant.mitigate.search import SearchConfig, search_smallest
from fairquant.quant import quantize
from fairquant.quant.configs import DeployedPrecision
from fairquant.quant.precision import FLOAT_BITS
from fairquant.train import load_with_data

ort = pytest.importorskip("onnxruntime", reason="the ort: precisions need onnxruntime")
pytest.importorskip("onnx", reason="the ort: precisions need onnx")

GROUPS = ["a", "b", "c"]
runner = CliRunner()


def _blobs(n: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 6, generator=gen) * 1.5
    gen.manual_seed(seed)
    g = torch.arange(n) % 3
    y = torch.randint(0, 3, (n,), generator=gen)
    return Split(centers[y] + torch.randn(n, 6, generator=gen) * 0.8, y, g)


@pytest.fixture(scope="module")
def outlier():
    """A 3-layer MLP whose first layer has one output row 1000x larger (and the next layer's
    matching input column 1000x smaller: the same function): per-tensor int8 rounds the first
    layer's other rows to zero, so ONNX Runtime's int8 breaks every group unless it stays in
    float. Returns the model, its training split (calibration) and a validation split."""
    torch.manual_seed(0)
    train, validation = _blobs(600, 1), _blobs(300, 2)
    model = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(train.x), train.y).backward()
        opt.step()
    with torch.no_grad():
        model[0].weight[0] *= 1000
        model[0].bias[0] *= 1000
        model[2].weight[:, 0] /= 1000
    return model.eval(), train, validation


def _session_predict(path, x: torch.Tensor) -> np.ndarray:
    """Predicted classes from a bare onnxruntime session (no fairquant code)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x.numpy()})[0].argmax(1)


def _drops(model, path, split: Split) -> np.ndarray:
    right_fp32 = (model(split.x).argmax(1) == split.y).numpy()
    right = _session_predict(path, split.x) == split.y.numpy()
    g = split.g.numpy()
    return np.array([100 * (right_fp32[g == a].mean() - right[g == a].mean()) for a in range(3)])


def test_search_on_ort_keeps_the_layers_that_break_a_group_in_float(outlier, tmp_path):
    model, train, validation = outlier
    calibration = train.x[:128]
    tolerance = Tolerance(max_drop=2.0)
    # the base alone breaks the groups (measured with ONNX Runtime itself)
    whole = quantize(model, "ort:int8", calibration=calibration).save(tmp_path / "all.onnx")
    assert _drops(model, whole, validation).max() > 20
    config = SearchConfig(base="ort:int8", samples_per_group=40, max_rounds=8)
    assert config.bits == (8, FLOAT_BITS) and config.per_channel is False
    r = search_smallest(
        model, validation, GROUPS, tolerance, config=config, calibration=calibration
    )
    assert r.feasible
    bits = dict(zip(r.layers.layer, r.layers.bits, strict=True))
    assert bits["0"] == FLOAT_BITS and 8 in bits.values()  # the outlier layer in float, not all
    assert isinstance(r.precision, DeployedPrecision) and r.precision.toolchain == "ort"
    assert r.precision.float_layers  # ONNX Runtime's nodes_to_exclude
    # the result is what ONNX Runtime builds: its file's size and its own drops on validation
    built = quantize(model, r.precision, calibration=calibration)
    path = built.save(tmp_path / "chosen.onnx")
    assert path.suffix == ".onnx" and r.size_bytes == path.stat().st_size == built.size_bytes
    np.testing.assert_allclose(_drops(model, path, validation), r.drop.to_numpy(), atol=1e-9)
    assert (r.drop <= 2.0).all()


def test_when_only_float_keeps_the_tolerance_the_search_says_so(outlier):
    _, train, validation = outlier
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight.normal_()
        model[0].weight[0] *= 1000  # the other rows round to zero in per-tensor int8
    config = SearchConfig(base="ort:int8", samples_per_group=40, max_rounds=4)
    with pytest.raises(ToleranceUnreachable, match="no candidate with a layer at ort:int8") as e:
        search_smallest(
            model.eval(), validation, GROUPS, Tolerance(max_drop=2.0), config=config,
            calibration=train.x[:128],
        )  # fmt: skip
    assert e.value.group in GROUPS and e.value.reachable > 2.0


def test_a_deployed_base_refuses_what_it_cannot_express(outlier):
    model, _, validation = outlier
    for kwargs, message in (
        ({"base": "int4"}, "expected a deployed precision"),
        ({"base": "ort:int8", "bits": (4, 8)}, "fixes the choice per layer"),
        ({"base": "ort:int8", "sensitivity": "measured"}, "measured table simulates"),
        ({"base": "ort:int8", "per_channel": True}, "spell the per-channel precision"),
    ):
        with pytest.raises(ConfigError, match=message):
            SearchConfig(**kwargs)
    assert SearchConfig(base="ort:int8-pc").per_channel is True
    with pytest.raises(ConfigError, match="pass calibration inputs"):
        search_smallest(
            model, validation, GROUPS, Tolerance(max_drop=2.0), config=SearchConfig(base="ort:int8")
        )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """`fairquant train` on 8x8 digits, a 4-channel CNN, three epochs (about 66 % accurate:
    ONNX Runtime's int8 moves a few validation samples), 30 % held out."""
    ck = tmp_path_factory.mktemp("ck") / "m.pt"
    args = ["--model", "cnn", "--width", "4", "--epochs", "3", "--image-size", "8", "--quiet"]
    r = runner.invoke(app, ["train", "--out", str(ck), *args, "--val-size", "0.3"])
    assert r.exit_code == 0, r.output
    return ck


def test_allocate_max_drop_on_ort_writes_the_onnx_model_the_audit_reports(
    checkpoint, tmp_path, monkeypatch
):
    import fairquant

    found, real = [], search.smallest_within

    def keep(*args, **kwargs):  # what the command computed, to compare with what it wrote
        found.append(real(*args, **kwargs))
        return found[-1]

    monkeypatch.setattr(search, "smallest_within", keep)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    r = runner.invoke(
        app,
        [
            "allocate", "--checkpoint", str(checkpoint), "--out", str(out), "--max-drop", "2",
            "--precision", "ort:int8", "--samples", "4", "--bootstrap", "0",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "held out of training" in text and "test split verdict of the searched model" in text
    assert f"wrote {out}: ort:int8," in text and "weight layers kept in float" in text
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]
    (result,) = found
    assert result.path == out and result.chosen.feasible
    assert result.chosen.size_bytes == out.stat().st_size
    assert (result.chosen.drop <= 2.0).all()
    # a bare ONNX Runtime session predicts what the command's test verdict audited, and what
    # `fairquant audit` reports for the file
    _, data = load_with_data(checkpoint)
    bare = _session_predict(out, data.test.x)
    np.testing.assert_array_equal(result.audit.samples.predictions["fairquant"], bare)
    of_file = fairquant.audit(str(out), data, precisions="fp32", n_bootstrap=0)
    np.testing.assert_array_equal(of_file.samples.predictions["fp32"], bare)
    g, right = data.test.g.numpy(), bare == data.test.y.numpy()
    accuracy = [100 * right[g == a].mean() for a in range(len(data.group_names))]
    np.testing.assert_allclose(of_file.by_group("accuracy")["fp32"].to_numpy(float), accuracy)
    np.testing.assert_allclose(
        result.audit.by_group("accuracy")["fairquant"].to_numpy(float), accuracy
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "int4"], "--precision 'int4': expected a deployed precision"),
        (["--precision", "ort:int9"], "--precision: unknown deployed precision 'ort:int9'"),
        (["--precision", "ort:int8", "--bits", "4,8"], "--bits does not apply with --precision"),
        (["--precision", "ort:int8", "--per-channel"], "--per-channel does not apply with"),
        (["--precision", "ort:int8", "--baselines"], "--baselines does not apply with"),
        (
            ["--precision", "ort:int8", "--sensitivity", "measured"],
            "--sensitivity measured does not apply with --precision ort:int8",
        ),
        (["--precision", "torchao:int4wo"], "error: torchao:int4wo: "),
    ],
)
def test_bad_deployed_bases_are_one_clear_line(checkpoint, tmp_path, extra, message):
    out = tmp_path / "model.onnx"
    args = ["allocate", "--checkpoint", str(checkpoint), "--out", str(out), "--max-drop", "2"]
    r = runner.invoke(app, [*args, "--samples", "4", "--bootstrap", "0", *extra])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and message in text, r.output
    assert not out.exists()


def test_precision_belongs_to_the_search(checkpoint, tmp_path):
    out = tmp_path / "a.json"
    args = ["allocate", "--checkpoint", str(checkpoint), "--out", str(out), "--budget", "4bits"]
    r = runner.invoke(app, [*args, "--precision", "ort:int8"])
    assert r.exit_code == 2 and "--precision does not apply without --max-drop" in r.output
