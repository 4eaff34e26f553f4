"""What the stochastic trace estimators share: the estimate, its probe budget and its stopping rule.

Every estimator averages quadratic forms ``vᵀ A v`` of random probes and reports the mean with its
standard error ``s / √m`` (``s``: the sample standard deviation of the ``m`` forms). Probes are
drawn in blocks (one batched matvec each) until the standard error is at most ``rtol`` times the
estimate, with at least ``min_probes`` and at most ``max_probes`` probes (:class:`ProbeBudget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fairquant.errors import ConfigError


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate: ``value ± stderr`` from ``matvecs`` matrix-vector products."""

    value: float
    stderr: float
    matvecs: int

    @property
    def rel_error(self) -> float:
        """``stderr / |value|`` (inf when the estimate is 0)."""
        return self.stderr / abs(self.value) if self.value != 0 else math.inf


@dataclass(frozen=True)
class ProbeBudget:
    """When a trace estimate stops: at ``stderr <= rtol * |estimate|`` once ``min_probes`` probes
    are drawn, or at ``max_probes`` (``rtol=0``: exactly ``max_probes``); probes come in blocks of
    ``block``, one batched matvec each. Checked when made: a bad budget is a :class:`ConfigError`.
    """

    rtol: float = 0.05
    min_probes: int = 10
    max_probes: int = 500
    block: int = 10

    def __post_init__(self) -> None:
        if self.rtol < 0:
            raise ConfigError(f"rtol must be >= 0; got {self.rtol}")
        if not 2 <= self.min_probes <= self.max_probes:
            raise ConfigError(
                f"need 2 <= min_probes <= max_probes (a standard error needs two probes); got "
                f"min_probes={self.min_probes}, max_probes={self.max_probes}"
            )
        if self.block < 1:
            raise ConfigError(f"probe block must be >= 1; got {self.block}")


def _mean_se(samples: list[Tensor]) -> tuple[Tensor, Tensor]:
    q = torch.cat(samples).double()
    mean = q.mean(0)
    if len(q) < 2:
        return mean, torch.full_like(mean, math.inf)
    return mean, q.std(0) / math.sqrt(len(q))


def sample_until(
    forms: Callable[[int], Tensor],
    *,
    offset: float | Tensor,
    budget: ProbeBudget,
    check: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Mean and standard error of the quadratic forms ``forms(m)`` returns (``(m,)``, or
    ``(m, K)`` for ``K`` estimates sharing each probe) and the number of probes drawn.

    Blocks are drawn until ``se <= rtol * |offset + mean|`` (``offset``: the part of the estimate
    known exactly) for every entry in ``check`` (all by default), or ``budget.max_probes``.
    """
    samples: list[Tensor] = []
    drawn = 0
    while drawn < budget.max_probes:
        m = min(budget.block, budget.max_probes - drawn)
        samples.append(forms(m))
        drawn += m
        mean, se = _mean_se(samples)
        ok = se <= budget.rtol * (offset + mean).abs()
        if drawn >= budget.min_probes and bool((ok if check is None else ok[list(check)]).all()):
            break
    mean, se = _mean_se(samples)
    return mean, se, drawn
