"""Repair side by side: NNCF's accuracy control (its default metric, overall accuracy;
worst-group accuracy as ``validation_fn``; and every group's drop over its tolerance as
``validation_fn``, the job fairquant does) against ``fairquant.repair`` on the same model, the same
tolerance, the same validation split and calibration samples, on OpenVINO's CPU kernels.

For every result: each group's validation drop, whether every group is within tolerance on
validation, the test verdict (:func:`fairquant.verdict`, each result judged on its own), file
size, weight layers kept in float, validation evaluations and seconds. NNCF's evaluations are
its ``validation_fn`` calls (some on subsets while it ranks) and the validation samples they
read, in passes of the whole split; fairquant's are whole-split passes (a tier's row: its
candidate's own; the chosen row: all of them, fp32's included). fairquant's search stops at the
first tier with a candidate within tolerance, so a tier's row is its smallest passing candidate
or, where none passed, the one with the smallest worst-group drop.

    python bench/repair.py --checkpoint /tmp/qs.pt --train-quickstart 0.3 --max-drop 2 \
        --out examples/repair/digits-resnet18-w8.csv

A model from elsewhere, as ``fairquant audit --model`` takes it (a validation split of
``--val-size`` carved from its training split, which the model may have seen):

    python bench/repair.py --model torchvision:shufflenet_v2_x0_5 --weights shufflenet.pt \
        --dataset utkface --root ../shared/data/UTKFace.tar.gz --image-size 48 --mean 0.5 \
        --std 0.5 --val-size 0.2 --out examples/repair/utkface-shufflenet.csv
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
from fairquant.metrics import group_mean, per_sample_loss
from fairquant.mitigate import calibration_set
from fairquant.quant import OpenVinoModel, export_onnx, int8_weight_layers, weight_layers


def _logits(predict, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([predict(x[i : i + batch]) for i in range(0, len(x), batch)]).float()


def _accuracy(logits: torch.Tensor, split, k: int) -> np.ndarray:
    return 100 * group_mean((logits.argmax(1) == split.y).double(), split.g, k).numpy()


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
    val = ctx["val_ref"] - _accuracy(_logits(predict, ctx["val_x"]), validation, k)
    test_logits = _logits(predict, ctx["test_x"])
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


def _tier_key(c) -> tuple[bool, float]:
    """Passing first, the smallest file; else the smallest worst-group drop."""
    return (not c.within, c.size_bytes if c.within else float(c.drop.max()))


def _fairquant_rows(what, data, precision, tolerance, calib_size, ctx) -> list[dict]:
    start = time.perf_counter()
    result = fairquant.repair(
        what,
        data,
        precision,
        tolerance=tolerance,
        calib_size=calib_size,
        n_bootstrap=0,
        val_size=ctx["val_size"],
        preprocess=ctx["preprocess"],
    )
    seconds = time.perf_counter() - start
    rows = []
    for tier in dict.fromkeys(c.tier for c in result.candidates):
        in_tier = [c for c in result.candidates if c.tier == tier]
        best = min(in_tier, key=_tier_key)
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
            round(result.evaluations, 2),
            seconds,
            ctx,
        )
    )
    return rows


def _metric(name: str, ctx: dict):
    """NNCF's ``validation_fn`` metric of items ``(x, y, group, fp32 correct)`` from their
    correctness: overall accuracy; worst-group accuracy; or ``per-group drop``, 1 minus the
    largest excess of a group's drop over its tolerance against fp32 on the same items (as a
    fraction; 1 when every group is within, so NNCF stops exactly when fairquant's criterion
    holds, with max_drop 0)."""
    k, limits = len(ctx["names"]), np.array([ctx["tol"].for_group(a) for a in ctx["names"]])

    def value(correct: np.ndarray, groups: np.ndarray, ref: np.ndarray) -> float:
        present = [a for a in range(k) if (groups == a).any()]
        if name == "overall accuracy":
            return float(correct.mean())
        if name == "worst-group accuracy":
            return float(min(correct[groups == a].mean() for a in present))
        drops = [100 * (ref[groups == a].mean() - correct[groups == a].mean()) for a in present]
        excess = max(0.0, *(d - limits[a] for d, a in zip(drops, present, strict=True)))
        return 1.0 - excess / 100  # 1 for fp32 (NNCF divides by it, so never 0)

    return value


def _nncf_rows(module, data, validation, pool, tolerance, calib_size, ctx) -> list[dict]:
    import nncf
    import openvino as ov

    ready, rows = ctx["ready"], []
    with tempfile.TemporaryDirectory() as tmp:
        source = export_onnx(module.eval(), ready(pool.x[:8]), Path(tmp) / "fp32.onnx")
        name = source.inputs[0].name
        index = calibration_set(pool, "random", size=calib_size, seed=0)  # repair's "as given"
        inputs = ready(pool.x[index])
        calib = [{name: inputs[i : i + 1].numpy()} for i in range(len(inputs))]
        x = ctx["val_x"]
        ref = (ctx["val_ref_logits"].argmax(1) == validation.y).numpy()
        items = [
            (x[i : i + 1].numpy(), int(validation.y[i]), int(validation.g[i]), float(ref[i]))
            for i in range(len(validation))
        ]

        def make_fn(value, counter: dict):
            def validate(compiled, data_items) -> float:
                correct, groups, refs = [], [], []
                output = compiled.output(0)
                for x, y, g, r in data_items:
                    correct.append(float(compiled({name: x})[output].argmax() == y))
                    groups.append(g)
                    refs.append(r)
                counter["calls"] += 1
                counter["items"] += len(correct)
                return value(np.array(correct), np.array(groups), np.array(refs))

            return validate

        for metric in ("overall accuracy", "worst-group accuracy", "per-group drop"):
            counter = {"calls": 0, "items": 0}
            model = ov.Core().read_model(str(source.path))
            per_group = metric == "per-group drop"
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantized = nncf.quantize_with_accuracy_control(
                    model,
                    nncf.Dataset(calib),
                    nncf.Dataset(items, lambda item: {name: item[0]}),
                    make_fn(_metric(metric, ctx), counter),
                    max_drop=0.0 if per_group else tolerance.max_drop / 100,
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


def _load(args) -> tuple:
    """``(what to repair, module, data, validation, pool, preprocess, note)``: a checkpoint with
    its held-out validation split, or a model from elsewhere as ``fairquant audit --model`` loads
    it, with a split of ``--val-size`` carved from its training split as ``fairquant.repair``
    carves it; ``pool`` is the rest of the training split, which calibration draws from."""
    if args.checkpoint is not None:
        if args.train_quickstart is not None:
            train_quickstart(args.checkpoint, val_size=args.train_quickstart)
        ckpt, data = fairquant.load_with_data(args.checkpoint)
        size = None if args.val_size is None else _size(args.val_size)
        pool, validation, note = fairquant.train.held_out_splits(ckpt, data, size=size)
        return ckpt, ckpt.model.eval(), data, validation, pool, None, note, size
    spec = fairquant.DataSpec(
        name=args.dataset, root=args.root, target=args.target, image_size=args.image_size
    )
    data = fairquant.load_dataset(spec)
    source = fairquant.parse_model_source(args.model, weights=args.weights)
    loaded = fairquant.load_model(
        source, num_classes=len(data.classes), in_channels=data.train.x.shape[1]
    )
    preprocess = fairquant.Preprocess(mean=(args.mean,) * 3, std=(args.std,) * 3)
    size = _size(args.val_size if args.val_size is not None else 0.2)
    pool, validation = fairquant.data.validation_split(data.train, size, seed=data.spec.seed)
    note = f"{len(validation)} training images carved (the model may have been trained on them)"
    return loaded, loaded.model.eval(), data, validation, pool, preprocess, note, size


def _size(value: float) -> float | int:
    return value if value < 1 else int(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument(
        "--train-quickstart",
        type=float,
        default=None,
        metavar="VAL_SIZE",
        help="first train the quickstart's model into --checkpoint, VAL_SIZE held out",
    )
    parser.add_argument("--model", default=None, help="a model source, as audit --model takes")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--dataset", default="utkface")
    parser.add_argument("--root", default=None)
    parser.add_argument("--target", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--mean", type=float, default=0.5, help="the model's input mean (--model)")
    parser.add_argument("--std", type=float, default=0.5, help="the model's input std (--model)")
    parser.add_argument("--max-drop", type=float, default=2.0)
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--val-size", type=float, default=None)
    parser.add_argument("--precisions", default="openvino:int8,ort:int8")
    parser.add_argument("--no-nncf", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="CSV of the table")
    args = parser.parse_args()
    if (args.checkpoint is None) == (args.model is None):
        parser.error("give --checkpoint or --model")
    warnings.simplefilter("ignore")
    what, module, data, validation, pool, preprocess, note, size = _load(args)
    tolerance = fairquant.Tolerance(args.max_drop)
    names = [str(a) for a in data.group_names]

    def ready(x: torch.Tensor) -> torch.Tensor:
        return x if preprocess is None else preprocess.transform(data.mean, data.std)(x)

    val_x, test_x = ready(validation.x), ready(data.test.x)
    with torch.inference_mode():
        val_ref, test_ref = _logits(module, val_x), _logits(module, test_x)
    ctx = {
        "data": data,
        "validation": validation,
        "val_x": val_x,
        "test_x": test_x,
        "ready": ready,
        "preprocess": preprocess,
        "tol": tolerance,
        "names": names,
        "val_ref": _accuracy(val_ref, validation, len(names)),
        "val_ref_logits": val_ref,
        "test_ref": test_ref,
        "val_size": size if args.model is not None else (None if args.val_size is None else size),
    }
    print(f"selecting on {note}; test split {len(data.test)} samples; max drop {args.max_drop:g}")
    rows = []
    if not args.no_nncf:
        rows += _nncf_rows(module, data, validation, pool, tolerance, args.calib_size, ctx)
    for precision in args.precisions.split(","):
        rows += _fairquant_rows(what, data, precision, tolerance, args.calib_size, ctx)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    if args.out is not None:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
