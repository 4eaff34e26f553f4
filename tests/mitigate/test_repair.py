"""`fairquant repair`: on a model built to fail at ort:int8 (a weight outlier that per-tensor and
per-channel int8 crush for one class), the repair keeps the harmful layer in float; the saved
.onnx runs in a bare ONNX Runtime session and scores what `fairquant.audit` scores; a tolerance
no repair reaches names the group; a precision repair cannot build is one clear error."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import fairquant
from fairquant.data import DataSpec, GroupedDataset, Split
from fairquant.errors import ConfigError
from fairquant.metrics.verdict import Tolerance
from fairquant.mitigate.allocate import ToleranceUnreachable

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

GROUPS = ["a", "b", "c"]


def _split(n: int, seed: int) -> Split:
    """Class y (= group) marked by feature y; feature 3 is always 0."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = torch.zeros(n, 4)
    x[:, :3] = nn.functional.one_hot(y, 3).float() + 0.1 * torch.randn(n, 3, generator=gen)
    return Split(x, y, y.clone())


def _model(outliers: int, rows: tuple[int, ...] = (2,)) -> nn.Module:
    """Logit c = feature c, through two Linear layers. The ``rows`` (classes) of the first layer
    (and, with ``outliers=2``, of the second) also weigh an always-zero input by 500: harmless in
    float, but int8's scale for that row (or tensor) becomes 500/127 and rounds the weights of 1
    to 0, so those classes' logits are constant. One such class (group c, by default) a logit
    offset brings back; two (``rows=(1, 2)``) are indistinguishable, and only float weights help."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    w1 = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0.0]])
    w2 = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1)
    for row in rows:
        w1[row, 3] = 500.0
        if outliers == 2:
            w2[row, 3] = 500.0
    with torch.no_grad():
        model[0].weight.copy_(w1)
        model[0].bias.copy_(torch.tensor([0, 0, 0, -10.0]))  # hidden unit 3 is always 0
        model[2].weight.copy_(w2)
        model[2].bias.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def data() -> GroupedDataset:
    return GroupedDataset(
        spec=DataSpec(name="tiny"),
        train=_split(300, 1),
        test=_split(300, 3),
        classes=["0", "1", "2"],
        group_names=GROUPS,
        target="y",
        group="g",
        mean=(0.0,),
        std=(1.0,),
    )


@pytest.fixture(scope="module")
def repaired(data):
    """Group c collapsed at int8: a logit offset repairs it."""
    return fairquant.repair(
        _model(1),
        data,
        "ort:int8",
        tolerance=Tolerance(2.0),
        validation=_split(150, 2),
        n_bootstrap=0,
    )


def _repair_layered(data):
    """Groups b and c collapsed at int8: only the first layer in float repairs it."""
    return fairquant.repair(
        _model(1, rows=(1, 2)),
        data,
        "ort:int8",
        tolerance=Tolerance(2.0),
        validation=_split(150, 2),
        n_bootstrap=0,
    )


@pytest.fixture(scope="module")
def layered(data):
    return _repair_layered(data)


def test_repair_keeps_the_harmful_layer_in_float(layered):
    table = layered.table()
    given = table.iloc[0]
    assert given.tier == "as given" and not given.within
    assert given["drop[c]"] == 100.0  # built to fail: group c is never predicted
    # cheapest first: every earlier tier was tried and failed first
    from fairquant.mitigate.repair import TIERS

    assert TIERS[0] == "as given" and TIERS[-3:-1] == ("logit offsets", "layers in float")
    # the float copy of the other layer would not shrink the file: no "smaller file" candidate
    assert tuple(dict.fromkeys(table.tier)) == TIERS[:-1]
    assert not table[table.tier != "layers in float"].within.any()
    assert table[table.tier == "calibrator"].calibration_set.nunique() == 1  # the best set's
    corrections = table[table.tier == "logit offsets"]
    assert list(corrections.correction) == ["bias correction", "logit offsets"]
    chosen = layered.chosen
    assert chosen.within and chosen.tier == "layers in float" and not chosen.correction
    assert chosen.float_layers == ("/0/Gemm",)  # the first Linear, the one with the outliers
    assert (chosen.drop <= 2.0).all()
    # evaluations: one validation pass per candidate, and fp32's
    assert layered.evaluations == len(table) + 1 == table.evaluations_total.iloc[-1]
    assert (table.evaluations == 1).all()
    # stops at the first candidate within tolerance: it is the last one tried
    assert table.chosen.sum() == 1 and table.chosen.iloc[-1] and table.within.sum() == 1
    assert layered.verdict.status[chosen.precision.name] != "fail"


def test_candidates_hold_their_files_not_their_sessions(data):
    """Each candidate tried keeps its file, not its loaded ONNX Runtime session (one candidate
    per layer and more held every session to the end: 7.2 GB on a MobileNetV2 study model); a
    candidate's session opens again when it predicts."""
    import gc

    from fairquant.models.onnx import OnnxModel

    def sessions() -> int:
        gc.collect()
        return sum(isinstance(o, OnnxModel) for o in gc.get_objects())

    before = sessions()  # other tests' results may hold theirs
    result = _repair_layered(data)
    tried, live = len(result.table()), sessions() - before
    assert tried > 5 and live <= 2  # the chosen one's (it predicted on test), fp32's at most
    assert result.chosen.deployed.predict(data.test.x[:4]).shape == (4, 3)


