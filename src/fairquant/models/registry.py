"""Model registry: a name and a width build a classifier for any channels and class count.

``cnn`` and ``resnet18`` are fairquant's own and need only PyTorch; the zoo
(:mod:`fairquant.models.zoo`: ``resnet18_tv``, ``resnet50``, ``vgg19_bn``, ``mobilenet_v2``,
``efficientnet_b0``, ``squeezenet1_1``, ``vit_small``) is built from torchvision, imported only
when one of them is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import nn

from fairquant.errors import ConfigError, unknown_name
from fairquant.models.cnn import SmallCNN
from fairquant.models.resnet import ResNet18

Builder = Callable[..., nn.Module]

#: What to install when torchvision is missing (its release must match torch's).
TORCHVISION_INSTALL = "pip install 'torch==2.14.1' 'torchvision==0.29.1'"

#: Architecture options a builder takes besides ``width`` (the other ModelSpec size fields).
OPTIONS = ("depth", "patch_size", "image_size")


def _zoo_builder(name: str) -> Builder:
    """A builder that imports the torchvision zoo on first use, with an install hint."""

    def build(**kwargs: Any) -> nn.Module:
        try:
            zoo = importlib.import_module("fairquant.models.zoo")
        except ImportError as e:
            raise ConfigError(
                f"model {name!r} is built from torchvision, which cannot be imported here ({e}); "
                f"install it with: {TORCHVISION_INSTALL}"
            ) from None
        return zoo.ZOO[name](**kwargs)

    return build


MODELS: dict[str, Builder] = {"cnn": SmallCNN, "resnet18": ResNet18}
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {"cnn": (), "resnet18": ()}
for _name in (
    "resnet18_tv",
    "resnet50",
    "vgg19_bn",
    "mobilenet_v2",
    "efficientnet_b0",
    "squeezenet1_1",
):
    MODELS[_name], MODEL_OPTIONS[_name] = _zoo_builder(_name), ()
MODELS["vit_small"], MODEL_OPTIONS["vit_small"] = _zoo_builder("vit_small"), OPTIONS


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture and its sizes (``None``: the architecture's default).

    ``width``: channels of the first stage (the hidden size of a ViT); ``depth`` and
    ``patch_size``: transformer blocks and patch side of a ViT; ``image_size``: the input side
    the model was built for (the ViT's position embeddings need it; other models record it).
    """

    name: str
    width: int | None = None
    depth: int | None = None
    patch_size: int | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        for option in ("width", *OPTIONS):
            value = getattr(self, option)
            if value is not None and value < 1:
                raise ConfigError(f"model {option} must be a positive integer; got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**d)


def register_model(name: str, builder: Builder, *, options: tuple[str, ...] = ()) -> None:
    """Make ``builder(in_channels=, num_classes=, width=, **options)`` available under ``name``;
    ``options`` lists which of ``depth``, ``patch_size``, ``image_size`` it takes."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"model options must come from {OPTIONS}; got {sorted(unknown)}")
    MODELS[name] = builder
    MODEL_OPTIONS[name] = tuple(options)


def sized_for(spec: ModelSpec, image_size: int) -> ModelSpec:
    """``spec`` with ``image_size`` filled in when its architecture takes one (a ViT's position
    embeddings are sized by it) and it is unset, so that the spec a checkpoint records rebuilds
    the same model; any other spec is returned unchanged.

    >>> sized_for(ModelSpec("vit_small", 64), 48).image_size, sized_for(ModelSpec("resnet18"), 48)
    (48, ModelSpec(name='resnet18', width=None, depth=None, patch_size=None, image_size=None))
    """
    if spec.image_size is None and "image_size" in MODEL_OPTIONS.get(spec.name, ()):
        return replace(spec, image_size=image_size)
    return spec


def build_model(spec: ModelSpec, *, in_channels: int, num_classes: int) -> nn.Module:
    """Instantiate the architecture a spec names.

    A ``depth`` or ``patch_size`` the architecture does not take is an error; ``image_size`` is
    passed only to architectures that need it.
    """
    try:
        builder = MODELS[spec.name]
    except KeyError:
        raise unknown_name("model", spec.name, MODELS) from None
    kwargs: dict[str, int] = {}
    takes = MODEL_OPTIONS.get(spec.name, ())
    for option in ("width", *OPTIONS):
        value = getattr(spec, option)
        if value is None:
            continue
        if option == "width" or option in takes:
            kwargs[option] = value
        elif option != "image_size":
            raise ConfigError(
                f"model {spec.name!r} has no option {option!r}; it takes width"
                + "".join(f", {o}" for o in takes if o != "image_size")
            )
    return builder(in_channels=in_channels, num_classes=num_classes, **kwargs)
