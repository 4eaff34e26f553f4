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
import dataclasses
import time
from pathlib import Path

import pandas as pd

import fairquant
from fairquant.data import DataSpec, default_digits_spec, load_dataset
from fairquant.metrics import across_seeds, paired_seed_test, stack_seeds
from fairquant.models import ModelSpec
from fairquant.quant import DEFAULT_QAT_CONFIG, make_quantizer, parse_precisions
from fairquant.train import TrainConfig, fit, load_checkpoint, save_checkpoint

METRICS = ["accuracy", "phi", "accuracy_gap", "worst_group_accuracy", "cev", "sde", "exemplars"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root")
    parser.add_argument("--target")
    parser.add_argument("--group", help="defaults to the target, as in the papers")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--grayscale", action="store_true")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--qat", action="store_true", help="also audit QAT (fine-tuned copies)")
    parser.add_argument("--qat-epochs", type=int, default=DEFAULT_QAT_CONFIG.epochs)
    parser.add_argument("--out", type=Path, default=Path("bench-seeds"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dataset == "digits":
        spec = default_digits_spec(seed=0)
    else:
        spec = DataSpec(
            name=args.dataset,
            root=args.root,
            target=args.target,
            group=args.group or args.target,
            image_size=args.image_size,
            options={"grayscale": True} if args.grayscale else {},
        )
    start = time.perf_counter()
    data = load_dataset(spec)
    print(
        f"loaded {args.dataset} in {time.perf_counter() - start:.1f}s: "
        f"{len(data.train)} train, {len(data.test)} test, groups {data.group_names}"
    )
    precisions = parse_precisions("int8,int4")
    methods = ["ptq", "qat"] if args.qat else ["ptq"]
    results = {}
    for seed in seeds:
        start = time.perf_counter()
        ckpt = args.out / f"seed{seed}.pt"
        if ckpt.exists():  # reruns reuse the trained models: only the statistics are redone
            model = load_checkpoint(ckpt).model
        else:
            model_spec, config = (
                ModelSpec("resnet18", args.width),
                TrainConfig(epochs=args.epochs, seed=seed),
            )
            model, history = fit(data, model_spec, config, show_progress=False)
            save_checkpoint(
                ckpt,
                model=model,
                model_spec=model_spec,
                dataset=data,
                train_config=config,
                history=history,
            )
        trained = time.perf_counter()
        tables = []
        for method in methods:
            qat_config = dataclasses.replace(DEFAULT_QAT_CONFIG, epochs=args.qat_epochs, seed=seed)
            quantize = make_quantizer(
                method,
                precisions,
                data.train,
                qat_config=qat_config,
                seed=seed,
                show_progress=False,
            )
            audit = fairquant.audit_model(
                model,
                data.test,
                data.group_names,
                precisions,
                method=method,
                quantize=quantize,
                show_progress=False,
                random_state=seed,
            )
            table = audit.table
            if method != methods[0]:
                table = table[table.method != "none"]  # fp32 once per seed
            tables.append(table)
            overall = audit.table.query("group == 'all'").set_index(["precision", "metric"])
            print(f"seed {seed} {method}:")
            for metric in ("accuracy", "phi", "worst_group_accuracy"):
                cells = []
                for p in ("fp32", "int8", "int4"):
                    row = overall.loc[(p, metric)]
                    cells.append(f"{p} {row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]")
                print(f"  {metric}: " + "; ".join(cells))
            print("  per-group accuracy:\n" + audit.by_group("accuracy").round(3).to_string())
        results[seed] = pd.concat(tables, ignore_index=True)
        print(
            f"  trained or loaded in {trained - start:.1f}s, "
            f"audited in {time.perf_counter() - trained:.1f}s",
            flush=True,
        )
        stack_seeds(results).to_csv(args.out / "per_seed.csv", index=False)

    summary = across_seeds(results)
    summary.to_csv(args.out / "across_seeds.csv", index=False)
    view = summary[(summary.group == "all") & summary.metric.isin(METRICS)]
    pd.set_option("display.width", 160)
    print(f"\nacross {len(seeds)} seeds (mean, 95% Student-t interval):")
    print(
        view.pivot(
            index="metric", columns=["method", "precision"], values=["value", "ci_low", "ci_high"]
        )
        .reindex(METRICS)
        .round(3)
        .to_string()
    )
    groups = summary[(summary.group != "all") & (summary.metric == "accuracy")]
    print("\nper-group accuracy across seeds (mean):")
    print(
        groups.pivot(index="group", columns=["method", "precision"], values="value")
        .round(3)
        .to_string()
    )
    comparisons = [
        ({"method": "ptq", "precision": "int8"}, {"method": "ptq", "precision": "int4"}),
        ({"method": "none", "precision": "fp32"}, {"method": "ptq", "precision": "int8"}),
    ]
    if args.qat:
        comparisons += [
            ({"method": "qat", "precision": "int8"}, {"method": "qat", "precision": "int4"}),
            ({"method": "ptq", "precision": "int8"}, {"method": "qat", "precision": "int8"}),
            ({"method": "ptq", "precision": "int4"}, {"method": "qat", "precision": "int4"}),
        ]
    tests = []
    for baseline, candidate in comparisons:
        for metric in ("phi", "accuracy_gap", "cev", "sde"):
            tests.append(paired_seed_test(results, metric, baseline=baseline, candidate=candidate))
        tests.append(
            paired_seed_test(
                results,
                "worst_group_accuracy",
                baseline=baseline,
                candidate=candidate,
                alternative="less",
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
    print("\npaired sign-flip permutation tests across seeds (candidate - baseline):")
    print(table[columns].round(4).to_string(index=False))


if __name__ == "__main__":
    main()
