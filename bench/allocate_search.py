"""The smallest model that keeps every group within tolerance: fairquant's search against the
baselines, side by side on trained checkpoints, selected on the validation split and judged on the
test split.

For each checkpoint (trained with ``--val-size``: the search measures on that held-out split) and
each tolerance in ``--max-drop`` (accuracy points any group may lose), one shared evaluator runs
every method of :func:`fairquant.compare_searches`: ``fairquant`` (the
GGN-diagonal predictor proposes, measurement verifies, cuts tighten), ``measured`` (the same loop
on AIMET's exhaustive table: every layer at every width measured), ``uniform`` (the smallest
uniform width that passes), ``loss-only`` (AIMET/HAWQ: the average drop within the tolerance)
and ``hawq`` (HAWQ-V2's trace x quantization-error order). Each method's model is then audited
on the test split and judged alone by the verdict (paired per-group statistics, Holm over the
groups). Seconds are each method's own (shared evaluations counted in full); the measured
search's seconds over fairquant's is the speed-up the issue asks for (>= 10x).

    OMP_NUM_THREADS=1 python bench/allocate_search.py --out examples/allocate \\
        --checkpoints runs/i18/utkface-s0.pt,runs/i18/utkface-s1.pt,... --max-drop 1,2

Writes ``runs.csv`` (one row per checkpoint x tolerance x method) and ``table.csv`` (over seeds:
mean size, verdicts, speed-up) and prints both.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

import fairquant
from fairquant import SearchConfig, Tolerance, compare_searches, parse_precision
from fairquant.mitigate import SEARCH_METHODS, Evaluator
from fairquant.quant import packed_size_bytes
from fairquant.train import held_out_validation, load_with_data


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` into ``path`` whole or not at all: written beside it, then renamed over it."""
    partial = path.with_name(path.name + ".partial")
    frame.to_csv(partial, index=False)
    os.replace(partial, path)


def _one(path: Path, tolerances: list[float], config: SearchConfig, methods) -> pd.DataFrame:
    ckpt, dataset = load_with_data(path)
    validation, note = held_out_validation(ckpt, dataset)
    print(f"{path.name}: {note}")
    names = dataset.group_names
    evaluator = None
    rows, precisions = [], []
    for t in tolerances:
        tolerance = Tolerance(max_drop=t)
        if evaluator is None:
            evaluator = Evaluator(
                ckpt.model,
                validation,
                names,
                per_channel=config.per_channel,
                criterion=config.criterion,
            )
        start = time.perf_counter()
        results, table = compare_searches(
            ckpt.model,
            validation,
            names,
            tolerance,
            config=config,
            methods=methods,
            evaluator=evaluator,
        )
        print(f"  max drop {t:g}: {time.perf_counter() - start:.0f} s")
        for method, result in results.items():
            name = f"t{t:g}-{method}"
            precisions.append((name, t, method, result))
        rows.append(table.assign(checkpoint=path.name, dataset=dataset.spec.name, max_drop=t))
    fp32_bytes = packed_size_bytes(ckpt.model, parse_precision("fp32"))
    specs = [replace(result.precision, name=name) for name, _, _, result in precisions]
    audited = fairquant.audit(ckpt.model, dataset, precisions=specs, n_bootstrap=0)
    judged = []
    for name, t, method, _ in precisions:
        verdict = fairquant.verdict(
            audited, Tolerance(max_drop=t), precisions=[name], n_bootstrap=0
        )
        rows_v = verdict.table[verdict.table.precision == name]
        worst = rows_v.loc[rows_v.change.idxmin()]
        judged.append(
            {
                "max_drop": t,
                "method": method,
                "test_verdict": verdict.status[name],
                "test_worst_group": worst.group,
                "test_worst_change": worst.change,
                "test_worst_ci_low": worst.ci_low,
                "test_worst_ci_high": worst.ci_high,
                "fp32_bytes": fp32_bytes,
            }
        )
    frame = pd.concat(rows, ignore_index=True)
    return frame.merge(pd.DataFrame(judged), on=["max_drop", "method"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", required=True, help="comma-separated checkpoint files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-drop", default="1,2", help="tolerances in points, comma-separated")
    parser.add_argument("--bits", default="2,3,4,8,16")
    parser.add_argument("--methods", default=",".join(SEARCH_METHODS))
    parser.add_argument("--samples", type=int, default=128, help="predictor samples per group")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--criterion", default="estimate", help="estimate or upper-bound")
    args = parser.parse_args()
    config = SearchConfig(
        bits=tuple(int(b) for b in args.bits.split(",")),
        samples_per_group=args.samples,
        max_rounds=args.rounds,
        criterion=args.criterion,
    )
    tolerances = [float(t) for t in args.max_drop.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    frames = []
    for path in (Path(p) for p in args.checkpoints.split(",")):
        frames.append(_one(path, tolerances, config, methods))
        runs = pd.concat(frames, ignore_index=True)
        _write_csv(runs, args.out / "runs.csv")
    runs = pd.concat(frames, ignore_index=True)
    table = (
        runs.groupby(["dataset", "max_drop", "method"], sort=False)
        .agg(
            seeds=("checkpoint", "nunique"),
            size_kib=("size_bytes", lambda s: s.mean() / 1024),
            size_vs_fp32=("size_bytes", lambda s: s.mean()),
            average_bits=("average_bits", "mean"),
            val_feasible=("feasible", "sum"),
            test_pass=("test_verdict", lambda s: int((s == "pass").sum())),
            test_fail=("test_verdict", lambda s: int((s == "fail").sum())),
            test_inconclusive=("test_verdict", lambda s: int((s == "inconclusive").sum())),
            worst_test_change=("test_worst_change", "min"),
            evaluations=("evaluations", "mean"),
            seconds=("seconds", "mean"),
            speedup_vs_measured=("speedup", "mean"),
        )
        .reset_index()
    )
    fp32 = runs.groupby("dataset").fp32_bytes.mean()
    table["size_vs_fp32"] = table.size_vs_fp32 / table.dataset.map(fp32)
    _write_csv(table, args.out / "table.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.round(3).to_string(index=False))
    print(f"wrote {args.out / 'runs.csv'} and {args.out / 'table.csv'}")


if __name__ == "__main__":
    main()
