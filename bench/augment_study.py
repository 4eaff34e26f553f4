"""Does balancing augmentation lower φ(D)? Liu et al. (ICML 2025) Table 2 at several lengths.

UTKFace with the group equal to the target (race, A = Y, the paper's setting), mitigations
``none``, ``gt`` (geometric transforms) and ``re`` (random erasing), PTQ and QAT at int8 and int4,
over seeds, once per training length in ``--epochs``: each length is one mitigation comparison
(``fairquant.compare_mitigations``, resumable run directory ``OUT/epochs-L``) with the project's
paired statistics across seeds (``tests.csv``: two-sided paired t-test with the exact sign-flip
p beside it, Holm over the run directory). Training holds out a validation split (``--val-size``)
and keeps the last epoch (so that the length is the length), recording every epoch's validation
accuracy: ``curves.csv`` and ``curves.png`` show whether it plateaued. ``trend.csv`` holds
φ(D), overall and worst-group accuracy per length, mitigation, method and precision (mean and 95%
Student-t interval across seeds); ``study.md`` the tables.

    OMP_NUM_THREADS=1 python bench/augment_study.py --out examples/augment-study \\
        --epochs 15,2,6 --seeds 0,1,2,3,4 --train-limit 2000 --workers 2
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

import fairquant
from fairquant.data import DataSpec
from fairquant.models import ModelSpec
from fairquant.quant import DEFAULT_QAT_CONFIG
from fairquant.train import TrainConfig

METRICS = ("phi", "accuracy", "worst_group_accuracy")


def _curves(run_dir: Path, epochs: int) -> pd.DataFrame:
    """Every trained model's validation accuracy per epoch, keyed by mitigation and seed."""
    rows = []
    for cell in sorted(run_dir.glob("cells/*/cell.json")):
        keys = json.loads(cell.read_text())["keys"]
        state = torch.load(cell.parent / "model.pt", map_location="cpu", weights_only=True)
        history = state.get("history") or {}
        worst = history.get("val_worst_group_accuracy", [])
        for epoch, acc in enumerate(history.get("val_accuracy", []), start=1):
            rows.append(
                {
                    "length": epochs,
                    "mitigation": keys["mitigation"],
                    "seed": keys["seed"],
                    "epoch": epoch,
                    "val_accuracy": acc,
                    "val_worst_group_accuracy": worst[epoch - 1],
                }
            )
    return pd.DataFrame(rows)


def _cell(row: pd.Series, digits: int) -> str:
    return f"{row.value:.{digits}f} [{row.ci_low:.{digits}f}, {row.ci_high:.{digits}f}]"


