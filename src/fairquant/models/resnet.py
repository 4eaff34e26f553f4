"""CIFAR-style ResNet-18 (He et al., 2016) with a width multiplier.

The CIFAR variant replaces ImageNet's 7x7 stride-2 stem and max-pool with one 3x3 stride-1
convolution, so 32x32 (or 48x48, 64x64) inputs keep their resolution in the first stage. This is
the network the quantization-fairness papers train on CIFAR-10, UTKFace and FER2013.
torchvision's ``resnet18`` has fixed stage widths (64-512) and the ImageNet stem, which is why
this one is written out: ``width`` scales every stage (``width=64`` is the standard model,
``width=16`` trains ~10x faster on a CPU).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    #: conv, BatchNorm, ReLU and a residual sum only (:mod:`fairquant.models.piecewise`)
    piecewise_linear: ClassVar[bool] = True

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with a 3x3 stem and no max-pool; stage widths ``width * (1, 2, 4, 8)``."""

    #: its forward composes piecewise-linear modules with pooling and flattening only
    piecewise_linear: ClassVar[bool] = True

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        c_in = width
        for i, c_out in enumerate(width * m for m in (1, 2, 4, 8)):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))
            )
            c_in = c_out
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))
