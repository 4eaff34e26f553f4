"""`fairquant audit --max-drop ... --gate`: the verdict files and the exit codes, end to end."""

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from fairquant.cli import app
from fairquant.report.verdict import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, load_schema

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 4-channel CNN trained 3 epochs on balanced 8x8 digits (about 89 % test accuracy)."""
    ck = tmp_path_factory.mktemp("gate") / "m.pt"
    args = ["--model", "cnn", "--width", "4", "--epochs", "3", "--image-size", "8"]
    r = runner.invoke(app, ["train", "--out", str(ck), *args, "--imbalance", "none", "--quiet"])
    assert r.exit_code == 0, r.output
    return ck


def audit(checkpoint: Path, out: Path, precisions: str, *options: str):
    args = ["audit", "--checkpoint", str(checkpoint), "--out", str(out), "--quiet"]
    return runner.invoke(app, [*args, "--precisions", precisions, "--bootstrap", "0", *options])


def test_gate_passes_and_writes_a_valid_verdict(checkpoint, tmp_path):
    r = audit(checkpoint, tmp_path, "fp32,int8", "--max-drop", "50", "--gate")
    assert r.exit_code == EXIT_PASS, r.output
    assert r.stdout.startswith("Verdict PASS (max drop 50 points per group")  # leads stdout
    assert "int8: PASS" in r.output
    document = json.loads((tmp_path / "verdict.json").read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(document)
    assert document["status"] == "pass" and document["exit_code"] == 0
    assert (tmp_path / "verdict.junit.xml").read_text().startswith("<?xml")


def test_gate_fails_on_a_collapsed_precision(checkpoint, tmp_path):
    r = audit(checkpoint, tmp_path, "fp32,int8,int2", "--max-drop", "2", "--max-drop", "0=1")
    assert r.exit_code == 0, r.output  # without --gate the verdict is only reported
    assert "int2: FAIL:" in r.output
    r = audit(checkpoint, tmp_path, "fp32,int2", "--max-drop", "2", "--gate")
    assert r.exit_code == EXIT_FAIL, r.output
    # the HTML report of the audit folder leads with the verdict's plain words
    r = runner.invoke(app, ["report", str(tmp_path), "--format", "html"])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "report.html").read_text()
    assert html.index('id="verdict"') < html.index('id="findings"')
    assert "<h2>Verdict: FAIL</h2>" in html and "int2: FAIL:" in html


def test_gate_inconclusive_on_too_few_samples(checkpoint, tmp_path):
    # about 54 test images per digit cannot show a drop below 1 point
    r = audit(checkpoint, tmp_path, "fp32,int8", "--max-drop", "1", "--gate")
    assert r.exit_code == EXIT_INCONCLUSIVE, r.output
    assert "int8: INCONCLUSIVE:" in r.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--gate"], "--gate needs a tolerance"),
        (["--max-drop", "2", "--max-drop", "Others=1"], "overrides for unknown groups"),
        (["--max-drop", "two"], "--max-drop 'two'"),
    ],
)
def test_gate_errors(checkpoint, tmp_path, options, message):
    r = audit(checkpoint, tmp_path, "fp32,int8", *options)
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())
