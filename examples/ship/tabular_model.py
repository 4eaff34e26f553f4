"""The MLP of the tabular demo, as a factory ``fairquant audit --model tabular_model:mlp`` calls."""

from torch import nn


def mlp(num_classes: int, in_channels: int, hidden: int = 32) -> nn.Module:
    """``in_channels`` features -> two hidden layers -> ``num_classes`` logits."""
    return nn.Sequential(
        nn.Linear(in_channels, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
