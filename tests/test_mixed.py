import itertools
import json

import numpy as np
import pytest
import torch

from fairquant.errors import ConfigError
from fairquant.models import ModelSpec, build_model
from fairquant.quant import layer_bits, parse_precision, quantize_model, quantized_layers
from fairquant.quant.mixed import allocate_bits, layer_sensitivity, sensitivity_precision
from fairquant.quant.precision import Precision


def brute_force(costs, sizes, options, budget):
    best = None
    for choice in itertools.product(range(len(options)), repeat=costs.shape[1]):
        if sum(s * options[k] for s, k in zip(sizes, choice, strict=True)) > budget:
            continue
        value = max(sum(c[layer, k] for layer, k in enumerate(choice)) for c in costs)
        if best is None or value < best[0] - 1e-12:
            best = (value, [options[k] for k in choice])
    return best


@pytest.mark.parametrize("groups", [1, 3])
def test_allocation_is_optimal(groups):
    rng = np.random.default_rng(0)
    options = [2, 4, 8]
    for _ in range(10):
        costs = rng.random((groups, 4, 3)) * np.array([4.0, 1.0, 0.1])  # fewer bits cost more
        sizes = rng.integers(10, 100, 4).tolist()
        budget = 4.0 * sum(sizes)
        chosen = allocate_bits(costs, sizes, options, budget)
        value = max(sum(c[i, options.index(b)] for i, b in enumerate(chosen)) for c in costs)
        assert sum(s * b for s, b in zip(sizes, chosen, strict=True)) <= budget
        assert value == pytest.approx(brute_force(costs, sizes, options, budget)[0], abs=1e-9)


def test_allocation_budget_below_the_smallest_model():
    with pytest.raises(ConfigError, match="below the smallest model"):
        allocate_bits(np.zeros((2, 2)), [10, 10], [2, 8], budget_bits=30)


def test_sensitivity_and_spec(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = layer_sensitivity(model, tiny_dataset.train, (2, 8))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    names = [n for n, _ in quantized_layers(model)]
    assert list(dict.fromkeys(table.layer)) == names and len(table) == 2 * len(names)
    eight = table[table.bits == 8].loss_increase.abs()
    two = table[table.bits == 2].loss_increase.abs()
    assert eight.max() < two.max()
    p = sensitivity_precision(table, budget_bits=5.0, name="mix")
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
