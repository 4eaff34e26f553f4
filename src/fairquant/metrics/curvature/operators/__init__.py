"""The curvature operators: per-group matvecs on kept graphs (:class:`GroupCurvature`) and
per-sample forward-over-forward terms for all groups at once (:class:`SampleCurvature`)."""

from fairquant.metrics.curvature.operators.base import GroupOperator
from fairquant.metrics.curvature.operators.group import GroupCurvature
from fairquant.metrics.curvature.operators.sample import SampleCurvature

__all__ = ["GroupCurvature", "GroupOperator", "SampleCurvature"]
