"""Models from elsewhere: a torchvision or timm architecture with a weights file, a user's factory
function, or an ONNX file.

A source is named as on the command line (:func:`parse_model_source`):

==========================  ===================================================================
``torchvision:NAME``        ``torchvision.models.get_model(NAME, weights=None, num_classes=k)``
                            with the weights file's state_dict
``timm:NAME``               ``timm.create_model(NAME, pretrained=False, num_classes=k,
                            in_chans=c)`` with the weights file's state_dict (extra ``timm``)
``package.module:function`` imports ``package.module`` and calls ``function`` (passing
                            ``num_classes`` and ``in_channels`` when it takes them): this, and
                            only this, runs the user's code; weights optional
``FILE.onnx``               run by ONNX Runtime (:mod:`fairquant.models.onnx`, extra ``onnx``);
                            nothing in the file is executed as Python
==========================  ===================================================================

The number of classes ``k`` and input channels ``c`` come from the data or are given. torchvision
architectures take 3 channels; for other data their first convolution is replaced by one with
``c`` input channels (same kernel, stride and padding), and the weights file must hold that
layer's weights at ``c`` channels (as the script that trained it made them). Weights load with
``torch.load(..., weights_only=True)`` or from ``.safetensors``; keys and shapes must fit the
architecture exactly (missing and unexpected keys are named), except a ``module.`` prefix on
every key (``nn.DataParallel``), which is removed.

A fairquant checkpoint (``fairquant train``) is read by :func:`fairquant.train.load_checkpoint`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fairquant._extras import install_hint, require
from fairquant._io import sha256_file
from fairquant.data.preprocess import Preprocess
from fairquant.errors import CheckpointError, ConfigError, torch_load_error
from fairquant.models.registry import TORCHVISION_INSTALL

Kind = Literal["checkpoint", "torchvision", "timm", "factory", "onnx"]

FORMS = (
    "torchvision:NAME, timm:NAME (with --weights FILE), package.module:function "
    "(imports and runs that code) or a FILE.onnx"
)
_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``kind``, ``name`` (architecture, ``module:function`` or file)
    and an optional ``weights`` file."""

    kind: Kind
    name: str
    weights: str | None = None

    def __str__(self) -> str:
        text = self.name if self.kind in ("factory", "onnx", "checkpoint") else self.spelled()
        return text + (f" with weights {self.weights}" if self.weights else "")

    def spelled(self) -> str:
        """As on the command line (``torchvision:resnet18``)."""
        return f"{self.kind}:{self.name}" if self.kind in ("torchvision", "timm") else self.name

    def to_dict(self) -> dict[str, Any]:
        """The source with the sha256 of its files (for ``audit.json``)."""
        d: dict[str, Any] = {"kind": self.kind, "name": self.spelled(), "weights": self.weights}
        if self.kind in ("onnx", "checkpoint"):
            d["sha256"] = sha256_file(Path(self.name))
        if self.weights is not None:
            d["weights_sha256"] = sha256_file(Path(self.weights))
        return d


@dataclass
class LoadedModel:
    """A model ready to audit, its source, what loading changed (``notes``) and the input
    normalization its source states (``preprocess``: only where the source really carries it,
    e.g. a timm architecture's ``pretrained_cfg``; None: the user must state it)."""

    model: Any  # nn.Module, or fairquant.models.onnx.OnnxModel
    source: ModelSource
    notes: list[str] = field(default_factory=list)
    preprocess: Preprocess | None = None


