"""Group metrics: accuracy, loss, excess loss G(a) and the disparity φ(D); group-fairness
metrics, bootstrap intervals and tests across seeds (``fairness``, ``uncertainty``, ``frame``)."""

from fairquant.metrics.frame import FairnessFrame
from fairquant.metrics.functional import group_counts, group_mean, per_sample_loss
from fairquant.metrics.uncertainty import across_seeds, paired_seed_test

__all__ = ["group_counts", "group_mean", "per_sample_loss"]
__all__ += ["FairnessFrame", "across_seeds", "paired_seed_test"]
