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
}


def require(module: str, *, what: str) -> ModuleType:
    """Import ``module``, or raise a one-line :class:`ConfigError` saying that ``what`` needs it
    and which extra installs it (``ImportError`` of a broken install included, with its text)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = EXTRAS[module.partition(".")[0]]
        raise ConfigError(
            f"{what} needs {module} ({e}); install it with: pip install 'fairquant[{extra}]'"
        ) from None
