"""Standard image augmentation on a batch tensor: random crop after padding, random flip.

The images are already model-ready standardized tensors in memory, so augmentation works on the
batch as drawn, in one vectorised gather (no per-image Python loop): each image is padded by
``p`` pixels on every side, a window of the original size is cut at a random offset in
``[0, 2p]^2``, and, where the data allows it, mirrored left-right with probability 1/2 — the
CIFAR recipe of He et al. (2016, "Deep residual learning for image recognition", 4 px at 32 px).

Padding reflects the image (``torch.nn.functional.pad(mode="reflect")``) instead of filling it
with black: it needs no knowledge of the standardization, adds no constant border a model could
learn to key on, and on digits, whose borders are background, it pads with background as black
padding would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def default_padding(height: int, width: int) -> int:
    """An eighth of the shorter image side: 4 px at 32 px (He et al.), 8 at 64, 1 at 8.

    >>> default_padding(32, 32), default_padding(64, 64), default_padding(8, 8)
    (4, 8, 1)
    """
    return min(height, width) // 8


def crop_flip(x: Tensor, *, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """``x`` (N, C, H, W) with each image cropped at a random offset after reflect-padding by
    ``padding`` pixels, and mirrored left-right with probability 1/2 when ``flip``.

    The offsets and flips are drawn from ``generator`` (a CPU generator, so the same seed gives
    the same batch on any device); the output has ``x``'s shape, dtype, device and memory format.
    """
    n, _, h, w = x.shape
    p = min(padding, h - 1, w - 1)  # reflect padding needs p < side
    if p <= 0 and not flip:
        return x
    dy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
    cols = dx + torch.arange(w)
    if flip:
        mirror = torch.rand(n, 1, generator=generator) < 0.5
        cols = torch.where(mirror, cols.flip(1), cols)
    rows = (dy + torch.arange(h)).to(x.device)
    cols = cols.to(x.device)
    padded = F.pad(x, (p, p, p, p), mode="reflect") if p > 0 else x
    c = x.shape[1]
    # two gathers along H then W with broadcast (expanded, not copied) indices
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded.shape[3]))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out
