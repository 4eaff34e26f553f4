"""Training throughput of fairquant's loop against a bare PyTorch loop, side by side in one run.

Both train the same architecture from the same initial weights on the same in-memory tensors with
the same batch size and SGD settings; runs alternate so that machine noise hits both alike.
The issue's bar: fairquant >= 0.9x the bare loop.

    python bench/train_throughput.py [--model resnet18 --width 16 --batch-size 64 --repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from fairquant.data import Split
from fairquant.models import ModelSpec, build_model
from fairquant.train import TrainConfig, train_model


def bare_loop(model, x, y, *, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """The loop a PyTorch user writes by hand: shuffle, forward, backward, step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return len(x) * epochs / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 1, args.image_size, args.image_size, generator=gen)
    y = torch.randint(0, 10, (args.images,), generator=gen)
    torch.manual_seed(0)
    init = build_model(ModelSpec(args.model, args.width), in_channels=1, num_classes=10)
    # constant lr: the bare loop has no schedule either
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=0.01, schedule="constant"
    )

    bare_loop(copy.deepcopy(init), x[:256], y[:256], epochs=1, batch_size=64, lr=0.01, seed=0)
    rates: dict[str, list[float]] = {"bare": [], "fairquant": [], "fairquant+progress": []}
    for r in range(args.repeats):
        rates["bare"].append(
            bare_loop(
                copy.deepcopy(init),
                x,
                y,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=0.01,
                seed=r,
            )
        )
        for name, show in (("fairquant", False), ("fairquant+progress", True)):
            history = train_model(copy.deepcopy(init), Split(x, y, y), config, show_progress=show)
            rates[name].append(history.images_per_second)
    bare = statistics.median(rates["bare"])
    print(
        f"{args.model} width {args.width}, batch {args.batch_size}, {args.images} images "
        f"{args.image_size}x{args.image_size}, {torch.get_num_threads()} threads"
    )
    for name, values in rates.items():
        med = statistics.median(values)
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:>20}: {med:7.1f} img/s (runs: {runs})  ratio to bare {med / bare:.3f}")


if __name__ == "__main__":
    main()
