import pytest
import torch

from fairquant.errors import ConfigError
from fairquant.models import ModelSpec, ResNet18, build_model, predict_logits


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 8, 2), (3, 32, 10), (3, 13, 5)])
def test_any_channels_size_and_classes(name, channels, size, classes):
    model = build_model(ModelSpec(name, 4), in_channels=channels, num_classes=classes)
    out = predict_logits(model, torch.randn(3, channels, size, size))
    assert out.shape == (3, classes) and out.dtype == torch.float32


def test_resnet18_is_the_cifar_variant():
    model = ResNet18(in_channels=3, num_classes=10, width=64)
    stem = model.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    # the standard CIFAR ResNet-18 has 11.17M parameters
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(11.17e6, rel=0.01)
    narrow = ResNet18(in_channels=3, num_classes=10, width=16)
    assert narrow.fc.in_features == 128


def test_bad_model_names():
    with pytest.raises(
        ConfigError, match="unknown model 'resnet181'; expected one of: cnn, efficientnet_b0, "
    ):
        build_model(ModelSpec("resnet181"), in_channels=1, num_classes=2)
    with pytest.raises(ConfigError, match="width"):
        build_model(ModelSpec("cnn", 0), in_channels=1, num_classes=2)


def test_predict_restores_training_mode():
    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=2).train()
    predict_logits(model, torch.randn(2, 1, 8, 8))
    assert model.training
