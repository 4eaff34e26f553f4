"""Augmentation, the validation split, best-epoch selection and the memory-format rule."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from fairquant.data import DataSpec, Split, get_source, validation_split
from fairquant.data.digits import load_digits_dataset
from fairquant.errors import ConfigError
from fairquant.models import ModelSpec, build_model, memory_format_for, predict_logits
from fairquant.train import TrainConfig, fit, train_model
from fairquant.train import loop as loop_module
from fairquant.train.augment import crop_flip, default_padding
from fairquant.train.loop import validation_metrics


def _windows(img: torch.Tensor, p: int) -> list[torch.Tensor]:
    """Every crop of the reflect-padded ``img`` (C, H, W) and its mirror, by brute force."""
    _, h, w = img.shape
    padded = torch.nn.functional.pad(img[None], (p, p, p, p), mode="reflect")[0]
    crops = [padded[:, i : i + h, j : j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_crop_flip_is_a_seeded_window_of_the_padded_image():
    x = torch.randn(16, 2, 6, 5)
    a = crop_flip(x, padding=2, flip=True, generator=torch.Generator().manual_seed(3))
    b = crop_flip(x, padding=2, flip=True, generator=torch.Generator().manual_seed(3))
    c = crop_flip(x, padding=2, flip=True, generator=torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    for img, out in zip(x, a, strict=True):
        assert any(torch.equal(out, w) for w in _windows(img, 2))
    cl = crop_flip(
        x.contiguous(memory_format=torch.channels_last),
        padding=2,
        flip=True,
        generator=torch.Generator().manual_seed(3),
    )
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, a)


def test_no_flip_where_not_allowed():
    x = torch.randn(64, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(crop_flip(x, padding=0, flip=False, generator=gen), x)
    mirrored = crop_flip(x, padding=0, flip=True, generator=gen)
    same = (mirrored == x).flatten(1).all(1)
    flipped = (mirrored == x.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all()) and 10 < int(flipped.sum()) < 54
    shifted = crop_flip(x, padding=1, flip=False, generator=gen)
    for img, out in zip(x, shifted, strict=True):
        assert any(torch.equal(out, w) for w in _windows(img, 1)[:9])  # unmirrored windows


def test_default_padding():
    assert default_padding(32, 32) == 4 and default_padding(64, 48) == 6


def test_flip_permission_per_dataset():
    assert not load_digits_dataset(DataSpec("digits")).flip_ok
    assert get_source("utkface").flip_ok and get_source("cifar10").flip_ok
    assert not get_source("mnist").flip_ok and not get_source("folder").flip_ok
    mnist = get_source("mnist")
    assert mnist.flips(DataSpec("mnist", options={"flip": True}))
    with pytest.raises(ConfigError, match="option flip='yes'"):
        mnist.flips(DataSpec("mnist", options={"flip": "yes"}))


def test_training_flips_only_where_the_data_allows(tiny_dataset, monkeypatch):
    seen = []

    def spy(x, *, padding, flip, generator):
        seen.append((padding, flip))
        return crop_flip(x, padding=padding, flip=flip, generator=generator)

    monkeypatch.setattr(loop_module, "crop_flip", spy)
    config = TrainConfig(epochs=1, batch_size=10)
    fit(tiny_dataset, ModelSpec("cnn", 4), config, show_progress=False)
    assert seen == [(1, False)] * 3  # 8 px images: an eighth is 1 px; flip_ok is false
    seen.clear()
    train_model(
        build_model(ModelSpec("cnn", 4), in_channels=1, num_classes=3),
        tiny_dataset.train,
        TrainConfig(epochs=1, batch_size=10, crop_padding=2),
        flip_ok=True,
        show_progress=False,
    )
    assert seen == [(2, True)] * 3
    seen.clear()
    fit(
        tiny_dataset, ModelSpec("cnn", 4), TrainConfig(epochs=1, augment=False), show_progress=False
    )
    assert seen == []


def _cells(s: Split) -> np.ndarray:
    return (s.y * 10 + s.g).numpy()


def test_validation_split_is_disjoint_stratified_and_seeded():
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 60 + [1] * 30 + [2] * 9 + [3])  # class 3: one sample
    g = torch.randint(0, 2, (100,), generator=gen)
    split = Split(torch.arange(100.0).view(100, 1, 1, 1), y, g)
    rest, val = validation_split(split, 0.2, seed=0)
    assert len(val) == 20 and len(rest) == 80
    ids = torch.cat([rest.x.flatten(), val.x.flatten()]).long()
    assert sorted(ids.tolist()) == list(range(100))  # disjoint, nothing lost
    cells, counts = np.unique(_cells(split), return_counts=True)
    val_counts = {c: int((_cells(val) == c).sum()) for c in cells}
    for c, n in zip(cells, counts, strict=True):
        assert abs(val_counts[c] - 0.2 * n) < 1 and val_counts[c] <= n - 1
    assert 3 * 10 + int(g[-1]) not in set(_cells(val))  # the single sample stays in training
    again, val2 = validation_split(split, 0.2, seed=0)
    other = validation_split(split, 0.2, seed=1)[1]
    assert torch.equal(val.x, val2.x) and torch.equal(rest.x, again.x)
    assert not torch.equal(val.x, other.x)
    assert len(validation_split(split, 7, seed=0)[1]) == 7


@pytest.mark.parametrize("size", [0, 0.0, 1.5, 99, 100, "0.1", True])
def test_bad_validation_sizes(size):
    y = torch.arange(100) % 2
    split = Split(torch.zeros(100, 1, 1, 1), y, y.clone())
    with pytest.raises(ConfigError, match="validation size"):
        validation_split(split, size, seed=0)


def test_bad_selection_configs():
    with pytest.raises(ConfigError, match="val_size"):
        TrainConfig(select="best")
    with pytest.raises(ConfigError, match="val_size"):
        TrainConfig(patience=2)
    with pytest.raises(ConfigError, match="val_size"):
        TrainConfig(val_size=1.0)
    with pytest.raises(ConfigError, match="select_metric"):
        TrainConfig(val_size=0.2, select="best", select_metric="f1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown training-config keys"):
        TrainConfig.from_dict({"epochs": 2, "mixup": 1})


def test_configs_from_before_augmentation_read_as_unaugmented():
    assert TrainConfig.from_dict({"epochs": 2}).augment is False
    config = TrainConfig(val_size=0.25, select="best", crop_padding=2)
    assert TrainConfig.from_dict(config.to_dict()) == config


def _noise(n: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    return Split(torch.randn(n, 1, 8, 8, generator=gen), y, y % 2)


def test_best_epoch_selection_restores_the_best_weights():
    # random labels: the validation loss rises as the model memorises, so the best epoch is early
    data = _noise(60, 0)
    config = TrainConfig(
        epochs=6, batch_size=10, lr=0.05, val_size=0.25, select="best", select_metric="loss"
    )
    rest, val = validation_split(data, 0.25, seed=0)
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 8), in_channels=1, num_classes=3)
    history = train_model(model, rest, config, validation=val, show_progress=False)
    assert len(history.val_loss) == len(history.val_accuracy) == len(history.epoch_loss) == 6
    assert len(history.val_worst_group_accuracy) == 6
    best = int(np.argmin(history.val_loss)) + 1
    assert history.selected_epoch == best < 6
    assert validation_metrics(model, val)["loss"] == pytest.approx(history.val_loss[best - 1])
    torch.manual_seed(0)
    last = build_model(ModelSpec("cnn", 8), in_channels=1, num_classes=3)
    h_last = train_model(
        last,
        rest,
        TrainConfig(**{**config.to_dict(), "select": "last"}),
        validation=val,
        show_progress=False,
    )
    assert h_last.selected_epoch == 6 and h_last.val_loss == history.val_loss
    assert validation_metrics(last, val)["loss"] == pytest.approx(history.val_loss[-1])


def test_patience_stops_early():
    data = _noise(60, 0)
    config = TrainConfig(
        epochs=8, batch_size=10, lr=0.05, val_size=0.25, select_metric="loss", patience=2
    )
    rest, val = validation_split(data, 0.25, seed=0)
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 8), in_channels=1, num_classes=3)
    history = train_model(model, rest, config, validation=val, show_progress=False)
    best = int(np.argmin(history.val_loss)) + 1
    assert len(history.epoch_loss) == best + 2 < 8
    with pytest.raises(ConfigError, match="need a validation split"):
        train_model(model, rest, config, show_progress=False)
    assert history.selected_epoch == len(history.epoch_loss)  # select="last" keeps the last


def test_memory_format_rule():
    resnet = build_model(ModelSpec("resnet18", 16), in_channels=3, num_classes=2)
    assert memory_format_for(resnet) == torch.channels_last
    # a strided convolution with < 16 input channels: contiguous (a torch 2.14 CPU heap bug)
    for width in (4, 8):
        thin = build_model(ModelSpec("resnet18", width), in_channels=3, num_classes=2)
        assert memory_format_for(thin) == torch.contiguous_format
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    assert memory_format_for(mlp) == torch.contiguous_format


# ResNet-18 at width 8 on 16 px gray images with an odd last batch, on two threads, with the
# machine's own kernels: the case that crashed the CPU training loop on AVX-512 under the old rule.
_TRAIN_THIN_RESNET = """
import torch
from fairquant.data import Split
from fairquant.models import ModelSpec, build_model
from fairquant.train import TrainConfig, train_model
torch.manual_seed(0)
split = Split(torch.randn(101, 1, 16, 16), torch.randint(0, 2, (101,)), torch.zeros(101).long())
model = build_model(ModelSpec("resnet18", 8), in_channels=1, num_classes=2)
config = TrainConfig(epochs=2, batch_size=50, augment=False)
train_model(model, split, config, show_progress=False)
print("trained")
"""


def test_training_a_thin_resnet_on_two_threads_does_not_crash():
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_ISA", "_CAPABILITY"))}
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN_THIN_RESNET],
        env={**env, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]


def test_training_and_prediction_use_the_memory_format(tiny_dataset):
    model = build_model(ModelSpec("cnn", 8), in_channels=1, num_classes=3)
    assert memory_format_for(model) == torch.channels_last
    layouts = []
    model.register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    train_model(
        model, tiny_dataset.train, TrainConfig(epochs=1, batch_size=10), show_progress=False
    )
    assert layouts == [True] * 3
    assert all(p.is_contiguous() for p in model.parameters())  # handed back contiguous
    layouts.clear()
    predict_logits(model, tiny_dataset.test.x, batch_size=5)
    assert layouts == [True] * 3


def test_fit_holds_the_validation_split_out_before_a_mitigation_resamples():
    data = load_digits_dataset(DataSpec(name="digits", image_size=8))
    seen: list[Split] = []

    def prepare(train: Split) -> Split:  # a mitigation that duplicates every training image
        seen.append(train)
        return train.subset(torch.arange(len(train)).repeat(2))

    config = TrainConfig(epochs=1, batch_size=64, val_size=0.2, select="best")
    _, history = fit(data, ModelSpec("cnn", 4), config, prepare=prepare, show_progress=False)
    rest, _ = validation_split(data.train, 0.2, seed=0)
    assert len(seen) == 1 and torch.equal(seen[0].x, rest.x)
    assert history.selected_epoch == 1 and len(history.val_accuracy) == 1