def test_logit_offsets_repair_a_collapsed_class(repaired):
    """The cheapest repair of one collapsed class is a per-class offset fitted on validation;
    the search stops there (no layer kept in float)."""
    table = repaired.table()
    assert list(dict.fromkeys(table.tier))[-1] == "logit offsets"
    assert "layers in float" not in set(table.tier)
    chosen = repaired.chosen
    assert chosen.tier == "logit offsets" and chosen.float_layers == ()
    assert chosen.offsets[2] > max(chosen.offsets[:2])  # class 2's constant logit raised
    assert (chosen.drop <= 2.0).all() and table.chosen.iloc[-1]
    assert repaired.verdict.status[chosen.precision.name] != "fail"


def test_offsets_are_fitted_on_validation_only(data, repaired):
    """Other test labels change the verdict's input, never the offsets."""
    flipped = replace(data, test=Split(data.test.x, (data.test.y + 1) % 3, data.test.g))
    again = fairquant.repair(
        _model(1), flipped, "ort:int8", validation=_split(150, 2), n_bootstrap=0
    )
    assert again.chosen.offsets == repaired.chosen.offsets


def test_fit_logit_offsets_meets_its_optimality_condition():
    """At the minimum the gradient vanishes: each class's mean predicted probability equals its
    share of the labels, less ridge * b (checked in float64); an absent class keeps 0."""
    from fairquant.mitigate.repair import fit_logit_offsets

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(200, 4, generator=gen, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (200,), generator=gen)  # class 3 never occurs
    b = fit_logit_offsets(z, y, ridge=1e-4)
    p = torch.softmax(z + torch.from_numpy(b), 1).mean(0).numpy()
    share = np.bincount(y.numpy(), minlength=4) / 200
    np.testing.assert_allclose((p - share + 1e-4 * b)[:3], 0, atol=1e-10)
    assert b[3] == 0.0


def test_saved_onnx_runs_bare_and_scores_what_audit_scores(repaired, data, tmp_path):
    import onnxruntime as ort

    files = fairquant.write_repair(repaired, tmp_path / "out")
    assert sorted(p.name for p in files) == [
        "candidates.csv",
        "model.onnx",
        "verdict.json",
        "verdict.junit.xml",
    ]
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: data.test.x.numpy()})[0]
    correct = logits.argmax(1) == data.test.y.numpy()
    bare = [100 * correct[data.test.g.numpy() == a].mean() for a in range(3)]
    audited = fairquant.audit(
        str(tmp_path / "out" / "model.onnx"), data, precisions="fp32", n_bootstrap=0
    )
    by_group = audited.by_group("accuracy")
    np.testing.assert_allclose(by_group.loc[GROUPS, "fp32"].to_numpy(dtype=float), bare)
    table = repaired.verdict.table.set_index("group")
    np.testing.assert_allclose(table.loc[GROUPS, "accuracy"].to_numpy(dtype=float), bare)
    record = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert [p["precision"] for p in record["precisions"]] == [repaired.chosen.precision.name]
    with pytest.raises(ConfigError, match="exists and is not empty"):
        fairquant.write_repair(repaired, tmp_path / "out")


