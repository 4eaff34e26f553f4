"""The papers' weight quantizer as pure functions on tensors.

Signed symmetric uniform quantization, one scale per tensor (Liu et al., 2025, Eq. 2;
Bellam & Kim): with ``q = 2^(b-1) - 1``,

    s = max|w| / q,        w~ = s * clamp(round(w / s), -2^(b-1), q).

Zero maps to zero, the largest-magnitude weight is represented exactly (no clipping error), and
the grid has ``2^b - 1`` levels ``{-q, ..., q} * s``; ``b = 2`` gives ternary weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fairquant.errors import ConfigError

MIN_BITS = 2
MAX_BITS = 16


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is an integer in 2..16, else raise a :class:`ConfigError`."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}; got {bits!r}")
    return bits


def symmetric_scale(w: Tensor, bits: int) -> Tensor:
    """Per-tensor scale ``max|w| / (2^(b-1) - 1)``."""
    return w.detach().abs().max() / (2 ** (check_bits(bits) - 1) - 1)


def quantize_symmetric(w: Tensor, bits: int) -> Tensor:
    """Quantize-dequantize ``w`` to ``bits`` with one symmetric scale (float in, float out).

    >>> quantize_symmetric(torch.tensor([-1.0, -0.4, 0.0, 0.2, 0.6]), 2).tolist()
    [-1.0, -0.0, 0.0, 0.0, 1.0]
    """
    s = symmetric_scale(w, bits)
    if s == 0:  # an all-zero tensor is already on every grid
        return w.clone()
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(w / s), lo, hi) * s
