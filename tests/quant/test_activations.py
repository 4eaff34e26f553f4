import pytest
import torch

from fairquant.data import Split
from fairquant.errors import ConfigError
from fairquant.models import ModelSpec, build_model, predict_logits
from fairquant.quant import parse_precision, quantize_model
from fairquant.quant.activations import affine_qparams, calibrate_range, quantize_affine
from fairquant.quant.calibrate import calibration_indices
from fairquant.quant.methods import make_quantizer


def test_affine_grid():
    s, z = affine_qparams(0.0, 2.55, 8)
    assert s == pytest.approx(0.01) and z == 0
    x = torch.tensor([0.0, 0.014, 1.0, 2.55, 9.0, -1.0])
    q = quantize_affine(x, s, z, 8)
    torch.testing.assert_close(q, torch.tensor([0.0, 0.01, 1.0, 2.55, 2.55, 0.0]))
    s, z = affine_qparams(-1.0, 3.0, 2)  # 4 levels: -1, 1/3, 5/3, 3 -> zero point makes 0 exact
    assert z == 1 and quantize_affine(torch.tensor([0.0]), s, z, 2).item() == 0.0
    assert affine_qparams(2.0, 5.0, 4)[1] == 0  # range widened to contain 0


def test_minmax_and_percentile_on_known_distributions():
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(100_000, generator=gen) * 4 - 1  # uniform on [-1, 3]
    lo, hi = calibrate_range(u, 8, "minmax")
    assert lo == pytest.approx(-1, abs=1e-3) and hi == pytest.approx(3, abs=1e-3)
    x = torch.randn(100_000, generator=gen)
    x[0] = 1000.0  # one outlier: min-max follows it, the 99.99th percentile does not
    assert calibrate_range(x, 8, "minmax")[1] == 1000.0
    lo, hi = calibrate_range(x, 8, "percentile")
    assert 3.3 < hi < 4.5 and -4.5 < lo < -3.3  # N(0,1) 0.01% quantiles are +-3.72


def test_mse_calibration_clips_a_gaussian_at_low_bits():
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(1))
    lo, hi = calibrate_range(x, 3, "mse")
    mm_lo, mm_hi = calibrate_range(x, 3, "minmax")
    assert hi < 0.8 * mm_hi and lo > 0.8 * mm_lo

    def mse(a, b):
        s, z = affine_qparams(a, b, 3)
        return ((quantize_affine(x, s, z, 3) - x) ** 2).mean()

    assert mse(lo, hi) < 0.5 * mse(mm_lo, mm_hi)


def test_bad_calibration():
    with pytest.raises(ConfigError, match="unknown calibration 'kl'"):
        calibrate_range(torch.ones(3), 8, "kl")
    model = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=2)
    with pytest.raises(ConfigError, match="needs calibration images"):
        quantize_model(model, parse_precision("int8-a8"))


def test_static_and_dynamic_activation_quantization(tiny_dataset):
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3).eval()
    x = tiny_dataset.test.x
    ref = predict_logits(model, x)
    w8 = predict_logits(quantize_model(model, parse_precision("int8")), x)
    for name in ("int8-a8", "int8-da8"):
        q = quantize_model(model, parse_precision(name), calibration=tiny_dataset.train.x)
        out = predict_logits(q, x)
        assert not torch.equal(out, w8)  # activations really are quantized
        assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    a2 = quantize_model(model, parse_precision("int8-a2"), calibration=tiny_dataset.train.x)
    assert (predict_logits(a2, x) - ref).abs().mean() > (w8 - ref).abs().mean()
    assert not model._forward_pre_hooks and all(not m._forward_pre_hooks for m in model.modules())


def test_calibration_sets():
    g = torch.tensor([0] * 90 + [1] * 8 + [2] * 2)
    split = Split(torch.zeros(100, 1, 1, 1), g, g)
    idx = calibration_indices(split, 30, balanced=True, seed=0)
    assert g[idx].bincount().tolist() == [20, 8, 2]  # small groups give all they have
    assert len(idx.unique()) == 30
    idx = calibration_indices(split, 30, balanced=False, seed=0)
    assert len(idx) == 30 and torch.equal(
        idx, calibration_indices(split, 30, balanced=False, seed=0)
    )
    assert len(calibration_indices(split, 500, balanced=True, seed=0)) == 100
    with pytest.raises(ConfigError, match="at least 1"):
        calibration_indices(split, 0, balanced=True, seed=0)


def test_make_quantizer_checks_before_work(tiny_dataset):
    precisions = [parse_precision("fp32"), parse_precision("fp16")]
    with pytest.raises(ConfigError, match="QAT takes integer weight-only precisions"):
        make_quantizer("qat", precisions, tiny_dataset.train)
    with pytest.raises(ConfigError, match="QAT takes"):
        make_quantizer("qat", [parse_precision("int8-a8")], tiny_dataset.train)
    with pytest.raises(ConfigError, match="method must be one of"):
        make_quantizer("gptq", precisions, tiny_dataset.train)


def test_real_int8_model_matches_the_simulation(tiny_dataset):
    from fairquant.quant.real import latency_ms, real_kernel_layers, to_int8_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet18", 4), in_channels=1, num_classes=3).eval()
    calib = tiny_dataset.train.x
    real = to_int8_model(model, calib)
    kernels = real_kernel_layers(real)
    assert kernels.get("ConvReLU2d", 0) + kernels.get("Conv2d", 0) == 20
    assert kernels["Linear"] == 1 and kernels["add_relu"] == 8
    x = tiny_dataset.test.x
    ref = predict_logits(model, x)
    sim = predict_logits(quantize_model(model, parse_precision("int8-a8"), calibration=calib), x)
    with torch.inference_mode():
        out = real(x)
    scale = ref.abs().max()
    assert (out - ref).abs().max() < 0.1 * scale and (sim - ref).abs().max() < 0.1 * scale
    assert latency_ms(real, x[:2], repeats=2, warmup=1) > 0
    with pytest.raises(ConfigError, match="backend 'tpu'"):
        to_int8_model(model, calib, backend="tpu")
