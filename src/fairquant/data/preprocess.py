"""The input a model from elsewhere expects: image side, channels and normalization.

fairquant's own loaders standardize images with the training split's per-channel mean and std
(:func:`fairquant.data.base.standardize`). A model trained elsewhere expects its own
preprocessing, typically ``(pixels / 255 - mean) / std`` with ImageNet's or its own statistics.
The user states it; the audit applies it to every batch and records it in ``audit.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fairquant.errors import ConfigError, DataError

#: ImageNet's per-channel statistics, which torchvision's and timm's pretrained weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: ``normalize`` values: ``"data"`` uses the data's own statistics (the training split's mean and
#: std), which a model from elsewhere gets only when the user says so.
NORMALIZE = ("data",)


@dataclass(frozen=True)
class Preprocess:
    """What a model's input must look like.

    ``image_size``: the side images are resized to (bilinear, antialiased), None: as they come;
    ``channels``: the model's input channels (gray data is repeated to 3 channels; colour data
    for a 1-channel model must be loaded gray instead); ``mean``/``std``: the model's input is
    ``(pixels - mean) / std`` with pixels in [0, 1], one value for every channel or one per
    channel; None keeps the data's own normalization (for fairquant's datasets: the training
    split's mean and std). ``normalize="data"`` says the user chose the data's own on purpose;
    ``origin`` says where ``mean``/``std`` came from (both are recorded in ``audit.json``).
    """

    image_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    normalize: str | None = None
    origin: str | None = None

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ConfigError("preprocessing: give both mean and std, or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"preprocessing: std must be positive; got {list(self.std)}")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"preprocessing: image_size must be positive; got {self.image_size}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"preprocessing: channels must be 1 or 3; got {self.channels}")
        if self.normalize is not None and self.normalize not in NORMALIZE:
            raise ConfigError(
                f"--normalize {self.normalize!r}: expected {' or '.join(NORMALIZE)} (or give the "
                "model's --mean and --std)"
            )
        if self.normalize is not None and self.mean is not None:
            raise ConfigError("give --normalize data or --mean/--std, not both")

    def check_channels(self, channels: int) -> None:
        """A one-line error naming the option unless ``mean`` and ``std`` have 1 value or one
        per channel of a model taking ``channels``."""
        for option, values in (("--mean", self.mean), ("--std", self.std)):
            if values is not None and len(values) not in (1, channels):
                text = ",".join(f"{v:g}" for v in values)
                raise ConfigError(
                    f"{option} {text!r}: {len(values)} values for a model of {channels} input "
                    f"channel{'s' if channels != 1 else ''}; expected "
                    + ("1 value" if channels == 1 else f"1 value or {channels} (one per channel)")
                )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "image_size": self.image_size,
            "channels": self.channels,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }
        if self.normalize is not None:
            d["normalize"] = self.normalize
        if self.origin is not None:
            d["normalization"] = self.origin
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        mean, std = d.get("mean"), d.get("std")
        if d.get("normalize") is not None:  # the data's statistics, recorded beside it
            mean = std = None
        return cls(
            image_size=d.get("image_size"),
            channels=d.get("channels"),
            mean=None if mean is None else tuple(float(v) for v in mean),
            std=None if std is None else tuple(float(v) for v in std),
            normalize=d.get("normalize"),
            origin=d.get("normalization") if mean is not None else None,
        )

    def transform(
        self,
        data_mean: Sequence[float] | None = None,
        data_std: Sequence[float] | None = None,
    ):
        """A function of one batch ``x`` (N, C, H, W) to the model's input.

        ``data_mean``/``data_std``: the normalization already applied to ``x`` (a
        :class:`~fairquant.data.base.GroupedDataset`'s ``mean``/``std``), undone before this
        preprocessing's own ``mean``/``std`` is applied; None: ``x`` holds pixels in [0, 1].
        """
        undo = None
        if self.mean is not None and data_mean is not None and data_std is not None:
            undo = (_channel_vector(data_mean), _channel_vector(data_std))

        def apply(x: Tensor) -> Tensor:
            if x.ndim != 4:
                raise DataError(
                    f"image preprocessing needs (N, C, H, W) images; got shape {tuple(x.shape)}"
                )
            self.check_channels(self.channels or x.shape[1])
            if undo is not None:
                x = x * undo[1] + undo[0]
            if self.channels is not None and x.shape[1] != self.channels:
                if self.channels == 3 and x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                else:
                    raise DataError(
                        f"the model takes {self.channels} input channel(s) but the images have "
                        f"{x.shape[1]}; load colour images gray (option grayscale) for a "
                        "1-channel model"
                    )
            if self.image_size is not None and tuple(x.shape[2:]) != (self.image_size,) * 2:
                size = (self.image_size, self.image_size)
                x = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True)
            if self.mean is not None and self.std is not None:
                x = (x - _channel_vector(self.mean)) / _channel_vector(self.std)
            return x

        return apply


def _channel_vector(values: Sequence[float]) -> Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, -1, 1, 1)


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> floats (1 or 3); anything else is a one-line error."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"{option} {text!r}: expected comma-separated numbers like 0.485,0.456,0.406"
        ) from None
    if len(values) not in (1, 3):
        raise ConfigError(f"{option} {text!r}: expected 1 value or 3 (one per channel)")
    return values
