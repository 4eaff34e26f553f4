"""Liu et al.'s balancing augmentation, checked against the paper's stated parameters, and the
mitigation names and effective class distributions of the pipeline."""

import collections

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.mitigate import (
    augment_images,
    balance_augment,
    balancing_key,
    mitigated_split,
    mitigated_weights,
    parse_mitigation,
    parse_mitigations,
)
from fairquant.mitigate.augment import MAX_ANGLE, PATCH_RANGE, ZOOM_RANGE
from fairquant.quant import parse_precision


def _images(n: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, size, size, generator=torch.Generator().manual_seed(seed))


def test_gt_draws_one_of_rotation_zoom_flip_within_the_papers_ranges():
    x = _images(600, size=16)
    out, params = augment_images(x, "gt", generator=torch.Generator().manual_seed(0))
    ops = collections.Counter(p.op for p in params)
    assert set(ops) == {"rotate", "zoom", "flip"} and min(ops.values()) > 150  # ~200 each
    angles = torch.tensor([p.value for p in params if p.op == "rotate"])
    assert angles.abs().max() <= MAX_ANGLE and angles.min() < -18 and angles.max() > 18
    assert angles.min() < 0 < angles.max()
    scales = torch.tensor([p.value for p in params if p.op == "zoom"])
    assert ZOOM_RANGE[0] <= scales.min() < 1.11 and 1.19 < scales.max() <= ZOOM_RANGE[1]
    for i, p in enumerate(params[:60]):  # each image is exactly its one transform of the source
        if p.op == "flip":
            expected = x[i].flip(-1)
        elif p.op == "rotate":
            expected = TF.rotate(x[i], p.value, InterpolationMode.BILINEAR, fill=0.0)
        else:
            expected = TF.affine(
                x[i], angle=0.0, translate=[0, 0], scale=p.value, shear=[0.0, 0.0],
                interpolation=InterpolationMode.BILINEAR, fill=0.0,
            )  # fmt: skip
        assert torch.allclose(out[i], expected)
    assert not torch.equal(out[0], x[0])


def test_zoom_magnifies_by_the_drawn_factor():
    # a centred bright square of side 8 grows to about 8 * s under zoom by s
    x = torch.zeros(1, 1, 64, 64)
    x[..., 28:36, 28:36] = 1.0
    for s in (1.1, 1.2):
        z = TF.affine(x[0], angle=0.0, translate=[0, 0], scale=s, shear=[0.0, 0.0])
        side = (z[0, 32] > 0.5).sum().item()
        assert side == pytest.approx(8 * s, abs=1.0)


def test_random_erasing_patches_are_square_with_sides_uniform_in_3_to_20():
    x = _images(900, size=32)
    out, params = augment_images(x, "re", generator=torch.Generator().manual_seed(1))
    sides = collections.Counter(int(p.value) for p in params)
    assert set(sides) == set(range(PATCH_RANGE[0], PATCH_RANGE[1] + 1))  # 18 values, ~50 each
    assert min(sides.values()) > 20 and max(sides.values()) < 90
    for i, p in enumerate(params):
        changed = (out[i] != x[i]).any(0)  # same patch in every channel
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        n = int(p.value)
        assert changed.sum() == n * n  # exactly the n x n square, nothing else
        assert (rows.min(), rows.max()) == (p.top, p.top + n - 1)
        assert (cols.min(), cols.max()) == (p.left, p.left + n - 1)


def test_random_erasing_fixed_and_clipped_sizes():
    x = _images(50, size=12)
    _, params = augment_images(x, "re-fixed:10", generator=torch.Generator().manual_seed(0))
    assert {p.value for p in params} == {10.0}
    _, params = augment_images(x, "re", generator=torch.Generator().manual_seed(0))
    assert max(p.value for p in params) == 12  # sides above the image's are clipped to it
    for bad in ("re-fixed:0", "re-fixed:x", "cutout"):
        with pytest.raises(ConfigError, match="augmentation"):
            augment_images(x, bad, generator=torch.Generator())


@pytest.mark.parametrize("kind", ["gt", "re"])
def test_balancing_tops_every_class_up_to_the_largest_and_keeps_originals(kind):
    y = torch.tensor([0] * 40 + [1] * 9 + [2] * 3)
    split = Split(_images(len(y), size=16), y, y.clone())
    before = split.x.clone()
    out = balance_augment(split, kind, seed=0)
    assert out.y.bincount().tolist() == [40, 40, 40]
    assert torch.equal(out.g, out.y)
    assert torch.equal(out.x[: len(y)], before) and torch.equal(split.x, before)
    assert torch.equal(out.x, balance_augment(split, kind, seed=0).x)  # seeded
    assert not torch.equal(out.x, balance_augment(split, kind, seed=1).x)


def test_balancing_uses_class_group_cells_when_the_group_is_not_the_class():
    y = torch.tensor([0] * 12 + [1] * 6)
    g = torch.tensor([0] * 10 + [1] * 2 + [0] * 3 + [1] * 3)
    split = Split(_images(len(y), size=8), y, g)
    assert balancing_key(split).bincount().tolist() == [10, 2, 3, 3]
    out = balance_augment(split, "re", seed=0)
    assert balancing_key(out).bincount().tolist() == [10, 10, 10, 10]


