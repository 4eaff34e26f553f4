"""Model registry: a name and a width build a classifier for any channels and class count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from fairquant.errors import ConfigError, unknown_name
from fairquant.models.cnn import SmallCNN
from fairquant.models.resnet import ResNet18

Builder = Callable[..., nn.Module]

MODELS: dict[str, Builder] = {"cnn": SmallCNN, "resnet18": ResNet18}


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture and its width (``None``: the architecture's default)."""

    name: str
    width: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**d)


def register_model(name: str, builder: Builder) -> None:
    """Make ``builder(in_channels=, num_classes=, width=)`` available under ``name``."""
    MODELS[name] = builder


def build_model(spec: ModelSpec, *, in_channels: int, num_classes: int) -> nn.Module:
    """Instantiate the architecture a spec names."""
    try:
        builder = MODELS[spec.name]
    except KeyError:
        raise unknown_name("model", spec.name, MODELS) from None
    if spec.width is not None and spec.width < 1:
        raise ConfigError(f"model width must be a positive integer; got {spec.width}")
    kwargs = {} if spec.width is None else {"width": spec.width}
    return builder(in_channels=in_channels, num_classes=num_classes, **kwargs)
