"""The model zoo and a user-defined classifier through every quantization path, on tiny inputs."""

import sys

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fairquant.cli import app
from fairquant.data import GroupedDataset
from fairquant.errors import ConfigError
from fairquant.models import MODELS, ModelSpec, build_model, predict_logits, register_model
from fairquant.models.registry import MODEL_OPTIONS
from fairquant.quant import packed_size_bytes, parse_precision, quantize_model
from fairquant.quant.qat import qat_finetune
from fairquant.quant.real import real_kernel_layers, to_int8_model
from fairquant.quant.stats import weight_stats
from fairquant.train import TrainConfig, fit, load_checkpoint, save_checkpoint

PRESETS = ["fp16", "bf16", "int8", "int4", "int4-pc", "int4-fl8", "int8-a8", "int8-da8", "int8-bn"]
ONE_STEP = TrainConfig(epochs=1, batch_size=4, lr=0.01, schedule="constant")

#: name -> (tiny spec, has BatchNorm)
ZOO = {
    "resnet18_tv": (ModelSpec("resnet18_tv", 4), True),
    "resnet50": (ModelSpec("resnet50", 2), True),
    "vgg19_bn": (ModelSpec("vgg19_bn", 4), True),
    "mobilenet_v2": (ModelSpec("mobilenet_v2", 4), True),
    "efficientnet_b0": (ModelSpec("efficientnet_b0", 4), True),
    "squeezenet1_1": (ModelSpec("squeezenet1_1", 4), False),
    "vit_small": (ModelSpec("vit_small", 16, depth=1, image_size=16), False),
}


class UserNet(nn.Module):
    """A classifier a user writes: conv-BN-ReLU, a residual conv, pooling and a linear head."""

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.res = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = x + torch.relu(self.res(x))
        return self.head(x.mean(dim=(2, 3)))


@pytest.fixture
def images(random_images) -> GroupedDataset:
    """Four 16x16 random images for training and four for testing."""
    return random_images(4, 4, 16)


@pytest.fixture
def user_model(monkeypatch):
    # registered for this test only: monkeypatch removes the entries afterwards
    monkeypatch.setitem(MODELS, "usernet", UserNet)
    monkeypatch.setitem(MODEL_OPTIONS, "usernet", ())
    register_model("usernet", UserNet)
    return ModelSpec("usernet", 4)


def _every_path(spec: ModelSpec, data: GroupedDataset, tmp_path, *, has_bn: bool) -> nn.Module:
    """Train a step, round-trip the checkpoint, PTQ at every preset, QAT (plain and LSQ) a step,
    weight statistics and packed sizes; return the trained model."""
    model, history = fit(data, spec, ONE_STEP, show_progress=False)
    x = data.test.x
    logits = predict_logits(model, x)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    assert len(history.epoch_loss) == 1
    path = save_checkpoint(tmp_path / "m.pt", model=model, model_spec=spec, dataset=data)
    loaded = load_checkpoint(path)
    assert loaded.model_spec == spec
    torch.testing.assert_close(predict_logits(loaded.model, x), logits)

    sizes = {}
    for name in PRESETS:
        p = parse_precision(name)
        if p.fold_bn and not has_bn:
            with pytest.raises(ConfigError, match="no BatchNorm layer to fold"):
                quantize_model(model, p)
            continue
        q = quantize_model(model, p, calibration=x)
        out = predict_logits(q, x)
        assert out.shape == (4, 3) and torch.isfinite(out).all(), name
        sizes[name] = packed_size_bytes(model, p)
    fp32 = packed_size_bytes(model, parse_precision("fp32"))
    assert sizes["int4"] < sizes["int8"] < sizes["fp16"] < fp32

    stats = weight_stats(model, [parse_precision("int4")])
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert len(stats) == n_layers + 1 and stats.abs_error_sum.iloc[-1] > 0

    int4 = parse_precision("int4")
    qat = qat_finetune(model, data.train, int4, ONE_STEP, show_progress=False)
    # fine-tuned weights lie on the int4 grid: quantizing them again changes nothing
    torch.testing.assert_close(predict_logits(quantize_model(qat, int4), x), predict_logits(qat, x))
    lsq = qat_finetune(
        model, data.train, parse_precision("int4-pc"), ONE_STEP, lsq=True, show_progress=False
    )
    assert torch.isfinite(predict_logits(lsq, x)).all()
    return model


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_through_every_path(name, images, tmp_path):
    spec, has_bn = ZOO[name]
    _every_path(spec, images, tmp_path, has_bn=has_bn)


