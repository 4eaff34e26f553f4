"""docs/findings/repair.md from the tables ``bench/repair.py`` committed in examples/repair/.

    python bench/findings/repair.py --check   # or --write
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
from _page import Study, main

#: The study's tables: ``<data>-<architecture>-w<width>-s<seed>.csv`` (examples/repair/study.sh).
STUDY_TABLE = re.compile(
    r"(?P<data>[a-z0-9]+)-(?P<arch>[a-z0-9_]+)-w(?P<width>\d+)-s(?P<seed>\d+)"
)
DATA = {"utkface": "UTKFace (race)", "cifar10lt": "CIFAR-10 long-tailed"}


def _row(table: pd.DataFrame, prefix: str) -> pd.Series | None:
    rows = table[table.index.str.startswith(prefix)]
    return rows.iloc[0] if len(rows) else None


def _result(row: pd.Series | None) -> str:
    if row is None:
        return "not run"
    drop = f"{row.val_worst_drop:g} pts on {row.val_worst_group}"
    within = "within" if row.val_within else drop
    return f"val {within}; test {row.test_verdict} ({row.test_worst_drop:g})"


def _passes(evaluations: str) -> float:
    """NNCF's evaluations, ``"7589 calls, 4.0 passes"``, as passes of the validation split."""
    return float(str(evaluations).split(", ")[1].split()[0])


def study_rows(root: Path) -> list[dict[str, object]]:
    """One row per (study model, deployed precision): the precision as given, fairquant's
    choice, and NNCF's accuracy control (OpenVINO only) on the same validation and test data."""
    rows = []
    for path in sorted((root / "examples" / "repair").glob("*.csv")):
        match = STUDY_TABLE.fullmatch(path.stem)
        if match is None:
            continue
        table = pd.read_csv(path).set_index("method")
        for precision in ("openvino:int8", "ort:int8"):
            given = _row(table, f"fairquant as given: {precision},")
            toolchain = precision.split(":")[0]  # the choice may change the spelling's suffixes
            chosen = _row(table, f"fairquant repair (chosen): {toolchain}:")
            ov = "openvino" in precision  # NNCF's accuracy control runs on OpenVINO
            nncf = _row(table, "NNCF accuracy control (overall") if ov else None
            worst = _row(table, "NNCF accuracy control (worst") if ov else None
            rows.append(
                {
                    "data": DATA[match["data"]],
                    "model": f"{match['arch']} w{match['width']}",
                    "seed": int(match["seed"]),
                    "precision": precision,
                    "as given": _result(given),
                    "fairquant repair": _result(chosen),
                    "repair": "" if chosen is None else str(chosen.name).split(": ", 1)[1],
                    "evaluations": "" if chosen is None else str(chosen.evaluations),
                    "NNCF (overall)": _result(nncf) if nncf is not None else "",
                    "NNCF (worst group)": _result(worst) if worst is not None else "",
                    "NNCF evaluations": "" if nncf is None else str(nncf.evaluations),
                    "_given": given,
                    "_chosen": chosen,
                    "_nncf": nncf,
                    "_worst": worst,
                }
            )
    return rows


def values(root: Path) -> dict[str, str]:
    def table(name: str) -> str:
        return pd.read_csv(root / "examples" / "repair" / name).to_markdown(index=False)

    rows = study_rows(root)
    shown = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    failing = [r for r in rows if r["_given"] is not None and not r["_given"].val_within]
    repaired = [r for r in failing if r["_chosen"] is not None and r["_chosen"].val_within]
    chosen = [r["_chosen"] for r in rows if r["_chosen"] is not None]
    test_fail = [c for c in chosen if c.test_verdict == "fail"]
    nncf_left = [r for r in rows if r["_nncf"] is not None and not r["_nncf"].val_within]

    cnn = pd.read_csv(root / "examples" / "repair" / "digits-cnn-w4.csv").set_index("method")
    ov = cnn[cnn.index.str.contains("openvino")]
    chosen = ov[ov.index.str.startswith("fairquant repair (chosen)")].iloc[0]
    offsets = ov[ov.index.str.startswith("fairquant logit offsets")].iloc[0]
    corrected = str(offsets.name).split(": ", 1)[1].rsplit(", ", 1)[0]  # the label it corrected
    base = ov[ov.index.str.endswith(f": {corrected}") & ~ov.index.str.contains("repair")].iloc[0]
    nncf = cnn.loc["NNCF accuracy control (overall accuracy)"]
    models = sorted({(r["data"], r["model"], r["seed"]) for r in rows})
    paired = [r for r in rows if r["_nncf"] is not None and r["_chosen"] is not None]
    fewer = [
        r
        for r in paired
        if float(r["_chosen"].evaluations) <= _passes(r["_nncf"].evaluations)
    ]
    return {
        "study_table": shown.to_markdown(index=False),
        "study_models": str(len(models)),
        "study_archs": ", ".join(sorted({r["model"] for r in rows})),
        "study_seeds": ", ".join(
            f"{d} {m}: {len({x[2] for x in models if x[:2] == (d, m)})}"
            for d, m in sorted({x[:2] for x in models})
        ),
        "study_pairs": str(len(rows)),
        "study_failing": str(len(failing)),
        "study_failing_list": ", ".join(
            f"{r['precision']} on {r['data']} {r['model']} seed {r['seed']}" for r in failing
        )
        or "none",
        "study_repaired": str(len(repaired)),
        "study_test_fail": "none of its choices FAILs on test"
        if not test_fail
        else f"{len(test_fail)} of its choices FAIL on test",
        "study_few": "Few of these pairs fail at all."
        if 2 * len(failing) < len(rows)
        else "Most of these pairs fail as given.",
        "study_few_why": "The issue asks for models that fail; most of these kept every group "
        "within 2 points as given, so the comparison has little to separate."
        if 2 * len(failing) < len(rows)
        else "",
        "study_nncf_left": str(len(nncf_left)),
        "study_nncf_cases": "; ".join(
            f"{r['data']} {r['model']} seed {r['seed']}: NNCF {r['_nncf'].val_worst_drop:g} "
            f"points on {r['_nncf'].val_worst_group}, fairquant "
            + (
                f"within ({r['_chosen'].val_worst_drop:g}) with {r['repair']}, "
                f"{r['_chosen'].size_bytes / r['_nncf'].size_bytes:.2f}x NNCF's file size, "
                f"{r['_chosen'].evaluations} passes against NNCF's "
                f"{_passes(r['_nncf'].evaluations):g}"
                if r["_chosen"] is not None and r["_chosen"].val_within
                else "not within either"
            )
            for r in nncf_left
        )
        or "none",
        "study_paired": str(len(paired)),
        "study_fewer": str(len(fewer)),
        "cnn_table": table("digits-cnn-w4.csv"),
        "resnet_table": table("digits-resnet18-w8.csv"),
        "cnn_ov_evals": str(chosen.evaluations),
        "cnn_nncf_passes": f"{_passes(nncf.evaluations):g}",
        "cnn_nncf_drop": f"{nncf.val_worst_drop:g}",
        "cnn_offsets_drop": f"{offsets.val_worst_drop:g}",
        "cnn_corrected_drop": f"{base.val_worst_drop:g}",
        "cnn_floats": str(chosen.float_layers),
    }


STUDY = Study("repair", values)

if __name__ == "__main__":
    sys.exit(main(STUDY))
