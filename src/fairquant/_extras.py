"""Optional dependencies: which extra installs each, and the error when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from fairquant.errors import ConfigError

#: The pip extra that installs each optional module.
EXTRAS = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "torchao": "torchao",
    "openvino": "openvino",
    "nncf": "openvino",
    "timm": "timm",
    "safetensors": "safetensors",
    "pyarrow": "parquet",
}


def install_hint(module: str) -> str:
    """The pip command that installs the extra of ``module`` (a package or one of its modules)."""
    return f"pip install 'fairquant[{EXTRAS[module.partition('.')[0]]}]'"


def require(module: str, *, what: str) -> ModuleType:
    """Import ``module``, or raise a one-line :class:`ConfigError` saying that ``what`` needs it
    and which extra installs it (``ImportError`` of a broken install included, with its text)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"{what} needs {module} ({e}); install it with: {install_hint(module)}"
        ) from None
