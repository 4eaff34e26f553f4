"""The model zoo on a CPU: size, real int8 against simulated int8, latency, training speed.

For each zoo model at a CPU-scale width: parameters; packed size at fp32, int8 and int4; it trains
a few epochs on the embedded digits (32x32, imbalanced as in the quickstart) and reports the
training speed; then the simulated ``int8-a8`` model (``int8-a8-bn`` where the model has BatchNorm,
as the real kernels fold it) and the real int8 model (``torch:int8``), both built by
:func:`fairquant.quantize` and calibrated on the same 256 training images, are compared: test
accuracy of each and the fraction of test images on which they predict the same class; the layer
types that run int8 kernels; and the median latency of fp32 and real int8 on a batch of 32.

    python bench/zoo.py [--epochs 3] [--models resnet18_tv,vit_small] [--limit N] [--repeats 10]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from torch import nn

import fairquant
from fairquant.data import default_digits_spec, load_dataset
from fairquant.models import ModelSpec, predict_logits
from fairquant.quant import calibration_indices, latency_ms, packed_size_bytes, parse_precision
from fairquant.train import TrainConfig, fit

#: CPU-scale sizes: each trains an epoch of the digits in seconds to a minute on 2 cores.
SPECS = {
    "resnet18_tv": ModelSpec("resnet18_tv", 16),
    "resnet50": ModelSpec("resnet50", 8),
    "vgg19_bn": ModelSpec("vgg19_bn", 16),
    "mobilenet_v2": ModelSpec("mobilenet_v2", 16),
    "efficientnet_b0": ModelSpec("efficientnet_b0", 16),
    "squeezenet1_1": ModelSpec("squeezenet1_1", 32),
    "vit_small": ModelSpec("vit_small", 96, depth=6, image_size=32),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--models", default=",".join(SPECS))
    ap.add_argument("--limit", type=int, default=None, help="Train on the first N images only.")
    ap.add_argument("--repeats", type=int, default=10, help="Timed forward passes per latency.")
    args = ap.parse_args()
    data = load_dataset(default_digits_spec(seed=0))
    if args.limit is not None:
        keep = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
        data = replace(data, train=data.train.subset(keep[: args.limit]))
    calib = data.train.x[calibration_indices(data.train, 256, balanced=False, seed=0)]
    test = data.test
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; digits 32x32")
    for name in args.models.split(","):
        spec = SPECS[name]
        # AdamW: the ViT does not train with plain SGD in a few epochs
        config = TrainConfig(epochs=args.epochs, optimizer="adamw", lr=2e-3, seed=0)
        model, history = fit(data, spec, config, show_progress=False)
        model.eval()
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        sim_name = "int8-a8-bn" if has_bn else "int8-a8"
        sim = fairquant.quantize(model, sim_name, calibration=calib).module
        start = time.perf_counter()
        built = fairquant.quantize(model, "torch:int8", calibration=calib)
        convert_s = time.perf_counter() - start  # its state_dict written once, for the size
        real = built.module
        pred = {
            k: predict_logits(m, test.x).argmax(1)
            for k, m in (("fp32", model), ("sim", sim), ("real", real))
        }
        acc = {k: 100 * (p == test.y).double().mean().item() for k, p in pred.items()}
        agree = 100 * (pred["sim"] == pred["real"]).double().mean().item()
        sizes = [
            packed_size_bytes(model, parse_precision(p)) / 1024 for p in ("fp32", "int8", "int4")
        ]
        x = test.x[:32]
        fp_ms, q_ms = (latency_ms(m, x, repeats=args.repeats, warmup=1) for m in (model, real))
        params = sum(p.numel() for p in model.parameters())
        print(
            f"\n{name} (width {spec.width}): {params / 1e6:.2f}M parameters; packed "
            f"fp32/int8/int4 {sizes[0]:.0f}/{sizes[1]:.0f}/{sizes[2]:.0f} KiB; trained "
            f"{args.epochs} epochs at {history.images_per_second:.0f} img/s\n"
            f"  test accuracy fp32 {acc['fp32']:.1f}, {sim_name} simulated {acc['sim']:.1f}, "
            f"real int8 {acc['real']:.1f} (real - simulated {acc['real'] - acc['sim']:+.1f} "
            f"points; same prediction on {agree:.1f}% of images)\n"
            f"  latency batch 32: fp32 {fp_ms:.1f} ms, real int8 {q_ms:.1f} ms "
            f"(x{fp_ms / q_ms:.2f}); conversion {convert_s:.1f} s\n"
            f"  {'; '.join(built.notes)}"
        )


if __name__ == "__main__":
    main()
