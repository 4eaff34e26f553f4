"""`fairquant allocate --max-drop --precision`: the smallest-model search on a deployed
toolchain, end to end through the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fairquant.cli import app
from fairquant.mitigate import search
from fairquant.train import load_with_data

ort = pytest.importorskip("onnxruntime", reason="the ort: precisions need onnxruntime")
pytest.importorskip("onnx", reason="the ort: precisions need onnx")

runner = CliRunner()


def _session_predict(path, x: torch.Tensor) -> np.ndarray:
    """Predicted classes from a bare onnxruntime session (no fairquant code)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x.numpy()})[0].argmax(1)


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


def test_the_search_never_calibrates_on_its_validation_split(checkpoint, monkeypatch, tmp_path):
    """`allocate --max-drop --precision ort:int8` selects on the checkpoint's validation split:
    the candidates' calibration samples come from the training samples outside it (they were
    drawn from the whole training split, so a candidate could be calibrated on what it was
    selected on)."""
    import fairquant

    seen, real = [], search.compare_searches

    def keep(*args, calibration=None, **kwargs):
        seen.append(calibration)
        return real(*args, calibration=calibration, **kwargs)

    monkeypatch.setattr(search, "compare_searches", keep)
    ckpt, data = load_with_data(checkpoint)
    config = search.SearchConfig(
        base=fairquant.parse_precision("ort:int8"), max_rounds=2, samples_per_group=4
    )
    search.smallest_within(
        ckpt, data, fairquant.Tolerance(50.0), tmp_path / "m.onnx", config=config, n_bootstrap=0,
        calib_size=64,
    )
    validation, _ = fairquant.held_out_validation(ckpt, data)
    calibration = seen[0].flatten(1).double()
    distance = torch.cdist(calibration, validation.x.flatten(1).double())
    assert len(calibration) == 64 and int((distance.min(1).values == 0).sum()) == 0
