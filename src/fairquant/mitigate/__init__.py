"""Mitigations of quantization's disparate impact: resampling, loss weights, augmentation."""

from fairquant.mitigate.resample import resample_indices
from fairquant.mitigate.weights import class_weights

__all__ = ["class_weights", "resample_indices"]
