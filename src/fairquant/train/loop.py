"""A seeded, deterministic training loop over in-memory tensors.

The loop indexes the split's tensors directly instead of going through a ``DataLoader``: the data
already sits in memory as model-ready tensors, so a loader would only add per-sample Python
overhead (``bench/train_throughput.py`` compares this loop with a bare PyTorch loop).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairquant._progress import progress_bar
from fairquant.data.base import Split
from fairquant.errors import ConfigError

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "step", "constant"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and seed of one training run."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: Optimizer = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "cosine"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1; got {self.epochs}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 (BatchNorm); got {self.batch_size}")
        for name, choices in (("optimizer", Optimizer), ("schedule", Schedule)):
            if getattr(self, name) not in get_args(choices):
                raise ConfigError(
                    f"{name} must be one of {list(get_args(choices))}; got {getattr(self, name)!r}"
                )
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive; got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError(
                f"momentum and weight_decay must be >= 0; got {self.momentum}, {self.weight_decay}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**d)


@dataclass
class TrainHistory:
    """Mean training loss per epoch and the measured throughput."""

    epoch_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_bounds(n: int, batch_size: int) -> list[int]:
    """Batch start offsets plus ``n``; a trailing batch of one joins the previous batch.

    BatchNorm cannot normalise a batch of one sample, and dropping it would silently lose data.

    >>> batch_bounds(10, 4)
    [0, 4, 8, 10]
    >>> batch_bounds(9, 4)
    [0, 4, 9]
    """
    bounds = [*range(0, n, batch_size), n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return bounds


def training_device() -> torch.device:
    """Where :func:`train_model` trains: the GPU when CUDA is available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule: cosine to zero, x0.1 at 50% and 75% of the steps, or constant."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if config.schedule == "step":
        milestones = [total_steps // 2, (3 * total_steps) // 4]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def focal_cross_entropy(
    logits: Tensor, target: Tensor, *, weight: Tensor | None = None, gamma: float = 0.0
) -> Tensor:
    """The focal loss of Lin et al. (ICCV 2017, "Focal loss for dense object detection") for
    ``C`` classes: ``-Σ_i w_{y_i} (1 - p_i)^γ log p_i / Σ_i w_{y_i}``, with ``p_i`` the softmax
    probability of sample ``i``'s true class and ``w`` optional class weights (their α).

    ``γ = 0`` is the (weighted) cross-entropy exactly; ``γ > 0`` scales down the samples the model
    already gets right, so the loss favours the hard ones. Written here because torchvision's
    ``sigmoid_focal_loss`` is the binary, sigmoid form.

    >>> z, y = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
    >>> bool(torch.isclose(focal_cross_entropy(z, y), F.cross_entropy(z, y)))
    True
    """
    if gamma < 0:
        raise ConfigError(f"the focal loss needs gamma >= 0; got {gamma}")
    if gamma == 0:
        return F.cross_entropy(logits, target, weight=weight)
    logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None])[:, 0]
    losses = -((1 - logp.exp()) ** gamma) * logp
    if weight is None:
        return losses.mean()
    w = weight[target]
    return (w * losses).sum() / w.sum()


def train_model(
    model: nn.Module,
    data: Split,
    config: TrainConfig,
    *,
    class_weights: Tensor | None = None,
    focal_gamma: float = 0.0,
    show_progress: bool = True,
) -> TrainHistory:
    """Train ``model`` in place with cross-entropy; the same seed gives the same weights.

    ``class_weights`` (one per class) weight the cross-entropy, normalised per batch by the
    summed weights of its samples, as ``torch.nn.functional.cross_entropy`` does;
    ``focal_gamma`` > 0 trains with the focal loss instead (:func:`focal_cross_entropy`).

    With a GPU present (:func:`training_device`) the model trains there in channels-last memory
    format under bfloat16 autocast (no loss scaling needed), batches copied over as they are
    drawn, and is moved back to the CPU afterwards: the caller's model stays a CPU model.
    """
    n = len(data)
    if n < 2:
        raise ConfigError(f"training needs at least 2 samples; the split has {n}")
    torch.manual_seed(config.seed)  # any randomness inside the model (dropout)
    order = torch.Generator().manual_seed(config.seed)
    bounds = batch_bounds(n, config.batch_size)
    steps = len(bounds) - 1
    device = training_device()
    gpu = device.type == "cuda"
    if gpu:
        model.to(device, memory_format=torch.channels_last)
        class_weights = None if class_weights is None else class_weights.to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps * config.epochs)
    history = TrainHistory()
    model.train()
    start = time.perf_counter()
    with progress_bar("train", config.epochs * steps, enabled=show_progress) as advance:
        for epoch in range(config.epochs):
            perm = torch.randperm(n, generator=order)
            total = torch.zeros((), device=device)
            for lo, hi in itertools.pairwise(bounds):
                idx = perm[lo:hi]
                x, y = data.x[idx], data.y[idx]
                if gpu:
                    x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
                    y = y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
                    loss = focal_cross_entropy(model(x), y, weight=class_weights, gamma=focal_gamma)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.detach() * (hi - lo)
                advance()
            history.epoch_loss.append(float(total) / n)
            advance(0, status=f"epoch {epoch + 1} loss {history.epoch_loss[-1]:.3f}")
    if gpu:
        model.to("cpu", memory_format=torch.contiguous_format)
    history.seconds = time.perf_counter() - start
    history.images_per_second = n * config.epochs / history.seconds
    model.eval()
    return history
