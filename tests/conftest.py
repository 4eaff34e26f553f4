"""Shared fixtures: tiny datasets and models that train in well under a second."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fairquant.data import DataSpec, GroupedDataset, Split


def _random_images(n_train: int, n_test: int, size: int) -> GroupedDataset:
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        y = torch.arange(n) % 3
        return Split(torch.randn(n, 1, size, size, generator=gen), y, y.clone())

    return GroupedDataset(
        spec=DataSpec(name="tiny"),
        train=split(n_train),
        test=split(n_test),
        classes=["a", "b", "c"],
        group_names=["a", "b", "c"],
        target="label",
        group="label",
        mean=(0.0,),
        std=(1.0,),
    )


@pytest.fixture
def random_images() -> Callable[[int, int, int], GroupedDataset]:
    """``random_images(n_train, n_test, size)``: a 3-class, 3-group dataset of seeded random
    1-channel ``size`` x ``size`` images, labels cycling 0, 1, 2 (for plumbing, not accuracy)."""
    return _random_images


@pytest.fixture
def tiny_dataset() -> GroupedDataset:
    """30 training and 12 test 8x8 random images (:func:`random_images`)."""
    return _random_images(30, 12, 8)


@pytest.fixture(autouse=True)
def fq_cache(tmp_path_factory, monkeypatch):
    """A fresh, empty decode cache for every test, so no test depends on another's files."""
    path = tmp_path_factory.mktemp("fairquant-cache")
    monkeypatch.setenv("FAIRQUANT_CACHE", str(path))
    return path


@pytest.fixture
def shared_data():
    """The real datasets in ../shared/data (or $FAIRQUANT_SHARED_DATA); skip when absent."""
    root = Path(
        os.environ.get("FAIRQUANT_SHARED_DATA")
        or Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    if not root.is_dir():
        pytest.skip(f"the real datasets are not on this machine ({root} is absent)")
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of many tiny double-backward passes: OpenMP's hand-off cost
    dominates them on a shared 2-core machine (measured 0.04 s vs 0.68 s per matvec there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