# the real int8 conversion of the deeper models takes seconds each: bench/zoo.py covers them
@pytest.mark.parametrize(
    ("name", "kernels"),
    [
        ("resnet18_tv", {"ConvReLU2d", "add_relu", "Linear"}),
        ("squeezenet1_1", {"ConvReLU2d"}),
        ("vit_small", {"Conv2d", "Linear", "LayerNorm", "add"}),
    ],
)
def test_real_int8_kernels(name, kernels, images):
    model = build_model(ZOO[name][0], in_channels=1, num_classes=3).eval()
    real = to_int8_model(model, images.train.x)
    assert predict_logits(real, images.test.x).shape == (4, 3)
    assert kernels <= set(real_kernel_layers(real))
    assert "Dropout" not in real_kernel_layers(real)  # the identity at inference, no kernel


def test_user_module_through_every_path(user_model, images, tmp_path):
    model = _every_path(user_model, images, tmp_path, has_bn=True)
    real = to_int8_model(model, images.train.x)
    kernels = real_kernel_layers(real)
    assert "Linear" in kernels and "add" in kernels and any("Conv" in k for k in kernels)


class Untraceable(UserNet):
    """Control flow on a tensor value: torch.fx cannot trace it."""

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        if x.sum() > 0:
            x = x + self.res(x)
        return self.head(x.mean(dim=(2, 3)))


def test_untraceable_module_gets_clear_errors(images):
    model = Untraceable(in_channels=1, num_classes=3).eval()
    assert quantize_model(model, parse_precision("int8-a8"), calibration=images.train.x)
    with pytest.raises(ConfigError, match="cannot fold BatchNorm in Untraceable"):
        quantize_model(model, parse_precision("int8-bn"))
    with pytest.raises(ConfigError, match="real int8 model of Untraceable"):
        to_int8_model(model, images.train.x)


def test_widths_and_options():
    a = build_model(ModelSpec("resnet18_tv", 8), in_channels=3, num_classes=10)
    b = build_model(ModelSpec("resnet18", 8), in_channels=3, num_classes=10)
    # torchvision's ResNet-18 adapted here is the same network as fairquant's CIFAR ResNet-18
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    assert a.conv1.stride == (1, 1) and isinstance(a.maxpool, nn.Identity)
    for name in ("vgg19_bn", "squeezenet1_1", "resnet50"):
        narrow, wide = (
            build_model(ModelSpec(name, w), in_channels=1, num_classes=2) for w in (4, 8)
        )
        first = next(m for m in narrow.modules() if isinstance(m, nn.Conv2d))
        assert first.in_channels == 1 and first.out_channels == 4 and first.stride == (1, 1)
        assert sum(p.numel() for p in wide.parameters()) > 3 * sum(
            p.numel() for p in narrow.parameters()
        )
    vit = build_model(
        ModelSpec("vit_small", 128, depth=3, patch_size=8, image_size=32),
        in_channels=1,
        num_classes=2,
    )
    assert len(vit.encoder.layers) == 3 and vit.encoder.layers[0].self_attention.heads == 2
    assert predict_logits(vit, torch.randn(2, 1, 32, 32)).shape == (2, 2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ModelSpec("resnet50", 4, depth=3), "model 'resnet50' has no option 'depth'"),
        (ModelSpec("vit_small", 16, patch_size=5), "divisible by the patch size"),
        (ModelSpec("vit_small", 129), "divisible by its 2 heads"),
    ],
)
def test_bad_options(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_model(spec, in_channels=1, num_classes=2)
    with pytest.raises(ConfigError, match="model depth must be a positive integer"):
        ModelSpec("vit_small", 16, depth=0)  # refused by the spec itself, before any build


def test_zoo_without_torchvision_names_the_install(monkeypatch):
    for module in [m for m in sys.modules if m.split(".")[0] == "torchvision"] + ["torchvision"]:
        monkeypatch.setitem(sys.modules, module, None)  # importing it now fails
    monkeypatch.delitem(sys.modules, "fairquant.models.zoo", raising=False)
    with pytest.raises(ConfigError, match=r"install it with: pip install .*torchvision==0\.29\.1"):
        build_model(ModelSpec("mobilenet_v2"), in_channels=1, num_classes=2)
    assert build_model(ModelSpec("resnet18", 2), in_channels=1, num_classes=2)


def test_cli_trains_and_audits_a_vit(tmp_path):
    runner = CliRunner()
    ck = tmp_path / "vit.pt"
    args = ["--model", "vit_small", "--width", "16", "--depth", "1", "--patch-size", "4"]
    args += ["--epochs", "1", "--image-size", "16", "--quiet"]
    r = runner.invoke(app, ["train", "--out", str(ck), *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert load_checkpoint(ck).model_spec == ModelSpec("vit_small", 16, 1, 4, 16)
    r = runner.invoke(
        app,
        ["audit", "--checkpoint", str(ck), "--precisions", "fp32,int8,int4", "--quiet"],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "results.csv")
    assert set(table.precision) == {"fp32", "int8", "int4"}
