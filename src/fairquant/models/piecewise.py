"""Which networks are piecewise linear in their input and linear in each layer's weights.

For such a network (ReLU, max/average pooling, BatchNorm in eval mode, residual sums) the second
derivative of each logit along one layer's weights is zero, so each group's Hessian trace equals
its generalized Gauss-Newton trace exactly (:mod:`fairquant.metrics.curvature`). A module says so
in one of two ways: its class is one of :data:`PIECEWISE_LINEAR_MODULES` (PyTorch's own layers),
or its class itself sets ``piecewise_linear: ClassVar[bool] = True`` (fairquant's models, or a
user's). The attribute is read from the class's own namespace, not inherited: a subclass that
overrides ``forward`` is not trusted until it says so too. Any other module counts as not
piecewise linear (the safe default: the trace is then estimated, not assumed).
"""

from __future__ import annotations

from torch import nn

#: PyTorch modules that are piecewise linear in their input and linear in each of their own
#: weights (BatchNorm in eval mode; every subclass of ``_BatchNorm`` counts).
PIECEWISE_LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.LeakyReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.Sequential,
)


def declares_piecewise_linear(module: nn.Module) -> bool:
    """Whether ``module`` alone is piecewise linear: a listed PyTorch class (exactly, or any
    BatchNorm) or a class that sets ``piecewise_linear = True`` in its own body."""
    cls = type(module)
    return (
        cls in PIECEWISE_LINEAR_MODULES
        or isinstance(module, nn.modules.batchnorm._BatchNorm)
        or vars(cls).get("piecewise_linear", False) is True
    )


def is_piecewise_linear(model: nn.Module) -> bool:
    """Whether every module of ``model`` (itself included) declares itself piecewise linear, so
    that in eval mode each logit is linear in each layer's weights and ``Tr(H_a) = Tr(G_a)``.

    >>> is_piecewise_linear(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    True
    >>> is_piecewise_linear(nn.Sequential(nn.Linear(3, 4), nn.Tanh()))
    False
    """
    return all(declares_piecewise_linear(m) for m in model.modules())
