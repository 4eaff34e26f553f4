"""``audit.json``: enough to say what was audited and to audit it again."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import torch

from fairquant import __version__
from fairquant._audit.result import AUDIT_SCHEMA
from fairquant.data.base import GroupedDataset, coding
from fairquant.data.preprocess import Preprocess
from fairquant.data.stream import BatchSource
from fairquant.models.load import LoadedModel


def _record(
    loaded: LoadedModel,
    data: Any,
    source: BatchSource,
    preprocess: Any,
    order: list[Any],
    y: np.ndarray,
    **fields: Any,
) -> dict[str, Any]:
    """What ``audit.json`` holds: enough to say what was audited and to audit it again."""
    if loaded.source is not None:
        model = loaded.source.to_dict()
    else:
        model = {"kind": "python", "name": type(loaded.model).__name__}
    if isinstance(data, GroupedDataset):
        data_record: dict[str, Any] = {
            "spec": data.spec.to_dict(),
            "split": "test",
            "target": data.target,
            "group": data.group,
            "samples": len(y),
            "coding": data.coding(),
            "class_order": data.class_order or "the data's own coding",
        }
        if data.features is not None:
            data_record["features"] = list(data.features)
    else:
        data_record = {
            "description": source.description,
            "samples": len(y),
            "coding": coding("target", fields["class_names"], "group", fields["group_names"]),
        }
    pre: dict[str, Any] | None = None
    if isinstance(preprocess, Preprocess):
        pre = preprocess.to_dict()
    elif preprocess is not None:
        pre = {"function": getattr(preprocess, "__qualname__", type(preprocess).__name__)}
    if isinstance(data, GroupedDataset):
        # what the model saw: the data's decoding (size, channels) and, unless stated, its own
        # standardization (images: per channel; tables: per feature)
        pre = pre or Preprocess().to_dict()
        if data.test.x.ndim == 4:
            pre["image_size"] = pre["image_size"] or data.image_size[0]
            pre["channels"] = pre["channels"] or data.in_channels
        if pre.get("mean") is None:
            pre["mean"], pre["std"] = list(data.mean), list(data.std)
            pre["normalization"] = "the data's own: the training split's mean and std" + (
                " (chosen: normalize='data')" if pre.get("normalize") == "data" else ""
            )
    if pre is not None and pre.get("mean") is not None and "normalization" not in pre:
        pre["normalization"] = "stated by the caller"
    return {
        "schema": AUDIT_SCHEMA,
        "fairquant_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "model": model,
        "data": data_record,
        "preprocessing": pre,
        "precisions": [p.name for p in order],
        **fields,
    }