def test_as_given_when_already_within(data):
    clean = _model(1)
    with torch.no_grad():
        clean[0].weight[2, 3] = 1.0  # no outlier: int8 keeps every group
    result = fairquant.repair(clean, data, "ort:int8", validation=_split(150, 2), n_bootstrap=0)
    given, smaller = result.candidates
    assert given.tier == "as given" and given.within
    # on a model this small, int8 weights with their scales and Q/DQ nodes take more bytes than
    # float ones: one of the two layers in float (not both: one stays quantized) shrinks the file
    assert smaller.tier == "smaller file" and len(smaller.float_layers) == 1
    assert smaller.size_bytes < given.size_bytes and smaller.within
    assert result.chosen is smaller and result.evaluations == 3
    assert any(n.startswith("smaller file: keeping 1 more layer") for n in result.notes)


def test_unreachable_tolerance_names_the_group(data):
    with pytest.raises(ToleranceUnreachable, match=r"group 'b' .* reached is 100\.00 points") as e:
        model = _model(2, rows=(1, 2))
        fairquant.repair(model, data, "ort:int8", validation=_split(150, 2), n_bootstrap=0)
    assert (e.value.group, e.value.reachable) == ("b", 100.0)
    # the error carries every candidate tried: the smallest drop is the table's own minimum
    table = e.value.candidates
    assert len(table) > 1 and not table.within.any() and not table.chosen.any()
    assert table["drop[b]"].min() == e.value.reachable


@pytest.mark.parametrize("precision", ["int4", "torchao:int8wo", "ort:int8-dynamic", "torch:int8"])
def test_a_precision_repair_cannot_build_is_one_error(data, precision):
    from fairquant.options import REPAIRABLE

    with pytest.raises(ConfigError, match=rf"precision '{precision}' cannot be repaired") as e:
        fairquant.repair(_model(1), data, precision, validation=_split(30, 2), n_bootstrap=0)
    assert str(e.value).endswith(f"expected one of: {REPAIRABLE}")  # what it CAN repair


def test_a_carved_validation_split_says_the_model_may_have_seen_it(data):
    clean = _model(1)
    with torch.no_grad():
        clean[0].weight[2, 3] = 1.0
    result = fairquant.repair(clean, data, "ort:int8", val_size=0.2, n_bootstrap=0)
    assert "may have been trained on them" in result.validation
    # no split and no size: the default share is carved, and said
    default = fairquant.repair(clean, data, "ort:int8", n_bootstrap=0)
    assert default.validation.startswith("a validation split of 60 samples carved")
    assert "may have been trained on them" in default.validation
    assert default.notes[0] == f"selected on {default.validation}"


runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 4-channel CNN trained 3 epochs on 8x8 digits, 20 % of training held out."""
    from fairquant.cli import app

    ck = tmp_path_factory.mktemp("repair") / "m.pt"
    args = ["--model", "cnn", "--width", "4", "--epochs", "3", "--image-size", "8"]
    r = runner.invoke(app, ["train", "--out", str(ck), *args, "--val-size", "0.2", "--quiet"])
    assert r.exit_code == 0, r.output
    return ck


def test_cli_writes_the_repaired_model(checkpoint, tmp_path):
    """The command of docs/commands/repair.md."""
    from fairquant.cli import app

    out = tmp_path / "repaired"
    args = ["repair", "--checkpoint", str(checkpoint), "--precision", "ort:int8"]
    options = ["--max-drop", "30", "--calib-size", "128", "--seed", "1", "--bootstrap", "0"]
    r = runner.invoke(app, [*args, *options, "--out", str(out), "--gate"])
    verdict = json.loads((out / "verdict.json").read_text())
    assert r.exit_code == verdict["exit_code"], r.output
    assert "selected on the checkpoint's validation split" in r.output
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "verdict.json", "candidates.csv"}
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--calib-size", "0"])
    assert r.exit_code == 2 and "Invalid value for '--calib-size'" in r.output
    r = runner.invoke(
        app,
        [
            "repair",
            "--checkpoint",
            str(checkpoint),
            "--precision",
            "int4",
            "--out",
            str(tmp_path / "y"),
        ],
    )
    assert r.exit_code == 2 and "precision 'int4' cannot be repaired" in r.output


@pytest.fixture(scope="module")
def checkpoint_without_validation(tmp_path_factory) -> Path:
    """The same CNN trained on its whole training split."""
    from fairquant.cli import app

    ck = tmp_path_factory.mktemp("repair-noval") / "m.pt"
    args = ["--model", "cnn", "--width", "4", "--epochs", "3", "--image-size", "8"]
    r = runner.invoke(app, ["train", "--out", str(ck), *args, "--quiet"])
    assert r.exit_code == 0, r.output
    return ck


def test_cli_carves_a_validation_split_and_says_the_model_saw_it(
    checkpoint_without_validation, tmp_path
):
    from fairquant.cli import app

    args = ["repair", "--checkpoint", str(checkpoint_without_validation), "--precision", "ort:int8"]
    options = ["--max-drop", "30", "--calib-size", "64", "--bootstrap", "0"]
    r = runner.invoke(app, [*args, *options, "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "carved from the training split" in text and "the model was trained on them" in text


def test_cli_unreachable_tolerance_is_one_line_and_keeps_the_candidates(checkpoint, tmp_path):
    """No candidate within tolerance: exit 2, one line naming the limit and the smallest value
    reached; the folder holds candidates.csv only (no model that fails, no verdict)."""
    from fairquant.cli import app

    out = tmp_path / "unreachable"
    args = ["repair", "--checkpoint", str(checkpoint), "--precision", "ort:int8", "--out", str(out)]
    options = ["--max-drop", "30", "--max-phi", "0", "--calib-size", "64", "--bootstrap", "0"]
    r = runner.invoke(app, [*args, *options])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    assert "max_phi 0" in errors[0] and "smallest any of the" in errors[0]
    assert f"every candidate tried is in {out / 'candidates.csv'}" in errors[0]
    assert [p.name for p in out.iterdir()] == ["candidates.csv"]
    table = pd.read_csv(out / "candidates.csv")
    assert len(table) > 1 and not table.within.any()


@pytest.fixture
def onnx_and_table(tmp_path) -> Path:
    """The outlier model as an ONNX file and its data as a table (raw features, a split column):
    a model from elsewhere, with no validation split of its own."""
    from fairquant.quant.ort import export_onnx

    frames = []
    for name, split in (("train", _split(300, 1)), ("test", _split(300, 3))):
        frame = pd.DataFrame(split.x.numpy(), columns=["f0", "f1", "f2", "f3"])
        frame["label"] = split.y.numpy()
        frame["grp"] = [GROUPS[g] for g in split.g.tolist()]
        frame["split"] = name
        frames.append(frame)
    pd.concat(frames).to_csv(tmp_path / "data.csv", index=False)
    export_onnx(_model(1), _split(8, 0).x, tmp_path / "m.onnx")
    return tmp_path


def test_cli_repairs_a_model_from_elsewhere_and_audit_agrees(onnx_and_table):
    """``--model FILE.onnx`` with the data options of ``audit``: the repaired model.onnx, audited
    by ``fairquant audit --model``, scores each group as the repair's test verdict says."""
    from fairquant.cli import app

    folder = onnx_and_table
    data = ["--dataset", "table", "--root", str(folder / "data.csv"), "--group", "grp"]
    data += ["-o", "standardize=false"]
    args = ["repair", "--model", str(folder / "m.onnx"), *data, "--precision", "ort:int8"]
    out = folder / "repaired"
    r = runner.invoke(app, [*args, "--bootstrap", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "a validation split of 60 samples carved" in text and "may have been trained" in text
    model = ["--model", str(out / "model.onnx"), *data, "--precisions", "fp32"]
    r = runner.invoke(app, ["audit", *model, "--bootstrap", "0", "--out", str(folder / "a")])
    assert r.exit_code == 0, r.output
    audited = pd.read_csv(folder / "a" / "results.csv")
    audited = audited[(audited.metric == "accuracy") & (audited.group != "all")]
    verdict = json.loads((out / "verdict.json").read_text())
    (judged,) = verdict["precisions"]
    by_group = {g["group"]: g["accuracy"] for g in judged["groups"]}
    assert dict(zip(audited.group, audited.value, strict=True)) == pytest.approx(by_group)
    # a checkpoint rebuilds its own data: the data options of --model are refused, by name
    refused = ["repair", "--checkpoint", str(folder / "m.onnx"), *args[3:], "--out", "z"]
    r = runner.invoke(app, refused)
    assert r.exit_code == 2 and "--dataset, --root, --group, --option do not apply" in r.output


def _bare_openvino_accuracy(folder: Path, split: Split) -> list[float]:
    ov = pytest.importorskip("openvino")
    options = {"INFERENCE_PRECISION_HINT": "f32"}
    compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", options)
    logits = compiled(split.x.numpy())[compiled.output(0)]
    correct = logits.argmax(1) == split.y.numpy()
    return [100 * correct[split.g.numpy() == a].mean() for a in range(3)]


def test_preprocessing_is_applied_as_the_audit_applies_it(checkpoint, tmp_path):
    """A model that expects other inputs (here (pixels - 0.5) / 0.25): the repaired .onnx takes
    the preprocessed input, so ``fairquant.audit`` of it with the same preprocessing scores each
    group as the repair's test verdict says."""
    from fairquant.data.preprocess import Preprocess

    ckpt, digits = fairquant.load_with_data(checkpoint)
    pre = Preprocess(mean=(0.5,), std=(0.25,))
    result = fairquant.repair(
        ckpt.model,
        digits,
        "ort:int8",
        tolerance=Tolerance(30.0),
        preprocess=pre,
        calib_size=64,
        n_bootstrap=0,
    )
    fairquant.write_repair(result, tmp_path / "pre")
    audited = fairquant.audit(
        str(tmp_path / "pre" / "model.onnx"),
        digits,
        precisions="fp32",
        preprocess=pre,
        n_bootstrap=0,
        show_progress=False,
    )
    names = [str(a) for a in digits.group_names]
    judged = result.verdict.table.set_index("group").loc[names, "accuracy"]
    np.testing.assert_allclose(
        audited.by_group("accuracy").loc[names, "fp32"].to_numpy(float), judged.to_numpy(float)
    )


def test_a_validation_split_given_twice_is_refused(data, checkpoint):
    """A split and a size, or a split beside a checkpoint's own: one of them would be ignored."""
    with pytest.raises(ConfigError, match=r"validation= \(150 samples\) and val_size=0\.2"):
        fairquant.repair(
            _model(1), data, "ort:int8", validation=_split(150, 2), val_size=0.2, n_bootstrap=0
        )
    ckpt, digits = fairquant.load_with_data(checkpoint)
    with pytest.raises(ConfigError, match="rebuilds its own validation split"):
        fairquant.repair(ckpt, digits, "ort:int8", validation=digits.test, n_bootstrap=0)


@pytest.mark.parametrize(
    ("rows", "tier", "floats"),
    [((1, 2), "layers in float", ("/0/Gemm/WithoutBiases",)), ((2,), "logit offsets", ())],
)
def test_openvino_repairs_in_its_own_ir(data, tmp_path, rows, tier, floats):
    """NNCF's weights are per channel already (the tier is skipped, and said); a layer kept in
    float goes through ignored_scope, offsets are an Add in the IR; the IR written scores,
    compiled by a bare OpenVINO with the f32 hint, what the test verdict reports."""
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    result = fairquant.repair(
        _model(1, rows=rows),
        data,
        "openvino:int8",
        validation=_split(150, 2),
        calib_size=64,
        n_bootstrap=0,
    )
    assert "per-channel" not in {c.tier for c in result.candidates}
    assert any("per channel already" in n for n in result.notes)
    assert (result.chosen.tier, result.chosen.float_layers) == (tier, floats)
    fairquant.write_repair(result, tmp_path / "ov")
    bare = _bare_openvino_accuracy(tmp_path / "ov", data.test)
    table = result.verdict.table.set_index("group")
    np.testing.assert_allclose(table.loc[GROUPS, "accuracy"].to_numpy(dtype=float), bare)


def test_findings_page_shows_the_committed_tables():
    """docs/findings/repair.md shows examples/repair/*.csv as they are."""
    pytest.importorskip("tabulate")

    repo = Path(__file__).resolve().parents[2]
    page = " ".join((repo / "docs" / "findings" / "repair.md").read_text().split())
    for name in ("digits-cnn-w4.csv", "digits-resnet18-w8.csv"):
        table = pd.read_csv(repo / "examples" / "repair" / name).to_markdown(index=False)
        assert " ".join(table.split()) in page, name


def test_ort_refuses_a_node_to_exclude_it_does_not_have(tmp_path):
    from fairquant.quant.ort import OrtStaticConfig, export_onnx, quantize_onnx, weight_nodes

    x = _split(16, 0).x
    source = export_onnx(_model(1), x[:8], tmp_path / "fp32.onnx")
    assert weight_nodes(source, tmp_path) == ["/0/Gemm", "/2/Gemm"]
    config = OrtStaticConfig(nodes_to_exclude=("/9/Gemm",))
    with pytest.raises(ConfigError, match=r"nodes_to_exclude names \['/9/Gemm'\]"):
        quantize_onnx(config, source, x, tmp_path)
    _, notes = quantize_onnx(OrtStaticConfig(nodes_to_exclude=("/0/Gemm",)), source, x, tmp_path)
    assert "ONNX Runtime quantized 1 of 2 weight layers" in notes[0]
    assert "kept in float (nodes_to_exclude): /0/Gemm" in notes


def _calibrations(monkeypatch) -> list[torch.Tensor]:
    """Every calibration set the repair builds a candidate from (``quantize`` recorded)."""
    import fairquant.mitigate.repair as module

    seen, build = [], module.quantize

    def recorded(source, precision, *, calibration, **kwargs):
        seen.append(calibration.clone())
        return build(source, precision, calibration=calibration, **kwargs)

    monkeypatch.setattr(module, "quantize", recorded)
    return seen


def _shared_rows(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many rows of ``a`` are rows of ``b``."""
    distance = torch.cdist(a.flatten(1).double(), b.flatten(1).double())
    return int((distance.min(1).values == 0).sum())


def test_calibration_never_draws_the_validation_split(data, checkpoint, monkeypatch):
    """Calibration samples come from the training samples outside the validation split: the
    checkpoint's held-out split, or a carved one (they overlapped: the calibration draw read the
    whole training split)."""
    seen = _calibrations(monkeypatch)
    ckpt, digits = fairquant.load_with_data(checkpoint)
    validation, _ = fairquant.held_out_validation(ckpt, digits)
    fairquant.repair(ckpt, digits, "ort:int8", tolerance=Tolerance(99.0), n_bootstrap=0)
    assert seen and all(_shared_rows(c, validation.x) == 0 for c in seen)
    seen.clear()
    fairquant.repair(
        _model(1),
        data,
        "ort:int8",
        val_size=0.5,
        calib_size=140,
        n_bootstrap=0,
        tolerance=Tolerance(99.0),
    )
    from fairquant.data.split import validation_split

    _, carved = validation_split(data.train, 0.5, seed=data.spec.seed)
    assert seen and all(_shared_rows(c, carved.x) == 0 for c in seen)


@pytest.mark.parametrize("top", [1, 2, 3, 5, 8, 13, 52])
def test_shortest_prefix_finds_the_first_passing_length_in_few_calls(top):
    """Against a linear scan, for every threshold of a monotone test (and none passing): the
    same answer, in at most 2 ceil(log2 n*) + 1 calls (one when n* = 1; log2(top) + 2 when none
    passes)."""
    from fairquant.mitigate.repair import shortest_prefix

    for threshold in [*range(1, top + 1), None]:
        calls = []

        def within(n, threshold=threshold, calls=calls):
            calls.append(n)
            return threshold is not None and n >= threshold

        got = shortest_prefix(top, within)
        assert got == threshold
        assert all(1 <= n <= top for n in calls) and len(set(calls)) == len(calls)
        bound = 2 * np.ceil(np.log2(threshold)) + 1 if threshold else np.ceil(np.log2(top)) + 2
        assert len(calls) <= bound, (top, threshold, calls)


def test_layers_are_ranked_without_a_validation_pass(layered, tmp_path):
    """The float tier ranks every layer on training samples outside validation (its builds are
    not validation passes), the harmful layer first, and validates only prefixes of the ranking:
    here one (a 2-layer model keeps at most 1 in float); the ranking is written beside the
    candidates."""
    from fairquant.report.repair import RANKING, write_repair

    ranking = layered.ranking
    assert list(ranking.layer) == ["/0/Gemm", "/2/Gemm"]
    assert ranking.score.iloc[0] > ranking.score.iloc[1]
    assert {"kl[b]", "kl[c]"} <= set(ranking.columns) and "kl[a]" not in ranking  # b, c fail
    table = layered.table()
    assert (table.tier == "layers in float").sum() == 1
    assert any(n.startswith("layers in float: 2 layers ranked") for n in layered.notes)
    files = write_repair(layered, tmp_path / "out")
    written = pd.read_csv(tmp_path / "out" / RANKING)
    assert tmp_path / "out" / RANKING in files and list(written.layer) == list(ranking.layer)


def test_calibration_sets_draw_what_they_say():
    """random: as the audit draws; stratified: each group's share (largest remainder);
    balanced: equal per group; anything else is refused by name."""
    from fairquant.mitigate import CALIBRATION_SETS, calibration_set
    from fairquant.quant import calibration_indices

    g = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    pool = Split(torch.arange(100.0)[:, None], g, g)
    assert CALIBRATION_SETS == ("random", "stratified", "balanced")
    random = calibration_set(pool, "random", size=30, seed=0)
    assert torch.equal(random, calibration_indices(pool, 30, balanced=False, seed=0))
    assert g[calibration_set(pool, "stratified", size=30, seed=0)].bincount().tolist() == [21, 6, 3]
    assert g[calibration_set(pool, "balanced", size=30, seed=0)].bincount().tolist() == [10, 10, 10]
    with pytest.raises(ConfigError, match="calibration set 'first'"):
        calibration_set(pool, "first", size=30, seed=0)


def test_a_ranking_whose_prefixes_all_fail_falls_back_to_measuring_each_layer(data, monkeypatch):
    """Where no prefix of the ranking is within tolerance (here the ranking is turned upside
    down, the harmless layer first), each layer alone is measured on the validation samples of
    the groups over tolerance and the harmful one found: the note says so."""
    import fairquant.mitigate.repair as module

    rank = module._rank_layers

    def upside_down(*args, **kwargs):
        table, n = rank(*args, **kwargs)
        return table.iloc[::-1].reset_index(drop=True), n

    monkeypatch.setattr(module, "_rank_layers", upside_down)
    result = _repair_layered(data)
    floats = result.table()[lambda t: t.tier == "layers in float"].float_layers.tolist()
    assert floats == ["/2/Gemm", "/0/Gemm"]  # the prefix of 1 failed; then /0/Gemm alone passed
    assert result.chosen.float_layers == ("/0/Gemm",) and result.chosen.within
    assert any("no prefix of the ranking was within tolerance" in n for n in result.notes)
    # each layer measured on the samples of groups b and c alone: a fraction of a pass each
    validation = _split(150, 2)
    share = float(torch.isin(validation.g, torch.tensor([1, 2])).float().mean())
    assert result.evaluations == pytest.approx(len(result.table()) + 1 + 2 * share)
    excess = result.ranking.set_index("layer").val_excess
    assert excess["/0/Gemm"] == 0 and excess["/2/Gemm"] > 0
