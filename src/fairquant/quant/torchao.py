"""torchao's int8 and int4 workflows on a copy of a model (``torchao.quantization.quantize_``).

Each workflow is one torchao config applied by ``quantize_`` to the layers a ``filter_fn``
chooses; torchao's tensor subclasses replace the weights and carry their own kernels:

- ``int8wo``: ``Int8WeightOnlyConfig``: int8 weights, symmetric, one scale per output row;
  activations stay float32 (the weights are dequantized inside the matmul).
- ``int8dq``: ``Int8DynamicActivationInt8WeightConfig``: the same weights, and each activation
  row (token) quantized to int8 symmetrically with its own range at run time; int8 x int8 matmul.
- ``int4wo``: ``Int4WeightOnlyConfig``: int4 weights in groups of ``group_size`` input channels
  (default 128). torchao 0.18's int4 layouts run on CUDA (tinygemm) or need the ``mslk`` package
  (plain, preshuffled); on a CPU without them torchao fails and so does this workflow, saying so.

torchao's int8 tensors implement ``linear`` only (``aten.convolution`` is not among their ops in
torchao 0.18), so only ``nn.Linear`` layers are quantized: in a CNN that is the classifier head
alone, which the notes of the result say (``quantized k of n weight layers``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from fairquant._extras import require
from fairquant.data.stream import Inputs
from fairquant.errors import ConfigError
from fairquant.quant.configs import INT4_GROUP_SIZES as INT4_GROUP_SIZES
from fairquant.quant.configs import WORKFLOWS as WORKFLOWS
from fairquant.quant.configs import TorchaoConfig as TorchaoConfig
from fairquant.quant.model import quantized_layers


def _ao_config(config: TorchaoConfig) -> Any:
    q = require("torchao.quantization", what=f"torchao:{config.workflow}")
    # set_inductor_config=False: the default changes torch._inductor's global settings
    if config.workflow == "int8wo":
        return q.Int8WeightOnlyConfig(set_inductor_config=False)
    if config.workflow == "int8dq":
        return q.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    return q.Int4WeightOnlyConfig(group_size=config.group_size or 128, set_inductor_config=False)


def quantize_torchao(
    config: TorchaoConfig, model: nn.Module, example: Inputs
) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` (eval mode) quantized by torchao, checked by one forward pass on
    ``example``, and notes on what was quantized."""
    ao_config = _ao_config(config)
    from torchao.quantization import quantize_
    from torchao.utils import TorchAOBaseTensor

    name = f"torchao:{config.workflow}"
    q = copy.deepcopy(model).eval()
    linear = {
        n: m
        for n, m in q.named_modules()
        if isinstance(m, nn.Linear) and n not in config.float_modules
    }
    if not linear:
        raise ConfigError(
            f"{name} quantizes nn.Linear layers only (torchao has no int8 convolution); "
            f"{type(model).__name__} has none left to quantize"
        )
    group = config.group_size
    if group is not None and not any(m.in_features % group == 0 for m in linear.values()):
        widths = {n: m.in_features for n, m in linear.items()}
        raise ConfigError(
            f"{name}: int4 groups of {group} inputs fit none of the Linear layers "
            f"(in_features {widths}); choose a group size that divides one, e.g. -g32"
        )
    try:
        quantize_(q, ao_config, filter_fn=lambda m, n: n in linear and m is linear[n])
        with torch.inference_mode():
            q(example) if isinstance(example, torch.Tensor) else q(**example)
    except Exception as e:  # torchao raises ImportError, NotImplementedError, AssertionError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        why = (
            "its int4 layouts run on CUDA (tinygemm) or need the mslk package"
            if config.workflow == "int4wo"
            else "it has no kernel for this model here"
        )
        raise ConfigError(
            f"{name}: torchao cannot run on this CPU ({why}): {type(e).__name__}: {first}"
        ) from None
    done = sum(isinstance(m.weight, TorchAOBaseTensor) for m in linear.values())
    total = len(quantized_layers(model))
    return q, [f"torchao quantized {done} of {total} weight layers (nn.Linear only)"]


def check_runs_here(config: TorchaoConfig) -> None:
    """torchao's int4 runs on CUDA, or on a CPU with the mslk package: try it on one small layer,
    so a command can refuse it before any compute (the error names the precision and why)."""
    if config.workflow == "int4wo":
        quantize_torchao(config, nn.Sequential(nn.Linear(256, 8)), torch.zeros(1, 256))
