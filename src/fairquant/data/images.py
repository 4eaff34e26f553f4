"""Decode image files to uint8 tensors, and turn uint8 images into model-ready float tensors."""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from fairquant.data.files import FileTree
from fairquant.errors import DataError

#: ITU-R BT.601 luma weights, as Pillow's ``convert("L")`` uses them (files decode straight to
#: "L" when gray; arrays such as CIFAR's batches are converted with these weights).
LUMA = (0.299, 0.587, 0.114)


def decode_files(
    tree: FileTree,
    names: Iterable[str],
    *,
    channels: int,
    size: int | None = None,
    center_crop: bool = False,
) -> Tensor:
    """Decode image files to a uint8 tensor (N, channels, H, W), in the order of ``names``.

    Each image is optionally cropped to a centred square, then resized to ``size`` x ``size``
    (Pillow's bilinear filter, antialiased when shrinking); without ``size`` all must have the
    size of the first. A file Pillow cannot decode raises a DataError naming it.
    """
    names = list(names)
    if not names:
        raise DataError(f"{tree}: no images to decode")
    position = {name: i for i, name in enumerate(names)}
    mode = {1: "L", 3: "RGB"}[channels]
    out: np.ndarray | None = None
    seen = 0
    for name, data in tree.read(names):
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert(mode)
                if center_crop and im.width != im.height:
                    side = min(im.size)
                    left, top = (im.width - side) // 2, (im.height - side) // 2
                    im = im.crop((left, top, left + side, top + side))
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{tree}: cannot decode image {name}: {e}") from None
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if out is None:
            out = np.empty((len(names), *arr.shape), dtype=np.uint8)
        elif arr.shape != out.shape[1:]:
            raise DataError(
                f"{tree}: image {name} is {arr.shape[2]}x{arr.shape[1]} but earlier ones are "
                f"{out.shape[3]}x{out.shape[2]}; set image_size to resize them all"
            )
        out[position[name]] = arr
        seen += 1
    if seen != len(names) or out is None:
        raise DataError(f"{tree}: {len(names) - seen} of {len(names)} listed images were not found")
    return torch.from_numpy(out)


def to_float(
    images: Tensor,
    index: Tensor,
    *,
    size: int | None,
    grayscale: bool,
    center_crop: bool = False,
    chunk: int = 4096,
) -> Tensor:
    """uint8 ``images[index]`` -> float32 in [0, 1], optionally cropped square, gray and resized.

    Works in chunks so a large uint8 set never exists as one float32 copy at full resolution.
    """
    out: Tensor | None = None
    start = 0
    for part in index.split(chunk):
        x = images.index_select(0, part)
        if out is not None and x.shape[1:] == out.shape[1:]:  # nothing to transform: 2 passes
            out[start : start + len(x)].copy_(x).div_(255.0)
            start += len(x)
            continue
        x = x.float().div_(255.0)
        if center_crop and x.shape[2] != x.shape[3]:
            side = min(x.shape[2], x.shape[3])
            top, left = (x.shape[2] - side) // 2, (x.shape[3] - side) // 2
            x = x[:, :, top : top + side, left : left + side]
        if grayscale and x.shape[1] == 3:
            x = torch.einsum("nchw,c->nhw", x, torch.tensor(LUMA)).unsqueeze(1)
        if size is not None and x.shape[2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        if out is None:  # written in place: no concatenated copy of a large set
            out = torch.empty((len(index), *x.shape[1:]), dtype=torch.float32)
        out[start : start + len(x)] = x
        start += len(x)
    if out is None:
        raise DataError("a split has no samples")
    return out
