"""A small convolutional classifier: the quickest model that still has BatchNorm and depth."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Four 3x3 conv-BN-ReLU layers in two stages, global average pooling and a linear head.

    Works for any input size of at least 4x4 and any number of channels and classes.
    ``width`` is the channel count of the first stage; the second stage doubles it.
    """

    #: conv, BatchNorm, ReLU, pooling and a linear head only (:mod:`fairquant.models.piecewise`)
    piecewise_linear: ClassVar[bool] = True

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width),
            _conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            _conv_bn_relu(width, 2 * width),
            _conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
