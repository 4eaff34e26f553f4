import pytest
import torch

from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.mitigate import class_weights, resample_indices
from fairquant.mitigate.weights import class_losses, hardness_weights
from fairquant.models import ModelSpec, build_model
from fairquant.train import TrainConfig, train_model


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


class _Fixed(torch.nn.Module):
    """Logits ``bias`` for every input, whatever the input: known per-class losses."""

    def __init__(self, bias: list[float]) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1)


def test_hardness_weights_are_the_class_losses_normalised_over_the_trained_counts():
    y = torch.tensor([0] * 30 + [1] * 10 + [2] * 10)
    split = Split(torch.zeros(len(y), 1, 2, 2), y, y.clone())
    model = _Fixed([2.0, 0.0, -1.0])
    losses = class_losses(model, split, num_classes=3)
    expected = -torch.log_softmax(torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64), 0)
    assert torch.allclose(losses, expected)
    w = hardness_weights(model, split, num_classes=3)
    assert w[0] < w[1] < w[2]  # the model favours class 0: the others are harder
    assert torch.allclose(w.double() / w[0], expected / expected[0], atol=1e-6)
    assert (w.double() * y.bincount()).sum().item() == pytest.approx(len(y), rel=1e-6)
    absent = hardness_weights(model, split, num_classes=4)  # a class with no samples: weight 0
    assert absent[3] == 0 and torch.isnan(class_losses(model, split, num_classes=4)[3])
    with pytest.raises(ConfigError, match="depend on a model"):
        class_weights([3, 1], "hard")


def test_weights_that_follow_the_model_are_asked_for_every_epoch_in_eval_mode(tiny_dataset):
    split = tiny_dataset.train
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 2), in_channels=1, num_classes=3)
    modes = []

    def weights(m: torch.nn.Module) -> torch.Tensor:
        modes.append((m.training, torch.is_grad_enabled()))
        return hardness_weights(m, split, num_classes=3)

    history = train_model(
        model,
        split,
        TrainConfig(epochs=3, batch_size=10),
        class_weights=weights,
        show_progress=False,
    )
    assert modes == [(False, False)] * 3
    assert len(history.class_weights) == 3 and len(history.class_weights[0]) == 3
    assert history.class_weights[0] != history.class_weights[-1]  # they follow the model
