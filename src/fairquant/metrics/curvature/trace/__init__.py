"""Stochastic trace estimators, one per module: Hutchinson, Hutch++ and the per-group split
(exact GGN trace + shared-probe residual), with their common estimate and probe budget."""

from fairquant.metrics.curvature.trace.base import ProbeBudget, TraceEstimate
from fairquant.metrics.curvature.trace.hutchinson import hutchinson
from fairquant.metrics.curvature.trace.hutchpp import hutchpp
from fairquant.metrics.curvature.trace.split import group_traces

__all__ = ["ProbeBudget", "TraceEstimate", "group_traces", "hutchinson", "hutchpp"]
