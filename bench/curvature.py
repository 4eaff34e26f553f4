"""Per-group curvature: fairquant against PyHessian, side by side in one run on the same model.

A narrow CIFAR-style ResNet-18 is trained on the embedded digits (balanced, ``--image-size``
pixels) unless ``--checkpoint`` is given; ``--images`` images (train and test pooled, seeded
draw) form 5 groups of two classes each (digits 0-1, 2-3, ...). Measured, per group:

* trace: fairquant (Hutch++ with a relative-standard-error stop at ``--rtol``) against PyHessian's
  ``hessian(...).trace()`` with its default stopping rule (``maxIter=100, tol=1e-3``: stop when
  the running mean changes by less than 0.1 %), one ``hessian`` object per group as its API
  requires. The relative standard error PyHessian reached is computed from the samples it returns.
* lambda_max: fairquant's Lanczos against PyHessian's ``eigenvalues()`` (power iteration, default
  ``maxIter=100, tol=1e-3``), and whether they agree within 5 %.

Wall-clock times include each tool's setup (forward and first backward). The script prints the
ratios; it does not extrapolate anything it did not run.

    python bench/curvature.py [--width 16 --images 1000 --image-size 32 --epochs 3]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from pyhessian import hessian

from fairquant.data import DataSpec, load_dataset
from fairquant.metrics.curvature import GroupCurvature, hutchpp, lanczos_max
from fairquant.models import ModelSpec
from fairquant.train import TrainConfig, fit, load_checkpoint

GROUPS = 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--rtol", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (both)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        model, data = ckpt.model, load_dataset(ckpt.data_spec)
    else:
        data = load_dataset(DataSpec(name="digits", image_size=args.image_size, seed=args.seed))
        start = time.perf_counter()
        model, _ = fit(
            data,
            ModelSpec("resnet18", args.width),
            TrainConfig(epochs=args.epochs, seed=args.seed),
            show_progress=False,
        )
        print(
            f"trained resnet18 w{args.width} for {args.epochs} epochs in "
            f"{time.perf_counter() - start:.0f}s"
        )
    model.eval()
    x = torch.cat([data.train.x, data.test.x])
    y = torch.cat([data.train.y, data.test.y])
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    pick = pick[: args.images]
    x, y = x[pick], y[pick]
    g = y * GROUPS // data.num_classes  # digits: 0-1, 2-3, 4-5, 6-7, 8-9
    names = [f"{2 * a}-{2 * a + 1}" for a in range(GROUPS)]
    print(
        f"{len(x)} images {tuple(x.shape[2:])}, groups {torch.bincount(g).tolist()}, "
        f"{torch.get_num_threads()} threads"
    )

    start = time.perf_counter()
    op = GroupCurvature(model, x, y, g, GROUPS, parameters="all")  # PyHessian: all parameters
    setup = time.perf_counter() - start
    print(f"dimension {op.dim}; fairquant setup (forward + first backward, kept) {setup:.1f}s")
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    ours_tr = [
        hutchpp(
            lambda v, a=a: op.matvec(a, v), op.dim, rtol=args.rtol, max_probes=300, generator=gen
        )
        for a in range(GROUPS)
    ]
    t_trace = setup + time.perf_counter() - start
    start = time.perf_counter()
    ours_eig = [
        lanczos_max(lambda v, a=a: op.matvec(a, v), op.dim, rtol=1e-3, generator=gen)
        for a in range(GROUPS)
    ]
    t_eig = setup + time.perf_counter() - start

    ph = {"trace": [], "se": [], "probes": [], "lam": [], "lam_time": 0.0, "trace_time": 0.0}
    ph5 = {"trace": [], "se": [], "probes": [], "time": 0.0}
    for a in range(GROUPS):
        m = g == a
        start = time.perf_counter()
        torch.manual_seed(args.seed + a)
        h = hessian(model, F.cross_entropy, data=(x[m], y[m]), cuda=False)
        samples = np.asarray(h.trace())
        ph["trace_time"] += time.perf_counter() - start
        ph["trace"].append(samples.mean())
        se = samples.std(ddof=1) / math.sqrt(len(samples)) if len(samples) > 1 else math.inf
        ph["se"].append(se)
        ph["probes"].append(len(samples))
        # the same error as fairquant: PyHessian's own trace(), one probe per call, until the
        # relative standard error of its samples reaches --rtol (at least 10, at most 300 probes)
        start = time.perf_counter()
        h = hessian(model, F.cross_entropy, data=(x[m], y[m]), cuda=False)
        more: list[float] = []
        while len(more) < 300:
            more += h.trace(maxIter=1)
            se5 = np.std(more, ddof=1) / math.sqrt(len(more)) if len(more) > 1 else math.inf
            if len(more) >= 10 and se5 <= args.rtol * abs(np.mean(more)):
                break
        ph5["time"] += time.perf_counter() - start
        ph5["trace"].append(np.mean(more))
        ph5["se"].append(se5)
        ph5["probes"].append(len(more))
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        h = hessian(model, F.cross_entropy, data=(x[m], y[m]), cuda=False)
        lam, _ = h.eigenvalues()
        ph["lam_time"] += time.perf_counter() - start
        ph["lam"].append(lam[0])
        model.zero_grad(set_to_none=True)

    print(
        "\ngroup      n   trace(fq) ± se       relSE  mv  | trace(PyH) ± se      relSE  probes"
        " | lmax(fq)  mv | lmax(PyH)  agree"
    )
    for a in range(GROUPS):
        t, (lam, lam_mv) = ours_tr[a], ours_eig[a]
        rel_ph = ph["se"][a] / abs(ph["trace"][a])
        agree = abs(lam - ph["lam"][a]) / abs(ph["lam"][a])
        print(
            f"{names[a]:<6} {int(op.counts[a]):>5} {t.value:10.3f} ± {t.stderr:8.3f} "
            f"{t.rel_error:6.1%} {t.matvecs:>3} | "
            f"{ph['trace'][a]:10.3f} ± {ph['se'][a]:8.3f} {rel_ph:6.1%} {ph['probes'][a]:>4} "
            f"| {lam:8.4f} {lam_mv:>3} | {ph['lam'][a]:8.4f} {agree:6.2%}"
        )
    print(
        f"\ntrace to {args.rtol:.0%} rel. SE, all groups: fairquant {t_trace:.1f}s "
        f"({sum(t.matvecs for t in ours_tr)} matvecs), PyHessian default rule "
        f"{ph['trace_time']:.1f}s ({sum(ph['probes'])} HVPs, worst rel. SE "
        f"{max(s / abs(t) for s, t in zip(ph['se'], ph['trace'], strict=True)):.1%}): "
        f"ratio {ph['trace_time'] / t_trace:.2f}x"
    )
    rel5 = max(s / abs(t) for s, t in zip(ph5["se"], ph5["trace"], strict=True))
    print(
        f"PyHessian trace() to {args.rtol:.0%} rel. SE (one probe per call, fairquant's rule): "
        f"{ph5['time']:.1f}s ({sum(ph5['probes'])} HVPs, per group {ph5['probes']}, worst rel. "
        f"SE {rel5:.1%}, traces {[round(float(t), 1) for t in ph5['trace']]}): "
        f"ratio {ph5['time'] / t_trace:.2f}x"
    )
    print(
        f"lambda_max, all groups: fairquant {t_eig:.1f}s "
        f"({sum(mv for _, mv in ours_eig)} matvecs), PyHessian power iteration "
        f"{ph['lam_time']:.1f}s: ratio {ph['lam_time'] / t_eig:.2f}x"
    )


if __name__ == "__main__":
    main()
