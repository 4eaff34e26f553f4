"""Training throughput of fairquant's loop against the fastest of the bare PyTorch loops, side by
side in one run.

The bare loops are what a PyTorch user writes by hand (shuffle, forward, backward, step) in
three variants: ``eager`` (contiguous memory format), ``channels-last`` (model and batches in
NHWC) and ``compiled`` (``torch.compile`` of the channels-last model; compilation is done in a
warm-up run outside the timing). All train the same architecture from the same initial weights on
the same in-memory tensors with the same batch size and SGD settings, fairquant's loop without
augmentation (the bare loops have none); runs alternate, in an order that rotates each repeat,
so that machine noise hits all alike.
The issue's bar: fairquant >= 0.95x the fastest bare loop.

    python bench/train_throughput.py [--model resnet18 --width 16 --image-size 48 --repeats 3]
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

BARE = ("eager", "channels-last", "compiled")


def bare_loop(model, x, y, *, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """The loop a PyTorch user writes by hand; ``x``'s memory format is the model's."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    gen = torch.Generator().manual_seed(seed)
    layout = (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            xb = x[idx].contiguous(memory_format=layout)
            F.cross_entropy(model(xb), y[idx]).backward()
            opt.step()
    return len(x) * epochs / (time.perf_counter() - start)


def bare_model(init: torch.nn.Module, variant: str) -> torch.nn.Module:
    model = copy.deepcopy(init)
    if variant in ("channels-last", "compiled"):
        model = model.to(memory_format=torch.channels_last)
    if variant == "compiled":
        model = torch.compile(model)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--bare", default=",".join(BARE), help=f"bare loops to run, from {','.join(BARE)}"
    )
    args = ap.parse_args()
    variants = [v for v in args.bare.split(",") if v]
    unknown = sorted(set(variants) - set(BARE))
    if unknown:
        ap.error(f"--bare: unknown loop(s) {unknown}; expected some of {', '.join(BARE)}")

    gen = torch.Generator().manual_seed(0)
    size = args.image_size
    x = torch.randn(args.images, args.channels, size, size, generator=gen)
    y = torch.randint(0, 10, (args.images,), generator=gen)
    torch.manual_seed(0)
    spec = ModelSpec(args.model, args.width)
    init = build_model(spec, in_channels=args.channels, num_classes=10)
    # constant lr and no augmentation: the bare loops have neither
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=0.01,
        schedule="constant",
        augment=False,
    )
    data = {
        "eager": x,
        "channels-last": x.contiguous(memory_format=torch.channels_last),
        "compiled": x.contiguous(memory_format=torch.channels_last),
    }
    models = {v: bare_model(init, v) for v in variants}
    warm = min(len(x), 4 * args.batch_size)
    for v in variants:  # warm-up: oneDNN primitives, and compilation for the compiled loop
        start = time.perf_counter()
        bare_loop(
            models[v],
            data[v][:warm],
            y[:warm],
            epochs=1,
            batch_size=args.batch_size,
            lr=0.01,
            seed=0,
        )
        print(f"warm-up {v}: {time.perf_counter() - start:.1f} s", flush=True)
    train_model(
        copy.deepcopy(init), Split(x[:warm], y[:warm], y[:warm]), config, show_progress=False
    )

    def run_bare(v: str, r: int) -> float:
        model = models[v]
        # the same start each run; in place, so the compiled graph stays valid
        getattr(model, "_orig_mod", model).load_state_dict(init.state_dict())
        return bare_loop(
            model, data[v], y, epochs=args.epochs, batch_size=args.batch_size, lr=0.01, seed=r
        )

    def run_fairquant(show: bool) -> float:
        model = copy.deepcopy(init)
        return train_model(model, Split(x, y, y), config, show_progress=show).images_per_second

    runs = {v: (lambda r, v=v: run_bare(v, r)) for v in variants}
    runs |= {
        "fairquant": lambda r: run_fairquant(False),
        "fairquant+progress": lambda r: run_fairquant(True),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.repeats):
        # the order rotates each repeat, so that no loop always runs in the same slot
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(runs[name](r))
    medians = {name: statistics.median(v) for name, v in rates.items()}
    fastest = max(variants, key=medians.__getitem__)
    print(
        f"{args.model} width {args.width}, batch {args.batch_size}, {args.images} images "
        f"{args.channels}x{size}x{size}, {torch.get_num_threads()} threads, "
        f"{args.repeats} repeats (medians)"
    )
    for name, values in rates.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(
            f"{name:>20}: {medians[name]:7.1f} img/s (runs: {runs})  "
            f"ratio to {fastest} {medians[name] / medians[fastest]:.3f}"
        )
    ratio = medians["fairquant"] / medians[fastest]
    # each repeat runs every loop once, so a repeat's ratio is paired: machine drift between
    # repeats cancels in it, and the spread of the paired ratios shows the noise of the bar
    paired = sorted(f / b for f, b in zip(rates["fairquant"], rates[fastest], strict=True))
    print(
        f"fairquant / fastest bare loop ({fastest}): {ratio:.3f} "
        f"({'meets' if ratio >= 0.95 else 'misses'} the 0.95 bar); paired by repeat: median "
        f"{statistics.median(paired):.3f}, range {paired[0]:.3f}-{paired[-1]:.3f}"
    )


if __name__ == "__main__":
    main()
