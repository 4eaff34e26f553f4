import pytest
import torch
from torch import nn

from fairquant.errors import ConfigError
from fairquant.models import ModelSpec, build_model
from fairquant.quant import (
    DEFAULT_PRECISIONS,
    parse_precision,
    parse_precisions,
    quantize_model,
    quantize_symmetric,
    symmetric_scale,
)


def test_hand_worked_4bit():
    # q = 2^3 - 1 = 7, s = 1.4 / 7 = 0.2
    w = torch.tensor([-1.4, -0.31, 0.0, 0.09, 0.11, 0.5, 1.4])
    assert symmetric_scale(w, 4).item() == pytest.approx(0.2)
    expected = torch.tensor([-1.4, -0.4, 0.0, 0.0, 0.2, 0.4, 1.4])
    torch.testing.assert_close(quantize_symmetric(w, 4), expected)


def test_zero_maps_to_zero_and_extremes_are_exact():
    gen = torch.Generator().manual_seed(1)
    for bits in (2, 3, 4, 8, 16):
        w = torch.randn(257, generator=gen)
        w[5] = 0.0
        q = quantize_symmetric(w, bits)
        assert q[5] == 0.0
        i = w.abs().argmax()
        torch.testing.assert_close(q[i], w[i])  # no clipping error at max|w|
        assert q.abs().max() <= w.abs().max() * (1 + 1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_number_of_levels(bits):
    w = torch.linspace(-1, 1, 20001)
    q = quantize_symmetric(w, bits)
    s = symmetric_scale(w, bits)
    codes = torch.round(q / s).unique()
    assert len(codes) == 2**bits - 1
    assert codes.min() == -(2 ** (bits - 1) - 1) and codes.max() == 2 ** (bits - 1) - 1


def test_two_bits_is_ternary():
    w = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    q = quantize_symmetric(w, 2)
    assert set((q / w.abs().max()).unique().tolist()) == {-1.0, 0.0, 1.0}


def test_rounding_error_is_at_most_half_a_step():
    w = torch.randn(4096, generator=torch.Generator().manual_seed(3))
    for bits in (3, 8):
        err = (quantize_symmetric(w, bits) - w).abs().max()
        assert err <= symmetric_scale(w, bits) / 2 + 1e-7


def test_all_zero_tensor():
    assert torch.equal(quantize_symmetric(torch.zeros(4), 4), torch.zeros(4))


@pytest.mark.parametrize("bits", [0, 1, 17, 32, 2.5, True])
def test_bits_outside_range_rejected(bits):
    with pytest.raises(ConfigError, match=r"2\.\.16"):
        quantize_symmetric(torch.ones(3), bits)


@pytest.mark.parametrize("text", ["int1", "int17", "int0"])
def test_precision_bits_outside_range(text):
    with pytest.raises(ConfigError, match=r"2\.\.16"):
        parse_precision(text)


def test_precision_parsing():
    assert [p.name for p in parse_precisions(",".join(DEFAULT_PRECISIONS))] == list(
        DEFAULT_PRECISIONS
    )
    assert parse_precision(" INT8 ").bits == 8
    assert parse_precision("bf16").dtype == torch.bfloat16
    assert [p.name for p in parse_precisions("int4,int4,fp32")] == ["int4", "fp32"]
    with pytest.raises(ConfigError, match="unknown precision 'int'"):
        parse_precision("int")
    with pytest.raises(ConfigError, match="no precision"):
        parse_precisions(" , ")


def test_quantize_model_copies_and_touches_only_conv_linear_weights():
    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_model(model, parse_precision("int3"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed in the full-precision model"
    qs = q.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            w = qs[f"{name}.weight"]
            assert len(torch.round(w / symmetric_scale(w, 3)).unique()) <= 7
            assert not torch.equal(w, before[f"{name}.weight"])
    for k in before:
        if k.endswith("running_mean") or k.endswith("bias"):
            assert torch.equal(qs[k], before[k])


def test_half_precision_copies():
    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3)
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        q = quantize_model(model, parse_precision(name))
        assert all(p.dtype == dtype for p in q.parameters())
        assert next(model.parameters()).dtype == torch.float32
