"""The papers' weight quantizer as pure functions on tensors.

Signed symmetric uniform quantization, one scale per tensor (Liu et al., 2025, Eq. 2;
Bellam & Kim): with ``q = 2^(b-1) - 1``,

    s = max|w| / q,        w~ = s * clamp(round(w / s), -2^(b-1), q).

Zero maps to zero, the largest-magnitude weight is represented exactly (no clipping error), and
the grid has ``2^b - 1`` levels ``{-q, ..., q} * s``; ``b = 2`` gives ternary weights.
Per-channel quantization uses one such scale per output channel (dimension 0).

For quantization-aware training the rounding uses the straight-through estimator (Bengio et al.,
2013): the forward pass rounds, the backward pass treats rounding as the identity, and the clamp
passes gradient 1 inside ``[-2^(b-1), q]`` and 0 outside.
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


def symmetric_scale(w: Tensor, bits: int, *, per_channel: bool = False) -> Tensor:
    """Scale ``max|w| / (2^(b-1) - 1)``: a scalar, or ``(C, 1, ...)`` per output channel."""
    q = 2 ** (check_bits(bits) - 1) - 1
    a = w.detach().abs()
    if per_channel and w.ndim > 1:
        return a.amax(dim=tuple(range(1, w.ndim)), keepdim=True) / q
    return a.max() / q


def clamp_ste(x: Tensor, lo: float, hi: float) -> Tensor:
    """``clamp(x, lo, hi)`` forward; backward gradient 1 on the closed range ``[lo, hi]`` and 0
    outside.

    Written out because torch 2.14 gives ``torch.clamp`` gradient 0 *at* the bounds (2.13 gave
    1), which would freeze the largest weight, always rounded onto the bound ``q``, during QAT.
    """
    inside = (x >= lo) & (x <= hi)
    return torch.where(inside, x, x.detach().clamp(lo, hi))


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward, identity backward (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def quantize_symmetric(
    w: Tensor, bits: int, *, per_channel: bool = False, ste: bool = False
) -> Tensor:
    """Quantize-dequantize ``w`` to ``bits`` with symmetric scales (float in, float out).

    ``ste=True`` makes it differentiable with the straight-through estimator.

    >>> quantize_symmetric(torch.tensor([-1.0, -0.4, 0.0, 0.2, 0.6]), 2).tolist()
    [-1.0, -0.0, 0.0, 0.0, 1.0]
    """
    s = symmetric_scale(w, bits, per_channel=per_channel)
    s = torch.where(s == 0, torch.ones_like(s), s)  # all-zero tensors/channels stay zero
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    z = w / s
    if not ste:
        return torch.clamp(torch.round(z), lo, hi) * s
    return clamp_ste(round_ste(z), lo, hi) * s
