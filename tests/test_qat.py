import torch
from torch.nn.utils import parametrize

from fairquant.audit import audit_model
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
