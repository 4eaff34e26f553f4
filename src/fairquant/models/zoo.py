"""The model zoo: torchvision's architectures adapted to small images (32-64 px), any input
channels and classes, and a width multiplier.

The quantization-fairness studies train ImageNet architectures on 32-64 px images (CIFAR-10,
UTKFace, FER2013). ImageNet stems reduce a 224 px image 4x before the first stage and 32x in all,
which leaves nothing of a 32 px image, so each model here keeps torchvision's blocks, stage
layout and initialisation and changes only what the small input needs:

==================  ======================================================  =====  ===========
name                adaptation (total stride; feature map at 32 px)         width  default
==================  ======================================================  =====  ===========
``resnet18_tv``     3x3 stride-1 stem, no max-pool (8; 4x4)                 stem   64
``resnet50``        3x3 stride-1 stem, no max-pool (8; 4x4)                 stem   64
``vgg19_bn``        last max-pool dropped, 1x1 average pool, FC layers of   conv1  64
                    ``8 x width`` units instead of 4096 (16; 2x2)
``mobilenet_v2``    stride-1 stem; the first stride-2 stage (24 ch) at       stem   32
                    stride 1 (8; 4x4)
``efficientnet_b0`` stride-1 stem; the first stride-2 stage (24 ch) at       stem   32
                    stride 1 (8; 4x4)
``squeezenet1_1``   3x3 stride-1 padded stem (8; 4x4)                       stem   64
``vit_small``       ViT-S (depth 12, MLP 4 x width, a head per 64 dims) on  hidden 384
                    4x4 patches (64 tokens + class token at 32 px)
==================  ======================================================  =====  ===========

``width`` is the channel count of the first stage (the hidden size for the ViT); every layer
scales by ``width / default`` (torchvision's ``width_mult`` for MobileNetV2 and EfficientNet,
whose channels round to multiples of 8). Every model takes any input of at least 16x16 (the
ViT: exactly ``image_size``, divisible by ``patch_size``). No pretrained weights are used.

The ViT's attention is torchvision's ``EncoderBlock`` with ``nn.MultiheadAttention`` swapped for
:class:`SelfAttention`, the same computation with its query/key/value and output projections as
plain ``nn.Linear`` layers: ``MultiheadAttention`` keeps the first as a bare parameter and calls
the second functionally, so weight quantization, activation hooks and int8 kernels would miss
them.

This module imports torchvision; :mod:`fairquant.models.registry` imports it only when a zoo
model is built, so the rest of fairquant works without torchvision.
"""

from __future__ import annotations

import math
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.efficientnet import EfficientNet, MBConvConfig
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.squeezenet import Fire, SqueezeNet
from torchvision.models.vgg import VGG, cfgs, make_layers
from torchvision.models.vision_transformer import VisionTransformer

from fairquant.errors import ConfigError


def _scaled(channels: int, width: int, default: int) -> int:
    """``channels`` scaled by ``width / default``, at least 1.

    >>> _scaled(256, 16, 64)
    64
    """
    return max(1, round(channels * width / default))


def _stem(in_channels: int, out_channels: int, *, bias: bool = False) -> nn.Conv2d:
    """A 3x3 stride-1 padded convolution, Kaiming-initialised as torchvision's CNNs are."""
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=bias)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


class SmallInputResNet(ResNet):
    """torchvision's ResNet (its blocks, ``_make_layer``, forward and initialisation) with a
    3x3 stride-1 stem, no max-pool and stage widths ``width * (1, 2, 4, 8)``."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        *,
        in_channels: int,
        num_classes: int,
        width: int,
    ) -> None:
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes the ImageNet stem and widths
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        for m in self.modules():  # as torchvision's ResNet.__init__
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def resnet18_tv(*, in_channels: int, num_classes: int, width: int = 64) -> nn.Module:
    """torchvision ResNet-18 for small images (the same network as ``resnet18``, torchvision's
    code and layer names)."""
    return SmallInputResNet(
        BasicBlock, [2, 2, 2, 2], in_channels=in_channels, num_classes=num_classes, width=width
    )


def resnet50(*, in_channels: int, num_classes: int, width: int = 64) -> nn.Module:
    """torchvision ResNet-50 (bottleneck blocks, 3-4-6-3) for small images."""
    return SmallInputResNet(
        Bottleneck, [3, 4, 6, 3], in_channels=in_channels, num_classes=num_classes, width=width
    )


class SmallInputVGG(VGG):
    """torchvision's VGG forward and initialisation around small-image features and head."""

    def __init__(self, features: nn.Sequential, *, channels: int, num_classes: int) -> None:
        nn.Module.__init__(self)  # VGG.__init__ allocates a 25088 x 4096 layer for 224 px
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(channels, channels),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(channels, channels),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(channels, num_classes),
        )
        for m in self.modules():  # as torchvision's VGG.__init__
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


def vgg19_bn(*, in_channels: int, num_classes: int, width: int = 64) -> nn.Module:
    """VGG-19 with BatchNorm (torchvision's configuration "E") for small images."""
    cfg = [v if v == "M" else _scaled(int(v), width, 64) for v in cfgs["E"][:-1]]
    features = make_layers(cfg, batch_norm=True)
    features[0] = _stem(in_channels, int(cfg[0]), bias=True)
    channels = _scaled(512, width, 64)
    return SmallInputVGG(features, channels=channels, num_classes=num_classes)


