"""docs/findings/utkface-verdict.md and the README's verdict section from their committed data.

    python bench/findings/utkface_verdict.py --check   # or --write

Reads ``examples/ship/utkface-verdict/verdict.json`` (``fairquant audit --max-drop 2`` on a
ResNet-18 trained on UTKFace race; the commands are in that folder's ``run.json`` and
``train.sh``) and the power and family-wise tables of ``docs/verdict.md`` (written by
``bench/verdict_power.py`` and ``bench/verdict_familywise.py``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from _page import Study, main, num, pval, table, thousands, words

from fairquant.report import outward

DATA = "examples/ship/utkface-verdict"


def _verdict(root: Path) -> dict:
    return json.loads((root / DATA / "verdict.json").read_text())


def _rows(doc: str, head: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header line starts with ``head``."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows


def _power(root: Path) -> dict[str, str]:
    """P(pass) with no true loss and P(fail) at a 5-point loss (one test) at 200/500/1,000."""
    doc = (root / "docs" / "verdict.md").read_text()
    rows = {r[0]: r[1:] for r in _rows(doc, "| true drop |")}
    sizes = ["n = 20", "n = 50", "n = 100", "n = 200", "n = 500", "n = 1,000", "n = 2,000"]
    cols = [sizes.index(s) for s in ("n = 200", "n = 500", "n = 1,000")]

    def part(row: str, which: int) -> list[str]:
        return [rows[row][c].split("\\|")[0].split("/")[which].strip() for c in cols]

    familywise = _rows(doc, "| groups | gained |")
    worst = max(float(c) for r in familywise for c in r[2:])
    groups = sorted({int(r[0]) for r in familywise})
    return {
        "pass_none": words([f"{p} %" for p in part("0", 0)]),
        "fail_five": words([f"{p} %" for p in part("5", 1)]),
        "familywise_worst": num(worst, 1),
        "familywise_groups": f"{groups[0]}–{groups[-1]}",
    }


def _change(g: dict) -> str:
    """The change with its interval, the ends rounded outward as the verdict prints them."""
    low, high = outward(g["ci_low"], up=False), outward(g["ci_high"], up=True)
    return f"{num(g['change'], 1, sign=True)} [{num(low, 1, sign=True)}, {num(high, 1, sign=True)}]"


def values(root: Path) -> dict[str, str]:
    v = _verdict(root)
    precisions = v["precisions"]
    groups = [g["group"] for g in precisions[0]["groups"]]
    n = {g["group"]: g["n"] for g in precisions[0]["groups"]}
    out: dict[str, str] = {
        "summary": "\n".join(v["summary"]),
        "command": " ".join(v["run"]["command"]),
        "n_test": thousands(sum(n.values())),
        "tests_per_precision": str(v["statistics"]["n_tests"]),
        "max_drop": num(v["tolerance"]["max_drop"], 0),
        "exit_code": str(v["exit_code"]),
    }
    rows, readme_rows, status = [], [], {}
    for p in precisions:
        status[p["precision"]] = p["status"]
        for g in p["groups"]:
            change = _change(g)
            rows.append(
                [
                    p["precision"],
                    g["group"],
                    thousands(g["n"]),
                    num(g["accuracy_fp32"], 1),
                    num(g["accuracy"], 1),
                    change,
                    pval(g["p_exceed_holm"]),
                    g["status"],
                ]
            )
    out["table"] = table(
        [
            "precision",
            "group",
            "test n",
            "fp32 %",
            "quantized %",
            "change (points) [interval]",
            "p drop > max (Holm)",
            "verdict",
        ],
        rows,
    )
    by = {p["precision"]: {g["group"]: g for g in p["groups"]} for p in precisions}
    names = list(by)
    for g in groups:
        cells = [f"{g} ({thousands(n[g])})"]
        for p in names:
            r = by[p][g]
            cells += [_change(r), r["status"]]
        readme_rows.append(cells)
    head = ["group (test n)"]
    for p in names:
        head += [f"{p} change", p]
    out["readme_table"] = table(head, readme_rows)
    passed = [p for p in names if status[p] == "pass"]
    failed = [p for p in names if status[p] == "fail"]
    out["outcome"] = "; ".join(
        part
        for part in (
            f"{words(passed)} {'passes' if len(passed) == 1 else 'pass'}" if passed else "",
            f"{words(failed)} {'fails' if len(failed) == 1 else 'fail'}" if failed else "",
        )
        if part
    )
    failing = {
        p: [g for g in groups if by[p][g]["status"] == "fail"] for p in failed
    }  # groups beyond the tolerance with confidence
    out["failing_groups"] = (
        "; ".join(f"{p}: {words(gs)}" for p, gs in failing.items()) if failing else "none"
    )
    zero = [g for g in groups if by[names[0]][g]["accuracy_fp32"] == 0]
    out["floor_note"] = (
        f"fp32 classifies no test face of {words(zero)} correctly (0 %), so no precision can lose "
        "anything there: a verdict on accuracy drops cannot protect a group the model already "
        "fails, and the accuracy table shows it before the verdict does."
        if zero
        else ""
    )
    # no printed interval lies wholly beyond the tolerance beside an INCONCLUSIVE (issue 26)
    limit = -v["tolerance"]["max_drop"]
    beyond = [
        (p, g)
        for p in names
        for g in groups
        if by[p][g]["status"] == "inconclusive" and by[p][g]["ci_high"] < limit
    ]
    if beyond:
        raise ValueError(f"an interval wholly beyond the tolerance reads inconclusive: {beyond}")
    return out | _power(root)


STUDY = Study("utkface-verdict", values, readme=True)

if __name__ == "__main__":
    sys.exit(main(STUDY))
