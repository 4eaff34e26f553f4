"""verdict.json (against its schema), JUnit XML, the plain-words summary and the exit codes."""

import json
import xml.etree.ElementTree as ET

import jsonschema
import numpy as np
import pandas as pd

from fairquant.metrics.samples import PerSample
from fairquant.metrics.verdict import Tolerance, verdict
from fairquant.report.verdict import (
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_PASS,
    SCHEMA_ID,
    exit_code,
    load_schema,
    summary_lines,
    write_junit,
    write_verdict_json,
)


def three_precisions(empty_group: bool = False):
    """int8 unchanged (pass), int4 with 'Others' losing 15 points (fail), int3 undecided."""
    rng = np.random.default_rng(0)
    g = np.repeat([0, 1], [2000, 400])
    y = np.zeros(len(g), dtype=np.int64)
    fp32 = np.where(rng.random(len(g)) < 0.9, 0, 1)

    def worse(share):
        p = fp32.copy()
        p[(g == 1) & (fp32 == 0) & (rng.random(len(g)) < share)] = 1
        return p

    preds = {"fp32": fp32, "int8": fp32.copy(), "int4": worse(0.17), "int3": worse(0.04)}
    losses = {k: (p != y).astype(float) for k, p in preds.items()}
    names = ["Majority", "Others", *(["Nobody"] if empty_group else [])]
    return verdict(
        PerSample(y, g, preds, losses),
        Tolerance(2.0, max_phi=0.5),
        group_names=names,
        n_bootstrap=200,
    )


def test_summary_lines():
    v = three_precisions()
    assert v.status == {"int8": "pass", "int4": "fail", "int3": "inconclusive"}
    header, int8, int4, int3 = summary_lines(v)
    assert header.startswith("Verdict FAIL (max drop 2 points per group, max φ 0.5; paired")
    assert "Holm over the 3 tests of each precision" in header  # 2 groups + phi
    assert int8.startswith("int8: PASS: every group within its tolerance")
    assert int4.startswith("int4: FAIL: Others \u2212")
    assert int4.endswith("beyond its max drop of 2, p < 0.001 (Holm)")
    assert int3.startswith("int3: INCONCLUSIVE: Others \u2212")
    row = v.table.set_index(["precision", "group"]).loc[("int3", "Others")]
    needed, n = int(row.n_needed), int(row.n)
    assert needed > n == 400
    assert (
        f"about {needed:,} test samples of Others in all would decide it "
        f"({needed - n:,} more than its 400)"
    ) in int3


def test_samples_needed_in_words():
    """"About 129 test samples of Black" said whether that is in all or more (issue 25): both."""
    from fairquant.report.verdict import _needed

    row = pd.Series({"group": "Black", "n": 88, "n_needed": 129})
    assert _needed(row) == (
        ", about 129 test samples of Black in all would decide it (41 more than its 88)"
    )
    row = pd.Series({"group": "Black", "n": 88, "n_needed": 80})
    assert _needed(row) == ", just short of deciding at its 88 test samples"
    row = pd.Series({"group": "Black", "n": 88, "n_needed": pd.NA})
    assert "no sample size can be foreseen" in _needed(row)


def test_printed_intervals_are_rounded_outward():
    """The printed interval holds the computed one: [-2.04, -0.01] prints as [-2.1, 0.0]."""
    from fairquant.report.verdict import _group_words

    row = pd.Series({"group": "a", "change": -1.0, "ci_low": -2.04, "ci_high": -0.01})
    assert _group_words(row) == "a \u22121.0 points [\u22122.1, 0.0]"
    row = pd.Series({"group": "a", "change": -1.0, "ci_low": -2.0, "ci_high": 1.2})
    assert _group_words(row) == "a \u22121.0 points [\u22122.0, 1.2]"


def test_exit_codes():
    v = three_precisions()
    assert exit_code(v) == EXIT_FAIL == 3
    only = {p: s for p, s in v.status.items() if p != "int4"}
    assert exit_code(type(v)(**{**v.__dict__, "status": only})) == EXIT_INCONCLUSIVE == 4
    passing = {"int8": "pass"}
    assert exit_code(type(v)(**{**v.__dict__, "status": passing})) == EXIT_PASS == 0


def test_verdict_json_validates_against_its_schema(tmp_path):
    for empty in (False, True):  # an empty group's numbers are null, never NaN
        path = write_verdict_json(three_precisions(empty), tmp_path / "verdict.json")
        document = json.loads(path.read_text())  # strict JSON: no NaN in the file
        jsonschema.Draft202012Validator(load_schema()).validate(document)
        assert document["schema"] == SCHEMA_ID == load_schema()["$id"]
        first = "inconclusive" if empty else "pass"  # no group may go unjudged in a pass
        assert [p["status"] for p in document["precisions"]] == [first, "fail", "inconclusive"]
        assert document["exit_code"] == 3 and document["status"] == "fail"
    nobody = document["precisions"][0]["groups"][2]
    assert nobody["n"] == 0 and nobody["change"] is None
    assert any("'Nobody' has no test samples" in n for n in document["notes"])


def test_schema_rejects_a_wrong_document(tmp_path):
    path = write_verdict_json(three_precisions(), tmp_path / "verdict.json")
    document = json.loads(path.read_text())
    document["precisions"][0]["status"] = "maybe"
    validator = jsonschema.Draft202012Validator(load_schema())
    assert not validator.is_valid(document)


def test_junit_xml(tmp_path):
    path = write_junit(three_precisions(), tmp_path / "verdict.junit.xml")
    root = ET.parse(path).getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert list(suites) == [f"fairquant.verdict.{p}" for p in ("int8", "int4", "int3")]
    int4 = suites["fairquant.verdict.int4"]
    assert int4.get("tests") == "3" and int4.get("failures") == "1"  # Others; phi 0.15 < 0.5
    failure = int4.find("testcase[@name='accuracy drop of Others']/failure")
    assert "drop above it p < 0.001 (Holm)" in failure.get("message")
    assert "any change, McNemar p < 0.001 (Holm)" in failure.get("message")
    int3 = suites["fairquant.verdict.int3"]
    error = int3.find("testcase[@name='accuracy drop of Others']/error")
    assert error is not None and error.get("type") == "inconclusive"
    assert suites["fairquant.verdict.int8"].get("failures") == "0"
    assert suites["fairquant.verdict.int8"].get("errors") == "0"
