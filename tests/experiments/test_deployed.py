"""`fairquant run` with deployed precisions beside simulated ones, and `fairquant report` of it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import fairquant
from fairquant.cli import app
from fairquant.data.registry import load_dataset
from fairquant.errors import ConfigError
from fairquant.experiments import load_config, parse_config
from fairquant.experiments.cells import expand
from fairquant.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "deployed.yaml"
#: The documented command (docs/commands/run.md), run here as written, in a temporary folder.
DOCUMENTED = (
    "fairquant run examples/deployed.yaml --scale tiny --out deployed && fairquant report deployed"
)
SIX = ["fp32", "int8", "int4", "torch:int8", "ort:int8", "torchao:int8dq"]
METHODS = {
    "fp32": "none",
    "int8": "ptq",
    "int4": "ptq",
    "torch:int8": "torch",
    "ort:int8": "ort",
    "torchao:int8dq": "torchao",
}
TINY = {
    "datasets": [{"name": "digits"}],
    "models": [{"name": "cnn", "width": 4}],
    "training": {"epochs": 1},
    "methods": ["ptq"],
    "precisions": SIX,
    "seeds": [0],
    "bootstrap": 0,
}
EXTRAS = [m for m in ("onnxruntime", "torchao") if importlib.util.find_spec(m) is None]


def _error(document) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(document, source="exp.yaml")
    return str(info.value)


def test_the_example_lists_the_six_precisions_and_validates():
    tiny = load_config(EXAMPLE, scale="tiny")
    assert tiny.precisions == SIX and tiny.seeds == [0, 1] and tiny.training.epochs <= 2
    assert [m.name for m in tiny.methods] == ["ptq"]
    assert load_config(EXAMPLE).precisions == SIX


def test_a_bad_precision_names_its_key_and_value():
    message = _error({**TINY, "precisions": ["int8", "ort:int9"]})
    assert "precisions[1]: unknown deployed precision 'ort:int9'" in message
    message = _error({**TINY, "methods": [{"name": "ptq", "precisions": ["torchao:int3wo"]}]})
    assert "methods[0].precisions[0]: unknown deployed precision 'torchao:int3wo'" in message


def test_qat_refuses_a_deployed_precision_naming_where_it_came_from():
    shared = _error({**TINY, "methods": ["ptq", {"name": "qat", "epochs": 1}]})
    assert "1 problem\n  precisions[3]: 'torch:int8' is torch's own post-training" in shared
    assert "methods[1] (qat) fine-tunes fairquant's simulated weights" in shared
    assert "give qat its own `precisions:`" in shared
    own = _error({**TINY, "methods": [{"name": "qat", "precisions": ["int4", "torchao:int8dq"]}]})
    assert "methods[0].precisions[1]: 'torchao:int8dq' is torchao's own" in own
    # the fix the message names validates
    fixed = parse_config({**TINY, "methods": ["ptq", {"name": "qat", "precisions": ["int4"]}]})
    assert [p.name for p in fixed.method_precisions(fixed.methods[1])] == ["int4"]


def test_fairqat_refuses_a_deployed_precision_below_its_edge_bits():
    message = _error({**TINY, "mitigations": ["none", "fairqat"], "precisions": ["torchao:int4wo"]})
    assert "mitigations[1]: 'fairqat' keeps the first and last layers at 8 bits" in message
    assert "'torchao:int4wo' (precisions[0]) cannot express" in message
    # at 8 bits FairQAT's mapping changes nothing: the toolchain's int8 runs as it is
    config = parse_config({**TINY, "mitigations": ["none", "fairqat"]})
    assert len(expand(config)) == 2


def test_explain_takes_the_simulated_precisions_and_refuses_a_deployed_one():
    on = {**TINY, "explain": {"enabled": True}}
    assert [p.name for p in parse_config(on).explain_precisions()] == ["fp32", "int8", "int4"]
    message = _error({**on, "explain": {"enabled": True, "precisions": ["int4", "ort:int8"]}})
    assert "explain.precisions[1]: 'ort:int8' is a deployed precision" in message


@pytest.mark.skipif(
    bool(EXTRAS), reason=f"extras not installed: {EXTRAS} (fairquant[onnx,torchao])"
)
def test_run_trains_once_audits_six_precisions_per_seed_and_reports_them(
    tmp_path, one_thread, monkeypatch
):
    page = " ".join((REPO / "docs" / "commands" / "run.md").read_text().split())
    assert DOCUMENTED in page
    monkeypatch.chdir(tmp_path)
    run_line, report_line = (
        [str(EXAMPLE) if w == "examples/deployed.yaml" else w for w in part.split()[1:]]
        for part in DOCUMENTED.split(" && ")
    )
    run_dir = tmp_path / "deployed"
    runner = CliRunner()
    args = [*run_line, "--quiet"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 cells: 2 run now (2 trained), 0 already done" in result.output
    read = {"dtype": {"group": str}, "keep_default_na": False, "na_values": [""]}
    results = pd.read_csv(run_dir / "results.csv", **read)
    for seed in (0, 1):
        rows = results[results.seed == seed].drop_duplicates("precision")
        assert dict(zip(rows.precision, rows.method, strict=True)) == METHODS, seed
    overall = results[results.group == "all"]
    agreement = overall[overall.metric == "agreement_fp32"]
    assert sorted(set(agreement.precision)) == ["ort:int8", "torch:int8", "torchao:int8dq"]
    assert agreement.value.between(0, 100).all()
    # every precision that calibrates drew the same training images: an audit of the stored
    # checkpoint with the cell's calibration settings gives the same numbers
    config = load_config(EXAMPLE, scale="tiny")
    cell = expand(config)[1]
    model = load_checkpoint(run_dir / "cells" / cell.key / "model.pt").model
    data = load_dataset(cell.data_spec())
    direct = fairquant.audit(
        model,
        data.test,
        precisions=SIX,
        group_names=data.group_names,
        calibration=data.train,
        calib_size=config.methods[0].calib_size,
        calib_seed=cell.seed,
        batch_size=512,
        n_bootstrap=config.bootstrap,
        random_state=cell.seed,
    ).table
    stored = results[results.seed == cell.seed].drop(columns=["dataset", "model", "mitigation"])
    pd.testing.assert_frame_equal(
        stored.drop(columns="seed").reset_index(drop=True),
        direct.reset_index(drop=True),
        check_dtype=False,
    )
    notes = pd.read_csv(run_dir / "notes.csv")
    assert any("ONNX Runtime quantized" in n for n in notes.note)
    assert any("torchao quantized 1 of 5 weight layers" in n for n in notes.note)
    stored_notes = json.loads(
        (run_dir / "cells" / cell.key / f"notes-{cell.eval_key}.json").read_text()
    )
    assert stored_notes == list(notes[notes.seed == cell.seed].note)

    again = runner.invoke(app, args, catch_exceptions=False)
    assert "0 run now (0 trained), 2 already done" in again.output
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results.csv", **read), results)

    result = runner.invoke(app, report_line, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    md = (run_dir / "report.md").read_text()
    phi_header = md.split("## φ(D) by precision", 1)[1].split("\n\n")[1].splitlines()[0]
    assert [c.strip() for c in phi_header.strip("|").split("|")][-5:] == SIX[1:]
    for method in ("ptq", "torch", "ort", "torchao"):
        assert f"## digits · cnn · mitigation none · {method}" in md
    blocks = md.split("## digits · cnn · mitigation none · ")[1:]
    assert sum("| agrees with fp32 |" in b for b in blocks) == 3
    assert "| agrees with fp32 |" not in blocks[0]  # ptq's simulated precisions have none
    html = (run_dir / "report.html").read_text()
    assert "precisions (torchao)" in html and "agrees with fp32" in html
    assert "Notes of the audits" in html and "torchao quantized 1 of 5 weight layers" in html


def test_a_mitigation_comparison_audits_deployed_precisions_with_ptq_only():
    from fairquant.experiments.mitigation import MitigationComparison, _notes, mitigation_config
    from fairquant.models import ModelSpec
    from fairquant.train import TrainConfig

    data = parse_config(TINY).datasets[0].spec(Path("."))
    spec, train = ModelSpec("cnn", 2), TrainConfig(epochs=1)
    with pytest.raises(ConfigError, match=r"precisions \['ort:int8'\] are deployed.*'ptq'\] only"):
        mitigation_config(data, spec, train, precisions="int8,ort:int8")
    config = mitigation_config(
        data,
        spec,
        train,
        precisions="int8,ort:int8",
        methods=["ptq"],
        mitigations="none,balanced-calib",
    )
    comparison = MitigationComparison(
        config, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), Path()
    )
    requested = [(method, p.name) for method, p in comparison.requested()]
    assert requested == [
        ("none", "fp32"),
        ("ptq", "int8"),
        ("ort", "ort:int8"),  # its rows' method: the toolchain
        ("ptq", "int8-a8"),
        ("ptq", "int4-a8"),
    ]
    notes = _notes(config)
    assert any("the deployed ort:int8 are built from the same group-balanced" in n for n in notes)
