"""Predict who pays per layer, then allocate bits to protect them: UTKFace across seeds.

For each checkpoint (one training seed): on a group-balanced subsample of the training split,
(a) the per-layer, per-group excess loss G_{l,b}(a), measured (only layer l quantized at b bits)
and predicted by the Taylor terms g_a.delta + 1/2 delta'H_a delta (metrics.sensitivity), with their
Spearman correlation; (b) at an equal size budget (4 average weight bits) the allocations of
mitigate.allocate (worst-group, phi, loss-only; from predicted and from measured sensitivities)
against uniform int4 and int4-fl8, audited on the test split with PTQ and QAT. Across seeds:
mean and Student-t interval, and paired sign-flip tests (metrics.uncertainty).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/allocate.py \
        --checkpoints runs/utk_seeds/seed{0,1,2}.pt --out runs/allocate-utk

The PTQ part runs for every seed first, then QAT (so the fast results are written early).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
from scipy.stats import pearsonr, spearmanr

import fairquant
from fairquant.data import load_dataset
from fairquant.metrics import (
    GroupCurvature,
    across_seeds,
    measured_excess,
    measured_layer_excess,
    paired_seed_test,
    predict_excess,
    stack_seeds,
    taylor_excess,
)
from fairquant.mitigate import allocate_precision
from fairquant.quant import (
    DEFAULT_QAT_CONFIG,
    calibration_indices,
    layer_bits,
    make_quantizer,
    packed_size_bytes,
    parse_precision,
    quantized_layers,
)
from fairquant.train import load_checkpoint

ALLOCATIONS = [  # (name, objective, sensitivity source)
    ("worst-pred", "worst-group", "predicted"),
    # ("phi-pred", "phi", "predicted") is left out: on UTKFace seed 0 HiGHS found no feasible
    # allocation for the phi program within 100 s (the worst-group and loss programs take < 1 s)
    ("loss-pred", "loss", "predicted"),
    ("worst-meas", "worst-group", "measured"),
    ("loss-meas", "loss", "measured"),
]
METRICS = ["accuracy", "phi", "worst_group_accuracy", "accuracy_gap", "size_bytes"]


def log(out: Path, text: str) -> None:
    print(text, flush=True)
    with open(out / "log.txt", "a") as f:
        f.write(text + "\n")


def correlations(measured: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """Spearman and Pearson of predicted vs measured per-layer, per-group G, per bit width."""
    both = measured.merge(predicted, on=["layer", "bits", "numel", "group"])
    rows = []
    for b, part in [*both.groupby("bits"), ("all", both)]:
        for column in ("predicted", "first", "second"):
            rows.append(
                {
                    "bits": b,
                    "terms": column,
                    "n": len(part),
                    "spearman": spearmanr(part[column], part.excess).statistic,
                    "pearson": pearsonr(part[column], part.excess).statistic,
                }
            )
        # ranking the layers within each group: what the allocation uses to trade layers off
        within = [
            spearmanr(g.predicted, g.excess).statistic
            for _, g in part.groupby("group")
            if len(g) > 2
        ]
        rows.append(
            {
                "bits": b,
                "terms": "predicted, within group (mean)",
                "n": len(part),
                "spearman": float(pd.Series(within).mean()),
                "pearson": float("nan"),
            }
        )
    return pd.DataFrame(rows)


def wait_for(path: Path, deadline: float) -> bool:
    """Wait until ``path`` exists and has stopped growing (a checkpoint being written)."""
    while True:
        if path.is_file():
            size = path.stat().st_size
            time.sleep(5)
            if path.stat().st_size == size:
                return True
        elif time.time() > deadline:
            return False
        else:
            time.sleep(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=200, help="training images per group")
    parser.add_argument("--bits", default="2,3,4,8")
    parser.add_argument("--budget", type=float, default=4.0, help="average weight bits")
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument(
        "--qat-samples",
        type=int,
        default=0,
        help="QAT on this many random training images (0: all)",
    )
    parser.add_argument("--qat", default="int4,int4-fl8,worst-pred,loss-pred,worst-meas")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument(
        "--wait-minutes", type=float, default=0, help="wait this long for missing checkpoints"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-allocate"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    options = [int(b) for b in args.bits.split(",")]
    allocated = {name for name, _, _ in ALLOCATIONS}
    deadline = time.time() + 60 * args.wait_minutes
    datasets: dict[str, object] = {}
    tables: dict[str, dict] = {"ptq": {}, "qat": {}}
    corr_tables, spec_rows = [], []
    for path in args.checkpoints:
        if not wait_for(path, deadline):
            log(args.out, f"{path} is missing: skipped")
            continue
        start = time.perf_counter()
        ckpt = load_checkpoint(path)
        seed = ckpt.train_config.seed if ckpt.train_config is not None else len(corr_tables)
        key = json.dumps(ckpt.data_spec.to_dict(), sort_keys=True, default=str)
        if key not in datasets:
            datasets[key] = load_dataset(ckpt.data_spec)
        data = datasets[key]
        names = data.group_names
        model = ckpt.model.eval()
        index = calibration_indices(data.train, args.samples * len(names), balanced=True, seed=seed)
        sub = data.train.subset(index)
        loaded = time.perf_counter()
        measured = measured_layer_excess(model, sub, names, options)
        timed_measured = time.perf_counter()
        op = GroupCurvature(model, sub.x, sub.y, sub.g, len(names))
        predicted = taylor_excess(op, model, names, options)
        del op
        timed_predicted = time.perf_counter()
        measured.assign(seed=seed).to_csv(args.out / f"measured_seed{seed}.csv", index=False)
        predicted.assign(seed=seed).to_csv(args.out / f"predicted_seed{seed}.csv", index=False)
        corr = correlations(measured, predicted).assign(seed=seed)
        corr_tables.append(corr)
        pd.concat(corr_tables).to_csv(args.out / "spearman.csv", index=False)
        log(
            args.out,
            f"seed {seed} ({path}): loaded {loaded - start:.0f}s, measured per-layer G "
            f"{timed_measured - loaded:.0f}s, predicted {timed_predicted - timed_measured:.0f}s "
            f"({len(sub)} images, {len(measured)} cells)\n" + corr.round(3).to_string(index=False),
        )
        counts = data.train.g.bincount(minlength=len(names)).double()
        weights = dict(zip(names, (counts / counts.sum()).tolist(), strict=True))
        precisions = [parse_precision("int4"), parse_precision("int4-fl8")]
        sources = {
            "predicted": predicted.rename(columns={"predicted": "excess"}),
            "measured": measured,
        }
        for name, objective, source in ALLOCATIONS:
            result = allocate_precision(
                model,
                sources[source],
                objective=objective,
                budget_bits=args.budget,
                weights=weights,
                name=name,
            )
            result.precision.save(args.out / f"{name}_seed{seed}.json")
            precisions.append(result.precision)
            log(
                args.out,
                f"  {name}: {result.average_bits:.3f} avg bits, {result.size_bytes} B; bits "
                f"{result.layers.bits.tolist()}",
            )
        whole_int4 = None
        for p in precisions:
            bits = layer_bits(model, p)
            whole = measured_excess(model, sub, names, p)
            whole_int4 = whole if p.name == "int4" else whole_int4
            for group in names:
                spec_rows.append(
                    {
                        "seed": seed,
                        "precision": p.name,
                        "group": group,
                        "average_bits": _average_bits(model, p),
                        "size_bytes": packed_size_bytes(model, p),
                        "predicted_additive": predict_excess(predicted, bits).get(group),
                        "measured_additive": predict_excess(measured, bits, column="excess").get(
                            group
                        ),
                        "measured_whole": whole.get(group),
                    }
                )
        specs = pd.DataFrame(spec_rows)
        specs.to_csv(args.out / "spec_predictions.csv", index=False)
        log(
            args.out,
            "  G(a) of whole specs on the subsample: additive predicted / additive measured / "
            "measured whole model\n"
            + specs[specs.seed == seed]
            .pivot(
                index="precision",
                columns="group",
                values=["predicted_additive", "measured_additive", "measured_whole"],
            )
            .round(4)
            .to_string(),
        )
        qat_train = data.train
        if args.qat_samples:
            qat_train = data.train.subset(
                calibration_indices(data.train, args.qat_samples, balanced=False, seed=seed)
            )
        for method in ("ptq", "qat"):
            t0 = time.perf_counter()
            chosen = precisions
            quantize = None
            if method == "qat":
                chosen = [p for p in precisions if p.name in args.qat.split(",")]
                config = dataclasses.replace(DEFAULT_QAT_CONFIG, epochs=args.qat_epochs, seed=seed)
                quantize = make_quantizer(
                    "qat", chosen, qat_train, qat_config=config, show_progress=False
                )
            if not chosen:
                continue
            audit = fairquant.audit_model(
                model,
                data.test,
                names,
                chosen,
                method=method,
                **({"quantize": quantize} if quantize else {}),
                show_progress=False,
                n_bootstrap=args.bootstrap,
                random_state=seed,
            )
            table = audit.table.copy()
            # a per-layer spec's `bits` is its largest layer's: report the budget instead, so
            # the same allocation method lines up across seeds
            table.loc[table.precision.isin(allocated), "bits"] = int(args.budget)
            tables[method][seed] = table
            stack_seeds(tables[method]).to_csv(args.out / f"{method}_per_seed.csv", index=False)
            _show(
                args.out, f"seed {seed} {method.upper()} ({time.perf_counter() - t0:.0f}s)", table
            )
            _summarise(args.out, method, tables[method])


def _average_bits(model, precision) -> float:
    bits = layer_bits(model, precision)
    sizes = {n: m.weight.numel() for n, m in quantized_layers(model)}
    return sum(bits[n] * sizes[n] for n in sizes) / sum(sizes.values())


def _show(out: Path, title: str, table: pd.DataFrame) -> None:
    view = table[(table.group == "all") & table.metric.isin(METRICS)]
    log(
        out,
        f"{title}:\n"
        + view.pivot(index="precision", columns="metric", values="value").round(4).to_string(),
    )


def _summarise(out: Path, method: str, tables: dict) -> None:
    if len(tables) < 2:
        return
    summary = across_seeds(tables)
    summary.to_csv(out / f"{method}_across_seeds.csv", index=False)
    view = summary[(summary.group == "all") & summary.metric.isin(METRICS)]
    log(
        out,
        f"\n{method.upper()} across {len(tables)} seeds (mean [95% t-interval]):\n"
        + view.assign(
            cell=lambda d: (
                d["value"].round(4).astype(str)
                + " ["
                + d.ci_low.round(4).astype(str)
                + ", "
                + d.ci_high.round(4).astype(str)
                + "]"
            )
        )
        .pivot(index="precision", columns="metric", values="cell")
        .to_string(),
    )
    present = set(stack_seeds(tables).precision)
    tests = []
    for candidate in ("worst-pred", "phi-pred", "worst-meas"):
        for baseline in ("int4", "int4-fl8", "loss-pred", "loss-meas"):
            if candidate not in present or baseline not in present:
                continue
            for metric, alternative in (("phi", "less"), ("worst_group_accuracy", "greater")):
                tests.append(
                    paired_seed_test(
                        tables,
                        metric,
                        baseline={"method": method, "precision": baseline},
                        candidate={"method": method, "precision": candidate},
                        alternative=alternative,
                    ).to_dict()
                )
    table = pd.DataFrame(tests)
    table.to_csv(out / f"{method}_paired_tests.csv", index=False)
    columns = ["metric", "baseline", "candidate", "n_seeds", "mean_baseline", "mean_candidate"]
    columns += ["difference", "ci_low", "ci_high", "p_value", "min_p_value", "alternative"]
    log(
        out,
        f"{method.upper()} paired tests (candidate - baseline):\n"
        + table[columns].round(4).to_string(index=False),
    )


if __name__ == "__main__":
    main()
