"""Shared fixtures: tiny datasets and models that train in well under a second."""

from __future__ import annotations

import pytest
import torch

from fairquant.data import DataSpec, GroupedDataset, Split


@pytest.fixture
def tiny_dataset() -> GroupedDataset:
    """A 3-class, 3-group dataset of random 8x8 images (for plumbing, not accuracy)."""
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        y = torch.arange(n) % 3
        return Split(torch.randn(n, 1, 8, 8, generator=gen), y, y.clone())

    return GroupedDataset(
        spec=DataSpec(name="tiny"),
        train=split(30),
        test=split(12),
        classes=["a", "b", "c"],
        group_names=["a", "b", "c"],
        target="label",
        group="label",
        mean=(0.0,),
        std=(1.0,),
    )
