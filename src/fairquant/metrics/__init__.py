"""Group metrics: accuracy, loss, excess loss G(a) and the disparity φ(D)."""

from fairquant.metrics.functional import (
    excess_loss,
    group_counts,
    group_mean,
    per_sample_loss,
    phi,
)

__all__ = ["excess_loss", "group_counts", "group_mean", "per_sample_loss", "phi"]
