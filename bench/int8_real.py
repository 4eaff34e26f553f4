"""Real int8 kernels against the simulation: accuracy per group and latency, side by side.

Loads a checkpoint (default: trains the quickstart model), builds the simulated ``int8-a8`` model
and a real int8 model (``torch:int8``, PyTorch's int8 kernels), both built by
:func:`fairquant.quantize` from the same calibration images, and prints
overall and per-group accuracy of fp32, simulated and real int8, the largest per-group gap between
simulation and real kernels (the issue's bar: within 0.5 points overall), the layers that run int8
kernels (the build's notes), and the median latency at batch 1 and 64.

    python bench/int8_real.py [--checkpoint PATH] [--calib-size 256]
"""

from __future__ import annotations

import argparse

import torch

import fairquant
from fairquant.data import default_digits_spec, load_dataset
from fairquant.metrics import group_mean
from fairquant.models import ModelSpec, predict_logits
from fairquant.quant import calibration_indices, latency_ms
from fairquant.train import TrainConfig, fit, load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--calib-size", type=int, default=256)
    args = ap.parse_args()
    if args.checkpoint:
        ck = load_checkpoint(args.checkpoint)
        model, data = ck.model, load_dataset(ck.data_spec)
    else:
        data = load_dataset(default_digits_spec())
        model, _ = fit(data, ModelSpec("resnet18", 8), TrainConfig(epochs=30), show_progress=False)
    calib = data.train.x[calibration_indices(data.train, args.calib_size, balanced=False, seed=0)]
    deployed = fairquant.quantize(model, "torch:int8", calibration=calib)
    models = {
        "fp32": model.eval(),
        "int8-a8 simulated": fairquant.quantize(model, "int8-a8", calibration=calib).module,
        "int8 real kernels": deployed.module,
    }
    test, k = data.test, len(data.group_names)
    acc = {}
    for name, m in models.items():
        with torch.inference_mode():
            correct = (predict_logits(m, test.x).argmax(1) == test.y).double()
        acc[name] = (100 * correct.mean().item(), 100 * group_mean(correct, test.g, k))
    print(f"{'model':>20} {'all':>6}  " + " ".join(f"{g:>6}" for g in data.group_names))
    for name, (overall, groups) in acc.items():
        print(f"{name:>20} {overall:6.2f}  " + " ".join(f"{v:6.1f}" for v in groups.tolist()))
    sim, real = acc["int8-a8 simulated"], acc["int8 real kernels"]
    print(
        f"real - simulated: overall {real[0] - sim[0]:+.2f} points, largest group gap "
        f"{(real[1] - sim[1]).abs().max().item():.2f} points"
    )
    print("\n".join(deployed.notes))
    for bs in (1, 64):
        x = test.x[:bs]
        fp, q = latency_ms(models["fp32"], x), latency_ms(models["int8 real kernels"], x)
        print(f"batch {bs:>3}: fp32 {fp:7.2f} ms, int8 {q:7.2f} ms, speed-up x{fp / q:.2f}")


if __name__ == "__main__":
    main()
