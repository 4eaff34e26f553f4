import math

import pytest
import torch
import torch.nn.functional as F

from fairquant.errors import ConfigError
from fairquant.mitigate import class_weights, resample_indices
from fairquant.models import ModelSpec, build_model
from fairquant.train import TrainConfig, train_model
from fairquant.train.loop import focal_cross_entropy


def test_over_and_under_sampling_balance_the_labels():
    y = torch.tensor([0] * 50 + [1] * 7 + [2] * 20)
    over = resample_indices(y, "over", seed=0)
    assert y[over].bincount().tolist() == [50, 50, 50]
    assert set(over.tolist()) == set(range(len(y)))  # every original sample kept
    ones = over[y[over] == 1].bincount(minlength=len(y))[50:57]
    assert ones.max() - ones.min() <= 1  # repeats spread evenly: 50 = 7 * 7 + 1
    under = resample_indices(y, "under", seed=0)
    assert y[under].bincount().tolist() == [7, 7, 7] and len(under.unique()) == 21
    assert torch.equal(under, resample_indices(y, "under", seed=0))
    assert not torch.equal(under, resample_indices(y, "under", seed=1))
    with pytest.raises(ConfigError, match="'over', 'under' or 'both'"):
        resample_indices(y, "smote", seed=0)


def test_class_weights_give_the_intended_effective_distribution():
    counts = torch.tensor([400, 100, 25])
    w = class_weights(counts, "inverse-frequency")
    effective = counts * w
    assert torch.allclose(effective, effective[0].expand(3))  # each class weighs the same
    assert (counts * w).sum() == pytest.approx(counts.sum().item())
    en = class_weights(counts, "effective-number", beta=0.99)
    assert en[0] < en[1] < en[2]
    assert (en / en[0])[2] < (w / w[0])[2]  # milder than inverse frequency
    assert torch.allclose(
        class_weights(counts, "effective-number", beta=0.0), torch.ones(3, dtype=torch.float64)
    )
    explicit = class_weights(counts, [1.0, 2.0, 4.0])
    assert torch.allclose(
        explicit / explicit[0], torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    )
    for bad in ("focal", [1.0], [-1.0, 1.0, 1.0]):
        with pytest.raises(ConfigError):
            class_weights(counts, bad)
    with pytest.raises(ConfigError, match="needs training samples"):
        class_weights([3, 0], "inverse-frequency")


def test_weighted_training_moves_predictions_toward_rare_classes(tiny_dataset):
    split = tiny_dataset.train
    config = TrainConfig(epochs=3, batch_size=10)
    torch.manual_seed(0)
    init = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=3)
    plain = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=3)
    weighted = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=3)
    plain.load_state_dict(init.state_dict())
    weighted.load_state_dict(init.state_dict())
    train_model(plain, split, config, show_progress=False)
    w = torch.tensor([1.0, 1.0, 50.0])
    train_model(weighted, split, config, class_weights=w, show_progress=False)
    p_plain = plain(split.x).softmax(1)[:, 2].mean()
    p_weighted = weighted(split.x).softmax(1)[:, 2].mean()
    assert p_weighted > p_plain


def test_focal_loss_is_cross_entropy_at_gamma_0_and_favours_hard_samples():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    assert torch.isclose(
        focal_cross_entropy(logits, y, weight=w), F.cross_entropy(logits, y, weight=w)
    )
    # Lin et al.'s definition, term by term
    p = logits.softmax(1)[torch.arange(6), y]
    expected = (w[y] * -((1 - p) ** 2) * p.log()).sum() / w[y].sum()
    assert torch.isclose(focal_cross_entropy(logits, y, weight=w, gamma=2.0).double(), expected)
    # an easy sample (p = 0.9) counts far less against a hard one (p = 0.1) than under CE
    easy, hard = torch.tensor([[math.log(9.0), 0.0]]), torch.tensor([[0.0, math.log(9.0)]])
    target = torch.tensor([0])
    ratio = focal_cross_entropy(easy, target, gamma=2.0) / focal_cross_entropy(
        hard, target, gamma=2.0
    )
    assert ratio.item() == pytest.approx((0.1**2 * math.log(0.9)) / (0.9**2 * math.log(0.1)))
    with pytest.raises(ConfigError, match="gamma >= 0"):
        focal_cross_entropy(logits, y, gamma=-1.0)


def test_focal_training_moves_predictions_toward_the_hard_class(tiny_dataset):
    split = tiny_dataset.train
    config = TrainConfig(epochs=3, batch_size=10)
    torch.manual_seed(0)
    init = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=3)
    plain = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=3)
    focal = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=3)
    plain.load_state_dict(init.state_dict())
    focal.load_state_dict(init.state_dict())
    train_model(plain, split, config, show_progress=False)
    train_model(focal, split, config, focal_gamma=2.0, show_progress=False)
    loss_plain = F.cross_entropy(plain(split.x), split.y, reduction="none")
    loss_focal = F.cross_entropy(focal(split.x), split.y, reduction="none")
    assert loss_focal.max() < loss_plain.max()  # the hardest training sample is fitted better
