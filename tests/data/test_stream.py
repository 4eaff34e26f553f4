"""Streamed evaluation data: Datasets and DataLoaders of (x, y, g) give the in-memory numbers."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fairquant._audit import audit
from fairquant.data import Split
from fairquant.data.stream import SplitDataset, as_batches
from fairquant.errors import ConfigError, DataError
from fairquant.models import SmallCNN


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, num_classes=3).eval()


@pytest.mark.filterwarnings("ignore:cev and sde")
def test_streamed_loader_equals_in_memory_split(random_images, model):
    data = random_images(20, 45, 8)
    kwargs = {"precisions": "int8,int4,int4-a8", "n_bootstrap": 200, "calibration": data.test.x}
    memory = audit(model, data.test, group_names=data.group_names, **kwargs)
    loader = DataLoader(SplitDataset(data.test, data.group_names), batch_size=7)
    streamed = audit(model, loader, **kwargs)
    assert streamed.group_names == data.group_names  # declared by the dataset
    # float32 kernels may sum a batch of 7 in another order than the whole split (oneDNN picks
    # them by batch size on AVX-512 machines): losses agree to float32 rounding, and so do their
    # differences (excess loss) in absolute terms, not relative to their small size
    pd.testing.assert_frame_equal(
        memory.table, streamed.table, check_exact=False, rtol=1e-6, atol=1e-6
    )
    assert memory.by_group("accuracy").notna().all().all()


class DictFeatures(Dataset):
    """Rows of two named inputs, the way a tabular or text model takes them."""

    group_names = ("young", "old")
    classes = ("no", "yes")

    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(1)
        self.a, self.b = torch.randn(n, 3, generator=gen), torch.randn(n, 2, generator=gen)
        self.y = (self.a[:, 0] > 0).long()
        self.g = torch.arange(n) % 2

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"a": self.a[i], "b": self.b[i]}, self.y[i], self.g[i]


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fa, self.fb = nn.Linear(3, 2), nn.Linear(2, 2)

    def forward(self, a, b):
        return self.fa(a) + self.fb(b)


def test_dict_inputs_from_a_dataset():
    data = DictFeatures(40)
    result = audit(TwoInputs(), data, precisions="int8", batch_size=16, n_bootstrap=0)
    assert result.group_names == ["young", "old"]
    assert result.record["class_names"] == ["no", "yes"]
    assert result.overall().loc["fp32", "n"] == 40
    expected = TwoInputs()(data.a, data.b).argmax(1).numpy()
    assert (result.samples.predictions["fp32"] == expected).all()


def test_a_shuffling_loader_is_refused(random_images, model):
    data = random_images(10, 40, 8)
    loader = DataLoader(SplitDataset(data.test), batch_size=8, shuffle=True)
    with pytest.raises(DataError, match=r"other samples on a second pass.*shuffle=False"):
        audit(model, loader, precisions="int8", n_bootstrap=0)


def test_malformed_batches_are_named():
    class Pairs(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(2), 0

    with pytest.raises(DataError, match=r"Dataset Pairs, batch 0: expected a batch \(x, y, g\)"):
        list(as_batches(Pairs()))

    class FloatGroups(Pairs):
        def __getitem__(self, i):
            return torch.zeros(2), 0, 0.5

    with pytest.raises(DataError, match="g \\(groups\\) must be 2 integer codes"):
        list(as_batches(FloatGroups(), batch_size=2))
    with pytest.raises(ConfigError, match="data must be a GroupedDataset, a Split"):
        as_batches([1, 2, 3])


@pytest.mark.filterwarnings("ignore:cev and sde")
def test_streamed_calibration_takes_the_first_samples_and_says_so(random_images, model):
    data = random_images(10, 30, 8)
    loader = DataLoader(SplitDataset(data.test), batch_size=8)
    result = audit(model, loader, precisions="int8-a8", calib_size=12, n_bootstrap=0)
    assert any("calibrated on the first 12 audited samples" in n for n in result.notes)
    assert result.record["calibration"]["size"] == 12
    # the same numbers as calibrating the in-memory split on those 12 samples
    memory = audit(
        model, data.test, precisions="int8-a8", calibration=data.test.x[:12], n_bootstrap=0
    )
    pd.testing.assert_frame_equal(memory.table, result.table, rtol=1e-6, atol=1e-6)  # as above


def test_group_codes_beyond_the_names_are_an_error(model):
    g = torch.tensor([0, 1, 2, 2])
    split = Split(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), g)
    with pytest.raises(DataError, match=r"group code 2 but 2 group names \['a', 'b'\]"):
        audit(model, split, precisions="fp32", group_names=["a", "b"], n_bootstrap=0)
