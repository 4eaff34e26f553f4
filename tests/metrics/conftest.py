"""A tiny smooth model with grouped data, for curvature and sensitivity checks against exact
float64 derivatives (torch.func)."""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

TanhGroups = tuple[nn.Module, Tensor, Tensor, Tensor]


def _tanh_groups(hidden: int) -> TanhGroups:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 4)).double().eval()
    x = torch.randn(90, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (90,))
    g = torch.arange(90) % 3
    return model, x, y, g


@pytest.fixture(scope="session")
def tanh_groups() -> Callable[[int], TanhGroups]:
    """``tanh_groups(hidden)``: a seeded 6 -> ``hidden`` -> 4 tanh MLP in float64 (smooth, so its
    Hessian differs from its GGN) and 90 samples (x, y, g) in 3 groups of 30."""
    return _tanh_groups
