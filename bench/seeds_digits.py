"""Across training seeds on the embedded digits: is int4 less fair than int8, and by how much?

Trains the quickstart model (ResNet-18, width 8, 30 epochs) with several training seeds on the
same data split (data seed 0), audits each at fp32, int8 and int4 with 1,000-replicate
group-stratified bootstrap intervals (test-set noise), then summarises across seeds (mean and
Student-t interval: training noise) and runs paired sign-flip permutation tests across seeds
("int4 is less fair than int8": phi, accuracy gap, worst-group accuracy, CEV).

    PYTHONPATH=src python bench/seeds_digits.py [--seeds 0,1,2 --epochs 30 --out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from fairquant.audit import audit_model
from fairquant.data import default_digits_spec, load_dataset
from fairquant.metrics.uncertainty import across_seeds, paired_seed_test, stack_seeds
from fairquant.models import ModelSpec
from fairquant.quant import parse_precisions
from fairquant.train import TrainConfig, fit, load_checkpoint, save_checkpoint

METRICS = ["accuracy", "phi", "accuracy_gap", "worst_group_accuracy", "cev", "sde", "exemplars"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench-seeds-digits"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(default_digits_spec(seed=0))
    results = {}
    for seed in seeds:
        start = time.perf_counter()
        ckpt = args.out / f"seed{seed}.pt"
        if ckpt.exists():  # reruns reuse the trained models: only the statistics are redone
            model = load_checkpoint(ckpt).model
        else:
            spec, config = (
                ModelSpec("resnet18", args.width),
                TrainConfig(epochs=args.epochs, seed=seed),
            )
            model, history = fit(data, spec, config, show_progress=False)
            save_checkpoint(
                ckpt,
                model=model,
                model_spec=spec,
                dataset=data,
                train_config=config,
                history=history,
            )
        trained = time.perf_counter()
        results[seed] = audit_model(
            model, data.test, data.group_names, parse_precisions("int8,int4"), show_progress=False
        )
        done = time.perf_counter()
        print(
            f"seed {seed}: trained or loaded in {trained - start:.1f}s, "
            f"audited in {done - trained:.2f}s"
        )
        overall = results[seed].table.query("group == 'all'").set_index(["precision", "metric"])
        for metric in ("phi", "accuracy_gap", "worst_group_accuracy"):
            cells = []
            for p in ("fp32", "int8", "int4"):
                row = overall.loc[(p, metric)]
                cells.append(f"{p} {row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]")
            print(f"  {metric}: " + "; ".join(cells))
        within = results[seed].frame.compare("phi", "int8", "int4")
        print(
            f"  paired bootstrap over test samples, phi int4 - int8: {within.difference:.3f} "
            f"[{within.ci_low:.3f}, {within.ci_high:.3f}], p = {within.p_value:.3f}"
        )

    stack_seeds(results).to_csv(args.out / "per_seed.csv", index=False)
    summary = across_seeds(results)
    summary.to_csv(args.out / "across_seeds.csv", index=False)
    view = summary[(summary.group == "all") & summary.metric.isin(METRICS)]
    pd.set_option("display.width", 140)
    print(f"\nacross {len(seeds)} seeds (mean, 95% Student-t interval):")
    print(
        view.pivot(index="metric", columns="precision", values=["mean", "ci_low", "ci_high"])
        .reindex(METRICS)
        .round(3)
        .to_string()
    )
    print("\npaired sign-flip permutation tests across seeds (candidate - baseline):")
    tests = []
    for metric in ("phi", "accuracy_gap", "cev", "sde"):
        tests.append(
            paired_seed_test(
                results, metric, baseline={"precision": "int8"}, candidate={"precision": "int4"}
            )
        )
    tests.append(
        paired_seed_test(
            results,
            "worst_group_accuracy",
            baseline={"precision": "int8"},
            candidate={"precision": "int4"},
            alternative="less",
        )
    )
    tests.append(
        paired_seed_test(
            results, "phi", baseline={"precision": "fp32"}, candidate={"precision": "int8"}
        )
    )
    table = pd.DataFrame([t.to_dict() for t in tests])
    table.to_csv(args.out / "paired_tests.csv", index=False)
    columns = [
        "metric",
        "baseline",
        "candidate",
        "n_seeds",
        "mean_baseline",
        "mean_candidate",
        "difference",
        "ci_low",
        "ci_high",
        "effect_size",
        "p_value",
        "min_p_value",
        "alternative",
    ]
    print(table[columns].round(4).to_string(index=False))


if __name__ == "__main__":
    main()
