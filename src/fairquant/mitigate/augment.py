"""Class-balancing augmentation (Liu et al.): every class topped up to the largest with augmented
copies of its own images.

Two kinds of augmentation, as the paper defines them:

- ``gt`` (geometric transformation): each new image gets exactly one of a rotation by an angle
  drawn uniformly from [-20°, 20°], a zoom by a factor drawn uniformly from [1.1, 1.2] (an
  affine scale about the centre, the same as a centre crop of 1/s of the side resized back), or a
  horizontal flip; the three are equally likely.
- ``re`` (random erasing): a square ``n x n`` patch, ``n`` drawn uniformly from {3, ..., 20}
  (clipped to the image side), at a uniform position inside the image, filled with random values;
  ``re-fixed:N`` uses the same ``n = N`` for every image (the paper's ablation with 3, 10, 20).

The images are already standardised, so "random values" are standard normal draws (the values of
torchvision's ``RandomErasing(value="random")``), and pixels a rotation or zoom uncovers are filled
with 0, the training mean. The transforms are torchvision's functional ``rotate``, ``affine`` and
``horizontal_flip``; the parameters are drawn here from one seeded ``torch.Generator`` (so a
run is deterministic and every draw can be checked), not from torchvision's global random state.

The balancing key is the class. When the protected group is not the class (A != Y), the key is the
(class, group) cell, so every group within every class is topped up to the largest cell; with
A = Y the cells are the classes, the paper's setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from fairquant.data.base import Split
from fairquant.errors import ConfigError

#: Liu et al.'s parameters.
MAX_ANGLE = 20.0
ZOOM_RANGE = (1.1, 1.2)
PATCH_RANGE = (3, 20)
GT_OPS = ("rotate", "zoom", "flip")


@dataclass(frozen=True)
class AugmentParams:
    """The draw behind one augmented image: which op and its parameter.

    ``value`` is the angle in degrees (rotate), the scale (zoom), 1 (flip), or the patch side
    ``n`` (erase, with ``top``/``left`` its corner)."""

    op: str
    value: float
    top: int = 0
    left: int = 0


def check_augmentation(kind: str) -> int | None:
    """Validate ``gt``, ``re`` or ``re-fixed:N``; return the fixed patch side, if any.

    >>> check_augmentation("re-fixed:10")
    10
    """
    if kind in ("gt", "re"):
        return None
    if kind.startswith("re-fixed:"):
        text = kind.split(":", 1)[1]
        if text.isdigit() and int(text) >= 1:
            return int(text)
    raise ConfigError(
        f"unknown augmentation {kind!r}; expected 'gt', 're' or 're-fixed:N' with N >= 1"
    )


def augment_images(
    x: Tensor, kind: str, *, generator: torch.Generator
) -> tuple[Tensor, list[AugmentParams]]:
    """Augmented copies of the images ``x`` (N, C, H, W), one per image, and the drawn parameters.

    ``x`` is left unchanged.
    """
    fixed = check_augmentation(kind)
    if x.ndim != 4:
        raise ConfigError(f"augmentation needs (N, C, H, W) images; got shape {tuple(x.shape)}")
    out = x.clone()
    params = []
    _, _, h, w = x.shape
    for i in range(len(x)):
        if kind == "gt":
            op = GT_OPS[int(torch.randint(3, (1,), generator=generator))]
            u = float(torch.rand((), generator=generator))
            if op == "rotate":
                angle = -MAX_ANGLE + 2 * MAX_ANGLE * u
                out[i] = TF.rotate(x[i], angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
                params.append(AugmentParams(op, angle))
            elif op == "zoom":
                scale = ZOOM_RANGE[0] + (ZOOM_RANGE[1] - ZOOM_RANGE[0]) * u
                out[i] = TF.affine(
                    x[i],
                    angle=0.0,
                    translate=[0, 0],
                    scale=scale,
                    shear=[0.0, 0.0],
                    interpolation=InterpolationMode.BILINEAR,
                    fill=0.0,
                )
                params.append(AugmentParams(op, scale))
            else:
                out[i] = TF.horizontal_flip(x[i])
                params.append(AugmentParams(op, 1.0))
            continue
        n = fixed or int(
            torch.randint(PATCH_RANGE[0], PATCH_RANGE[1] + 1, (1,), generator=generator)
        )
        n = min(n, h, w)
        top = int(torch.randint(h - n + 1, (1,), generator=generator))
        left = int(torch.randint(w - n + 1, (1,), generator=generator))
        out[i, :, top : top + n, left : left + n] = torch.randn(
            x.shape[1], n, n, generator=generator
        )
        params.append(AugmentParams("erase", float(n), top, left))
    return out, params


def balancing_key(split: Split) -> Tensor:
    """The label that balancing equalises: the class when every sample's group is its class
    (A = Y), else the (class, group) cell ``y * G + g``.

    >>> y = torch.tensor([0, 1, 1]); balancing_key(Split(torch.zeros(3, 1, 1, 1), y, y)).tolist()
    [0, 1, 1]
    """
    if torch.equal(split.y, split.g):
        return split.y.clone()
    return split.y * (int(split.g.max()) + 1) + split.g


def balance_augment(split: Split, kind: str, *, seed: int) -> Split:
    """``split`` with every balancing cell (:func:`balancing_key`) topped up to the largest cell
    by augmented copies of its own images; the originals come first, unchanged.

    Each cell's sources cycle through shuffled copies of the cell, so every image is augmented
    at most ``ceil(deficit / n_k)`` times.
    """
    check_augmentation(kind)
    gen = torch.Generator().manual_seed(seed)
    key = balancing_key(split)
    cells = [torch.nonzero(key == k).flatten() for k in key.unique().tolist()]
    largest = max(map(len, cells))
    sources = []
    for idx in cells:
        deficit = largest - len(idx)
        if deficit == 0:
            continue
        reps = -(-deficit // len(idx))
        pool = torch.cat([idx[torch.randperm(len(idx), generator=gen)] for _ in range(reps)])
        sources.append(pool[:deficit])
    if not sources:
        return Split(split.x.clone(), split.y.clone(), split.g.clone())
    src = torch.cat(sources)
    new_x, _ = augment_images(split.x[src], kind, generator=gen)
    return Split(
        torch.cat([split.x, new_x]),
        torch.cat([split.y, split.y[src]]),
        torch.cat([split.g, split.g[src]]),
    )
