"""The choices and named defaults of fairquant's options, in one torch-free leaf.

What a user may pass (each choice a ``Literal`` or a tuple of names) and what they get when they
pass nothing: the modules that use a name import it from here (and re-export it where it was
defined before), so the command line reads its choices and defaults without loading torch or
scikit-learn (``fairquant --help`` and ``fairquant <command> --help`` stay light; a test holds
it). Only names the command line shows belong here; each stays owned by its concept (a test,
a quantizer ...) in the sense that nothing else defines it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from fairquant.errors import ConfigError

# --- data (data/base.py: DataSpec) ---------------------------------------------------------------
#: The seed of a dataset's train/test split unless one is given (``DataSpec.seed``).
DATA_SEED = 0


@dataclass(frozen=True)
class DataOptions:
    """The data options as a user gives them, as text: what ``fairquant train``, ``audit``,
    ``datasets`` and ``mitigate`` read their data from.

    ``dataset`` is a registered dataset's name, with its ``root``, ``target`` and ``group``
    attributes, ``image_size`` (a side in pixels) and ``grayscale``; ``seed`` seeds the train/test
    split; ``imbalance`` is ``'paper'``, ``'none'`` or comma-separated ratios per class (training
    split only); ``options`` are the dataset's own settings as ``KEY=VALUE`` items, VALUE read as
    JSON when it parses, else as text. :meth:`fairquant.data.DataSpec.from_options` reads them;
    its errors name the field (``ConfigError.parameter``).
    """

    dataset: str = "digits"
    root: str | None = None
    target: str | None = None
    group: str | None = None
    image_size: int | None = None
    imbalance: str = "none"
    seed: int = DATA_SEED
    grayscale: bool | None = None
    options: tuple[str, ...] = ()


# --- training (train/loop.py) --------------------------------------------------------------------
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


# --- quantization (quant/) -----------------------------------------------------------------------
#: The precisions the papers compare, highest first (quant/precision.py).
DEFAULT_PRECISIONS = ("fp32", "fp16", "bf16", "int16", "int8", "int4", "int3", "int2")
#: Activation range rules (quant/activations.py).
Calibration = Literal["minmax", "percentile", "mse"]
CALIBRATIONS: tuple[str, ...] = get_args(Calibration)
#: Calibration images drawn from the training split (quant/methods.py ``make_quantizer``).
CALIB_SIZE = 256
#: PTQ or QAT (quant/methods.py).
QUANT_METHODS: tuple[str, ...] = ("ptq", "qat")
#: QAT's fine-tuning (quant/qat.py).
DEFAULT_QAT_CONFIG = TrainConfig(epochs=5, lr=0.005, schedule="cosine")

# --- metrics (metrics/) --------------------------------------------------------------------------
#: Bootstrap replicates of an interval over test samples, the default of every entry point
#: (``audit``, ``fairquant audit --bootstrap``, experiments' ``bootstrap``); 0 turns them off.
#: Part of the statistics policy (metrics/policy.py).
N_BOOTSTRAP = 1000
#: What an audit does with a sample whose logits are not all finite (``fairquant._audit``).
NONFINITE = ("error", "wrong")
#: The verdict's tolerance unless one is given: accuracy points a group may lose
#: (metrics/verdict.py).
DEFAULT_MAX_DROP = 2.0
#: The second-order matrix: the Hessian ``H_a`` or the generalized Gauss-Newton ``G_a``
#: (metrics/curvature/introspect.py).
Curvature = Literal["hessian", "ggn"]
#: How per-layer, per-group sensitivity ``G_{l,b}(a)`` is obtained (metrics/sensitivity.py).
SensitivitySource = Literal["measured", "predicted", "diagonal"]

# --- mitigation (mitigate/) ----------------------------------------------------------------------
#: What an allocation minimises (mitigate/allocate.py).
AllocationObjective = Literal["worst-group", "phi", "loss"]
#: What "within the tolerance" means on the validation split (mitigate/search.py SearchConfig).
Criterion = Literal["estimate", "upper-bound"]
#: The search's defaults (mitigate/search.py SearchConfig).
SEARCH_CRITERION: Criterion = "estimate"
SEARCH_ROUNDS = 12

# --- experiments (experiments/) ------------------------------------------------------------------
#: Where an experiment's cells run (experiments/backends.py); the first is the default.
Backend = Literal["local", "process", "ray"]
BACKENDS: tuple[str, ...] = get_args(Backend)
#: ``preset:NAME`` names a shipped experiment (experiments/presets.py).
PRESET_PREFIX = "preset:"
#: A preset's scale unless one is asked for.
PRESET_SCALE = "cpu"
#: The folder a preset's dataset roots are relative to unless one is given.
PRESET_DATA = "../shared/data"
#: A mitigation comparison's defaults (experiments/mitigation.py ``mitigation_config``).
DEFAULT_MITIGATIONS = ("none", "gt", "re", "over", "weighted", "fairqat", "balanced-calib")
MITIGATION_PRECISIONS = ("fp32", "int8", "int4")
MITIGATION_METHODS = QUANT_METHODS
MITIGATION_SEEDS = (0, 1, 2)
#: The deployed precisions ``fairquant repair`` can repair (``fairquant.mitigate.repair``).
REPAIRABLE = "ort:int8[-pc][-minmax|-entropy|-percentile][-rr] (static), openvino:int8[-mixed][-bc]"
#: The share of the training split ``repair`` carves as its validation split for a model without
#: one (a model from elsewhere, a checkpoint trained without ``val_size``).
REPAIR_VAL_SIZE = 0.2
