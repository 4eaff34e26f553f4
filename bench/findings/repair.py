"""docs/findings/repair.md from the tables ``bench/repair.py`` committed in examples/repair/.

    python bench/findings/repair.py --check   # or --write
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
from _page import Study, main

#: The study's tables: ``<data>-<architecture>[-w<width>]-s<seed>.csv`` (examples/repair/study.sh).
STUDY_TABLE = re.compile(
    r"(?P<data>[a-z0-9]+)-(?P<arch>[a-z0-9_]+?)(?:-w(?P<width>\d+))?-s(?P<seed>\d+)"
)
DATA = {"utkface": "UTKFace (race)", "cifar10lt": "CIFAR-10 long-tailed"}
NNCF = {
    "overall": "NNCF accuracy control (overall",
    "worst": "NNCF accuracy control (worst",
    "group": "NNCF accuracy control (per-group",
}


def _row(table: pd.DataFrame, prefix: str) -> pd.Series | None:
    rows = table[table.index.str.startswith(prefix)]
    return rows.iloc[0] if len(rows) else None


def _result(row: pd.Series | None) -> str:
    if row is None:
        return "not run"
    drop = f"{row.val_worst_drop:g} pts on {row.val_worst_group}"
    within = "within" if row.val_within else drop
    return f"val {within}; test {row.test_verdict} ({row.test_worst_drop:g})"


def _passes(evaluations: object) -> float:
    """Evaluations in passes of the validation split: NNCF's ``"7589 calls, 4.0 passes"``, or
    fairquant's count."""
    text = str(evaluations)
    return float(text.split(", ")[1].split()[0]) if "passes" in text else float(text)


def _model(match: re.Match[str]) -> str:
    return match["arch"] + (f" w{match['width']}" if match["width"] else "")


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
            nncf = {k: _row(table, v) if ov else None for k, v in NNCF.items()}
            group = nncf["group"]
            rows.append(
                {
                    "data": DATA[match["data"]],
                    "model": _model(match),
                    "seed": int(match["seed"]),
                    "precision": precision,
                    "as given": _result(given),
                    "fairquant repair": _result(chosen),
                    "repair": "" if chosen is None else str(chosen.name).split(": ", 1)[1],
                    "passes": "" if chosen is None else f"{_passes(chosen.evaluations):g}",
                    "NNCF (overall)": _result(nncf["overall"]) if ov else "",
                    "NNCF (worst group)": _result(nncf["worst"]) if ov else "",
                    "NNCF (every group)": _result(group) if ov else "",
                    "NNCF passes (overall, every group)": (
                        f"{_passes(nncf['overall'].evaluations):g}, "
                        + ("not run" if group is None else f"{_passes(group.evaluations):g}")
                        if ov and nncf["overall"] is not None
                        else ""
                    ),
                    "_given": given,
                    "_chosen": chosen,
                    "_nncf": nncf["overall"],
                    "_worst": nncf["worst"],
                    "_group": group,
                }
            )
    return rows


def _size_ratio(a: pd.Series, b: pd.Series) -> str:
    return f"{a.size_bytes / b.size_bytes:.2f}x"


def exhaustive(root: Path) -> list[dict[str, object]]:
    """Each exhaustive table (bench/repair_exhaustive.py): every candidate measured, and the last
    row, repair's choice."""
    out = []
    for path in sorted((root / "examples" / "repair" / "exhaustive").glob("*.csv")):
        table = pd.read_csv(path)
        chosen, measured = table.iloc[-1], table.iloc[:-1]
        passing = measured[measured.within].sort_values(["size_bytes", "worst_drop"])
        best = passing.iloc[0] if len(passing) else None
        out.append(
            {
                "name": path.stem,
                "measured": len(measured),
                "passing": len(passing),
                "chosen": chosen,
                "best": best,
                "ratio": chosen.size_bytes / best.size_bytes if best is not None else None,
            }
        )
    return out


