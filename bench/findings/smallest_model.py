"""docs/findings/smallest-model.md and the README's section from examples/smallest-model/.

    python bench/findings/smallest_model.py --check   # or --write

Reads each dataset's ``runs.csv`` (one row per checkpoint x tolerance x method) and
``table.csv`` (over seeds), written by ``bench/allocate_search.py``, and ``train.sh`` (how the
checkpoints were trained).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
from _page import MINUS, Study, interval, main, num, span, table, thousands, words

DATA = "examples/smallest-model"
DATASETS = {"utkface": "UTKFace", "cifar": "CIFAR"}
SEARCHED = ("fairquant", "measured", "hawq")  # the methods that search under the constraint


def _option(script: str, option: str) -> str:
    found = set(re.findall(rf"{option} (\S+)", script))
    if len(found) != 1:
        raise ValueError(f"train.sh: expected one value of {option}, found {sorted(found)}")
    return found.pop()


def _table(t: pd.DataFrame) -> str:
    rows = []
    for r in t.itertuples():
        rows.append(
            [
                num(r.max_drop, 0),
                r.method,
                num(r.size_kib, 1),
                num(100 * r.size_vs_fp32, 1),
                num(r.average_bits, 2),
                str(r.val_feasible),
                f"{r.test_pass} / {r.test_fail} / {r.test_inconclusive}",
                num(r.worst_test_change, 1),
                num(r.evaluations, 0),
                num(r.seconds, 0),
                f"{r.speedup_vs_measured:.1f}×",
            ]
        )
    seeds = t.seeds.unique()
    if len(seeds) != 1:
        raise ValueError(f"table.csv: different seed counts {seeds}")
    head = ["max drop", "method", "KiB (mean)", "% of fp32", "avg bits"]
    head += [f"val within (of {seeds[0]})", "test pass / fail / inconclusive"]
    head += ["worst test change", "evaluations", "seconds", "measured ÷ this"]
    return table(head, rows)


def _kib(t: pd.DataFrame, method: str, drop: float) -> float:
    return t[(t.method == method) & (t.max_drop == drop)].size_kib.iloc[0]


def values(root: Path) -> dict[str, str]:
    base = root / DATA
    runs = {d: pd.read_csv(base / d / "runs.csv") for d in DATASETS}
    tables = {d: pd.read_csv(base / d / "table.csv") for d in DATASETS}
    script = (base / "train.sh").read_text()
    allruns = pd.concat(runs.values(), keys=list(runs), names=["data"]).reset_index("data")
    v: dict[str, str] = {}
    v["train_epochs"] = _option(script, "--epochs")
    v["val_pct"] = f"{float(_option(script, '--val-size')) * 100:.0f}"
    seeds = {d: r.checkpoint.nunique() for d, r in runs.items()}
    if len(set(seeds.values())) != 1:
        raise ValueError(f"runs.csv: different numbers of checkpoints {seeds}")
    v["seeds"] = str(next(iter(seeds.values())))
    for d in DATASETS:
        fp32 = runs[d].fp32_bytes.unique()
        if len(fp32) != 1:
            raise ValueError(f"{d}/runs.csv: fp32 sizes differ between checkpoints: {fp32}")
        v[f"{d}_fp32_kib"] = num(fp32[0] / 1024, 0)
        v[f"{d}_table"] = _table(tables[d])
    tolerances = sorted(allruns.max_drop.unique())
    top = tolerances[-1]
    v["top"] = num(top, 0)

    # --- loss-only sacrifices a group
    loss = allruns[allruns.method == "loss-only"]
    sizes = pd.concat(tables.values())
    smallest = sizes.loc[sizes.groupby(["dataset", "max_drop"]).size_kib.idxmin()]
    v["loss_smallest"] = (
        "the smallest models"
        if (smallest.method == "loss-only").all()
        else "among the smallest models"
    )
    v["loss_pct"] = span(100 * sizes[sizes.method == "loss-only"].size_vs_fp32, 1, unit=" %")
    v["loss_val"] = (
        "break a group on validation in every run"
        if (~loss.feasible).all()
        else f"break a group on validation in {(~loss.feasible).sum()} of {len(loss)} runs"
    )
    fails = (loss.test_verdict == "fail").sum()
    v["loss_every"] = (
        "broke a group every time"
        if (~loss.feasible).all() and fails == len(loss)
        else "did not always break a group"
    )
    v["loss_fail"] = (
        f"FAIL the test verdict in all {len(loss)} runs"
        if fails == len(loss)
        else f"FAIL the test verdict in {fails} of {len(loss)} runs"
    )
    v["loss_fail_count"] = f"{fails} of {len(loss)}"
    v["loss_worst"] = f"{MINUS}{num(-loss.test_worst_change.max(), 1)} to {MINUS}" + num(
        -loss.test_worst_change.min(), 1
    )
    per_data = []
    for d, name in DATASETS.items():
        lr = runs[d][runs[d].method == "loss-only"]
        per_data.append(
            f"{name} {MINUS}{num(-lr.test_worst_change.max(), 1)} to "
            f"{MINUS}{num(-lr.test_worst_change.min(), 1)}"
        )
    v["loss_worst_by_data"] = "; ".join(per_data)

    # --- fairquant against uniform, measured and hawq
    pair = allruns.pivot_table(
        index=["data", "checkpoint", "max_drop"], columns="method", values="size_bytes"
    )
    if not (pair.fairquant <= pair.uniform).all():
        raise ValueError("runs.csv: a fairquant allocation is larger than uniform")
    ut = tables["utkface"]
    pct = {
        m: 100 * ut[(ut.method == m) & (ut.max_drop == top)].size_vs_fp32.iloc[0]
        for m in ("fairquant", "uniform")
    }
    v["utk_fq_pct"] = num(pct["fairquant"], 1)
    v["utk_uniform_pct"] = num(pct["uniform"], 1)
    smaller = all(
        _kib(t, "measured", drop) <= _kib(t, "fairquant", drop) + 0.05
        for t in tables.values()
        for drop in tolerances
    )
    v["measured_short"] = "as small or smaller" if smaller else "not always smaller"
    v["measured_vs_fq"] = (
        "the exhaustive measured search is as small or smaller at every tolerance on both datasets"
        if smaller
        else "the exhaustive measured search is not always smaller"
    )
    gaps = []
    for d, t in tables.items():
        for drop in tolerances:
            m, f = _kib(t, "measured", drop), _kib(t, "fairquant", drop)
            gaps.append(
                (
                    f - m,
                    f"{DATASETS[d]} at {num(drop, 0)} point{'' if drop == 1 else 's'}: "
                    f"{num(m, 0)} against {num(f, 0)} KiB",
                )
            )
    v["measured_gaps"] = "; ".join(text for gap, text in sorted(gaps, reverse=True)[:2])
    ci_top = pair.loc["cifar"].xs(top, level="max_drop")
    v["cifar_uniform_seeds"] = str(int((ci_top.fairquant == ci_top.uniform).sum()))
    v["cifar_measured_mixed"] = str(int((ci_top.measured < ci_top.uniform).sum()))
    v["hawq_vs_fq"] = "; ".join(
        f"{DATASETS[d]} at {num(drop, 0)}: {num(_kib(t, 'hawq', drop), 0)} against "
        f"{num(_kib(t, 'fairquant', drop), 0)}"
        for d, t in tables.items()
        for drop in tolerances
    )

    # --- the speed-up and where fairquant's time goes
    fq = allruns[allruns.method == "fairquant"]
    me = allruns[allruns.method == "measured"]
    v["speedup"] = span(sizes[sizes.method == "fairquant"].speedup_vs_measured, 1, unit="×")
    if fq.evaluations.nunique() != 1 or me.evaluations.nunique() != 1:
        raise ValueError("runs.csv: evaluation counts differ between runs")
    n_fq, n_me = int(fq.evaluations.iloc[0]), int(me.evaluations.iloc[0])
    v["fq_evals"], v["me_evals"], v["table_evals"] = str(n_fq), str(n_me), str(n_me - n_fq)
    keys = ["data", "checkpoint", "max_drop"]
    both = fq.merge(me, on=keys, suffixes=("_fq", "_me"))
    per_eval = both.seconds_me / both.evaluations_me
    both["predictor"] = both.seconds_fq / per_eval - both.evaluations_fq
    utk, cif = (span(both[both.data == d].predictor, 0) for d in ("utkface", "cifar"))
    v["predictor"] = f"{utk} evaluations on UTKFace and {cif} on CIFAR"
    v["tenfold"] = num(n_me / 10, 1)

    # --- selection on validation against the test verdict
    searched = allruns[allruns.method.isin(SEARCHED)]
    if not searched.feasible.all():
        raise ValueError("runs.csv: a searched model is not within the tolerance on validation")
    v["searched_pass"] = f"{(searched.test_verdict == 'pass').sum()} of {len(searched)}"
    at_top = searched[searched.max_drop == top]
    v["val_worst_top"] = span(at_top.worst_drop, 1)
    fq_fail = fq[fq.test_verdict == "fail"]
    v["fq_fails"] = words(
        [
            f"{DATASETS[r.data]} at {num(r.max_drop, 0)} point{'' if r.max_drop == 1 else 's'}: "
            f"{r.test_worst_group} "
            + interval(r.test_worst_change, r.test_worst_ci_low, r.test_worst_ci_high, 1)
            for r in fq_fail.itertuples()
        ]
    )
    v["n_fq_fails"] = {1: "one", 2: "two", 3: "three"}.get(len(fq_fail), str(len(fq_fail)))
    low = searched[searched.max_drop == tolerances[0]]
    v["low"] = num(tolerances[0], 0)
    v["low_inconclusive"] = f"{(low.test_verdict == 'inconclusive').sum()} of {len(low)}"
    others = pd.read_csv(root / "examples/ship/utkface/results.csv", dtype={"precision": str})
    n = others[(others.metric == "n") & (others.group == "Others") & (others.precision == "fp32")]
    v["others_n"] = thousands(n.value.iloc[0])
    return v


STUDY = Study("smallest-model", values, readme=True)

if __name__ == "__main__":
    sys.exit(main(STUDY))
