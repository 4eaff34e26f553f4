"""The verdict for people and for CI: plain-words lines, ``verdict.json``, JUnit XML, exit codes.

- :func:`summary_lines`: one line per precision, e.g. ``int4: FAIL: Others −14.9 points
  [−20.1, −9.8] beyond its max drop of 2, p < 0.001 (Holm)``, after a header naming the
  tolerance, the intervals and the Holm family. The interval printed is the one that decides
  (:mod:`fairquant.metrics.verdict`): wholly beyond the tolerance beside FAIL, wholly within
  beside PASS, containing it beside INCONCLUSIVE; its ends are rounded outward, so the printed
  interval holds the computed one.
- :func:`write_verdict_json`: ``verdict.json``, schema ``fairquant.verdict/1``
  (``schemas/verdict.schema.json`` beside this module, shipped as package data).
- :func:`write_junit`: ``verdict.junit.xml``, one testcase per precision x group (and per
  precision for φ when ``max_phi`` is set). A fail is a ``<failure>``; an inconclusive case is an
  ``<error type="inconclusive">``, not a ``<skipped>``: a pipeline that reads only the JUnit
  report then stops on it instead of shipping a model nobody could vouch for (fail-closed); the
  exit codes tell the two apart for pipelines that want to.
- :func:`exit_code`: :data:`EXIT_PASS` 0, :data:`EXIT_FAIL` 3, :data:`EXIT_INCONCLUSIVE` 4
  (2 is the command line's "bad input", 1 an unexpected crash).
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from fairquant import __version__
from fairquant._io import atomic_write
from fairquant.errors import ConfigError
from fairquant.metrics.verdict import Tolerance, Verdict, verdict

__all__ = [
    "EXIT_CODES",
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_PASS",
    "SCHEMA_ID",
    "exit_code",
    "load_schema",
    "read_verdict_json",
    "summary_lines",
    "verdict_document",
    "write_junit",
    "write_verdict",
    "write_verdict_json",
]

SCHEMA_ID = "fairquant.verdict/1"
VERDICT_JSON, VERDICT_JUNIT = "verdict.json", "verdict.junit.xml"
EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE = 0, 3, 4
#: ``fairquant audit --gate`` exits with these; 2 stays the CLI's code for bad input.
EXIT_CODES = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}
_MINUS = "\u2212"


def exit_code(verdict: Verdict) -> int:
    """0 when every precision passes, 3 when any fails, else 4 (some inconclusive)."""
    return EXIT_CODES[verdict.overall]


def _num(value: float, digits: int = 1) -> str:
    """``-14.94`` -> ``"−14.9"`` (a real minus sign, as in print)."""
    text = f"{value:.{digits}f}"
    return text.replace("-", _MINUS) if float(text) != 0 else f"{0:.{digits}f}"


def _p(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3g}"


def outward(value: float, up: bool, digits: int = 1) -> float:
    """An interval end rounded to ``digits`` away from the interval's inside, so the printed
    interval contains the computed one (a printed end never crosses the tolerance it did not
    cross); float noise below 1e-6 of the last digit does not move it a step."""
    scale = 10.0**digits
    return (math.ceil if up else math.floor)(round(value * scale, 6)) / scale


def _outward(value: float, up: bool, digits: int = 1) -> str:
    return _num(outward(value, up, digits), digits)


def _group_words(row: pd.Series) -> str:
    low, high = _outward(row.ci_low, up=False), _outward(row.ci_high, up=True)
    return f"{row.group} {_num(row.change)} points [{low}, {high}]"


def _listed(items: list[str], limit: int = 3) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def _tolerance_words(verdict: Verdict) -> str:
    tol = verdict.tolerance
    words = f"max drop {tol.max_drop:g} points per group"
    if tol.per_group:
        words += " (" + ", ".join(f"{g}: {v:g}" for g, v in tol.per_group.items()) + ")"
    if tol.max_phi is not None:
        words += f", max φ {tol.max_phi:g}"
    return words


def _precision_line(verdict: Verdict, precision: str) -> str:
    rows = verdict.table[verdict.table.precision == precision]
    status = verdict.status[precision]
    phi = verdict.gaps[(verdict.gaps.precision == precision) & (verdict.gaps.metric == "phi")]
    phi = phi.iloc[0]
    phi_words = f"φ {phi.value:.3g}" + (
        "" if np.isnan(phi.ci_low) else f" [{phi.ci_low:.3g}, {phi.ci_high:.3g}]"
    )
    if status == "fail":
        bad = rows[rows.status == "fail"].sort_values("change")
        items = [
            f"{_group_words(r)} beyond its max drop of {r.max_drop:g}, {_p(r.p_exceed_holm)} (Holm)"
            for _, r in bad.iterrows()
        ]
        if phi.status == "fail":
            items.append(f"{phi_words} above {phi['max']:g}, {_p(phi.p_exceed_holm)} (Holm)")
        return f"{precision}: FAIL: {_listed(items)}"
    if status == "pass":
        worst = rows.sort_values("change").iloc[0]
        text = (
            f"{precision}: PASS: every group within its tolerance; largest drop "
            f"{_group_words(worst)} (max {worst.max_drop:g})"
        )
        return text + (f"; {phi_words} below {phi['max']:g}" if phi.status == "pass" else "")
    items = []
    for _, r in rows[rows.status == "inconclusive"].sort_values("change").iterrows():
        if r.n == 0:
            items.append(f"{r.group} has no test samples")
            continue
        items.append(f"{_group_words(r)} against a max drop of {r.max_drop:g}{_needed(r)}")
    if phi.status == "inconclusive":
        items.append(f"{phi_words} against a max of {phi['max']:g}")
    return f"{precision}: INCONCLUSIVE: {_listed(items)}"


def summary_lines(verdict: Verdict) -> list[str]:
    """The verdict in plain words: a header, then one line per precision."""
    scope = "each precision" if verdict.family == "precision" else "the audit"
    header = (
        f"Verdict {verdict.overall.upper()} ({_tolerance_words(verdict)}; paired intervals of "
        f"the accuracy change against {verdict.reference}, {verdict.confidence:.0%} on the "
        f"pass side and {verdict.correction.capitalize()}-adjusted on the fail side; "
        f"{verdict.correction.capitalize()} over the {verdict.n_tests} tests of {scope})"
    )
    return [header, *(_precision_line(verdict, p) for p in verdict.status)]


def _clean(value):
    """JSON-ready: NaN and pandas NA -> None, numpy scalars -> Python."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: _clean(v) for k, v in row.items()} for row in frame.astype(object).to_dict("records")
    ]


