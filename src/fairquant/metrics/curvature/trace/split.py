"""Every group's Hessian trace at once: the exact GGN trace plus a shared-probe residual estimate.

``Tr(H_a) = Tr(G_a) + Tr(R_a)`` (:class:`~fairquant.metrics.curvature.operators.SampleCurvature`):
the GGN trace is exact from per-sample Jacobians, and only the residual is estimated, by
Hutchinson (1989) with one set of Rademacher probes shared by all groups — a control variate whose
variance ``2||offdiag R_a||_F²`` replaces the Hessian's. For a piecewise-linear network the
residual's trace is exactly 0 (:mod:`fairquant.models.piecewise`).
"""

from __future__ import annotations

import torch

from fairquant.metrics.curvature.introspect import Curvature, check_curvature
from fairquant.metrics.curvature.linalg import rademacher
from fairquant.metrics.curvature.operators.sample import SampleCurvature
from fairquant.metrics.curvature.trace.base import ProbeBudget, TraceEstimate, sample_until

#: Five probes a block: each block is one forward-over-forward pass over all the data.
DEFAULT_BUDGET = ProbeBudget(block=5)


def group_traces(
    op: SampleCurvature,
    *,
    curvature: Curvature = "hessian",
    budget: ProbeBudget = DEFAULT_BUDGET,
    piecewise_linear: bool = False,
    generator: torch.Generator,
) -> list[TraceEstimate]:
    """``Tr(H_a)`` (or ``Tr(G_a)``) of every group: exact GGN trace + shared-probe residual.

    ``Tr(G_a)`` is exact (:meth:`SampleCurvature.ggn_trace`; ``stderr`` 0, no probes). With
    ``piecewise_linear=True`` the caller asserts the network is piecewise linear in each layer's
    weights (ReLU, pooling, BatchNorm in eval mode, residual sums: the registered models), where
    ``Tr(R_a) = 0`` exactly, so ``Tr(H_a) = Tr(G_a)`` is returned exact too. Otherwise, for the
    Hessian, probes shared by all groups are drawn as ``budget`` says until every group's standard
    error is at most ``rtol`` times its estimate. ``matvecs`` counts the probes; each covers every
    group at once.
    """
    check_curvature(curvature)
    ggn = op.ggn_trace()
    if curvature == "ggn" or piecewise_linear:
        return [TraceEstimate(ggn[a].item(), 0.0, 0) for a in range(len(ggn))]
    mean, se, drawn = sample_until(
        lambda m: op.residual_forms(rademacher(m, op.dim, generator=generator, dtype=op.dtype)),
        offset=ggn,
        budget=budget,
        check=op.present(),
    )
    return [TraceEstimate((ggn[a] + mean[a]).item(), se[a].item(), drawn) for a in range(len(ggn))]
