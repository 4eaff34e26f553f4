"""What glibc's allocator costs training on this machine, and what fairquant's default recovers.

Runs ``bench/train_throughput.py``'s bare loop in fresh processes under three allocators:
glibc as it comes (``FAIRQUANT_MALLOC=default``), glibc with fairquant's thresholds (the default
on ``import fairquant``), and tcmalloc via ``LD_PRELOAD`` when ``libtcmalloc-minimal4`` is
installed. Reports images per second and minor page faults for each.

    python bench/malloc.py [--width 16 --batch-size 256 --image-size 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"

CHILD = """
import sys, time, torch, torch.nn.functional as F
import fairquant
from fairquant.models import ModelSpec, build_model
w, b, s, steps = map(int, sys.argv[1:5])
torch.manual_seed(0)
m = build_model(ModelSpec("resnet18", w), in_channels=3, num_classes=10)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(b, 3, s, s), torch.randint(0, 10, (b,))
def step():
    opt.zero_grad(set_to_none=True); F.cross_entropy(m(x), y).backward(); opt.step()
step(); step()
t = time.perf_counter()
for _ in range(steps): step()
print(steps * b / (time.perf_counter() - t))
"""


def run(env: dict[str, str], args: argparse.Namespace) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    argv = [str(v) for v in (args.width, args.batch_size, args.image_size, args.steps)]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    return float(out.stdout.strip().splitlines()[-1]), faults


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    modes = {"glibc default": {"FAIRQUANT_MALLOC": "default"}, "fairquant default": {}}
    if Path(TCMALLOC).exists():
        modes["tcmalloc (LD_PRELOAD)"] = {"FAIRQUANT_MALLOC": "default", "LD_PRELOAD": TCMALLOC}
    print(
        f"resnet18 width {args.width}, batch {args.batch_size}, {args.image_size}x"
        f"{args.image_size} RGB, {args.steps} steps x {args.repeats} repeats"
    )
    base = None
    for name, env in modes.items():
        results = [run(env, args) for _ in range(args.repeats)]
        rate = max(r for r, _ in results)
        faults = min(f for _, f in results)
        base = base or rate
        print(f"{name:>22}: {rate:7.1f} img/s  x{rate / base:.2f}  minor faults {faults:,}")


if __name__ == "__main__":
    main()
