"""Per-layer precision specs: chosen from a sensitivity table, saved, loaded and applied."""

import json

import pytest
import torch

from fairquant.errors import ConfigError
from fairquant.metrics.sensitivity import group_sensitivity
from fairquant.mitigate.allocate import allocate_precision
from fairquant.models import ModelSpec, build_model
from fairquant.quant import layer_bits, parse_precision, quantize_model, quantized_layers
from fairquant.quant.precision import Precision


def test_sensitivity_and_spec(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = tiny_dataset.train
    table = group_sensitivity(model, data, tiny_dataset.group_names, (2, 8))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    names = [n for n, _ in quantized_layers(model)]
    assert list(dict.fromkeys(table.layer)) == names and len(table) == 2 * len(names) * 3
    eight = table[table.bits == 8].excess.abs()
    two = table[table.bits == 2].excess.abs()
    assert eight.max() < two.max()
    p = allocate_precision(model, table, objective="loss", budget_bits=5.0, name="mix").precision
    bits = layer_bits(model, p)
    sizes = table.drop_duplicates("layer").set_index("layer").numel
    assert sum(bits[n] * sizes[n] for n in names) <= 5.0 * sizes.sum()
    assert set(bits.values()) <= {2, 8}
    path = p.save(tmp_path / "mix.json")
    loaded = parse_precision(f"@{path}")
    assert loaded == p
    q = quantize_model(model, loaded)
    assert q is not model


def test_spec_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_precision(f"@{tmp_path / 'none.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_precision(f"@{bad}")
    bad.write_text(json.dumps({"name": "x", "weights": 3}))
    with pytest.raises(ConfigError, match="expected an object with keys"):
        parse_precision(f"@{bad}")
    bad.write_text(json.dumps({"name": "x", "bits": 4, "layers": {"fc": 1}}))
    with pytest.raises(ConfigError, match=r"2\.\.16"):
        parse_precision(f"@{bad}")
    model = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=2)
    p = Precision("x", "int", 4, layers=(("nope", 8),))
    with pytest.raises(ConfigError, match="names layers the model does not have"):
        layer_bits(model, p)


@pytest.mark.parametrize("name", ["int8", "INT8", "fp16", "fp32", "int4-pc-fl8", "int8-a8-bn"])
def test_a_spec_cannot_take_a_built_in_name(tmp_path, name):
    path = Precision("x", "int", 4, layers=(("fc", 8),)).save(tmp_path / "spec.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "name": name}))
    with pytest.raises(ConfigError, match=rf"{path}.*{name!r} is a built-in precision"):
        parse_precision(f"@{path}")


@pytest.mark.parametrize(
    ("name", "why"),
    [("torch:int8", "':'"), ("a,b", "','"), ("@other", "'@'"), ("", "empty"), (" x", "spaces")],
)
def test_a_spec_name_must_be_listable(tmp_path, name, why):
    path = Precision("x", "int", 4).save(tmp_path / "spec.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "name": name}))
    with pytest.raises(ConfigError, match=rf"{path}.*{why}"):
        parse_precision(f"@{path}")


def test_a_spec_with_a_built_in_name_is_not_written(tmp_path):
    with pytest.raises(ConfigError, match=r"'int4' is a built-in precision"):
        Precision("int4", "int", 4, layers=(("fc", 8),)).save(tmp_path / "int4.json")
    assert not (tmp_path / "int4.json").exists()
