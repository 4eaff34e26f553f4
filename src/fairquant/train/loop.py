"""A seeded, deterministic training loop over in-memory tensors.

The loop indexes the split's tensors directly instead of going through a ``DataLoader``: the data
already sits in memory as model-ready tensors, so a loader would only add per-sample Python
overhead; augmentation runs on each drawn batch as one vectorised op (:mod:`.augment`), and
convolutional models train in channels-last memory format on the CPU as on the GPU
(:func:`~fairquant.models.predict.memory_format_for`). ``bench/train_throughput.py`` compares
this loop with the fastest of the bare PyTorch loops.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairquant._progress import progress_bar
from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.models.predict import memory_format_for, predict_logits
from fairquant.train.augment import crop_flip, default_padding

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "step", "constant"]
Select = Literal["last", "best"]
SelectMetric = Literal["accuracy", "loss", "worst_group_accuracy"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, augmentation, validation and seed of one training run.

    Augmentation (on by default): ``augment`` crops each training image at a random offset after
    reflect-padding it by ``crop_padding`` pixels (``None``: an eighth of the shorter image side,
    4 px at 32 px) and, with ``flip`` and only where the data allows it
    (``GroupedDataset.flip_ok``: not for digits), mirrors it left-right with probability 1/2
    (:mod:`fairquant.train.augment`); seeded by ``seed``.

    Validation (off by default): ``val_size`` > 0, a fraction in (0, 1) of the training split or
    a count of samples, holds out a validation split stratified by target x group
    (:func:`fairquant.data.validation_split` with this ``seed``, so calibration or a search can
    rebuild it) and trains on the rest; the history then records the validation accuracy, loss
    and worst-group accuracy of every epoch. ``select="best"`` keeps the weights of the epoch
    with the best ``select_metric`` on it (``"accuracy"`` and ``"worst_group_accuracy"``:
    highest, ``"loss"``: lowest; a tie keeps the earlier epoch) instead of the last epoch's;
    ``patience`` stops training after that many epochs without an improvement of it.
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: Optimizer = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "cosine"
    seed: int = 0
    augment: bool = True
    crop_padding: int | None = None
    flip: bool = True
    val_size: float | int = 0
    select: Select = "last"
    select_metric: SelectMetric = "accuracy"
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1; got {self.epochs}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 (BatchNorm); got {self.batch_size}")
        choices_of = (
            ("optimizer", Optimizer),
            ("schedule", Schedule),
            ("select", Select),
            ("select_metric", SelectMetric),
        )
        for name, choices in choices_of:
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
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ConfigError(f"crop_padding must be >= 0 or None; got {self.crop_padding}")
        size = self.val_size
        if isinstance(size, bool) or not isinstance(size, (int, float)) or size < 0:
            raise ConfigError(f"val_size must be 0, a fraction in (0, 1) or a count; got {size!r}")
        if isinstance(size, float) and size >= 1:
            raise ConfigError(f"val_size {size} must be a fraction in (0, 1) or an integer count")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be at least 1 or None; got {self.patience}")
        if (self.select == "best" or self.patience is not None) and not size:
            raise ConfigError("select='best' and patience need a validation split: set val_size")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown training-config keys {sorted(unknown)}")
        # configs recorded before augmentation existed describe runs trained without it
        return cls(**{"augment": False, **d})


@dataclass
class TrainHistory:
    """Per-epoch training loss (and validation metrics with a validation split), the epoch whose
    weights the model keeps (1-based) and the measured throughput."""

    epoch_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_worst_group_accuracy: list[float] = field(default_factory=list)
    selected_epoch: int = 0
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


def validation_metrics(model: nn.Module, val: Split) -> dict[str, float]:
    """Accuracy (%), mean cross-entropy and worst-group accuracy (%) of ``model`` on ``val``."""
    logits = predict_logits(model, val.x)
    correct = (logits.argmax(1) == val.y).double()
    groups = torch.unique(val.g)
    return {
        "accuracy": 100 * float(correct.mean()),
        "loss": float(F.cross_entropy(logits, val.y)),
        "worst_group_accuracy": 100 * min(float(correct[val.g == a].mean()) for a in groups),
    }


def _improves(value: float, best: float | None, metric: SelectMetric) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def train_model(
    model: nn.Module,
    data: Split,
    config: TrainConfig,
    *,
    validation: Split | None = None,
    flip_ok: bool = False,
    class_weights: Tensor | None = None,
    focal_gamma: float = 0.0,
    show_progress: bool = True,
) -> TrainHistory:
    """Train ``model`` in place with cross-entropy; the same seed gives the same weights.

    ``flip_ok`` says whether mirrored images keep their labels (``GroupedDataset.flip_ok``):
    without it ``config.flip`` has no effect. ``class_weights`` (one per class) weight the
    cross-entropy, normalised per batch by the summed weights of its samples, as
    ``torch.nn.functional.cross_entropy`` does; ``focal_gamma`` > 0 trains with the focal loss
    instead (:func:`focal_cross_entropy`). With ``config.val_size`` the model trains on the rest
    ``validation`` (held out of ``data`` by the caller: :func:`~fairquant.train.fit.fit` carves
    it by ``config.val_size`` before any resampling) scores the model after every epoch, and
    ``config.select`` and ``config.patience`` act on it (see :class:`TrainConfig`).

    A convolutional model trains in channels-last memory format
    (:func:`~fairquant.models.predict.memory_format_for`). With a GPU present
    (:func:`training_device`) it trains there under bfloat16 autocast (no loss scaling needed),
    batches copied over as they are drawn and augmented there. Either way the caller's model
    ends as a contiguous CPU model.
    """
    val = validation
    if val is None and (config.select == "best" or config.patience is not None):
        raise ConfigError("select='best' and patience need a validation split; none was given")
    n = len(data)
    if n < 2:
        raise ConfigError(f"training needs at least 2 samples; the split has {n}")
    torch.manual_seed(config.seed)  # any randomness inside the model (dropout)
    order = torch.Generator().manual_seed(config.seed)
    # a stream of its own, so turning augmentation on or off leaves the batch order unchanged
    augment_seed = int(np.random.SeedSequence([config.seed, 1]).generate_state(1)[0])
    shifts = torch.Generator().manual_seed(augment_seed)
    padding = (
        config.crop_padding
        if config.crop_padding is not None
        else default_padding(*data.x.shape[2:])
    )
    flip = config.flip and flip_ok
    bounds = batch_bounds(n, config.batch_size)
    steps = len(bounds) - 1
    device = training_device()
    gpu = device.type == "cuda"
    layout = memory_format_for(model)
    model.to(device, memory_format=layout)
    if class_weights is not None:
        class_weights = class_weights.to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps * config.epochs)
    history = TrainHistory()
    best: float | None = None
    best_epoch = 0
    best_state: dict[str, Tensor] | None = None
    stale = 0
    model.train()
    start = time.perf_counter()
    with progress_bar("train", config.epochs * steps, enabled=show_progress) as advance:
        for epoch in range(config.epochs):
            perm = torch.randperm(n, generator=order)
            total = torch.zeros((), device=device)
            for lo, hi in itertools.pairwise(bounds):
                idx = perm[lo:hi]
                x = data.x[idx].to(device, non_blocking=True)
                y = data.y[idx].to(device, non_blocking=True)
                if config.augment:
                    x = crop_flip(x, padding=padding, flip=flip, generator=shifts)
                x = x.contiguous(memory_format=layout)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
                    loss = focal_cross_entropy(model(x), y, weight=class_weights, gamma=focal_gamma)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.detach() * (hi - lo)
                advance()
            history.epoch_loss.append(float(total) / n)
            status = f"epoch {epoch + 1} loss {history.epoch_loss[-1]:.3f}"
            history.selected_epoch = epoch + 1
            if val is not None:
                scores = validation_metrics(model, val)  # restores training mode
                history.val_accuracy.append(scores["accuracy"])
                history.val_loss.append(scores["loss"])
                history.val_worst_group_accuracy.append(scores["worst_group_accuracy"])
                status += f" val acc {scores['accuracy']:.1f}%"
                score = scores[config.select_metric]
                if _improves(score, best, config.select_metric):
                    best, best_epoch, stale = score, epoch + 1, 0
                    if config.select == "best":
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    stale += 1
            advance(0, status=status)
            if config.patience is not None and stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
        history.selected_epoch = best_epoch
    model.to("cpu", memory_format=torch.contiguous_format)
    history.seconds = time.perf_counter() - start
    history.images_per_second = n * len(history.epoch_loss) / history.seconds
    model.eval()
    return history
