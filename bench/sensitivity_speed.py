"""How fast each per-layer, per-group sensitivity is, and how well the diagonal one ranks layers.

On a narrow ResNet-18 (a checkpoint, or a seeded untrained one on random images) and a seeded
validation split carved from the training split, times side by side in one run:

* ``diagonal``: one pass of per-sample Jacobians over ``--samples`` images per group gives every
  group's gradient and exact GGN diagonal (:func:`fairquant.metrics.curvature.ggn_diagonal`), then
  every layer and bit width is a dot product
  (:func:`~fairquant.metrics.sensitivity.diagonal_excess`);
* ``measured`` (AIMET-style): one layer at a time at each bit width, evaluated on the same images
  and on ``--val`` validation images
  (:func:`~fairquant.metrics.sensitivity.measured_layer_excess`);
* ``predicted``: one Hessian-vector product per (layer, bits, group)
  (:func:`~fairquant.metrics.sensitivity.taylor_excess`), unless ``--skip-predicted``;
* ``trace``: HAWQ-V2's pooled ``Tr(H_l)/n_l · ||Q_b(w_l) - w_l||²``
  (:func:`~fairquant.metrics.sensitivity.layer_trace_sensitivity`).

Then, per group, the Spearman correlation of the predicted ``G_{l,b}(a)`` with the measured one
over all (layer, bits) cells, and its mean over bit widths of the ranking of layers within one
bit width (what a search trades off). Only a trained checkpoint makes the correlations meaningful.
Everything printed was run; nothing is extrapolated.

    OMP_NUM_THREADS=1 python bench/sensitivity_speed.py --checkpoint model.pt \
        [--samples 128 --val 2000 --bits 2,3,4,8,16 --seed 0 --skip-predicted]
    OMP_NUM_THREADS=1 python bench/sensitivity_speed.py --groups 5 --classes 5 --width 8
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr

from fairquant.data import Split, validation_split
from fairquant.metrics import (
    GroupCurvature,
    diagonal_excess,
    ggn_diagonal,
    layer_trace_sensitivity,
    measured_layer_excess,
    taylor_excess,
)
from fairquant.models import ModelSpec, build_model
from fairquant.quant import calibration_indices


def timed(fn: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def spearman(
    measured: pd.DataFrame, predicted: pd.DataFrame, column: str, target: str = "excess"
) -> pd.DataFrame:
    """Per group: Spearman of ``predicted[column]`` with ``measured[target]`` over all cells and,
    averaged over bit widths, over the layers within one bit width (a constant bit width, e.g.
    16 bits' all-zero accuracy drops, has none and is left out of the mean)."""
    both = measured.merge(predicted, on=["layer", "bits", "group"], suffixes=("", "_p"))
    rows = []
    for group, part in both.groupby("group", sort=False):
        within = [
            spearmanr(b[column], b[target]).statistic
            for _, b in part.groupby("bits")
            if b[target].nunique() > 1
        ]
        rows.append(
            {
                "group": group,
                "cells": len(part),
                "spearman_all": spearmanr(part[column], part[target]).statistic,
                "spearman_within_bits": float(pd.Series(within).mean()),
            }
        )
    return pd.DataFrame(rows)


def load(args: argparse.Namespace) -> tuple[torch.nn.Module, Split, list[str]]:
    """The model, the training split and the group names: a checkpoint's, or synthetic."""
    if args.checkpoint:
        from fairquant.data import load_dataset
        from fairquant.train import load_checkpoint

        ckpt = load_checkpoint(args.checkpoint)
        data = load_dataset(ckpt.data_spec)
        return ckpt.model.eval(), data.train, list(data.group_names)
    torch.manual_seed(args.seed)
    model = build_model(
        ModelSpec("resnet18", width=args.width), in_channels=3, num_classes=args.classes
    )
    n = 2 * (args.val + args.samples * args.groups)
    x = torch.randn(n, 3, args.image_size, args.image_size)
    train = Split(x, torch.randint(0, args.classes, (n,)), torch.randint(0, args.groups, (n,)))
    return model.eval(), train, [f"g{a}" for a in range(args.groups)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a fairquant checkpoint (default: untrained, synthetic)")
    ap.add_argument("--samples", type=int, default=128, help="images per group (predictors)")
    ap.add_argument("--val", type=int, default=2000, help="validation images (measured)")
    ap.add_argument("--bits", default="2,3,4,8,16")
    ap.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    ap.add_argument("--chunk", type=int, default=32, help="samples per Jacobian chunk")
    ap.add_argument("--skip-predicted", action="store_true", help="leave the HVP predictor out")
    ap.add_argument("--width", type=int, default=8, help="synthetic: ResNet-18 width")
    ap.add_argument("--groups", type=int, default=5, help="synthetic: groups")
    ap.add_argument("--classes", type=int, default=5, help="synthetic: classes")
    ap.add_argument("--image-size", type=int, default=32, help="synthetic: image side")
    ap.add_argument("--out", type=Path, help="write every table here as CSV")
    args = ap.parse_args()
    options = [int(b) for b in args.bits.split(",")]

    model, train, names = load(args)
    _, val = validation_split(train, args.val, seed=args.seed)
    index = calibration_indices(val, args.samples * len(names), balanced=True, seed=args.seed)
    sample = val.subset(index)
    layers = sum(1 for _ in model.modules() if isinstance(_, (torch.nn.Conv2d, torch.nn.Linear)))
    print(
        f"model: {sum(p.numel() for p in model.parameters())} parameters, {layers} quantized "
        f"layers; bits {options}; {len(names)} groups; predictors on {len(sample)} images "
        f"({sample.g.bincount(minlength=len(names)).tolist()} per group); measured on "
        f"{len(sample)} and {len(val)} validation images; torch threads "
        f"{torch.get_num_threads()}"
    )

    def diagonal() -> pd.DataFrame:
        curv = ggn_diagonal(model, sample.x, sample.y, sample.g, len(names), chunk=args.chunk)
        return diagonal_excess(curv, model, names, options)

    def predicted() -> pd.DataFrame:
        op = GroupCurvature(model, sample.x, sample.y, sample.g, len(names))
        return taylor_excess(op, model, names, options)

    diag, t_diag = timed(diagonal)
    print(f"diagonal: {t_diag:.1f} s", flush=True)
    trace, t_trace = timed(lambda: layer_trace_sensitivity(model, sample, options))
    print(f"trace (pooled, HAWQ-V2): {t_trace:.1f} s", flush=True)
    small, t_small = timed(lambda: measured_layer_excess(model, sample, names, options))
    print(f"measured on {len(sample)} images: {t_small:.1f} s", flush=True)
    big, t_big = timed(lambda: measured_layer_excess(model, val, names, options))
    print(f"measured on {len(val)} images: {t_big:.1f} s", flush=True)
    times = {"diagonal": t_diag, "trace": t_trace, f"measured@{len(sample)}": t_small}
    times[f"measured@{len(val)}"] = t_big
    tables = {"diagonal": diag}
    if not args.skip_predicted:
        pred, t_pred = timed(predicted)
        print(f"predicted (HVP): {t_pred:.1f} s ({len(pred)} cells)", flush=True)
        times["predicted"] = t_pred
        tables["predicted"] = pred

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, table in {**tables, "trace": trace, "measured_small": small}.items():
            table.to_csv(args.out / f"{name}.csv", index=False)
        big.to_csv(args.out / "measured_val.csv", index=False)
        pd.Series(times, name="seconds").to_csv(args.out / "seconds.csv")
    print("\nseconds (ratio to diagonal):")
    for key, value in times.items():
        print(f"  {key:>16}: {value:8.1f}  ({value / t_diag:.1f}x)")
    for name, table in tables.items():
        for label, measured in ((len(sample), small), (len(val), big)):
            corr = spearman(measured, table, "predicted")
            print(f"\n{name} vs measured on {label} images (Spearman per group):")
            print(corr.round(3).to_string(index=False))
    corr = spearman(big, diag, "predicted", target="drop")
    print(f"\ndiagonal vs measured accuracy drop on {len(val)} images (Spearman per group):")
    print(corr.round(3).to_string(index=False))
    pooled = big.groupby(["layer", "bits"]).excess.mean().rename("excess").reset_index()
    corr = spearman(pooled.assign(group="all"), trace.assign(group="all"), "score")
    print(f"\ntrace score vs group-mean measured excess on {len(val)} images:")
    print(corr.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
