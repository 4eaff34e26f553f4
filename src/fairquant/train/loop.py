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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairquant._progress import progress_bar
from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.models.predict import memory_format_for, predict_logits
from fairquant.options import Optimizer as Optimizer
from fairquant.options import Schedule as Schedule
from fairquant.options import Select as Select
from fairquant.options import SelectMetric, TrainConfig
from fairquant.train.augment import crop_flip, default_padding


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
