"""How small is repair's choice? Every candidate the repair's tiers span, measured: each
calibration set, each calibrator the toolchain has (OpenVINO's presets; ONNX Runtime's MinMax /
Entropy / Percentile, per tensor and per channel), and each subset of the weight layers kept in
float (all but the full set), built on the toolchain and measured on the checkpoint's validation
split; then the smallest file within tolerance beside ``fairquant.repair``'s choice. The post-hoc
logit corrections are left out (they add K floats to a candidate and are fitted on validation).

Exhaustive means 2^L subsets per configuration: a model of a handful of weight layers.

    python bench/repair_exhaustive.py --checkpoint m.pt --precision openvino:int8 --max-drop 2 \
        --out examples/repair/exhaustive/digits-cnn-w4-openvino.csv
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import fairquant
from fairquant.metrics import group_mean
from fairquant.mitigate import CALIBRATION_SETS, calibration_set

#: The configurations the repair's calibrator and per-channel tiers try, by toolchain.
CONFIGS = {
    "openvino": ["openvino:int8", "openvino:int8-mixed"],
    "ort": [f"ort:int8{pc}{c}" for pc in ("", "-pc") for c in ("", "-entropy", "-percentile")],
}


def _accuracy(predict, split, k: int) -> np.ndarray:
    logits = torch.cat([predict(split.x[i : i + 256]) for i in range(0, len(split), 256)])
    return 100 * group_mean((logits.argmax(1) == split.y).double(), split.g, k).numpy()


def weight_modules(model: nn.Module) -> list[str]:
    """The Conv and Linear modules, in order: what a subset keeps in float."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--precision", default="openvino:int8")
    parser.add_argument("--max-drop", type=float, default=2.0)
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--max-layers", type=int, default=8, help="refuse larger models")
    parser.add_argument(
        "--configs", default=None, help="comma-separated precisions to enumerate (default: all)"
    )
    parser.add_argument(
        "--calibration-sets",
        default=",".join(CALIBRATION_SETS),
        help="comma-separated calibration sets to enumerate",
    )
    parser.add_argument("--out", type=Path, default=None, help="CSV of every candidate")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    ckpt, data = fairquant.load_with_data(args.checkpoint)
    pool, validation, note = fairquant.train.held_out_splits(ckpt, data)
    tolerance = fairquant.Tolerance(args.max_drop)
    names = [str(a) for a in data.group_names]
    model = ckpt.model.eval()
    layers = weight_modules(model)
    if len(layers) > args.max_layers:
        parser.error(f"{len(layers)} weight layers: 2^{len(layers)} subsets is not exhaustive work")
    limits = np.array([tolerance.for_group(a) for a in names])
    with torch.inference_mode():
        ref = _accuracy(model, validation, len(names))

    start = time.perf_counter()
    result = fairquant.repair(ckpt, data, args.precision, tolerance=tolerance, n_bootstrap=0)
    repair_seconds = time.perf_counter() - start

    toolchain = args.precision.split(":")[0]
    configs = CONFIGS[toolchain] if args.configs is None else args.configs.split(",")
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.calibration_sets.split(","):
            index = calibration_set(pool, kind, size=args.calib_size, seed=0)
            calibration = pool.x[index]
            for config in configs:
                precision = fairquant.parse_precision(config)
                for n in range(len(layers)):
                    for subset in itertools.combinations(layers, n):
                        built = fairquant.quantize(
                            model,
                            precision,
                            calibration=calibration,
                            layers=dict.fromkeys(subset),
                            workdir=Path(tmp) / f"c{len(rows)}",
                        )
                        drop = ref - _accuracy(built.predict, validation, len(names))
                        rows.append(
                            {
                                "calibration_set": kind,
                                "precision": config,
                                "float_layers": " ".join(subset),
                                "n_float_layers": n,
                                "size_bytes": built.size_bytes,
                                "worst_drop": round(float(drop.max()), 4),
                                "within": bool((drop <= limits).all()),
                            }
                        )
    exhaustive_seconds = time.perf_counter() - start
    table = pd.DataFrame(rows)
    passing = table[table.within]
    chosen = result.chosen
    print(f"{len(layers)} weight layers; selecting on {note}; {len(table)} candidates measured")
    print(
        f"fairquant repair: {chosen.label}, {chosen.size_bytes} bytes, "
        f"{result.evaluations} validation passes, {repair_seconds:.1f} s"
    )
    if len(passing):
        best = passing.sort_values(["size_bytes", "worst_drop"]).iloc[0]
        print(
            f"exhaustive: {len(passing)} of {len(table)} within tolerance; smallest "
            f"{best.size_bytes} bytes ({best.precision}, {best.calibration_set} calibration, "
            f"float: {best.float_layers or 'none'}), {len(table)} passes, "
            f"{exhaustive_seconds:.1f} s; repair's choice is "
            f"{chosen.size_bytes / best.size_bytes:.3f}x the smallest"
        )
    else:
        print(f"exhaustive: none of {len(table)} within tolerance")
    if args.out is not None:
        summary = {
            "calibration_set": "fairquant repair (chosen)",
            "precision": chosen.precision.name,
            "float_layers": " ".join(chosen.float_layers),
            "n_float_layers": len(chosen.float_layers),
            "size_bytes": chosen.size_bytes,
            "worst_drop": round(float(chosen.drop.max()), 4),
            "within": chosen.within,
            "evaluations": result.evaluations,
        }
        frame = pd.concat([table, pd.DataFrame([summary])], ignore_index=True)
        frame.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
