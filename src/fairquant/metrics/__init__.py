"""Group metrics: accuracy, loss, excess loss G(a) and the disparity φ(D); group-fairness
metrics, bootstrap intervals and tests across seeds (``fairness``, ``uncertainty``, ``frame``);
the verdict's exact paired tests (``paired``), curvature per group (``curvature``) and per-layer
sensitivity (``sensitivity``)."""

from fairquant.metrics.curvature import (
    GroupCurvature,
    ProbeBudget,
    SampleCurvature,
    curvature_parameters,
    ggn_diagonal,
    group_traces,
    lanczos_max,
)
from fairquant.metrics.frame import FairnessFrame
from fairquant.metrics.functional import group_counts, group_mean, per_sample_loss
from fairquant.metrics.paired import (
    decision_rates,
    drop_tests,
    exact_exceed_p,
    exact_exceed_rate,
    mcnemar_exact,
    table_probabilities,
)
from fairquant.metrics.policy import ALPHA, ALTERNATIVE, holm
from fairquant.metrics.sensitivity import (
    diagonal_excess,
    layer_trace_sensitivity,
    measured_excess,
    measured_layer_excess,
    predict_excess,
    taylor_excess,
)
from fairquant.metrics.uncertainty import (
    across_seeds,
    paired_seed_test,
    sign_flip_floor,
    stack_seeds,
)

__all__ = ["group_counts", "group_mean", "per_sample_loss"]
__all__ += ["FairnessFrame", "across_seeds", "paired_seed_test", "sign_flip_floor", "stack_seeds"]
# the statistics policy and the verdict's exact tests (metrics.policy, metrics.paired)
__all__ += ["ALPHA", "ALTERNATIVE", "drop_tests", "exact_exceed_p", "holm", "mcnemar_exact"]
__all__ += ["decision_rates", "exact_exceed_rate", "table_probabilities"]
# curvature per group (metrics.curvature) and per-layer, per-group sensitivity (metrics.sensitivity)
__all__ += ["GroupCurvature", "ProbeBudget", "SampleCurvature", "curvature_parameters"]
__all__ += ["ggn_diagonal", "group_traces", "lanczos_max"]
__all__ += ["diagonal_excess", "layer_trace_sensitivity", "predict_excess", "taylor_excess"]
__all__ += ["measured_excess", "measured_layer_excess"]
