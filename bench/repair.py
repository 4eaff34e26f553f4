"""Repair side by side: NNCF's accuracy control (its default metric, overall accuracy, and
worst-group accuracy as ``validation_fn``) against ``fairquant.repair`` on the same model, the same
tolerance, the same validation split and calibration samples, on OpenVINO's CPU kernels.

For every result: each group's validation drop, whether every group is within tolerance on
validation, the test verdict (:func:`fairquant.verdict`, each result judged on its own), file
size, weight layers kept in float, validation evaluations and seconds. NNCF's evaluations are
its ``validation_fn`` calls (some on subsets while it ranks) and the validation samples they
read, in passes of the whole split; fairquant's are whole-split passes (a tier's row: its
candidate's own; the chosen row: all of them, fp32's included). fairquant's search stops at the
first candidate within tolerance, so a tier's row is its first passing candidate or, where none
passed, the one with the smallest worst-group drop.

    python bench/repair.py --checkpoint /tmp/qs.pt --train-quickstart 0.3 --max-drop 2 \
        --out examples/repair/digits-resnet18-w8.csv
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import fairquant
from fairquant.metrics import per_sample_loss
from fairquant.quant import (
    OpenVinoModel,
    calibration_indices,
    export_onnx,
    int8_weight_layers,
    weight_layers,
)


def _logits(predict, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([predict(x[i : i + batch]) for i in range(0, len(x), batch)]).float()


def _accuracy(logits: torch.Tensor, split, k: int) -> np.ndarray:
    correct = (logits.argmax(1) == split.y).numpy().astype(float)
    g = split.g.numpy()
    return 100 * np.bincount(g, correct, minlength=k) / np.bincount(g, minlength=k)


def _judge(name, logits, ref, data, tolerance) -> fairquant.Verdict:
    test = data.test
    samples = fairquant.PerSample(
        y=test.y.numpy(),
        g=test.g.numpy(),
        predictions={"fp32": ref.argmax(1).numpy(), name: logits.argmax(1).numpy()},
        losses={
            "fp32": per_sample_loss(ref, test.y).numpy(),
            name: per_sample_loss(logits, test.y).numpy(),
        },
    )
    return fairquant.verdict(samples, tolerance, group_names=data.group_names, n_bootstrap=0)


def _row(method, predict, size, floats, evaluations, seconds, ctx) -> dict:
    """One result: validation drop per group, within, test verdict and test drops."""
    data, validation, tolerance, names = ctx["data"], ctx["validation"], ctx["tol"], ctx["names"]
    k = len(names)
    val = ctx["val_ref"] - _accuracy(_logits(predict, validation.x), validation, k)
    test_logits = _logits(predict, data.test.x)
    judged = _judge(method, test_logits, ctx["test_ref"], data, tolerance)
    test = judged.table.set_index("group").loc[names]
    limits = np.array([tolerance.for_group(a) for a in names])
    return {
        "method": method,
        "val_worst_group": names[int(np.argmax(val - limits))],
        "val_worst_drop": round(float(np.max(val)), 2) + 0.0,
        "val_within": bool((val <= limits).all()),
        "test_verdict": judged.status[method],
        "test_fail_groups": " ".join(test.index[test.status == "fail"]),
        "test_worst_drop": round(float(-test.change.min()), 2) + 0.0,
        "size_bytes": int(size),
        "float_layers": floats,
        "evaluations": evaluations,
        "seconds": round(seconds, 1),
    }


def _fairquant_rows(ckpt, data, precision, tolerance, calib_size, ctx) -> list[dict]:
    start = time.perf_counter()
    result = fairquant.repair(
        ckpt,
        data,
        precision,
        tolerance=tolerance,
        calib_size=calib_size,
        n_bootstrap=0,
        val_size=ctx["val_size"],
    )
    seconds = time.perf_counter() - start
    rows = []
    for tier in dict.fromkeys(c.tier for c in result.candidates):
        in_tier = [c for c in result.candidates if c.tier == tier]
        best = min(in_tier, key=lambda c: (not c.within, c.drop.max()))
        label = f"fairquant {tier}: {best.label}"
        rows.append(
            _row(
                label,
                best.deployed.predict,
                best.size_bytes,
                len(best.float_layers),
                best.evaluations,
                best.seconds,
                ctx,
            )
        )
    c = result.chosen
    rows.append(
        _row(
            f"fairquant repair (chosen): {c.label}",
            c.deployed.predict,
            c.size_bytes,
            len(c.float_layers),
            result.evaluations,
            seconds,
            ctx,
        )
    )
    return rows


def _nncf_rows(ckpt, data, validation, tolerance, calib_size, ctx) -> list[dict]:
    import nncf
    import openvino as ov

    k = len(ctx["names"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = export_onnx(ckpt.model.eval(), data.train.x[:8], Path(tmp) / "fp32.onnx")
        name = source.inputs[0].name
        index = calibration_indices(data.train, calib_size, balanced=False, seed=0)
        calib = [{name: data.train.x[i : i + 1].numpy()} for i in index.tolist()]
        items = [
            (validation.x[i : i + 1].numpy(), int(validation.y[i]), int(validation.g[i]))
            for i in range(len(validation))
        ]

        def make_fn(metric: str, counter: dict):
            def validate(compiled, data_items) -> float:
                correct, groups = [], []
                output = compiled.output(0)
                for x, y, g in data_items:
                    correct.append(float(compiled({name: x})[output].argmax() == y))
                    groups.append(g)
                counter["calls"] += 1
                counter["items"] += len(correct)
                correct, groups = np.array(correct), np.array(groups)
                if metric == "overall accuracy":
                    return float(correct.mean())
                present = [correct[groups == a].mean() for a in range(k) if (groups == a).any()]
                return float(min(present))

            return validate

        for metric in ("overall accuracy", "worst-group accuracy"):
            counter = {"calls": 0, "items": 0}
            model = ov.Core().read_model(str(source.path))
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantized = nncf.quantize_with_accuracy_control(
                    model,
                    nncf.Dataset(calib),
                    nncf.Dataset(items, lambda item: {name: item[0]}),
                    make_fn(metric, counter),
                    max_drop=tolerance.max_drop / 100,
                    drop_type=nncf.DropType.ABSOLUTE,
                    subset_size=len(calib),
                )
            seconds = time.perf_counter() - start
            path = Path(tmp) / f"nncf-{counter['calls']}.xml"
            ov.save_model(quantized, str(path), compress_to_fp16=False)
            built = OpenVinoModel(path)
            floats = len(weight_layers(built.model)) - len(int8_weight_layers(built.model))
            passes = f"{counter['calls']} calls, {counter['items'] / len(items):.1f} passes"
            rows.append(
                _row(
                    f"NNCF accuracy control ({metric})",
                    built.predict,
                    built.size_bytes,
                    floats,
                    passes,
                    seconds,
                    ctx,
                )
            )
    return rows


def train_quickstart(path: Path, *, val_size: float, epochs: int = 30, seed: int = 0) -> None:
    """The quickstart's model (ResNet-18 width 8 on the long-tailed digits, 30 epochs), trained
    with ``val_size`` of its training split held out as the validation split."""
    from fairquant.data import default_digits_spec

    data = fairquant.load_dataset(default_digits_spec(seed=seed))
    spec, config = (
        fairquant.ModelSpec("resnet18", 8),
        fairquant.TrainConfig(epochs=epochs, seed=seed, val_size=val_size),
    )
    net, history = fairquant.fit(data, spec, config, show_progress=False)
    fairquant.save_checkpoint(
        path, model=net, model_spec=spec, dataset=data, train_config=config, history=history
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument(
        "--train-quickstart",
        type=float,
        default=None,
        metavar="VAL_SIZE",
        help="first train the quickstart's model into --checkpoint, VAL_SIZE held out",
    )
    parser.add_argument("--max-drop", type=float, default=2.0)
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--val-size", type=float, default=None)
    parser.add_argument("--precisions", default="openvino:int8,ort:int8")
    parser.add_argument("--no-nncf", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="CSV of the table")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.train_quickstart is not None:
        train_quickstart(args.checkpoint, val_size=args.train_quickstart)
    ckpt, data = fairquant.load_with_data(args.checkpoint)
    size = (
        None
        if args.val_size is None
        else (args.val_size if args.val_size < 1 else int(args.val_size))
    )
    validation, note = fairquant.held_out_validation(ckpt, data, size=size)
    tolerance = fairquant.Tolerance(args.max_drop)
    names = [str(a) for a in data.group_names]
    model = ckpt.model.eval()
    with torch.inference_mode():
        val_ref, test_ref = _logits(model, validation.x), _logits(model, data.test.x)
    ctx = {
        "data": data,
        "validation": validation,
        "tol": tolerance,
        "names": names,
        "val_ref": _accuracy(val_ref, validation, len(names)),
        "test_ref": test_ref,
        "val_size": size,
    }
    print(f"selecting on {note}; test split {len(data.test)} samples; max drop {args.max_drop:g}")
    rows = []
    if not args.no_nncf:
        rows += _nncf_rows(ckpt, data, validation, tolerance, args.calib_size, ctx)
    for precision in args.precisions.split(","):
        rows += _fairquant_rows(ckpt, data, precision, tolerance, args.calib_size, ctx)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    if args.out is not None:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