def verdict_document(verdict: Verdict) -> dict:
    """The ``verdict.json`` content (schema :data:`SCHEMA_ID`)."""
    lines = summary_lines(verdict)
    return {
        "schema": SCHEMA_ID,
        "fairquant_version": __version__,
        "status": verdict.overall,
        "exit_code": exit_code(verdict),
        "summary": lines,
        "reference": verdict.reference,
        "tolerance": verdict.tolerance.to_dict(),
        "statistics": {
            "confidence": verdict.confidence,
            "alpha": verdict.alpha,
            "correction": verdict.correction,
            "n_tests": verdict.n_tests,
            "n_bootstrap": verdict.n_bootstrap,
            "interval": "paired accuracy change: continuity-corrected Tango score bound at the "
            "confidence level on the pass side, exact unconditional bound at the Holm level of "
            "the group on the fail side",
            "test": "exact unconditional test of a drop above the tolerance (Tango score "
            "ordering, supremum over the nuisance), Holm-adjusted over the groups (and φ) of "
            + ("each precision" if verdict.family == "precision" else "the whole audit")
            + ", decides a fail; score test at the tolerance decides a pass; McNemar exact "
            "shown, not used to decide",
        },
        "precisions": [
            {
                "precision": p,
                "status": s,
                "summary": lines[1 + i],
                "groups": _records(
                    verdict.table[verdict.table.precision == p].drop(columns="precision")
                ),
                "gaps": _records(
                    verdict.gaps[verdict.gaps.precision == p].drop(columns="precision")
                ),
            }
            for i, (p, s) in enumerate(verdict.status.items())
        ],
        "notes": list(verdict.notes),
    }


def load_schema() -> dict:
    """The JSON Schema of ``verdict.json``."""
    text = files("fairquant.report").joinpath("schemas/verdict.schema.json").read_text("utf-8")
    return json.loads(text)


