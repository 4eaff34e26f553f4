"""Curvature of the loss per group: gradient norm, Hessian trace and largest eigenvalue.

Liu et al. (ICML 2025, Theorem 4.1) bound a group's excess loss under quantization by its
gradient norm ``||g_a|| = ||∇_θ L(θ; D_a)||`` and its Hessian trace ``Tr(H_a)``,
``H_a = ∇²_θ L(θ; D_a)``; Bellam & Kim relate the disparity to ``||g_a||`` and the largest
Hessian eigenvalue ``λ_max(H_a)``. Here ``L(θ; D_a)`` is the mean cross-entropy over the group's
samples.

As in curvlinops, the estimators are small pure functions of a batched matrix-vector product
(:mod:`.linalg`), kept apart from the operators that supply it and from the tables built on both:

* :mod:`.trace`: Hutchinson (1989) and Hutch++ (Meyer et al., 2021), each with a standard error
  and a relative-error stopping rule (:class:`ProbeBudget`), and :func:`group_traces`, every
  group's trace at once as an exact GGN trace plus a shared-probe residual;
* :mod:`.eigen`: Lanczos for the largest algebraic eigenvalue;
* :mod:`.diagonal`: :func:`ggn_diagonal`, every group's gradient and exact GGN diagonal in one pass;
* :mod:`.operators`: :class:`GroupCurvature` (per-group Hessian or GGN matvecs on kept graphs,
  fairquant's own part: PyHessian and curvlinops take one dataset at a time) and
  :class:`SampleCurvature` (per-sample forward-over-forward terms of all groups in one pass);
* :mod:`.introspect`: which parameters, and the check that the model is a fixed function;
* :mod:`.tables`: :func:`curvature_table` and :func:`group_curvature`, one row per group.

Whether a model is piecewise linear (so that ``Tr(H_a) = Tr(G_a)`` exactly) is declared by the
models themselves: :func:`fairquant.models.piecewise.is_piecewise_linear`, re-exported here.
"""

from fairquant.metrics.curvature.diagonal import GroupDiagonal, ggn_diagonal
from fairquant.metrics.curvature.eigen import lanczos_max
from fairquant.metrics.curvature.introspect import (
    Curvature,
    Parameters,
    check_deterministic,
    curvature_parameters,
)
from fairquant.metrics.curvature.linalg import MatVec, rademacher
from fairquant.metrics.curvature.operators import GroupCurvature, SampleCurvature
from fairquant.metrics.curvature.tables import curvature_table, group_curvature
from fairquant.metrics.curvature.trace import (
    ProbeBudget,
    TraceEstimate,
    group_traces,
    hutchinson,
    hutchpp,
)
from fairquant.models.piecewise import is_piecewise_linear

__all__ = [
    "Curvature",
    "GroupCurvature",
    "GroupDiagonal",
    "MatVec",
    "Parameters",
    "ProbeBudget",
    "SampleCurvature",
    "TraceEstimate",
    "check_deterministic",
    "curvature_parameters",
    "curvature_table",
    "ggn_diagonal",
    "group_curvature",
    "group_traces",
    "hutchinson",
    "hutchpp",
    "is_piecewise_linear",
    "lanczos_max",
    "rademacher",
]