def _exhaustive_lines(found: list[dict[str, object]]) -> str:
    lines = []
    for e in found:
        c, b = e["chosen"], e["best"]
        floats = f"{int(c.n_float_layers)} layers in float" if c.n_float_layers else "none in float"
        best = (
            "none within tolerance"
            if b is None
            else f"the smallest within tolerance is {b.size_bytes:,} bytes ({b.precision}, "
            f"{b.calibration_set} calibration, {int(b.n_float_layers)} layers in float)"
        )
        ratio = "" if e["ratio"] is None else f": repair's choice is {e['ratio']:.3f}x it"
        lines.append(
            f"- `{e['name']}`: {e['measured']} candidates measured, {e['passing']} within "
            f"tolerance; repair chose {c.precision} ({floats}, {c.size_bytes:,} bytes, "
            f"{int(c.evaluations)} validation passes); {best}{ratio}."
        )
    return "\n".join(lines)


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
    ov_failing = [r for r in failing if r["precision"] == "openvino:int8"]
    group_run = [r for r in ov_failing if r["_group"] is not None]
    group_within = [r for r in group_run if r["_group"].val_within]
    both = [r for r in group_within if r["_chosen"] is not None and r["_chosen"].val_within]
    fewer_group = [
        r
        for r in group_run
        if _passes(r["_chosen"].evaluations) <= _passes(r["_group"].evaluations)
    ]
    smaller = [r for r in both if r["_chosen"].size_bytes <= 1.1 * r["_group"].size_bytes]
    paired = [r for r in rows if r["_nncf"] is not None and r["_chosen"] is not None]
    fewer = [
        r for r in paired if _passes(r["_chosen"].evaluations) <= _passes(r["_nncf"].evaluations)
    ]
    models = sorted({(r["data"], r["model"], r["seed"]) for r in rows})
    found = exhaustive(root)
    within_10 = [e for e in found if e["ratio"] is not None and e["ratio"] <= 1.1]

    cnn = pd.read_csv(root / "examples" / "repair" / "digits-cnn-w4.csv").set_index("method")
    ov = cnn[cnn.index.str.contains("openvino")]
    cnn_chosen = ov[ov.index.str.startswith("fairquant repair (chosen)")].iloc[0]
    offsets = ov[ov.index.str.startswith("fairquant logit offsets")].iloc[0]
    corrected = str(offsets.name).split(": ", 1)[1].rsplit(", ", 1)[0]  # the label it corrected
    base = ov[ov.index.str.endswith(f": {corrected}") & ~ov.index.str.contains("repair")].iloc[0]
    cnn_nncf = cnn.loc["NNCF accuracy control (overall accuracy)"]
    cnn_group = cnn.loc["NNCF accuracy control (per-group drop)"]
    cnn_evals, cnn_group_passes = _passes(cnn_chosen.evaluations), _passes(cnn_group.evaluations)
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
        "study_nncf_left": str(len(nncf_left)),
        "study_nncf_cases": "; ".join(
            f"{r['data']} {r['model']} seed {r['seed']}: NNCF {r['_nncf'].val_worst_drop:g} "
            f"points on {r['_nncf'].val_worst_group}, fairquant "
            + (
                f"within ({r['_chosen'].val_worst_drop:g}) with {r['repair']}, "
                f"{_size_ratio(r['_chosen'], r['_nncf'])} NNCF's file size"
                if r["_chosen"] is not None and r["_chosen"].val_within
                else "not within either"
            )
            for r in nncf_left
        )
        or "none",
        "study_group_run": str(len(group_run)),
        "study_group_within": str(len(group_within)),
        "study_group_cases": "; ".join(
            f"{r['data']} {r['model']} seed {r['seed']}: NNCF "
            + (
                f"within with {int(r['_group'].float_layers)} layers in float, "
                if r["_group"].val_within
                else f"{r['_group'].val_worst_drop:g} points on {r['_group'].val_worst_group}, "
            )
            + f"{_passes(r['_group'].evaluations):g} passes; fairquant "
            + (
                f"within with {int(r['_chosen'].float_layers)} in float, "
                if r["_chosen"].val_within
                else "not within, "
            )
            + f"{_passes(r['_chosen'].evaluations):g} passes, file "
            + f"{_size_ratio(r['_chosen'], r['_group'])} NNCF's"
            for r in group_run
        )
        or "none",
        "study_fewer_group": str(len(fewer_group)),
        "study_smaller": str(len(smaller)),
        "study_both": str(len(both)),
        "study_paired": str(len(paired)),
        "study_fewer": str(len(fewer)),
        "exhaustive_lines": _exhaustive_lines(found),
        "exhaustive_within": str(len(within_10)),
        "exhaustive_missed": "; ".join(
            f"`{e['name']}`: {e['ratio']:.2f}x the smallest, the issue's 10 % missed"
            for e in found
            if e["ratio"] is not None and e["ratio"] > 1.1
        )
        or "the issue's 10 % was met on each",
        "exhaustive_count": str(len(found)),
        "cnn_table": table("digits-cnn-w4.csv"),
        "resnet_table": table("digits-resnet18-w8.csv"),
        "cnn_ov_evals": f"{cnn_evals:g}",
        "cnn_nncf_passes": f"{_passes(cnn_nncf.evaluations):g}",
        "cnn_nncf_drop": f"{cnn_nncf.val_worst_drop:g}",
        "cnn_group_passes": f"{cnn_group_passes:g}",
        "cnn_group_floats": str(int(cnn_group.float_layers)),
        "cnn_versus_group": "fewer" if cnn_evals < cnn_group_passes else "no fewer",
        "cnn_offsets_drop": f"{offsets.val_worst_drop:g}",
        "cnn_corrected_drop": f"{base.val_worst_drop:g}",
        "cnn_floats": str(cnn_chosen.float_layers),
    }


STUDY = Study("repair", values)

if __name__ == "__main__":
    sys.exit(main(STUDY))
