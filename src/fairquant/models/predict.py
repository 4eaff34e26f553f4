"""Batched inference in evaluation mode, in the model's own floating-point dtype and device, in
the memory format that is fastest for it (:func:`memory_format_for`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 if it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU if it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def memory_format_for(model: nn.Module) -> torch.memory_format:
    """Channels-last for a model with 2-D convolutions, on the CPU as on the GPU; else
    contiguous.

    The rule, measured: channels-last (NHWC) lets oneDNN on x86 CPUs and cuDNN on NVIDIA GPUs
    run convolutions without reordering each activation; on the 2-core AVX2 reference machine it
    trained ResNet-18 (width 16, 48 px, batch 64) 1.24x faster than the contiguous layout, and
    ``torch.compile`` was slower than either there; on a 2-core AVX-512 machine 1.47x, with
    ``torch.compile`` between the two (``bench/train_throughput.py`` measures all three). A
    convolution takes the channels-last path when its input or its weight is channels-last, so
    converting a batch is enough for evaluation.

    The exception: a strided convolution with fewer than 16 input channels keeps the model
    contiguous. With torch 2.14.1 on the CPU, the weight gradient of a channels-last 1x1
    stride-2 convolution with few input channels, on a 16 px or larger input, with an odd batch
    and two threads, writes outside its buffer: the process segfaults or glibc aborts
    (ResNet-18's shortcut at widths 4 and 8). Seen at 3-5 input channels on an AVX2 machine; on
    a 2-core AMD EPYC with AVX-512, measured over 1-48 input channels, it crashed at each count
    tried from 3 to 15 and never at 16 or more. oneDNN's contiguous path is unaffected.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs or any(c.in_channels < 16 and max(c.stride) > 1 for c in convs):
        return torch.contiguous_format
    return torch.channels_last


@torch.inference_mode()
def predict_logits(model: nn.Module, x: Tensor, *, batch_size: int = 512) -> Tensor:
    """Logits of ``model`` on ``x`` as float32 on the CPU, computed in the model's dtype
    (fp16/bf16 too) on the model's device, each batch in :func:`memory_format_for` the model.

    The model is put in eval mode and restored to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    dtype, device = model_dtype(model), model_device(model)
    layout = memory_format_for(model) if x.ndim == 4 else torch.contiguous_format
    out = []
    try:
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size].to(device, dtype, non_blocking=True)
            out.append(model(batch.contiguous(memory_format=layout)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
