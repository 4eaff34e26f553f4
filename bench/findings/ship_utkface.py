"""docs/findings/ship-utkface.md and the README's ShuffleNet table from examples/ship/.

    python bench/findings/ship_utkface.py --check   # or --write

Reads the three audits' ``results.csv`` (``examples/ship/utkface``: the torchvision model;
``onnx``: its ONNX export; ``tabular``: the MLP on the diabetes table) and the tabular audit's
``table.txt`` (its training counts per group), written by ``fairquant audit``; the UTKFace
training split's size comes from ``examples/utkface-explain/factors.csv``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
from _page import Study, main, num, span, table, thousands, words

DATA = "examples/ship"
GROUPS = ["White", "Black", "Asian", "Indian", "Others"]
REAL = ("torch:", "ort:")  # the toolchains' own quantized models


def _load(root: Path, audit: str) -> pd.DataFrame:
    return pd.read_csv(root / DATA / audit / "results.csv", dtype={"precision": str, "group": str})


def _get(r: pd.DataFrame, precision: str, metric: str, group: str = "all") -> pd.Series:
    sel = r[(r.precision == precision) & (r.metric == metric) & (r.group == group)]
    if len(sel) != 1:
        raise ValueError(f"results.csv: {len(sel)} rows for {precision, metric, group}")
    return sel.iloc[0]


def _kib(r: pd.DataFrame, precision: str, metric: str) -> float:
    return _get(r, precision, metric).value / 1024


def _accuracy_table(r: pd.DataFrame, groups: list[str], first: str, size: str) -> str:
    precisions = list(dict.fromkeys(r.precision))
    rows = []
    for g in [*groups, "all"]:
        n = _get(r, precisions[0], "n", g).value
        rows.append(
            [g, str(round(n)), *(num(_get(r, p, "accuracy", g).value, 1) for p in precisions)]
        )
    phi = ["0"] + [num(_get(r, p, "phi").value, 3) for p in precisions[1:]]
    rows.append(["φ(D)", "", *phi])
    if size == "size":
        cells = [
            f"{num(_kib(r, p, 'artifact_bytes'), 1)} (file)"
            if p.startswith(REAL)
            else num(_kib(r, p, "size_bytes"), 1)
            for p in precisions
        ]
        rows.append(["size KiB", "", *cells])
    else:
        rows.append(["file KiB", "", *(num(_kib(r, p, "artifact_bytes"), 1) for p in precisions)])
    return table([first, "test", *precisions], rows)


def values(root: Path) -> dict[str, str]:
    utk, onnx, tab = (_load(root, a) for a in ("utkface", "onnx", "tabular"))
    factors = pd.read_csv(root / "examples/utkface-explain/factors.csv")
    v: dict[str, str] = {}
    n_test = _get(utk, "fp32", "n").value
    n_train = factors[factors.precision == "fp32"].n_train.sum()
    v["n_faces"] = thousands(n_train + n_test)
    v["test_pct"] = num(100 * n_test / (n_train + n_test), 0)
    acc = _get(utk, "fp32", "accuracy").value
    if abs(acc - _get(onnx, "fp32", "accuracy").value) > 1e-9:
        raise ValueError("the ONNX export's fp32 accuracy differs from the torchvision model's")
    v["fp32_acc"] = num(acc, 1)
    ns = {g: _get(utk, "fp32", "n", g).value for g in GROUPS}
    v["majority"] = num(100 * max(ns.values()) / n_test, 1)
    others = _get(utk, "fp32", "accuracy", "Others").value
    v["others_acc"] = num(others, 1)
    v["others_share"] = num(100 * ns["Others"] / n_test, 1)
    v["others_right"] = str(round(others * ns["Others"] / 100))
    v["others_n"] = str(round(ns["Others"]))
    v["utk_table"] = _accuracy_table(utk, GROUPS, "race", "size")
    v["onnx_table"] = _accuracy_table(onnx, GROUPS, "race", "file")

    # --- deployed int8: overall within, groups apart
    real = [(utk, p) for p in utk.precision.unique() if p.startswith(REAL)]
    real += [(onnx, p) for p in onnx.precision.unique() if p.startswith(REAL)]
    moves = [abs(_get(r, p, "accuracy").value - acc) for r, p in real]
    v["deployed_within"] = num(max(moves), 1)
    pc = {
        g: _get(onnx, "ort:int8-pc", "accuracy", g).value - _get(onnx, "fp32", "accuracy", g).value
        for g in GROUPS
    }
    gains = [f"gains {num(pc[g], 0)} points on {g}" for g in GROUPS if pc[g] >= 3]
    losses = [f"{num(-pc[g], 0)} on {g}" for g in GROUPS if pc[g] <= -3]
    v["pc_moves"] = words(gains) + " and loses " + words(losses)

    # --- agreement with fp32 and with the simulated twin
    agree = [
        (p, {g: _get(r, p, "agreement_fp32", g).value for g in ["White", "Indian", "all"]})
        for r, p in real
    ]
    rows = [[g, *(num(a[g], 1) for _, a in agree)] for g in ["White", "Indian", "all"]]
    v["agree_table"] = table(["race", *(p for p, _ in agree)], rows)
    changed = [100 - a["all"] for _, a in agree]
    v["changed"] = span(changed, 1)
    static = [(p, a) for p, a in agree if "dynamic" not in p]
    v["minority_more"] = (
        "fall more on Indian faces than on White ones for every static int8"
        if all(a["Indian"] < a["White"] for _, a in static)
        else "do not fall more on the minority groups for every static int8"
    )
    twin = _get(utk, "torch:int8", "agreement_twin")
    v["twin_agree"] = num(twin.value, 1)
    v["torch_agree"] = num(_get(utk, "torch:int8", "agreement_fp32").value, 1)
    twin_acc = {g: _get(utk, "int8-a8-bn", "accuracy", g).value for g in GROUPS}
    real_acc = {g: _get(utk, "torch:int8", "accuracy", g).value for g in GROUPS}
    diff = {g: real_acc[g] - twin_acc[g] for g in GROUPS}
    v["twin_diff"] = span(diff.values(), 1, sign=True)

    # --- the tabular model
    text = (root / DATA / "tabular" / "table.txt").read_text()
    train = {m[0]: int(m[1]) for m in re.findall(r"^ (sex\d)\s+(\d+)\s+\d+", text, re.M)}
    tab_groups = sorted(train)
    tab_n = {g: _get(tab, "fp32", "n", g).value for g in tab_groups}
    v["tab_patients"] = thousands(sum(train.values()) + sum(tab_n.values()))
    precisions = list(dict.fromkeys(tab.precision))
    rows = [
        [
            g,
            str(train[g]),
            str(round(tab_n[g])),
            *(num(_get(tab, p, "accuracy", g).value, 1) for p in precisions),
        ]
        for g in tab_groups
    ]
    rows.append(
        [
            "all",
            "",
            str(round(_get(tab, "fp32", "n").value)),
            *(num(_get(tab, p, "accuracy").value, 1) for p in precisions),
        ]
    )
    v["tab_table"] = table(["sex", "train", "test", *precisions], rows)
    change = {
        g: _get(tab, "int2", "accuracy", g).value - _get(tab, "fp32", "accuracy", g).value
        for g in tab_groups
    }
    lose, gain = min(change, key=change.get), max(change, key=change.get)
    v["tab_lose"] = num(-change[lose], 0)
    v["tab_gain"] = num(change[gain], 0)
    v["tab_direction"] = "gains" if change[gain] > 0 else "loses"
    gap = _get(tab, "int2", "accuracy_gap")
    v["tab_gap"] = f"{num(gap.value, 0)} points, 95 % CI {num(gap.ci_low, 0)}–{num(gap.ci_high, 0)}"
    v["tab_test"] = str(round(_get(tab, "fp32", "n").value))

    # --- the README's table: both audits side by side
    up, op = list(dict.fromkeys(utk.precision)), list(dict.fromkeys(onnx.precision))[1:]
    rows = []
    for g in [*GROUPS, "all"]:
        label = f"{g} ({thousands(ns[g])})" if g != "all" else "all"
        rows.append(
            [label]
            + [num(_get(utk, p, "accuracy", g).value, 1) for p in up]
            + [num(_get(onnx, p, "accuracy", g).value, 1) for p in op]
        )
    rows.append(
        ["φ(D)", "0"]
        + [num(_get(utk, p, "phi").value, 3) for p in up[1:]]
        + [num(_get(onnx, p, "phi").value, 3) for p in op]
    )
    v["readme_table"] = table(["race (test n)", *up, *op], rows)
    return v


STUDY = Study("ship-utkface", values, readme=True)

if __name__ == "__main__":
    sys.exit(main(STUDY))
