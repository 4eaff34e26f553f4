"""Classifiers: the registry, the architectures and batched inference."""

from fairquant.models.cnn import SmallCNN
from fairquant.models.piecewise import is_piecewise_linear
from fairquant.models.predict import memory_format_for, model_dtype, predict_logits
from fairquant.models.registry import MODELS, ModelSpec, build_model, register_model
from fairquant.models.resnet import ResNet18

__all__ = [
    "MODELS",
    "ModelSpec",
    "ResNet18",
    "SmallCNN",
    "build_model",
    "is_piecewise_linear",
    "memory_format_for",
    "model_dtype",
    "predict_logits",
    "register_model",
]
