"""Batched inference in evaluation mode, in the model's own floating-point dtype."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 if it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


@torch.inference_mode()
def predict_logits(model: nn.Module, x: Tensor, *, batch_size: int = 512) -> Tensor:
    """Logits of ``model`` on ``x`` as float32, computed in the model's dtype (fp16/bf16 too).

    The model is put in eval mode and restored to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    dtype = model_dtype(model)
    try:
        out = [model(x[i : i + batch_size].to(dtype)).float() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
