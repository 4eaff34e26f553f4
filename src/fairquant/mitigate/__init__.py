"""Mitigations of quantization's disparate impact: resampling, loss weights, augmentation,
balanced calibration and FairQAT, as named options (:mod:`fairquant.mitigate.pipeline`); mixed
precision's integer programs and the measured search's evaluations."""

from fairquant.mitigate.allocate import allocate_bits, allocate_precision, smallest_bits
from fairquant.mitigate.augment import augment_images, balance_augment, balancing_key
from fairquant.mitigate.pipeline import (
    VALID_NAMES,
    Mitigation,
    calibration_note,
    mitigated_quantizer,
    mitigated_split,
    mitigated_weights,
    parse_mitigation,
    parse_mitigations,
    train_mitigated,
)
from fairquant.mitigate.repair import CALIBRATION_SETS, calibration_set
from fairquant.mitigate.resample import resample_indices
from fairquant.mitigate.search import METHODS as SEARCH_METHODS
from fairquant.mitigate.search import Evaluator
from fairquant.mitigate.weights import class_weights

__all__ = [
    "VALID_NAMES",
    "Mitigation",
    "augment_images",
    "balance_augment",
    "balancing_key",
    "calibration_note",
    "class_weights",
    "mitigated_quantizer",
    "mitigated_split",
    "mitigated_weights",
    "parse_mitigation",
    "parse_mitigations",
    "resample_indices",
    "train_mitigated",
]
# mixed precision: the integer programs and the measured search's shared evaluations
__all__ += ["SEARCH_METHODS", "Evaluator", "allocate_bits", "allocate_precision", "smallest_bits"]
# repair: the calibration sets it tries
__all__ += ["CALIBRATION_SETS", "calibration_set"]