def test_resampling_and_weights_give_equal_effective_class_mass():
    y = torch.tensor([0] * 60 + [1] * 25 + [2] * 5)
    split = Split(torch.zeros(len(y), 1, 2, 2), y, y.clone())
    for name, expected in (("over", 60), ("under", 5), ("fairqat", 30)):
        out = mitigated_split(split, parse_mitigation(name), seed=0)
        assert out.y.bincount().tolist() == [expected] * 3, name
    w = mitigated_weights(split, parse_mitigation("weighted"), num_classes=3)
    mass = y.bincount() * w  # expected share of each class in the weighted loss
    assert torch.allclose(mass, mass.mean().expand(3))
    explicit = mitigated_weights(split, parse_mitigation("weighted:1,2,4"), num_classes=3)
    assert torch.allclose(explicit / explicit[0], torch.tensor([1.0, 2.0, 4.0]))
    # FairQAT: the balanced resample carries the minority classes; no count weights on top
    assert mitigated_weights(split, parse_mitigation("fairqat"), num_classes=3) is None
    assert mitigated_weights(split, parse_mitigation("gt"), num_classes=3) is None


def test_mitigation_names_parse_compose_and_fail_clearly():
    m = parse_mitigation("re+balanced-calib")
    assert (m.augment, m.balanced_calib, m.training_key) == ("re", True, "re")
    assert parse_mitigation("balanced-calib").training_key == "none"
    fq = parse_mitigation("fairqat")
    assert (fq.resample, fq.weights, fq.focal, fq.edge_bits) == ("both", None, 2.0, 8)
    assert parse_mitigation("focal").focal == 2.0 and parse_mitigation("focal:0.5").focal == 0.5
    assert parse_mitigation("over+focal:1").training_key == "over+focal:1"
    for bad in ("focal:0", "focal:-1", "focal:x"):
        with pytest.raises(ConfigError, match="gamma must be a positive number"):
            parse_mitigation(bad)
    requested = [parse_precision(s) for s in ("fp32", "int8", "int4")]
    assert [p.name for p in fq.precisions(requested)] == ["fp32", "int8", "int4-fl8"]
    assert fq.precision(parse_precision("int4-a8")).name == "int4-fl8-a8"
    assert parse_mitigation("weighted:effective-number").weights == "effective-number"
    assert parse_mitigation("weighted:1,2").weights == (1.0, 2.0)
    assert [m.name for m in parse_mitigations("none,gt,weighted:1,3,re-fixed:3+under,gt")] == [
        "none", "gt", "weighted:1,3", "re-fixed:3+under"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match=r"unknown mitigation 'smote'.*balanced-calib.*fairqat"):
        parse_mitigation("smote")
    with pytest.raises(ConfigError, match="more than one component"):
        parse_mitigation("gt+re")
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        parse_mitigation("none+gt")
    with pytest.raises(ConfigError, match="weights must be"):
        parse_mitigation("weighted:a,b")
    with pytest.raises(ConfigError, match="augmentation"):
        parse_mitigation("re-fixed:0")


def test_fairqat_trains_and_keeps_first_and_last_layers_at_8_bits_with_ptq_and_qat(
    tiny_dataset, one_thread
):
    from dataclasses import replace

    from fairquant.mitigate import mitigated_quantizer, train_mitigated
    from fairquant.models import ModelSpec
    from fairquant.quant import quantize_symmetric, quantized_layers
    from fairquant.quant.qat import DEFAULT_QAT_CONFIG
    from fairquant.train import TrainConfig

    fq = parse_mitigation("fairqat")
    config = TrainConfig(epochs=1, batch_size=10)
    model, history = train_mitigated(tiny_dataset, ModelSpec("cnn", 2), config, fq)
    assert len(history.epoch_loss) == 1
    int4 = parse_precision("int4")
    for method in ("ptq", "qat"):
        quantize = mitigated_quantizer(
            fq, method, [int4], tiny_dataset.train, num_classes=3,
            qat_config=replace(DEFAULT_QAT_CONFIG, epochs=1, batch_size=10),
        )  # fmt: skip
        weights = [layer.weight.detach() for _, layer in quantized_layers(quantize(model, int4))]
        on_grid = [[torch.allclose(quantize_symmetric(w, b), w) for b in (4, 8)] for w in weights]
        assert on_grid[0] == on_grid[-1] == [False, True]  # first and last on the 8-bit grid
        assert all(g[0] for g in on_grid[1:-1])  # the rest on the 4-bit grid


def test_train_mitigated_is_fit_on_the_mitigated_data_and_loss(tiny_dataset):
    from fairquant.mitigate import mitigated_split, mitigated_weights, train_mitigated
    from fairquant.models import ModelSpec
    from fairquant.train import TrainConfig, fit

    config, spec = TrainConfig(epochs=1, batch_size=10, seed=1), ModelSpec("cnn", 2)
    plain, _ = fit(tiny_dataset, spec, config, show_progress=False)
    none, _ = train_mitigated(tiny_dataset, spec, config, parse_mitigation("none"))
    m = parse_mitigation("over+weighted+focal")
    mitigated, _ = train_mitigated(tiny_dataset, spec, config, m)
    by_hand, _ = fit(
        tiny_dataset,
        spec,
        config,
        prepare=lambda train: mitigated_split(train, m, seed=1),
        class_weights=mitigated_weights(tiny_dataset.train, m, num_classes=3),
        focal_gamma=2.0,
        show_progress=False,
    )
    same = [torch.equal(a, b) for a, b in zip(plain.parameters(), none.parameters(), strict=True)]
    assert all(same)
    pairs = zip(mitigated.parameters(), by_hand.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not torch.equal(plain.fc.weight, mitigated.fc.weight)