def parse_model_source(text: str, *, weights: str | os.PathLike | None = None) -> ModelSource:
    """The source ``text`` names (see the module docstring); anything else is a one-line error."""
    w = None if weights is None else str(weights)
    if w is not None and not Path(w).is_file():
        raise ConfigError(f"--weights {w} does not exist")
    if text.lower().endswith(".onnx"):
        if not Path(text).is_file():
            raise ConfigError(f"--model {text}: the ONNX file does not exist")
        if w is not None:
            raise ConfigError(f"--weights {w}: an ONNX model carries its weights in {text}")
        return ModelSource("onnx", text)
    for kind in ("torchvision", "timm"):
        if text.startswith(f"{kind}:"):
            name = text.removeprefix(f"{kind}:")
            if not name:
                raise ConfigError(f"--model {text}: expected {kind}:NAME, e.g. {kind}:resnet18")
            if w is None:
                raise ConfigError(
                    f"--model {text} needs --weights FILE (a state_dict saved with torch.save, "
                    "or .safetensors); fairquant downloads no pretrained weights"
                )
            return ModelSource(kind, name, w)  # type: ignore[arg-type]
    if _FACTORY.fullmatch(text):
        return ModelSource("factory", text, w)
    hint = (
        "; for a checkpoint of `fairquant train` use --checkpoint" if Path(text).is_file() else ""
    )
    raise ConfigError(f"unknown model source {text!r}; expected {FORMS}{hint}")


def load_model(source: ModelSource, *, num_classes: int, in_channels: int) -> LoadedModel:
    """Build the model ``source`` names for ``num_classes`` classes and ``in_channels`` channels
    and load its weights (see the module docstring)."""
    if num_classes < 1 or in_channels < 1:
        raise ConfigError(
            f"a model needs at least 1 class and 1 channel; got {num_classes} and {in_channels}"
        )
    notes: list[str] = []
    stated = None
    if source.kind == "onnx":
        return LoadedModel(_onnx(source.name), source)
    if source.kind == "torchvision":
        model = _torchvision(source.name, num_classes, in_channels, notes)
    elif source.kind == "timm":
        model = _timm(source.name, num_classes, in_channels)
        stated = _timm_preprocess(model, source.name, in_channels)
    elif source.kind == "factory":
        model = _factory(source.name, num_classes, in_channels)
    else:
        raise ConfigError(
            f"a {source.kind} source is loaded by its own reader (fairquant.train.load_checkpoint)"
        )
    if source.weights is not None:
        load_weights(model, Path(source.weights), what=source.spelled(), notes=notes)
    return LoadedModel(model.eval(), source, notes, stated)


# ---- weights ------------------------------------------------------------------------------


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The state_dict in ``path``: ``.safetensors``, or a ``torch.save`` file read with
    ``weights_only=True`` (nothing in it is executed)."""
    if not path.is_file():
        raise ConfigError(f"--weights {path} does not exist")
    if path.suffix.lower() == ".safetensors":
        load_file = require("safetensors.torch", what=f"reading {path}").load_file
        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors raises its own SafetensorError and OSError
            raise CheckpointError(f"{path} is not a readable .safetensors file: {e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, zip errors, ...: one line, the reason kept
        raise torch_load_error(
            "--weights",
            path,
            e,
            "expected a state_dict saved with torch.save(model.state_dict(), FILE) or a "
            ".safetensors file (extra safetensors)",
        ) from None
    if isinstance(state, Mapping) and state.get("format") == "fairquant-checkpoint":
        raise ConfigError(f"{path} is a fairquant checkpoint; audit it with --checkpoint {path}")
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        keys = list(state)[:5] if isinstance(state, Mapping) else None
        raise CheckpointError(
            f"{path} holds {type(state).__name__}"
            + (f" with keys {keys}" if keys is not None else "")
            + "; expected a state_dict (parameter names to tensors), as saved by "
            "torch.save(model.state_dict(), FILE)"
        )
    return dict(state)


def _listed(keys: list[str], limit: int = 6) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_weights(model: nn.Module, path: Path, *, what: str, notes: list[str]) -> None:
    """Load the state_dict in ``path`` into ``model``; keys and shapes must fit exactly."""
    state = read_state_dict(path)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
        notes.append(f"removed the 'module.' prefix (nn.DataParallel) from the keys of {path}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_listed(unexpected)}")
        if shapes:
            problems.append(f"shape mismatches: {_listed(shapes, 3)}")
        raise CheckpointError(
            f"--weights {path} does not fit {what} ({'; '.join(problems)}); expected a "
            "state_dict of that architecture with the data's classes and channels "
            "(--num-classes and --in-channels set them)"
        )
    model.load_state_dict(state)


# ---- architectures ------------------------------------------------------------------------


def _close(name: str, known: list[str]) -> str:
    near = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    return f"; did you mean {', '.join(near)}?" if near else ""


def _torchvision(name: str, num_classes: int, in_channels: int, notes: list[str]) -> nn.Module:
    try:
        import torchvision
    except ImportError as e:
        raise ConfigError(
            f"--model torchvision:{name} needs torchvision ({e}); install it with: "
            f"{TORCHVISION_INSTALL}"
        ) from None
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ConfigError(
            f"--model torchvision:{name}: torchvision has no classification model {name!r} "
            f"(torchvision.models.list_models(module=torchvision.models) lists {len(known)})"
            + _close(name, known)
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        layer = adapt_first_conv(model, in_channels)
        notes.append(
            f"torchvision:{name} takes 3 input channels; its first convolution {layer} was "
            f"replaced by one taking the data's {in_channels} (same kernel, stride, padding)"
        )
    return model


def adapt_first_conv(model: nn.Module, in_channels: int) -> str:
    """Replace the first ``Conv2d`` of ``model`` by one with ``in_channels`` inputs; its name."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                break
            conv = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,  # type: ignore[arg-type]
                stride=module.stride,  # type: ignore[arg-type]
                padding=module.padding,  # type: ignore[arg-type]
                dilation=module.dilation,  # type: ignore[arg-type]
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, conv)
            return name
    raise ConfigError(
        f"cannot adapt {type(model).__name__} to {in_channels} input channels: its first layer "
        "is not a plain Conv2d; give images with 3 channels"
    )


