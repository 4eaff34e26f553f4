"""Per-group curvature tables: gradient norm, Hessian trace and largest eigenvalue per group."""

from __future__ import annotations

from typing import Literal

import pandas as pd
import torch
from torch import Tensor, nn

from fairquant.errors import ConfigError
from fairquant.metrics.curvature.eigen import lanczos_max
from fairquant.metrics.curvature.introspect import Curvature, Parameters
from fairquant.metrics.curvature.operators.group import GroupCurvature
from fairquant.metrics.curvature.trace.base import ProbeBudget, TraceEstimate
from fairquant.metrics.curvature.trace.hutchinson import hutchinson
from fairquant.metrics.curvature.trace.hutchpp import hutchpp


def group_curvature(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    g: Tensor,
    group_names: list[str],
    *,
    curvature: Curvature = "hessian",
    parameters: Parameters = "quantized",
    batch_size: int = 1024,
    **options,
) -> pd.DataFrame:
    """Per-group curvature of ``model`` on ``(x, y, g)``: :func:`curvature_table` of a fresh
    :class:`GroupCurvature` (``options`` go to :func:`curvature_table`)."""
    op = GroupCurvature(
        model,
        x,
        y,
        g,
        len(group_names),
        parameters=parameters,
        curvature=curvature,
        batch_size=batch_size,
    )
    return curvature_table(op, group_names, **options)


def curvature_table(
    op: GroupCurvature,
    group_names: list[str],
    *,
    trace_method: Literal["hutchpp", "hutchinson"] = "hutchpp",
    traces: list[TraceEstimate] | None = None,
    rtol: float = 0.05,
    min_probes: int = 10,
    max_probes: int = 200,
    sketch: int = 10,
    block: int = 10,
    eig_rtol: float = 1e-3,
    eig_min_iter: int = 3,
    eig_max_iter: int = 50,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-group ``grad_norm``, ``trace`` (with ``trace_se``, ``trace_matvecs``) and ``lambda_max``.

    One row per group with samples (groups without samples are left out, never NaN); columns
    ``group, n, loss, grad_norm, trace, trace_se, trace_matvecs, lambda_max, lambda_matvecs``.
    The trace stops at ``trace_se <= rtol * |trace|`` (at least ``min_probes``,
    at most ``max_probes`` probes, in blocks of ``block``: a
    :class:`~fairquant.metrics.curvature.trace.base.ProbeBudget`); ``lambda_max`` (Lanczos,
    largest algebraic) at a residual ``<= eig_rtol * |λ|`` or ``eig_max_iter`` matvecs, started
    from the group's gradient (plus a random vector, :func:`lanczos_max`). ``traces`` (one per
    group, e.g. from :func:`~fairquant.metrics.curvature.trace.split.group_traces`) replace the
    per-group trace estimate.
    """
    if trace_method not in ("hutchpp", "hutchinson"):
        raise ConfigError(f"trace_method must be 'hutchpp' or 'hutchinson'; got {trace_method!r}")
    budget = ProbeBudget(rtol=rtol, min_probes=min_probes, max_probes=max_probes, block=block)
    gen = torch.Generator().manual_seed(seed)
    norms = op.grad_norm()
    rows = []
    for a in op.present():
        mv = lambda v, a=a: op.matvec(a, v)  # noqa: E731
        if traces is not None:
            tr = traces[a]
        elif trace_method == "hutchpp":
            sketched = min(sketch, op.dim - 1)
            tr = hutchpp(mv, op.dim, sketch=sketched, budget=budget, generator=gen, dtype=op.dtype)
        else:
            tr = hutchinson(mv, op.dim, budget=budget, generator=gen, dtype=op.dtype)
        lam, lam_mv = lanczos_max(
            mv,
            op.dim,
            rtol=eig_rtol,
            min_iter=min(eig_min_iter, eig_max_iter),
            max_iter=eig_max_iter,
            generator=gen,
            dtype=op.dtype,
            start=op.grads[a] if op.grads[a].norm() > 0 else None,
        )
        rows.append(
            {
                "group": group_names[a],
                "n": int(op.counts[a]),
                "loss": op.loss[a].item(),
                "grad_norm": norms[a].item(),
                "trace": tr.value,
                "trace_se": tr.stderr,
                "trace_matvecs": tr.matvecs,
                "lambda_max": lam,
                "lambda_matvecs": lam_mv,
            }
        )
    return pd.DataFrame(rows)
