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
    assert [p.name for p in parse_precisions("int4,fp32")] == ["int4", "fp32"]
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


def test_per_channel_equals_per_tensor_on_one_channel():
    w = torch.randn(1, 3, 3, 3, generator=torch.Generator().manual_seed(4))
    for bits in (2, 4, 8):
        assert torch.equal(
            quantize_symmetric(w, bits, per_channel=True), quantize_symmetric(w, bits)
        )


def test_per_channel_scales_each_output_channel():
    w = torch.tensor([[0.5, -1.0, 0.25], [10.0, 3.0, -7.0], [0.0, 0.0, 0.0]])
    q = quantize_symmetric(w, 3, per_channel=True)  # q = 3 levels each side
    torch.testing.assert_close(q[0], torch.tensor([2 / 3, -1.0, 1 / 3]))  # 1.5 rounds to 2
    torch.testing.assert_close(q[1], torch.tensor([10.0, 10 / 3, -20 / 3]))
    assert torch.equal(q[2], torch.zeros(3))
    s = symmetric_scale(w, 3, per_channel=True)
    assert s.shape == (3, 1) and s[1].item() == pytest.approx(10 / 3)


def test_ste_gradient_is_one_inside_and_zero_outside_the_clamp():
    w = torch.tensor([-1.0, -0.3, 0.0, 0.45, 1.0], requires_grad=True)
    quantize_symmetric(w, 4, ste=True).sum().backward()
    assert torch.equal(w.grad, torch.ones(5))  # max-abs scale: every weight is inside the range
    # outside the clamp range the gradient is 0: scale fixed by the first entry, others beyond it
    from fairquant.quant.functional import clamp_inclusive, round_ste

    z = torch.tensor([-9.0, -2.0, 0.4, 1.0, 7.5], requires_grad=True)
    clamp_inclusive(round_ste(z), -2, 1).sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert round_ste(torch.tensor([0.4, 0.6])).tolist() == [0.0, 1.0]


def test_suffixes_parse_and_reject():
    p = parse_precision("int3-pc-fl8")
    assert (p.bits, p.per_channel, p.edge_bits) == (3, True, 8)
    for bad, msg in (
        ("int4-xx", "unknown or repeated suffix 'xx'"),
        ("int4-pc-pc", "repeated"),
        ("int4-fl1", "2..16"),
        ("int4-fl", "2..16"),
    ):
        with pytest.raises(ConfigError, match=msg):
            parse_precision(bad)


def test_first_last_layers_keep_edge_bits():
    from fairquant.quant import layer_bits, quantized_layers

    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3)
    names = [n for n, _ in quantized_layers(model)]
    bits = layer_bits(model, parse_precision("int2-fl8"))
    assert bits[names[0]] == 8 and bits[names[-1]] == 8
    assert all(bits[n] == 2 for n in names[1:-1])
    q = quantize_model(model, parse_precision("int2-fl8")).state_dict()
    first = q[f"{names[0]}.weight"]
    assert len(first.unique()) > 3  # 8-bit grid, not ternary
    middle = q[f"{names[1]}.weight"]
    assert len(middle.unique()) <= 3


def test_packed_size():
    from fairquant.quant import packed_size_bytes

    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    # conv 36 weights; BN 4+4 params + 4+4 running stats + 1 int64 counter; linear 432 + 3
    bn = 16 * 4 + 8
    assert packed_size_bytes(model, parse_precision("fp32")) == (36 + 432 + 3) * 4 + bn
    assert packed_size_bytes(model, parse_precision("fp16")) == (36 + 432 + 3 + 16) * 2 + 8
    int4 = (18 + 4) + (216 + 4) + 3 * 4 + bn
    assert packed_size_bytes(model, parse_precision("int4")) == int4
    int3_pc = (14 + 4 * 4) + (162 + 3 * 4) + 3 * 4 + bn  # ceil(36*3/8)=14, 432*3/8=162
    assert packed_size_bytes(model, parse_precision("int3-pc")) == int3_pc


def test_fold_batchnorm_then_quantize():
    from fairquant.quant import packed_size_bytes

    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet18", 2), in_channels=1, num_classes=3).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 1, 8, 8)
    q16 = quantize_model(model, parse_precision("int16-bn"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q16.modules())
    torch.testing.assert_close(q16(x), model(x), atol=1e-3, rtol=1e-3)
    assert not torch.equal(quantize_model(model, parse_precision("int4-bn"))(x), q16(x))
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    bn_bytes = sum(
        4 * 4 * m.num_features + 8 for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )
    conv_out = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    # folding replaces every BatchNorm (4 float tensors + a counter) by a float32 conv bias
    diff = packed_size_bytes(model, parse_precision("int8")) - packed_size_bytes(
        model, parse_precision("int8-bn")
    )
    assert n_conv == 20 and diff == bn_bytes - 4 * conv_out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("int8,int4,int8", r"'int8' is listed twice"),
        ("int8, INT8", r"'int8' is listed twice"),
        ("int4-pc-fl8,int4-fl8-pc", r"'int4-fl8-pc' is the same precision as 'int4-pc-fl8'"),
    ],
)
def test_a_precision_listed_twice_is_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_precisions(text)