def _timm(name: str, num_classes: int, in_channels: int) -> nn.Module:
    timm = require("timm", what=f"--model timm:{name}")
    if not timm.is_model(name):
        raise ConfigError(
            f"--model timm:{name}: timm has no model {name!r} (timm.list_models() lists them)"
            + _close(name, timm.list_models())
        )
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def _timm_preprocess(model: nn.Module, name: str, in_channels: int) -> Preprocess | None:
    """The mean and std timm's data config resolves for ``model`` (its ``pretrained_cfg``, which
    timm's own training and evaluation scripts normalize with), where it holds one value per
    input channel; else None."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None or not len(mean) == len(std) == in_channels:
        return None
    return Preprocess(
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        origin=f"timm's pretrained_cfg of {name} (the mean and std timm's data config resolves)",
    )


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """The working directory on ``sys.path`` for one import (the console script's own folder is
    there instead), as ``python -m`` would have it."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _factory(spec: str, num_classes: int, in_channels: int) -> nn.Module:
    """Import ``package.module`` and call ``function`` (the user's code: only this runs it)."""
    module_name, _, fn_name = spec.partition(":")
    try:
        with _cwd_importable():
            module = importlib.import_module(module_name)
    except Exception as e:  # the user's module may raise anything while importing
        raise ConfigError(
            f"--model {spec}: cannot import module {module_name!r} ({type(e).__name__}: {e}); "
            "expected an importable package.module (on PYTHONPATH or in the working folder)"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"--model {spec}: module {module_name!r} has no function {fn_name!r}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {
        k: v
        for k, v in (("num_classes", num_classes), ("in_channels", in_channels))
        if takes_any or k in params
    }
    try:
        model = fn(**kwargs)
    except Exception as e:
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise ConfigError(
            f"--model {spec}: {fn_name}({args}) raised {type(e).__name__}: {e}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"--model {spec}: {fn_name} returned {type(model).__name__}; expected a torch.nn.Module"
        )
    return model


def _onnx(path: str) -> Any:
    try:
        from fairquant.models.onnx import OnnxModel
    except ImportError as e:
        raise ConfigError(
            f"--model {path} needs ONNX Runtime ({e}); install it with: "
            + install_hint("onnxruntime")
        ) from None
    return OnnxModel(path)
