"""Mitigations as named options that compose with training and quantization.

A mitigation name is one of the components below, or several joined with ``+``
(``re+balanced-calib``):

- ``none``: plain training and quantization (the baseline).
- ``gt``, ``re``, ``re-fixed:N``: Liu et al.'s class-balancing augmentation
  (:mod:`fairquant.mitigate.augment`): every class topped up to the largest with geometric
  transformations or random erasing.
- ``over``, ``under``: resampling every class to the largest or smallest count
  (:func:`~fairquant.mitigate.resample.resample_indices`).
- ``weighted`` (= ``weighted:inverse-frequency``), ``weighted:effective-number``,
  ``weighted:w1,w2,...``: a class-weighted cross-entropy
  (:func:`~fairquant.mitigate.weights.class_weights`). The weights come from the ORIGINAL
  training counts of each class, so combined with resampling the loss still favours the
  originally rare classes.
- ``focal`` (= ``focal:2``), ``focal:G``: the focal loss with γ = G (Lin et al., 2017;
  :func:`~fairquant.train.loop.focal_cross_entropy`), which scales down the samples the model
  already gets right and so favours the hard ones, whatever their class counts.
- ``balanced-calib``: PTQ calibrates activation ranges on images drawn equally from every group
  (the five-architecture study's bias-aware calibration). Only precisions that quantize
  activations statically (``int8-a8``, ``int4-a8``, ...) calibrate anything: weight-only PTQ and
  QAT are unchanged by it, and :func:`calibration_note` says so.
- ``fairqat``: Bellam & Kim's FairQAT, "resampling, a weighted cross-entropy favouring hard and
  minority classes, and mixed-precision QAT": over-and-under resampling (every class to the mean
  count, which gives the minority classes equal weight), the focal loss with γ = 2 (which favours
  the hard samples), and the first and last layers at 8 bits (each requested ``int<b>`` with
  b < 8 becomes ``int<b>-fl8``). An earlier design put count-based class weights on top of the
  balanced resample, which favoured the rare classes twice and cost 24 points of overall
  accuracy on UTKFace; one that weighted each class by its current loss, re-measured every epoch,
  oscillated (a class down-weighted one epoch was forgotten and weighted 8.5x the next).

Resampling and augmentation balance the classes, or the (class, group) cells when the group is
not the class (see :func:`~fairquant.mitigate.augment.balancing_key`). The same mitigated training
data and loss are used by QAT's fine-tuning, so QAT does not undo the mitigation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from fairquant.data.base import GroupedDataset, Split
from fairquant.errors import ConfigError
from fairquant.mitigate.augment import balance_augment, balancing_key, check_augmentation
from fairquant.mitigate.resample import resample_indices
from fairquant.mitigate.weights import SCHEMES, class_weights
from fairquant.models.registry import ModelSpec
from fairquant.quant.methods import Quantizer, make_quantizer
from fairquant.quant.precision import Precision
from fairquant.quant.qat import DEFAULT_QAT_CONFIG
from fairquant.train.fit import fit
from fairquant.train.loop import TrainConfig, TrainHistory

#: The component names ``parse_mitigation`` accepts (``N`` and ``w1,w2,...`` are numbers).
VALID_NAMES = (
    "none",
    "gt",
    "re",
    "re-fixed:N",
    "over",
    "under",
    "weighted",
    "weighted:inverse-frequency",
    "weighted:effective-number",
    "weighted:w1,w2,...",
    "focal",
    "focal:G",
    "balanced-calib",
    "fairqat",
)

#: FairQAT's first and last layer bits.
FAIRQAT_EDGE_BITS = 8
#: The focal loss's γ of ``focal`` and ``fairqat`` (Lin et al.'s default).
FOCAL_GAMMA = 2.0


@dataclass(frozen=True)
class Mitigation:
    """What a mitigation changes: training data, loss, calibration and QAT precision."""

    name: str = "none"
    augment: str | None = None
    resample: str | None = None
    weights: str | tuple[float, ...] | None = None
    focal: float | None = None
    balanced_calib: bool = False
    edge_bits: int | None = None

    @property
    def changes_training(self) -> bool:
        return any(v is not None for v in (self.augment, self.resample, self.weights, self.focal))

    @property
    def training_key(self) -> str:
        """The name of the training recipe alone: mitigations with the same key train the same
        model (``balanced-calib`` trains like ``none``), so a runner can train it once.

        >>> parse_mitigation("re+balanced-calib").training_key
        're'
        """
        parts = [p for p in self.name.split("+") if _component(p).changes_training]
        return "+".join(parts) or "none"

    @property
    def without_calibration(self) -> str:
        """The name of this mitigation without balanced calibration: its QAT is that one's, for
        QAT calibrates nothing.

        >>> parse_mitigation("re+balanced-calib").without_calibration
        're'
        """
        return "+".join(p for p in self.name.split("+") if p != "balanced-calib") or "none"

    def precision(self, precision: Precision) -> Precision:
        """The precision this mitigation actually uses for ``precision``: with FairQAT, an integer
        precision of fewer than 8 bits keeps its first and last layers at 8 bits.

        >>> from fairquant.quant.precision import parse_precision
        >>> parse_mitigation("fairqat").precision(parse_precision("int4-pc")).name
        'int4-pc-fl8'
        """
        p = precision
        if (
            self.edge_bits is None
            or p.deployed  # a toolchain's own quantization, as it builds it
            or p.kind != "int"
            or p.bits >= self.edge_bits
            or p.edge_bits is not None
            or p.layers
        ):
            return p
        head, *suffixes = p.name.split("-")
        pc = ["pc"] if "pc" in suffixes else []
        rest = [s for s in suffixes if s != "pc"]
        name = "-".join([head, *pc, f"fl{self.edge_bits}", *rest])
        return replace(p, name=name, edge_bits=self.edge_bits)

    def precisions(self, precisions: list[Precision]) -> list[Precision]:
        """:meth:`precision` of each, in order."""
        return [self.precision(p) for p in precisions]


def _component(text: str) -> Mitigation:
    name = text.strip().lower()
    if name == "none":
        return Mitigation(name)
    if name in ("gt", "re") or name.startswith("re-fixed:"):
        check_augmentation(name)
        return Mitigation(name, augment=name)
    if name in ("over", "under"):
        return Mitigation(name, resample=name)
    if name == "balanced-calib":
        return Mitigation(name, balanced_calib=True)
    if name == "fairqat":
        return Mitigation(name, resample="both", focal=FOCAL_GAMMA, edge_bits=FAIRQAT_EDGE_BITS)
    if name == "focal" or name.startswith("focal:"):
        value = name.split(":", 1)[1] if ":" in name else str(FOCAL_GAMMA)
        gamma = float(value) if _is_number(value) else math.nan
        if not 0 < gamma < math.inf:
            raise ConfigError(
                f"mitigation {text!r}: the focal loss's gamma must be a positive number (focal:2)"
            )
        return Mitigation(name, focal=gamma)
    if name == "weighted" or name.startswith("weighted:"):
        spec = name.split(":", 1)[1] if ":" in name else "inverse-frequency"
        if spec in SCHEMES:
            return Mitigation(name, weights=spec)
        try:
            values = tuple(float(v) for v in spec.split(","))
        except ValueError:
            values = ()
        if not values or any(v < 0 for v in values) or sum(values) == 0:
            raise ConfigError(
                f"mitigation {text!r}: weights must be {' or '.join(SCHEMES)} or non-negative "
                "numbers, one per class, not all 0 (weighted:1,2,4)"
            )
        return Mitigation(name, weights=values)
    raise ConfigError(
        f"unknown mitigation {text!r}; expected one of {', '.join(VALID_NAMES)}, "
        "or several joined with '+' (re+balanced-calib)"
    )


def parse_mitigation(name: str) -> Mitigation:
    """Parse a mitigation name (see the module docstring); components join with ``+``.

    >>> m = parse_mitigation("re-fixed:10+balanced-calib")
    >>> m.augment, m.balanced_calib
    ('re-fixed:10', True)
    """
    parts = [_component(p) for p in name.split("+")]
    if len(parts) > 1 and any(p.name == "none" for p in parts):
        raise ConfigError(f"mitigation {name!r}: 'none' cannot be combined with others")
    merged: dict[str, object] = {}
    for part in parts:
        for field in ("augment", "resample", "weights", "focal", "balanced_calib", "edge_bits"):
            value = getattr(part, field)
            if value is None or value is False:
                continue
            if field in merged:
                raise ConfigError(
                    f"mitigation {name!r}: more than one component sets "
                    f"{field.replace('_', ' ')} ({merged[field]!r} and {value!r}); combine at "
                    "most one of each kind"
                )
            merged[field] = value
    return Mitigation("+".join(p.name for p in parts), **merged)  # type: ignore[arg-type]


def parse_mitigations(text: str | list[str] | tuple[str, ...]) -> list[Mitigation]:
    """A comma- or list-given set of mitigations, in order, without repeats.

    Explicit weights contain commas, so in a comma-separated string a ``weighted:`` component's
    numbers run to the next name: ``none,weighted:1,2,gt`` is three mitigations.

    >>> [m.name for m in parse_mitigations("none,weighted:1,2,gt")]
    ['none', 'weighted:1,2', 'gt']
    """
    items = list(text) if not isinstance(text, str) else _split_names(text)
    out: list[Mitigation] = []
    for item in items:
        m = parse_mitigation(item)
        if m.name not in [o.name for o in out]:
            out.append(m)
    if not out:
        raise ConfigError("no mitigation given; expected e.g. none,gt,re,fairqat")
    return out


def _split_names(text: str) -> list[str]:
    names: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if names and _is_number(token) and names[-1].split("+")[-1].startswith("weighted:"):
            names[-1] += "," + token
        else:
            names.append(token)
    return names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def mitigated_split(train: Split, mitigation: Mitigation, *, seed: int) -> Split:
    """The training data of ``mitigation``: resampled, then augmented to balance, seeded."""
    split = train
    if mitigation.resample is not None:
        split = split.subset(resample_indices(balancing_key(split), mitigation.resample, seed=seed))
    if mitigation.augment is not None:
        split = balance_augment(split, mitigation.augment, seed=seed)
    return split


def mitigated_weights(train: Split, mitigation: Mitigation, *, num_classes: int) -> Tensor | None:
    """Per-class loss weights of ``mitigation`` from the original training counts, as float32."""
    if mitigation.weights is None:
        return None
    counts = torch.bincount(train.y, minlength=num_classes)
    w = class_weights(counts.tolist(), mitigation.weights)
    return w.to(torch.float32)


def train_mitigated(
    data: GroupedDataset,
    model_spec: ModelSpec,
    config: TrainConfig,
    mitigation: Mitigation,
    *,
    show_progress: bool = False,
) -> tuple[nn.Module, TrainHistory]:
    """A fresh model (seeded by ``config.seed``) trained with ``mitigation``'s data and loss:
    :func:`~fairquant.train.fit.fit` on :func:`mitigated_split` (of the training split less any
    validation split) with :func:`mitigated_weights`."""
    return fit(
        data,
        model_spec,
        config,
        prepare=lambda train: mitigated_split(train, mitigation, seed=config.seed),
        class_weights=mitigated_weights(data.train, mitigation, num_classes=data.num_classes),
        focal_gamma=mitigation.focal or 0.0,
        show_progress=show_progress,
    )


def mitigated_quantizer(
    mitigation: Mitigation,
    method: str,
    precisions: list[Precision],
    train: Split,
    *,
    num_classes: int | None = None,
    qat_config: TrainConfig = DEFAULT_QAT_CONFIG,
    calib_size: int = 256,
    qat_data: Split | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> Quantizer:
    """The quantizer of ``mitigation``: ``quantize(model, precision) -> quantized copy``.

    PTQ calibrates activation-quantized precisions on ``calib_size`` images of the original
    ``train`` split, group-balanced with ``balanced-calib``. QAT fine-tunes on the mitigation's
    training data with its loss weights (``qat_data``, when given, is that data already built by
    :func:`mitigated_split` with ``qat_config.seed``: augmentation costs seconds per thousand
    images). Each precision is first mapped by
    :meth:`Mitigation.precision` (FairQAT's first-last-8); audit with
    ``mitigation.precisions(precisions)`` so the table names what was run.
    """
    k = num_classes if num_classes is not None else int(train.y.max()) + 1
    precs = mitigation.precisions(precisions)
    split = train
    if method == "qat":
        split = (
            qat_data
            if qat_data is not None
            else mitigated_split(train, mitigation, seed=qat_config.seed)
        )
    inner = make_quantizer(
        method,
        precs,
        split,
        qat_config=qat_config,
        calib_size=calib_size,
        calib_balanced=mitigation.balanced_calib,
        class_weights=mitigated_weights(train, mitigation, num_classes=k),
        focal_gamma=mitigation.focal or 0.0,
        seed=seed,
        show_progress=show_progress,
    )
    return lambda model, precision: inner(model, mitigation.precision(precision))


def calibration_note(
    mitigation: Mitigation, method: str, precisions: list[Precision]
) -> str | None:
    """Why ``balanced-calib`` changes nothing for some of ``precisions``, or ``None``."""
    if not mitigation.balanced_calib:
        return None
    calibrated = [p.name for p in precisions if p.act_bits is not None and not p.dynamic]
    if method != "ptq" or not calibrated:
        return (
            f"{mitigation.name}: balanced calibration only changes PTQ at precisions that "
            f"quantize activations statically (e.g. int8-a8, int4-a8); with {method} at "
            f"{', '.join(p.name for p in precisions)} it changes nothing"
        )
    skipped = [p.name for p in precisions if p.name not in calibrated and not p.is_reference]
    if skipped:
        return (
            f"{mitigation.name}: balanced calibration changes {', '.join(calibrated)} only; "
            f"{', '.join(skipped)} quantize weights only and need no calibration"
        )
    return None