def mobilenet_v2(*, in_channels: int, num_classes: int, width: int = 32) -> nn.Module:
    """torchvision MobileNetV2 (``width_mult = width / 32``) for small images."""
    setting = [
        [1, 16, 1, 1],
        [6, 24, 2, 1],  # stride 2 on ImageNet
        [6, 32, 3, 2],
        [6, 64, 4, 2],
        [6, 96, 3, 1],
        [6, 160, 3, 2],
        [6, 320, 1, 1],
    ]
    model = MobileNetV2(
        num_classes=num_classes, width_mult=width / 32, inverted_residual_setting=setting
    )
    stem = model.features[0][0]
    model.features[0][0] = _stem(in_channels, stem.out_channels)
    return model


def efficientnet_b0(*, in_channels: int, num_classes: int, width: int = 32) -> nn.Module:
    """torchvision EfficientNet-B0 (MBConv blocks with squeeze-and-excitation and SiLU,
    ``width_mult = width / 32``) for small images."""
    conf = partial(MBConvConfig, width_mult=width / 32, depth_mult=1.0)
    setting = [  # expand, kernel, stride, in, out, layers: torchvision's B0
        conf(1, 3, 1, 32, 16, 1),
        conf(6, 3, 1, 16, 24, 2),  # stride 2 on ImageNet
        conf(6, 5, 2, 24, 40, 2),
        conf(6, 3, 2, 40, 80, 3),
        conf(6, 5, 1, 80, 112, 3),
        conf(6, 5, 2, 112, 192, 4),
        conf(6, 3, 1, 192, 320, 1),
    ]
    model = EfficientNet(setting, dropout=0.2, num_classes=num_classes)
    stem = model.features[0][0]
    model.features[0][0] = _stem(in_channels, stem.out_channels)
    return model


def squeezenet1_1(*, in_channels: int, num_classes: int, width: int = 64) -> nn.Module:
    """torchvision SqueezeNet 1.1 (Fire modules scaled by ``width / 64``) for small images."""
    model = SqueezeNet(version="1_1", num_classes=num_classes)
    layers: list[nn.Module] = [_stem(in_channels, width, bias=True), nn.ReLU(inplace=True)]
    c_in = width
    # torchvision's 1.1 layout: (squeeze, expand) per Fire module, "M" a ceil-mode max-pool
    for item in ["M", (16, 64), (16, 64), "M", (32, 128), (32, 128), "M", *[(48, 192)] * 2]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
            continue
        squeeze, expand = (_scaled(c, width, 64) for c in item)
        layers.append(Fire(c_in, squeeze, expand, expand))
        c_in = 2 * expand
    for _ in range(2):
        squeeze, expand = _scaled(64, width, 64), _scaled(256, width, 64)
        layers.append(Fire(c_in, squeeze, expand, expand))
        c_in = 2 * expand
    model.features = nn.Sequential(*layers)
    for m in model.features.modules():  # as torchvision's SqueezeNet.__init__
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    final = nn.Conv2d(c_in, num_classes, kernel_size=1)
    nn.init.normal_(final.weight, mean=0.0, std=0.01)
    nn.init.zeros_(final.bias)
    model.classifier[1] = final
    return model


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.Linear`` projections, called like the
    ``nn.MultiheadAttention`` it replaces in torchvision's ``EncoderBlock``.

    ``softmax(q k^T / sqrt(d_h)) v`` per head (``F.scaled_dot_product_attention``), with
    ``[q, k, v] = x W_qkv^T + b`` and the output ``o W_o^T + b_o``; initialised as
    ``nn.MultiheadAttention`` is (Xavier-uniform input projection, zero biases).
    """

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.proj.bias)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, None]:
        """Self-attention of ``query`` (``key`` and ``value`` are the same tensor)."""
        b, n, d = query.shape
        qkv = self.qkv(query).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), None


def vit_small(
    *,
    in_channels: int,
    num_classes: int,
    width: int = 384,
    depth: int = 12,
    patch_size: int = 4,
    image_size: int = 32,
) -> nn.Module:
    """torchvision VisionTransformer, ViT-Small shape (hidden ``width`` = 384, MLP ``4 width``,
    ``width // 64`` heads, ``depth`` 12) on ``patch_size`` patches of ``image_size`` images."""
    if depth < 1 or patch_size < 1 or image_size % patch_size:
        raise ConfigError(
            f"vit_small needs depth >= 1 and an image size divisible by the patch size; got "
            f"depth {depth}, patch size {patch_size}, image size {image_size}"
        )
    heads = max(1, width // 64)
    if width % heads:
        raise ConfigError(
            f"vit_small width {width} must be divisible by its {heads} heads (one per 64 dims); "
            "use a multiple of 64, or a width below 128 for one head"
        )
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=depth,
        num_heads=heads,
        hidden_dim=width,
        mlp_dim=4 * width,
        num_classes=num_classes,
    )
    proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
    fan_in = in_channels * patch_size**2  # as torchvision's VisionTransformer.__init__
    nn.init.trunc_normal_(proj.weight, std=math.sqrt(1 / fan_in))
    nn.init.zeros_(proj.bias)
    model.conv_proj = proj
    for block in model.encoder.layers:
        block.self_attention = SelfAttention(width, heads)
    return model


#: The zoo's builders by registry name.
ZOO = {
    "resnet18_tv": resnet18_tv,
    "resnet50": resnet50,
    "vgg19_bn": vgg19_bn,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_b0": efficientnet_b0,
    "squeezenet1_1": squeezenet1_1,
    "vit_small": vit_small,
}
