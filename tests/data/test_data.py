import pytest
import torch

from fairquant.data import (
    PAPER_RATIO,
    DataSpec,
    default_digits_spec,
    imbalance_indices,
    load_dataset,
)
from fairquant.errors import ConfigError, DataError


def test_digits_default_is_imbalanced_train_and_untouched_test():
    ds = load_dataset(default_digits_spec())
    assert ds.image_size == (32, 32) and ds.in_channels == 1 and ds.num_classes == 10
    train = torch.bincount(ds.train.y, minlength=10)
    test = torch.bincount(ds.test.y, minlength=10)
    # stratified 70/30 split of 1,797 images: every class keeps ~30% of its ~180 images in test
    assert len(ds.test) == 540 and test.min() >= 52 and test.max() <= 55
    # each class keeps floor(n_k * r_k / 16) of its ~126 stratified training images
    assert train.tolist() == [124, 127, 62, 64, 31, 31, 15, 15, 7, 7]
    balanced = load_dataset(DataSpec(name="digits")).train.y.bincount(minlength=10)
    assert train.tolist() == [
        int(n * r / 16) for n, r in zip(balanced.tolist(), PAPER_RATIO, strict=False)
    ]
    assert torch.equal(load_dataset(DataSpec(name="digits")).test.y, ds.test.y)
    assert torch.equal(ds.train.g, ds.train.y) and ds.group_names == [str(d) for d in range(10)]
    # standardized with the training split's statistics
    assert abs(ds.train.x.mean().item()) < 1e-5 and abs(ds.train.x.std().item() - 1) < 1e-3


def test_digits_is_seeded():
    a = load_dataset(default_digits_spec(seed=3))
    b = load_dataset(default_digits_spec(seed=3))
    c = load_dataset(default_digits_spec(seed=4))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.test.x, c.test.x)


def test_digits_without_imbalance_and_other_size():
    ds = load_dataset(DataSpec(name="digits", image_size=16, test_size=0.5))
    assert ds.image_size == (16, 16)
    counts = torch.bincount(ds.train.y)
    assert counts.min() >= 87 and len(ds.train) + len(ds.test) == 1797


def test_imbalance_indices_counts():
    y = torch.arange(10).repeat_interleave(160)
    idx = imbalance_indices(y, PAPER_RATIO, seed=0)
    assert torch.bincount(y[idx]).tolist() == [160, 160, 80, 80, 40, 40, 20, 20, 10, 10]
    assert torch.equal(idx, imbalance_indices(y, PAPER_RATIO, seed=0))
    assert not torch.equal(idx, imbalance_indices(y, PAPER_RATIO, seed=1))


def test_bad_data_options():
    with pytest.raises(
        ConfigError,
        match=r"unknown dataset 'mnistt'; expected one of: celeba, cifar10, digits, fer2013",
    ):
        load_dataset(DataSpec(name="mnistt"))
    with pytest.raises(ConfigError, match="'digit'"):
        load_dataset(DataSpec(name="digits", target="age"))
    with pytest.raises(ConfigError, match="3 entries; the data has 10 labels"):
        load_dataset(DataSpec(name="digits", imbalance=(1, 2, 3)))
    with pytest.raises(ConfigError, match="test_size"):
        load_dataset(DataSpec(name="digits", test_size=1.5))


def test_spec_round_trip():
    spec = default_digits_spec(seed=5)
    assert DataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="unknown data-spec keys"):
        DataSpec.from_dict({"name": "digits", "bogus": 1})


def test_split_validation():
    with pytest.raises(DataError, match="differ in length"):
        from fairquant.data import Split

        Split(
            torch.zeros(3, 1, 2, 2),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
        )


def test_data_options_read_into_a_spec():
    from fairquant.data import DataOptions

    spec = DataSpec.from_options(
        DataOptions(
            "utkface",
            root="faces",
            target="gender",
            group="race",
            image_size=32,
            imbalance="paper",
            seed=3,
            grayscale=False,
            options=("age_buckets=[18,40,60]", "split=random", " limit =5", "note=a=b"),
        )
    )
    assert spec == DataSpec(
        name="utkface",
        root="faces",
        target="gender",
        group="race",
        image_size=32,
        imbalance=PAPER_RATIO,
        seed=3,
        options={
            "age_buckets": [18, 40, 60],
            "split": "random",
            "limit": 5,
            "note": "a=b",
            "grayscale": False,
        },
    )
    assert DataSpec.from_options(DataOptions()) == DataSpec(name="digits")
    assert DataSpec.from_options(DataOptions(imbalance="2,1")).imbalance == (2.0, 1.0)


@pytest.mark.parametrize(
    ("options", "parameter", "message"),
    [
        ({"imbalance": "a,b"}, "imbalance", "imbalance 'a,b': expected 'paper', 'none' or comma"),
        ({"options": ("bad",)}, "options", "options 'bad': expected KEY=VALUE"),
        ({"options": ("=1",)}, "options", "options '=1': expected KEY=VALUE"),
    ],
)
def test_data_option_errors_name_the_parameter(options, parameter, message):
    """The library names its parameter, first in the message: a front end spells it its way."""
    from fairquant.data import DataOptions

    with pytest.raises(ConfigError) as error:
        DataSpec.from_options(DataOptions(**options))
    assert error.value.parameter == parameter and str(error.value).startswith(message)
