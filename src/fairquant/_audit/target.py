"""What to audit, as the command line names it: a checkpoint with its data, or a model from
elsewhere with the data, class order and preprocessing it needs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairquant.data import load_dataset
from fairquant.data.base import DataSpec, GroupedDataset
from fairquant.data.preprocess import Preprocess
from fairquant.data.stream import Inputs
from fairquant.errors import ConfigError, DataError
from fairquant.models.load import LoadedModel, ModelSource, load_model, parse_model_source
from fairquant.train.checkpoint import load_with_data


@dataclass(frozen=True)
class AuditTarget:
    """A model and the data to audit it on, as the command line names them: ``label`` is the
    model's name (for titles) and ``preprocess`` the input the model expects, if stated."""

    model: LoadedModel
    data: GroupedDataset
    preprocess: Preprocess | None
    label: str


def load_target(
    *,
    checkpoint: str | Path | None = None,
    model: str | None = None,
    weights: str | Path | None = None,
    spec: DataSpec | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_order: Sequence[str] | None = None,
    normalize: str | None = None,
) -> AuditTarget:
    """Load what to audit: a fairquant ``checkpoint`` with the data it was trained on (checked to
    match), or a ``model`` source (``torchvision:NAME``, ``timm:NAME``, ``package.module:function``,
    ``FILE.onnx``; see :func:`~fairquant.models.load.parse_model_source`) with its ``weights`` and
    the data ``spec`` to audit it on. Classes and input channels default to the data's.

    A model from elsewhere has its own class order and input normalization: ``class_order``
    names its classes in the order of its outputs (the data's targets are recoded to it, exactly:
    :meth:`~fairquant.data.base.GroupedDataset.with_class_order`); ``mean`` and ``std`` state its
    normalization (pixels in [0, 1]). On images one of these is required: ``mean``/``std``, the
    normalization the source itself carries (a timm architecture's ``pretrained_cfg``), or
    ``normalize="data"``, the data's own training-split statistics, chosen on purpose.
    """
    if (checkpoint is None) == (model is None):
        raise ConfigError("give either a checkpoint or a model source (--checkpoint or --model)")
    preprocess = None
    if mean is not None or std is not None or normalize is not None:
        preprocess = Preprocess(
            mean=None if mean is None else tuple(mean),
            std=None if std is None else tuple(std),
            normalize=normalize,
            origin="stated: --mean/--std" if mean is not None else None,
        )
    if checkpoint is not None:
        if spec is not None or weights is not None:
            raise ConfigError(
                f"checkpoint {checkpoint} rebuilds its own model and data; a dataset and weights "
                "go with a model source (--model)"
            )
        if class_order is not None:
            raise ConfigError(
                f"--classes: checkpoint {checkpoint} outputs its data's classes in the data's "
                "coding; a class order goes with a model from elsewhere (--model)"
            )
        ckpt, data = load_with_data(checkpoint)
        loaded = LoadedModel(ckpt.model, ModelSource("checkpoint", str(checkpoint)))
        return AuditTarget(loaded, data, preprocess, ckpt.model_spec.name)
    assert model is not None  # narrowed by the either-or check above
    source = parse_model_source(model, weights=weights)
    if spec is None:
        raise ConfigError(
            f"model {model} needs the data to audit it on: --dataset NAME --root PATH "
            "(fairquant datasets lists them; 'table' reads a CSV or Parquet table)"
        )
    data = load_dataset(spec)
    if class_order is not None:
        data = data.with_class_order(class_order)
    images = data.test.x.ndim == 4
    if images and in_channels is not None and in_channels != data.in_channels:
        if (in_channels, data.in_channels) != (3, 1):
            raise ConfigError(
                f"--in-channels {in_channels}: the data has {data.in_channels} channels; a model "
                "of other channels than the data's takes 3 from gray data (repeated), and a "
                "1-channel model takes colour images loaded gray (--grayscale)"
            )
        preprocess = replace(preprocess or Preprocess(), channels=in_channels)
    channels = in_channels or data.in_channels
    loaded = load_model(source, num_classes=num_classes or data.num_classes, in_channels=channels)
    if images:
        stated = preprocess is not None and (
            preprocess.mean is not None or preprocess.normalize is not None
        )
        if not stated and loaded.preprocess is None:
            raise ConfigError(
                f"--model {model}: state the input normalization it was trained with: --mean and "
                "--std (pixels in [0, 1]; ImageNet's are --mean 0.485,0.456,0.406 --std "
                "0.229,0.224,0.225), or --normalize data to use this data's own training-split "
                "mean and std; a model from elsewhere does not say"
            )
        if not stated:
            channels_only = preprocess.channels if preprocess is not None else None
            preprocess = replace(loaded.preprocess, channels=channels_only)
            loaded.notes.append(f"normalized as {preprocess.origin}")
        assert preprocess is not None
        preprocess.check_channels(channels)
    _probe(loaded, data, preprocess, model)
    return AuditTarget(loaded, data, preprocess, model)


def _probe(loaded: LoadedModel, data: GroupedDataset, preprocess: Any, label: str) -> None:
    """Run the model on two samples: a model that cannot take the data's input (channels, size,
    features) is a one-line error here, before any precision is built."""
    split = data.test if len(data.test) else data.train
    x = split.x[:2]
    transform = _transform(preprocess, data)
    try:
        inputs = transform(x) if transform is not None else x
        if isinstance(loaded.model, nn.Module):
            with torch.inference_mode():
                loaded.model(inputs)
        else:
            loaded.model.predict(inputs)
    except (ConfigError, DataError):
        raise
    except Exception as e:  # the model's own code may raise anything on a wrong input
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(
            f"--model {label} cannot take the data's input {tuple(x.shape)} "
            f"({type(e).__name__}: {first}); expected its input channels (--in-channels), image "
            "size (--image-size) or features to fit the data"
        ) from None


def _as_loaded(model: Any) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        path = str(model)
        if not path.lower().endswith(".onnx"):
            raise ConfigError(
                f"model {path!r}: a path must name an .onnx file; load other models first "
                "(fairquant.models.load.load_model, or torch) and pass the nn.Module"
            )
        return load_model(parse_model_source(path), num_classes=1, in_channels=1)
    if isinstance(model, nn.Module) or callable(getattr(model, "predict", None)):
        return LoadedModel(model, None)  # type: ignore[arg-type]
    raise ConfigError(
        f"model must be an nn.Module, an .onnx path or a LoadedModel; got {type(model).__name__}"
    )


def _transform(preprocess: Any, data: Any) -> Callable[[Inputs], Inputs] | None:
    if preprocess is None:
        return None
    if isinstance(preprocess, Preprocess):
        if isinstance(data, GroupedDataset):
            return preprocess.transform(data.mean, data.std)
        return preprocess.transform()
    if callable(preprocess):
        return preprocess
    raise ConfigError(
        f"preprocess must be a Preprocess or a function of a batch; got {type(preprocess).__name__}"
    )
