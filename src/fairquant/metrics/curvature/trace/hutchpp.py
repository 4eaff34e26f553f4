"""Hutch++ (Meyer, Musco, Musco & Woodruff, 2021, "Hutch++: optimal stochastic trace
estimation")."""

from __future__ import annotations

import torch
from torch import Tensor

from fairquant.errors import ConfigError
from fairquant.metrics.curvature.linalg import MatVec, quadratic_forms, rademacher
from fairquant.metrics.curvature.trace.base import ProbeBudget, TraceEstimate, sample_until

DEFAULT_BUDGET = ProbeBudget()


def hutchpp(
    matvec: MatVec,
    dim: int,
    *,
    sketch: int = 10,
    budget: ProbeBudget = DEFAULT_BUDGET,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> TraceEstimate:
    """Hutch++ with a relative-error stopping rule.

    A sketch ``Q = orth(A S)`` of ``sketch`` Rademacher columns captures the top eigenspace, whose
    trace ``Tr(Qᵀ A Q)`` is computed exactly; Hutchinson estimates the rest,
    ``Tr((I - QQᵀ) A (I - QQᵀ))``, whose variance ``2||offdiag||_F²`` is much smaller when the
    spectrum decays (as a network Hessian's does: a few outliers, then a bulk near zero). The
    standard error is that of the Hutchinson part; its probes are drawn as ``budget`` says, until
    ``stderr <= rtol * |estimate|``. Matvecs: ``2 * sketch`` + residual probes.
    """
    if not 1 <= sketch < dim:
        raise ConfigError(f"Hutch++ sketch size must lie in 1..{dim - 1}; got {sketch}")
    s = rademacher(sketch, dim, generator=generator, dtype=dtype)
    q = torch.linalg.qr(matvec(s).T).Q  # (dim, sketch), orthonormal columns
    low_rank = (matvec(q.T) * q.T).sum().item()

    def residual_forms(k: int) -> Tensor:
        g = rademacher(k, dim, generator=generator, dtype=dtype)
        return quadratic_forms(matvec, g - (g @ q) @ q.T)

    rest, se, m = sample_until(residual_forms, offset=low_rank, budget=budget)
    return TraceEstimate(low_rank + rest.item(), se.item(), 2 * sketch + m)
