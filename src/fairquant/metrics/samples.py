"""Per-sample outcomes of several models on one test set: what paired comparisons start from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PerSample"]


@dataclass(frozen=True)
class PerSample:
    """What every paired comparison of an audit is computed from, one entry per test sample.

    ``y`` and ``g`` are class and group codes; ``predictions`` and ``losses`` map each precision's
    name (fp32 first) to its predicted class and per-sample cross-entropy on the same samples.
    """

    y: np.ndarray
    g: np.ndarray
    predictions: dict[str, np.ndarray]
    losses: dict[str, np.ndarray]
