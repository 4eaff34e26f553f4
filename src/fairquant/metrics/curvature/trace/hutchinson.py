"""Hutchinson's trace estimator (Hutchinson, 1989, "A stochastic estimator of the trace of the
influence matrix for Laplacian smoothing splines")."""

from __future__ import annotations

import torch

from fairquant.metrics.curvature.linalg import MatVec, quadratic_forms, rademacher
from fairquant.metrics.curvature.trace.base import ProbeBudget, TraceEstimate, sample_until

DEFAULT_BUDGET = ProbeBudget()


def hutchinson(
    matvec: MatVec,
    dim: int,
    *,
    budget: ProbeBudget = DEFAULT_BUDGET,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> TraceEstimate:
    """``Tr(A) = E[vᵀ A v]`` for Rademacher ``v``, with a relative-error stopping rule.

    The estimate is the mean of ``m`` quadratic forms, its standard error ``s / √m``; its variance
    per probe is ``2 ||A - diag(A)||_F²``. Probes are drawn as ``budget`` says
    (:class:`~fairquant.metrics.curvature.trace.base.ProbeBudget`).

    >>> a = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    >>> est = hutchinson(lambda v: v @ a, 5, generator=torch.Generator().manual_seed(0),
    ...                  dtype=torch.float64)
    >>> est.value, est.stderr  # a diagonal matrix: every Rademacher probe gives the exact trace
    (15.0, 0.0)
    """
    mean, se, m = sample_until(
        lambda k: quadratic_forms(matvec, rademacher(k, dim, generator=generator, dtype=dtype)),
        offset=0.0,
        budget=budget,
    )
    return TraceEstimate(mean.item(), se.item(), m)
