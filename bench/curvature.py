"""Per-group curvature: fairquant against PyHessian and curvlinops, side by side in one run on
the same model.

A narrow CIFAR-style ResNet-18 (``--width``, default 16) is trained on UTKFace ethnicity at
32x32 gray (``--epochs``, cached as ``--work/utkface_r18w<width>.pt``) unless ``--checkpoint`` is
given; ``--images`` test images (default 1,000) are drawn, seeded and stratified as evenly as the
groups allow, from ``--groups`` groups (default: all 5). Measured, per group, in one process with
the same threads, model and data:

* **reference** trace: the exact per-group GGN trace. The ResNet is piecewise linear in each
  layer's weights (ReLU, BatchNorm in eval mode, average pooling, residual sums), so its Hessian
  trace equals the GGN trace exactly (tests/metrics/test_curvature.py checks the identity against
  the float64 Hessian); the bench also checks it statistically: fairquant's general estimator (exact
  GGN trace + Hutchinson on the residual ``H - G``, which assumes nothing) must agree within its
  standard error.
* **trace**, fairquant: (a) the general estimator to ``--rtol`` relative standard error for every
  group; (b) the piecewise-linear path (exact, no probes). PyHessian: ``hessian(...).trace()``
  with its default stopping rule (``maxIter=100, tol=1e-3``: stop when the running mean changes by
  less than 0.1 %), one ``hessian`` object per group, and its relative error against the
  reference; and PyHessian's probes continued until *its* relative standard error reaches
  ``--rtol`` (at most ``--ph-max-probes``).
* **trace**, curvlinops (``curvlinops-for-pytorch``, Dangel et al.): its
  ``HessianLinearOperator`` (forward-over-reverse Hessian-vector products, ``vmap``-ed over the
  probe matrix) on each group's mean cross-entropy, with its Hutch++ (Meyer et al., 2021) and
  XTrace (Epperly et al., 2024) estimators. They take a fixed number of products and report no
  error, so each runs on a doubling budget (6, 12, 24, ... products, up to ``--cl-max-matvecs``)
  until its estimate lands within ``--rtol`` of the reference: the budget is chosen with the
  answer in hand, which favours curvlinops (a user without the reference cannot stop there).
  Printed per group: the products and the seconds of that run alone, and of the whole schedule.
  fairquant's traces come for all groups from one pass, so its per-group time is its total / k.
* **lambda_max**: fairquant's Lanczos (largest algebraic, Ritz-residual stop at ``--eig-rtol``,
  at least ``--eig-min-iter`` steps, started from the group's gradient plus a random vector, as
  ``fairquant explain`` does) against PyHessian's power iteration (default ``maxIter=100,
  tol=1e-3``); agreement in %, and each one's error against a reference ``λ_max`` (Lanczos run
  to a 1e-6 residual, not timed). Both tools pay the same double-backward per Hessian-vector
  product (PyHessian's are counted by wrapping its ``hessian_vector_product``), so the speed-up
  is the ratio of product counts, diluted by the setup each group needs (a forward and a first
  backward) in both; the script prints the counts, the seconds per product, and how few products
  in all a given ratio would need.

* **diagonal** (``--parts diagonal``, alone): fairquant's exact per-group GGN diagonal and
  gradient of the quantized weights (:func:`~fairquant.metrics.curvature.ggn_diagonal`, one pass
  for all groups, chunks of ``--chunk``) against BackPACK's ``DiagGGNExact``
  (``backpack-for-pytorch``, ``extend(model, use_converter=True)``, one backward pass per group,
  the gradient from the same pass), ``--repeats`` times each, interleaved (the order alternates):
  per-run seconds, medians, the ratio, and the largest difference of the two results.

Wall-clock times include each tool's setup (forward and first backward; BackPACK's ``extend``).
The script prints the ratios; it extrapolates nothing it did not run.

    python bench/curvature.py --root ../shared/data/UTKFace.tar.gz [--images 1000 --groups 5
                              --width 16 --epochs 3 --work bench-curvature]
                              [--parts trace|lambda|both]
    python bench/curvature.py --checkpoint model.pt [...] [--skip-curvlinops] [--skip-pyhessian]
    python bench/curvature.py --checkpoint model.pt --parts diagonal --groups 10 --images 540
                              --threads 2 [--repeats 5 --chunk 32]

The curvlinops and PyHessian parts import those packages, the diagonal part BackPACK (the
``bench`` extra has all three).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fairquant.data import DataSpec, load_dataset
from fairquant.metrics import (
    GroupCurvature,
    ProbeBudget,
    SampleCurvature,
    curvature_parameters,
    ggn_diagonal,
    group_traces,
    lanczos_max,
)
from fairquant.models import ModelSpec
from fairquant.train import TrainConfig, fit, load_checkpoint, save_checkpoint


def _pyhessian():
    """PyHessian's module (not the class of the same name its package exports), imported when a
    part that runs it is asked for."""
    return importlib.import_module("pyhessian.hessian")


def _model_and_data(args):
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        return ckpt.model, load_dataset(ckpt.data_spec)
    spec = DataSpec(
        name="utkface",
        root=args.root,
        target="ethnicity",
        group="ethnicity",
        image_size=32,
        seed=args.seed,
        options={"grayscale": True},
    )
    data = load_dataset(spec)
    path = Path(args.work) / f"utkface_r18w{args.width}_e{args.epochs}.pt"
    if path.is_file():
        return load_checkpoint(path).model, data
    start = time.perf_counter()
    config = TrainConfig(epochs=args.epochs, seed=args.seed)
    model, history = fit(data, ModelSpec("resnet18", args.width), config, show_progress=False)
    save_checkpoint(
        path,
        model=model,
        model_spec=ModelSpec("resnet18", args.width),
        dataset=data,
        train_config=config,
        history=history,
    )
    print(f"trained in {time.perf_counter() - start:.0f}s; cached {path}")
    return model, data


def _draw(test, groups: int, images: int, seed: int):
    """``images`` test samples from the first ``groups`` groups, as evenly as their sizes allow."""
    gen = torch.Generator().manual_seed(seed)
    pools = [torch.nonzero(test.g == a).flatten() for a in range(groups)]
    pools = [p[torch.randperm(len(p), generator=gen)] for p in pools]
    take = [0] * groups
    while sum(take) < images and any(t < len(p) for t, p in zip(take, pools, strict=True)):
        for a in range(groups):
            if take[a] < len(pools[a]) and sum(take) < images:
                take[a] += 1
    idx = torch.cat([p[:t] for p, t in zip(pools, take, strict=True)]).sort().values
    return test.x[idx], test.y[idx], test.g[idx]


def _pyhessian_trace(model, x, y, rtol: float, max_probes: int, seed: int):
    """PyHessian's default rule, then its probes continued to ``rtol`` relative SE."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    start = time.perf_counter()
    h = _pyhessian().hessian(model, F.cross_entropy, data=(x, y), cuda=False)
    default = list(h.trace())
    t_default = time.perf_counter() - start
    more = list(default)
    while len(more) < max_probes:
        se = np.std(more, ddof=1) / math.sqrt(len(more)) if len(more) > 1 else math.inf
        if len(more) >= 10 and se <= rtol * abs(np.mean(more)):
            break
        more += h.trace(maxIter=1)
    t_more = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return default, t_default, more, t_more