def read_verdict_json(path: str | os.PathLike) -> dict:
    """Read a ``verdict.json`` (for the report), refusing a file of another schema or version."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable verdict.json ({e})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA_ID:
        found = document.get("schema") if isinstance(document, dict) else None
        raise ConfigError(f"{path}: expected schema {SCHEMA_ID!r}, found {found!r}")
    if document.get("status") not in EXIT_CODES or not isinstance(document.get("summary"), list):
        raise ConfigError(f"{path}: no status or summary lines; write it with fairquant audit")
    return document


def write_verdict_json(
    verdict: Verdict, path: str | os.PathLike, *, run: dict | None = None
) -> Path:
    """Write ``verdict.json`` atomically (strict JSON: no NaN, missing numbers are null), with
    the ``run`` (id and command line) that wrote it when given."""
    document = verdict_document(verdict) | ({} if run is None else {"run": run})
    text = json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def write_junit(verdict: Verdict, path: str | os.PathLike, *, run: dict | None = None) -> Path:
    """Write the JUnit XML report: one testsuite per precision, one testcase per group (and φ);
    each suite's properties carry the ``run`` id and command line (JSON) when given."""
    suites = ET.Element("testsuites", name="fairquant verdict")
    for precision, status in verdict.status.items():
        rows = verdict.table[verdict.table.precision == precision]
        phi = verdict.gaps[(verdict.gaps.precision == precision) & (verdict.gaps.metric == "phi")]
        cases = [(f"accuracy drop of {r.group}", r, _group_message(r)) for _, r in rows.iterrows()]
        cases += [
            (
                "phi",
                r,
                f"φ {r.value:.4g} against a max of {r['max']:g}, {_p(r.p_exceed_holm)} (Holm)",
            )
            for _, r in phi.iterrows()
            if r.status != "not judged"
        ]
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"fairquant.verdict.{precision}",
            tests=str(len(cases)),
            failures=str(sum(r.status == "fail" for _, r, _ in cases)),
            errors=str(sum(r.status == "inconclusive" for _, r, _ in cases)),
            skipped="0",
        )
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="status", value=status)
        for key, value in _run_properties(run):
            ET.SubElement(properties, "property", name=key, value=value)
        for name, row, message in cases:
            case = ET.SubElement(
                suite, "testcase", classname=f"fairquant.verdict.{precision}", name=name
            )
            if row.status == "fail":
                ET.SubElement(case, "failure", type="fail", message=message).text = message
            elif row.status == "inconclusive":
                ET.SubElement(case, "error", type="inconclusive", message=message).text = message
            else:
                ET.SubElement(case, "system-out").text = message
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    return atomic_write(path, lambda tmp: tree.write(tmp, encoding="utf-8", xml_declaration=True))


def _group_message(row: pd.Series) -> str:
    if row.n == 0:
        return f"{row.group} has no test samples: its accuracy change cannot be judged"
    text = (
        f"{_group_words(row)} against a max drop of {row.max_drop:g} "
        f"({row.lost} lost, {row.gained} gained of {row.n}); drop above it "
        f"{_p(row.p_exceed_holm)} (Holm); any change, McNemar {_p(row.p_mcnemar_holm)} (Holm)"
    )
    return text + (_needed(row) if row.status == "inconclusive" else "")


def _needed(row: pd.Series) -> str:
    """How many test samples would decide an inconclusive group, in words."""
    if pd.isna(row.n_needed):
        return ", exactly its tolerance here: no sample size can be foreseen to decide it"
    needed, n = int(row.n_needed), int(row.n)
    if needed <= n:
        return f", just short of deciding at its {n:,} test samples"
    return (
        f", about {needed:,} test samples of {row.group} in all would decide it "
        f"({needed - n:,} more than its {n:,})"
    )


def _run_properties(run: dict | None) -> list[tuple[str, str]]:
    if run is None:
        return []
    return [("fairquant.run_id", str(run["id"])), ("fairquant.command", json.dumps(run["command"]))]


def write_verdict(
    result,
    tolerance: Tolerance,
    folder: str | os.PathLike,
    *,
    n_bootstrap: int | None = None,
    run: dict | None = None,
) -> tuple[Verdict, list[Path]]:
    """Judge an audit ``result`` against ``tolerance`` and write :data:`VERDICT_JSON` and
    :data:`VERDICT_JUNIT` into ``folder`` (what ``fairquant audit --max-drop`` does), both naming
    the ``run`` (id and command line) when given. The bootstrap intervals come from the audit's
    own replicates (its :class:`~fairquant.metrics.frame.FairnessFrame`) unless ``n_bootstrap``
    asks for another number (:func:`~fairquant.metrics.verdict.verdict`)."""
    judged = verdict(result, tolerance, n_bootstrap=n_bootstrap)
    folder = Path(folder)
    return judged, [
        write_verdict_json(judged, folder / VERDICT_JSON, run=run),
        write_junit(judged, folder / VERDICT_JUNIT, run=run),
    ]