def report(trend: pd.DataFrame, tests: pd.DataFrame, curves: pd.DataFrame) -> str:
    """The study's tables in Markdown: φ(D) per length, method and precision for each
    mitigation with the paired test against ``none``; fp32 and worst-group accuracy; plateaus."""
    lines = []
    mitigations = list(dict.fromkeys(trend.mitigation))
    phi = trend[(trend.metric == "phi") & (trend.precision != "fp32")]
    head = ["epochs", "method", "precision", *mitigations]
    head += [f"{m} − none: diff, p, p Holm" for m in mitigations if m != "none"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    vs = tests[(tests.metric == "phi") & tests.comparison.str.endswith("vs none")]
    for (length, method, precision), part in phi.groupby(
        ["length", "method", "precision"], sort=False
    ):
        row = [str(length), method, precision]
        row += [_cell(part[part.mitigation == m].iloc[0], 3) for m in mitigations]
        for m in mitigations:
            if m == "none":
                continue
            t = vs[
                (vs.length == length)
                & (vs.mitigation == m)
                & (vs.candidate == f"{m}: {method} {precision}")
            ]
            row.append(
                f"{t.difference.iloc[0]:+.3f}, {t.p_value.iloc[0]:.2g}, {t.p_holm.iloc[0]:.2g}"
                if len(t)
                else "n/a"
            )
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    acc = trend[(trend.precision == "fp32") & (trend.group == "all")]
    head = ["epochs", *(f"{m} accuracy" for m in mitigations)]
    head += [f"{m} worst group" for m in mitigations]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for length, part in acc.groupby("length", sort=False):
        row = [str(length)]
        for metric in ("accuracy", "worst_group_accuracy"):
            for m in mitigations:
                sel = part[(part.metric == metric) & (part.mitigation == m)]
                row.append(_cell(sel.iloc[0], 1) if len(sel) else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if len(curves):
        last = curves.groupby(["length", "mitigation", "seed"]).apply(
            lambda c: pd.Series(
                {
                    "final": c.val_accuracy.iloc[-1],
                    "best": c.val_accuracy.max(),
                    "last_third_gain": c.val_accuracy.iloc[-1]
                    - c.val_accuracy.iloc[max(0, len(c) - 1 - max(1, len(c) // 3))],
                }
            ),
            include_groups=False,
        )
        summary = last.groupby(["length", "mitigation"]).mean().round(1).reset_index()
        head = ["epochs", "mitigation", "final val acc", "best val acc", "gain over last third"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in summary.itertuples():
            lines.append(
                f"| {r.length} | {r.mitigation} | {r.final} | {r.best} | {r.last_third_gain:+.1f} |"
            )
    return "\n".join(lines) + "\n"


def plot_curves(curves: pd.DataFrame, path: Path) -> Path:
    """Validation accuracy and worst-group accuracy per epoch (mean over seeds) of each
    mitigation at each training length."""
    import matplotlib

    matplotlib.use("Agg")  # a bench script, run on machines without a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    mean = curves.groupby(["length", "mitigation", "epoch"]).mean(numeric_only=True).reset_index()
    for (length, mitigation), part in mean.groupby(["length", "mitigation"]):
        label = f"{mitigation}, {length} epochs"
        axes[0].plot(part.epoch, part.val_accuracy, label=label)
        axes[1].plot(part.epoch, part.val_worst_group_accuracy, label=label)
    axes[0].set(xlabel="epoch", ylabel="validation accuracy (%)")
    axes[1].set(xlabel="epoch", ylabel="validation worst-group accuracy (%)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/augment-study"))
    parser.add_argument("--root", type=Path, default=Path("../shared/data/UTKFace.tar.gz"))
    parser.add_argument("--epochs", default="3,10,20", help="training lengths, comma-separated")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--mitigations", default="none,gt,re")
    parser.add_argument("--train-limit", type=int, default=3000, help="training images (seeded)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--val-size", type=float, default=0.1)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not args.root.exists():
        raise SystemExit(f"{args.root}: no UTKFace archive there (see ../shared/data/README.md)")
    spec = DataSpec(
        name="utkface",
        root=str(args.root.resolve()),
        target="ethnicity",
        image_size=args.image_size,
        options={"grayscale": True, "limit": {"train": args.train_limit}},
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    trend, curves, tests = [], [], []
    for epochs in (int(e) for e in args.epochs.split(",")):
        out = args.out / f"epochs-{epochs}"
        comparison = fairquant.compare_mitigations(
            spec,
            ModelSpec("resnet18", args.width),
            TrainConfig(epochs=epochs, val_size=args.val_size),
            out,
            mitigations=args.mitigations,
            precisions=("fp32", "int8", "int4"),
            methods=("ptq", "qat"),
            seeds=seeds,
            qat=replace(DEFAULT_QAT_CONFIG, epochs=args.qat_epochs),
            n_bootstrap=0,
            backend="process",
            workers=args.workers,
        )
        summary = pd.read_csv(out / "summary.csv", dtype={"precision": str, "group": str})
        trend.append(summary[summary.metric.isin(METRICS)].assign(length=epochs))
        curves.append(_curves(out, epochs))
        tests.append(pd.read_csv(out / "tests.csv").assign(length=epochs))
        print(f"epochs {epochs}: {comparison.run} -> {out}")
    trend, curves, tests = pd.concat(trend), pd.concat(curves), pd.concat(tests)
    trend.to_csv(args.out / "trend.csv", index=False)
    curves.to_csv(args.out / "curves.csv", index=False)
    tests.to_csv(args.out / "tests.csv", index=False)
    text = report(trend, tests, curves)
    (args.out / "study.md").write_text(text)
    plot_curves(curves, args.out / "curves.png")
    print(text)
    print(f"wrote trend.csv, curves.csv, curves.png, tests.csv and study.md to {args.out}")


if __name__ == "__main__":
    main()