class _CountedProducts:
    """Wraps PyHessian's ``hessian_vector_product`` (looked up in its module at each call) to
    count the products it computes."""

    def __init__(self) -> None:
        self.calls = 0
        self._module = _pyhessian()
        self._inner = self._module.hessian_vector_product

    def __enter__(self) -> _CountedProducts:
        def counted(*args, **kwargs):
            self.calls += 1
            return self._inner(*args, **kwargs)

        self._module.hessian_vector_product = counted
        return self

    def __exit__(self, *exc) -> None:
        self._module.hessian_vector_product = self._inner


def _product_seconds(gc: GroupCurvature, group: int, repeats: int = 3) -> float:
    """Seconds per Hessian-vector product of ``group`` on its kept graph (the same double-backward
    PyHessian runs on its ``gradsH``)."""
    v = torch.randn(1, gc.dim)
    gc.matvec(group, v)
    start = time.perf_counter()
    for _ in range(repeats):
        gc.matvec(group, v)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint (skips training)")
    ap.add_argument("--root", default=None, help="UTKFace.tar.gz, to train on (no --checkpoint)")
    ap.add_argument("--work", default="bench-curvature", help="where the trained model is cached")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--groups", type=int, default=5)
    ap.add_argument("--rtol", type=float, default=0.05)
    ap.add_argument("--max-probes", type=int, default=300, help="cap of fairquant's probes")
    ap.add_argument("--ph-max-probes", type=int, default=300, help="cap of PyHessian's probes")
    ap.add_argument(
        "--cl-max-matvecs", type=int, default=384, help="cap of curvlinops' doubling budget"
    )
    ap.add_argument("--skip-curvlinops", action="store_true", help="leave curvlinops out")
    ap.add_argument(
        "--skip-pyhessian",
        action="store_true",
        help="leave PyHessian's trace out (its run to --rtol takes the longest)",
    )
    ap.add_argument("--eig-rtol", type=float, default=1e-2)
    ap.add_argument("--eig-min-iter", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (both)")
    ap.add_argument(
        "--parts",
        choices=["trace", "lambda", "both", "diagonal"],
        default="both",
        help="which comparison to run (the PyHessian trace to --rtol takes the longest; "
        "'diagonal': the per-group GGN diagonal against BackPACK, alone)",
    )
    ap.add_argument("--repeats", type=int, default=5, help="diagonal: interleaved repeats")
    ap.add_argument("--chunk", type=int, default=32, help="diagonal: fairquant's chunk of samples")
    ap.add_argument(
        "--skip-general",
        action="store_true",
        help="skip fairquant's general trace estimator (only the piecewise-linear exact path)",
    )
    args = ap.parse_args()
    if args.checkpoint is None and args.root is None:
        ap.error("give --checkpoint, or --root with the UTKFace archive to train on")
    if args.threads:
        torch.set_num_threads(args.threads)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    model, data = _model_and_data(args)
    model.eval()
    k = args.groups
    x, y, g = _draw(data.test, k, args.images, args.seed)
    names = data.group_names[:k]
    print(
        f"{len(x)} test images {tuple(x.shape[1:])}, groups "
        f"{dict(zip(names, torch.bincount(g, minlength=k).tolist(), strict=True))}, "
        f"{torch.get_num_threads()} threads"
    )

    if args.parts in ("trace", "both"):
        _trace_part(args, model, x, y, g, names)
    if args.parts in ("lambda", "both"):
        _lambda_part(args, model, x, y, g, names)
    if args.parts == "diagonal":
        _diagonal_part(args, model, x, y, g, names)


def _backpack_diagonal(model, x, y, g, k):
    """BackPACK's ``DiagGGNExact`` and gradient of each group's mean cross-entropy with respect to
    the quantized weights, group by group (one backward pass each), on a converted copy of
    ``model``: (diagonals, gradients), each a list per group of tensors per weight, and the seconds
    ``extend`` took."""
    from backpack import backpack, extend
    from backpack.extensions import DiagGGNExact

    work = copy.deepcopy(model).eval()
    weights = {id(p) for p in curvature_parameters(work, "quantized")}
    params = [p for p in work.parameters() if id(p) in weights]
    for p in work.parameters():
        p.requires_grad_(id(p) in weights)
    start = time.perf_counter()
    net = extend(work, use_converter=True)
    loss_fn = extend(torch.nn.CrossEntropyLoss())
    t_extend = time.perf_counter() - start
    diags, grads = [], []
    for a in range(k):
        m = g == a
        net.zero_grad(set_to_none=True)
        loss = loss_fn(net(x[m]), y[m])
        with backpack(DiagGGNExact()):
            loss.backward()
        diags.append([p.diag_ggn_exact.detach().clone() for p in params])
        grads.append([p.grad.detach().clone() for p in params])
    return diags, grads, t_extend


def _diagonal_part(args, model, x, y, g, names) -> None:
    """fairquant's exact per-group GGN diagonal (one pass, all groups) against BackPACK's
    ``DiagGGNExact`` (group by group), ``--repeats`` times each, interleaved."""
    k = len(names)
    times = {"fairquant": [], "BackPACK": []}
    extend_s = []
    for rep in range(args.repeats):
        order = ("fairquant", "BackPACK") if rep % 2 == 0 else ("BackPACK", "fairquant")
        for tool in order:
            start = time.perf_counter()
            if tool == "fairquant":
                ours = ggn_diagonal(model, x, y, g, k, chunk=args.chunk)
            else:
                bp_diag, bp_grad, t_ext = _backpack_diagonal(model, x, y, g, k)
                extend_s.append(t_ext)
            times[tool].append(time.perf_counter() - start)
        print(
            f"repeat {rep + 1}: fairquant {times['fairquant'][-1]:.2f}s, BackPACK "
            f"{times['BackPACK'][-1]:.2f}s (extend {extend_s[-1]:.2f}s)",
            flush=True,
        )
    keys = list(ours.diag)
    worst_diag = worst_grad = 0.0
    for a in range(k):
        for key, d, gr in zip(keys, bp_diag[a], bp_grad[a], strict=True):
            ref_d, ref_g = d.double(), gr.double()
            worst_diag = max(worst_diag, _rel(ours.diag[key][a], ref_d))
            worst_grad = max(worst_grad, _rel(ours.grads[key][a], ref_g))
    med = {tool: float(np.median(t)) for tool, t in times.items()}
    print(
        f"\nper-group GGN diagonal and gradient of {len(keys)} quantized weights ({ours.dim} "
        f"entries), {k} groups, {len(x)} images, {torch.get_num_threads()} threads, "
        f"{args.repeats} interleaved repeats"
    )
    print(
        f"largest difference fairquant - BackPACK, relative to BackPACK's largest entry of the "
        f"weight: diagonal {worst_diag:.1e}, gradient {worst_grad:.1e}"
    )
    print("tool        median s  min s   max s")
    for tool, t in times.items():
        print(f"{tool:<10} {med[tool]:8.2f} {min(t):6.2f} {max(t):7.2f}")
    ratios = [b / f for f, b in zip(times["fairquant"], times["BackPACK"], strict=True)]
    print(
        f"BackPACK / fairquant: ratio of medians {med['BackPACK'] / med['fairquant']:.2f}x, "
        f"median of paired ratios {float(np.median(ratios)):.2f}x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}x); BackPACK's extend "
        f"{float(np.median(extend_s)):.2f}s of its time"
    )


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |ours - ref| / max |ref|`` (0 when both are 0)."""
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


def _trace_part(args, model, x, y, g, names) -> None:
    k = len(names)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    op = SampleCurvature(model, x, y, g, k, parameters="all")  # PyHessian: all parameters
    ggn = op.ggn_trace()
    t_exact = time.perf_counter() - start
    print(f"dimension {op.dim}; exact GGN traces {t_exact:.1f}s", flush=True)
    ours, t_general = None, math.nan
    if not args.skip_general:
        budget = ProbeBudget(rtol=args.rtol, max_probes=args.max_probes, block=5)
        ours = group_traces(op, budget=budget, generator=gen)
        t_general = time.perf_counter() - start
        print(f"general estimator (exact GGN + residual) {t_general:.1f}s", flush=True)

    if not args.skip_curvlinops:
        _curvlinops_part(args, model, x, y, g, names, ggn, t_exact, ours, t_general)
    if args.skip_pyhessian:
        return

    ph_default, ph_more = [], []
    t_ph_default = t_ph_more = 0.0
    for a in range(k):
        m = g == a
        d, td, more, tm = _pyhessian_trace(
            model, x[m], y[m], args.rtol, args.ph_max_probes, args.seed + a
        )
        ph_default.append(d)
        ph_more.append(more)
        t_ph_default += td
        t_ph_more += tm
        print(
            f"PyHessian {names[a]}: default trace {np.mean(d):.3f} ({len(d)} probes, {td:.1f}s), "
            f"to rtol {np.mean(more):.3f} ({len(more)} probes, {tm:.1f}s)",
            flush=True,
        )

    print(
        "\ngroup        n  ref Tr     | fq general ± se (probes)  | PyH default (probes) err"
        "  | PyH to rtol (probes) err"
    )
    worst_default = 0.0
    for a in range(k):
        ref = ggn[a].item()
        general = (
            f"{ours[a].value:10.3f} ± {ours[a].stderr:7.3f} ({ours[a].matvecs:>3})"
            if ours is not None
            else f"{'skipped':>26}"
        )
        d = float(np.mean(ph_default[a]))
        err = abs(d - ref) / abs(ref)
        worst_default = max(worst_default, err)
        more_err = abs(float(np.mean(ph_more[a])) - ref) / abs(ref)
        print(
            f"{names[a]:<9} {int(op.counts[a]):>4} {ref:10.3f} | {general} | "
            f"{d:10.3f} ({len(ph_default[a]):>3}) {err:6.1%} | "
            f"{np.mean(ph_more[a]):10.3f} ({len(ph_more[a]):>3}) {more_err:6.1%}"
        )
    probes = sum(len(p) for p in ph_default)
    print(
        f"\ntrace, all groups: PyHessian default rule {t_ph_default:.1f}s ({probes} HVPs, worst "
        f"error vs reference {worst_default:.1%}); PyHessian to {args.rtol:.0%} rel. SE "
        f"{t_ph_more:.1f}s ({sum(len(p) for p in ph_more)} HVPs)"
    )
    if ours is not None:
        print(
            f"fairquant general (exact GGN + residual to {args.rtol:.0%} rel. SE) "
            f"{t_general:.1f}s ({ours[0].matvecs} shared probes): ratio vs PyHessian default "
            f"{t_ph_default / t_general:.2f}x, vs PyHessian to {args.rtol:.0%} "
            f"{t_ph_more / t_general:.2f}x"
        )
    print(
        f"fairquant piecewise-linear (exact, 0 probes) {t_exact:.1f}s: ratio vs PyHessian default "
        f"{t_ph_default / t_exact:.2f}x, vs PyHessian to {args.rtol:.0%} "
        f"{t_ph_more / t_exact:.2f}x",
        flush=True,
    )


def _curvlinops_trace(model, x, y, estimator, ref: float, rtol: float, cap: int, seed: int):
    """curvlinops' ``estimator`` on a doubling budget until within ``rtol`` of ``ref``: (estimate,
    products, seconds of that run, seconds of the whole schedule); products 0 if never within."""
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    op = HessianLinearOperator(
        model, torch.nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False
    )
    budget, estimate, t_run = 6, math.nan, math.nan
    while budget <= min(cap, op.shape[0] - 1):
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        estimate = float(estimator(op, budget))
        t_run = time.perf_counter() - t0
        if abs(estimate - ref) <= rtol * abs(ref):
            return estimate, budget, t_run, time.perf_counter() - start
        budget *= 2
    return estimate, 0, t_run, time.perf_counter() - start


def _curvlinops_part(args, model, x, y, g, names, ggn, t_exact, ours, t_general) -> None:
    from curvlinops import hutchpp_trace, xtrace

    k = len(names)
    print(
        f"\ncurvlinops HessianLinearOperator, doubling budget to within {args.rtol:.0%} of the "
        "reference (chosen with the answer in hand)"
    )
    print("group     ref Tr     | estimator  estimate  err     products  run s  schedule s")
    totals = {"Hutch++": [0.0, 0.0], "XTrace": [0.0, 0.0]}
    missed = {"Hutch++": 0, "XTrace": 0}
    for a in range(k):
        m = g == a
        ref = ggn[a].item()
        for name, est in (("Hutch++", hutchpp_trace), ("XTrace", xtrace)):
            value, mv, t_run, t_all = _curvlinops_trace(
                model, x[m], y[m], est, ref, args.rtol, args.cl_max_matvecs, args.seed + a
            )
            totals[name][0] += t_run
            totals[name][1] += t_all
            missed[name] += mv == 0
            reached = f"{mv:>8}" if mv else f"{'>' + str(args.cl_max_matvecs):>8}"
            print(
                f"{names[a]:<9} {ref:10.3f} | {name:<9} {value:9.3f} "
                f"{abs(value - ref) / abs(ref):6.1%} {reached} {t_run:6.1f} {t_all:10.1f}",
                flush=True,
            )
    model.zero_grad(set_to_none=True)
    print(
        f"per group: fairquant piecewise-linear exact {t_exact / k:.2f}s"
        + (f", fairquant general to {args.rtol:.0%} SE {t_general / k:.2f}s" if ours else "")
    )
    for name, (t_run, t_all) in totals.items():
        if missed[name]:
            print(
                f"per group: curvlinops {name} did not come within {args.rtol:.0%} in "
                f"{args.cl_max_matvecs} products for {missed[name]} of {k} groups (its last run "
                f"took {t_run / k:.2f}s a group; equal-error time unknown, above that)"
            )
            continue
        print(
            f"per group: curvlinops {name} {t_run / k:.2f}s at the oracle budget "
            f"({t_all / k:.2f}s with the schedule): {t_run / t_exact:.2f}x fairquant's exact path"
            + (f", {t_run / t_general:.2f}x fairquant's general estimator" if ours else "")
        )


def _lambda_part(args, model, x, y, g, names) -> None:
    k = len(names)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    gc = GroupCurvature(model, x, y, g, k, parameters="all")
    t_setup = time.perf_counter() - start
    eig = [
        lanczos_max(
            lambda v, a=a: gc.matvec(a, v),
            gc.dim,
            rtol=args.eig_rtol,
            min_iter=args.eig_min_iter,
            generator=gen,
            start=gc.grads[a],
        )
        for a in range(k)
    ]
    t_eig = time.perf_counter() - start
    print(f"lambda_max, fairquant Lanczos {t_eig:.1f}s (setup {t_setup:.1f}s): {eig}", flush=True)

    ph_lam, ph_mv = [], []
    t_ph_lam = 0.0
    for a in range(k):
        m = g == a
        torch.manual_seed(args.seed + a)
        start = time.perf_counter()
        with _CountedProducts() as counter:
            h = _pyhessian().hessian(model, F.cross_entropy, data=(x[m], y[m]), cuda=False)
            lam, _ = h.eigenvalues()
        t_ph_lam += time.perf_counter() - start
        ph_lam.append(lam[0])
        ph_mv.append(counter.calls)
        del h
        model.zero_grad(set_to_none=True)
        print(
            f"PyHessian {names[a]}: lambda_max {lam[0]:.4f} ({counter.calls} products; "
            f"cumulative {t_ph_lam:.1f}s)",
            flush=True,
        )

    # not timed: the reference each tool is measured against, and the cost of one product
    ref = [
        lanczos_max(
            lambda v, a=a: gc.matvec(a, v),
            gc.dim,
            rtol=1e-6,
            min_iter=10,
            generator=gen,
            start=gc.grads[a],
        )[0]
        for a in range(k)
    ]
    per_product = float(np.mean([_product_seconds(gc, a) for a in range(k)]))

    print("\ngroup        n  reference | fq Lanczos (mv)  err    | PyH power (mv)  err    | agree")
    for a in range(k):
        lam, mv = eig[a]
        print(
            f"{names[a]:<9} {int(gc.counts[a]):>4} {ref[a]:9.4f} | {lam:9.4f} ({mv:>2}) "
            f"{abs(lam - ref[a]) / ref[a]:7.3%} | {ph_lam[a]:9.4f} ({ph_mv[a]:>3}) "
            f"{abs(ph_lam[a] - ref[a]) / ref[a]:7.3%} | {abs(lam - ph_lam[a]) / ph_lam[a]:6.2%}"
        )
    ours_mv, ph_total = sum(mv for _, mv in eig), sum(ph_mv)
    ratio = t_ph_lam / t_eig
    print(
        f"\nlambda_max, all groups: fairquant Lanczos {t_eig:.1f}s ({ours_mv} products), "
        f"PyHessian power iteration {t_ph_lam:.1f}s ({ph_total} products): ratio {ratio:.2f}x"
    )
    # the same per-product cost on both sides: a 5x ratio needs t_setup + n * per_product <=
    # t_ph / 5, i.e. at most this many products in all
    budget = (t_ph_lam / 5 - t_setup) / per_product
    print(
        f"one product {per_product:.2f}s on both sides; setup (forward + first backward of "
        f"every group) {t_setup:.1f}s; 5x would need at most {max(budget, 0):.1f} products in "
        f"all ({max(budget, 0) / k:.1f} a group) against fairquant's {ours_mv} "
        f"({ours_mv / k:.1f} a group)"
    )


if __name__ == "__main__":
    main()
