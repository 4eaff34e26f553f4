import pytest
import torch
from torch.nn.utils import parametrize

from fairquant._audit import audit_model
from fairquant.errors import ConfigError
from fairquant.models import ModelSpec, build_model
from fairquant.quant import parse_precision, parse_precisions, quantize_model, quantized_layers
from fairquant.quant.qat import qat_finetune
from fairquant.train import TrainConfig


def test_qat_returns_on_grid_weights_and_leaves_the_model(tiny_dataset):
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=2, batch_size=8, lr=0.01)
    q = qat_finetune(
        model, tiny_dataset.train, parse_precision("int3"), config, show_progress=False
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert not any(parametrize.is_parametrized(m) for _, m in quantized_layers(q))
    for name, layer in quantized_layers(q):
        assert not torch.equal(layer.weight, before[f"{name}.weight"])
        # weights lie on the 3-bit grid: quantizing again changes nothing
        again = quantize_model(q, parse_precision("int3"))
        torch.testing.assert_close(dict(again.named_modules())[name].weight, layer.weight)
    q2 = qat_finetune(
        model, tiny_dataset.train, parse_precision("int3"), config, show_progress=False
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(q.state_dict().values(), q2.state_dict().values(), strict=True)
    )


def test_qat_rejects_float_precisions(tiny_dataset):
    model = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=3)
    try:
        qat_finetune(model, tiny_dataset.train, parse_precision("fp16"), show_progress=False)
    except ConfigError as e:
        assert "integer precisions" in str(e)
    else:
        raise AssertionError("fp16 QAT was accepted")


def test_audit_with_qat(tiny_dataset):
    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3)
    config = TrainConfig(epochs=1, batch_size=8)

    def quantize(m, p):
        return qat_finetune(m, tiny_dataset.train, p, config, show_progress=False)

    result = audit_model(
        model,
        tiny_dataset.test,
        tiny_dataset.group_names,
        parse_precisions("int4"),
        method="qat",
        quantize=quantize,
        show_progress=False,
    )
    assert set(result.table[result.table.precision == "int4"].method) == {"qat"}
    assert result.overall().loc["int4", "size_bytes"] < result.overall().loc["fp32", "size_bytes"]


def test_lsq_learns_steps_and_returns_plain_on_grid_weights(tiny_dataset):
    from fairquant.quant.qat import LearnedStepQuantize, _scale_grad

    x = torch.tensor([2.0], requires_grad=True)
    (3 * _scale_grad(x, 0.1)).sum().backward()
    assert x.grad.item() == pytest.approx(0.3)

    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3)
    w = model.fc.weight
    lsq = LearnedStepQuantize(w, 3, per_channel=False)
    assert lsq.step.item() == pytest.approx(2 * w.abs().mean().item() / 3**0.5, rel=1e-5)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05)
    q = qat_finetune(
        model, tiny_dataset.train, parse_precision("int3"), config, lsq=True, show_progress=False
    )
    assert q.state_dict().keys() == model.state_dict().keys()
    for _, layer in quantized_layers(q):
        assert len(layer.weight.unique()) <= 8  # 2^3 levels of one learned step
    pc = qat_finetune(
        model, tiny_dataset.train, parse_precision("int2-pc"), config, lsq=True, show_progress=False
    )
    for _, layer in quantized_layers(pc):
        for row in layer.weight:
            assert len(row.unique()) <= 4
