"""A small trained classifier for the quantization toolchain tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn

from fairquant.models import SmallCNN


@dataclass(frozen=True)
class Trained:
    """A SmallCNN trained on scikit-learn's 8x8 digits, with calibration and test images."""

    model: nn.Module
    calibration: Tensor
    test: Tensor


@pytest.fixture(scope="session")
def digits_cnn() -> Trained:
    """A width-8 SmallCNN trained for 3 epochs on 800 digits (93 % accuracy on 500 held-out
    ones), so its logits have the margins of a real model, where random weights give near-ties
    that any rounding flips; 200 training images calibrate."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=10, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        for i in range(0, 800, 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    model.eval()
    return Trained(model, x[:200], x[1297:])
