"""The quantization audit: evaluate a model at each precision and compare its groups.

This is the path every fairquant feature builds on: a full-precision model and test data with
group labels go in; quantized copies (fairquant's simulated precisions, and the deployed
toolchains' artifacts: ``torch:int8``, ``ort:*``, ``torchao:*``) are evaluated batch by batch;
per-group accuracy, loss, excess loss ``G(a)`` and the disparity ``φ(D)`` come out as one tidy
table (``results.csv``), and what was audited as a record (``audit.json``).
"""

from __future__ import annotations

import json
import platform
import tempfile
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from fairquant import __version__
from fairquant._io import atomic_write
from fairquant._progress import progress_bar
from fairquant.data import load_dataset
from fairquant.data.base import DataSpec, GroupedDataset, Split, coding, small_cells
from fairquant.data.preprocess import Preprocess
from fairquant.data.stream import BatchSource, Inputs, as_batches
from fairquant.errors import ConfigError, DataError
from fairquant.metrics.frame import AGREEMENT_METRICS, ALL, EmptyGroupWarning, FairnessFrame
from fairquant.metrics.functional import per_sample_loss
from fairquant.metrics.policy import CONFIDENCE
from fairquant.metrics.samples import PerSample
from fairquant.metrics.uncertainty import (
    check_bootstrap,
)
from fairquant.models.load import LoadedModel, ModelSource, load_model, parse_model_source
from fairquant.options import (
    DEFAULT_QAT_CONFIG,
    NONFINITE,  # "error": refuse the audit; "wrong": see _nonfinite
    TrainConfig,
)
from fairquant.quant import build
from fairquant.quant.artifact import Predict, Quantized, module_predictor, state_dict_saver
from fairquant.quant.calibrate import calibration_inputs
from fairquant.quant.methods import make_quantizer
from fairquant.quant.precision import (
    DEFAULT_PRECISIONS,
    AnyPrecision,
    Precision,
    check_unique,
    parse_precision,
)
from fairquant.quant.size import packed_size_bytes
from fairquant.schema import AUDIT_JSON, COLUMNS, RESULTS_CSV
from fairquant.train.checkpoint import load_with_data

__all__ = [
    "ALL",
    "AUDIT_JSON",
    "AUDIT_SCHEMA",
    "COLUMNS",
    "DEPLOYED_METRICS",
    "NONFINITE",
    "AuditResult",
    "AuditTarget",
    "EmptyGroupWarning",
    "PerSample",
    "audit",
    "audit_model",
    "load_target",
    "read_audit_json",
]

#: The record of what was audited, beside ``results.csv``, and its schema id.
AUDIT_SCHEMA = "fairquant.audit/1"
#: Metrics only a deployed precision has: agreement of its predictions (%) with fp32's and with
#: its simulated twin's (when the twin is audited too), and the artifact's size on disk.
DEPLOYED_METRICS = ("agreement_fp32", "agreement_twin", "artifact_bytes")
#: The predicted class of a sample counted as wrong for its non-finite logits: no class.
NO_CLASS = -1

Quantizer = Callable[[nn.Module, Precision], nn.Module]


@dataclass
class AuditResult:
    """Per-group and overall metrics of a model at several precisions.

    ``table`` is long and tidy, one row per (method, precision, group, metric): metrics ``n``,
    ``accuracy``, ``loss``, ``excess_loss`` (G(a)), ``accuracy_drop`` (fp32 accuracy minus this
    precision's, in points) per group and for ``all``, and ``phi`` and ``size_bytes`` (packed
    model size) for ``all``; then the further metrics of
    :class:`~fairquant.metrics.frame.FairnessFrame` (exemplars, accuracy gap, worst group, CEV,
    SDE, binary-target fairness), each with its bootstrap interval. A deployed precision
    (``torch:int8``, ``ort:*``, ``torchao:*``) has no ``size_bytes`` but the metrics of
    :data:`DEPLOYED_METRICS`. ``precisions`` holds :class:`Precision` and deployed precisions
    (both have ``name`` and ``bits``); ``record`` is what ``audit.json`` holds.
    """

    table: pd.DataFrame
    group_names: list[str]
    precisions: list[Any]
    notes: list[str] = field(default_factory=list)
    #: All metrics with their bootstrap replicates: differences, ratios, paired comparisons.
    frame: FairnessFrame | None = None
    #: Per-sample predictions and losses of every precision (paired tests, verdicts).
    samples: PerSample | None = None
    #: What was audited (model source, data, preprocessing, precisions, seeds): ``audit.json``.
    record: dict[str, Any] = field(default_factory=dict)

    def by_group(self, metric: str = "accuracy") -> pd.DataFrame:
        """A groups x precisions table of one metric (the papers' Table 1 layout)."""
        rows = self.table[(self.table.metric == metric) & (self.table.group != ALL)]
        wide = rows.pivot_table(index="group", columns="precision", values="value", sort=False)
        names = [p.name for p in self.precisions]
        return wide.reindex(index=[g for g in self.group_names if g in wide.index], columns=names)

    def overall(self) -> pd.DataFrame:
        """Precisions x overall metrics (n, accuracy, loss, excess_loss, accuracy_drop, phi,
        size_bytes)."""
        rows = self.table[self.table.group == ALL]
        wide = rows.pivot_table(index="precision", columns="metric", values="value", sort=False)
        return wide.reindex([p.name for p in self.precisions])

    def phi(self) -> pd.Series:
        """φ(D) per precision."""
        return self.overall()["phi"]

    def to_csv(self, path: str | Path) -> Path:
        """Write :attr:`table` atomically as CSV (the ``results.csv`` schema)."""
        return atomic_write(path, lambda tmp: self.table.to_csv(tmp, index=False))

    def write_record(self, path: str | Path, *, run: dict[str, Any] | None = None) -> Path:
        """Write :attr:`record` atomically as JSON (``audit.json``), with the ``run`` (its id and
        command line, :class:`fairquant._io.RunFolder`) that wrote it when given."""
        record = self.record if run is None else {**self.record, "run": run}
        text = json.dumps(record, indent=2, allow_nan=False) + "\n"
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def write(self, folder: str | Path, *, run: dict[str, Any] | None = None) -> list[Path]:
        """Write ``results.csv`` and ``audit.json`` (with ``run``) into ``folder``."""
        folder = Path(folder)
        return [self.to_csv(folder / RESULTS_CSV), self.write_record(folder / AUDIT_JSON, run=run)]


def read_audit_json(path: str | Path) -> dict[str, Any]:
    """The record an audit wrote (``audit.json``, or the folder holding it), schema checked."""
    path = Path(path)
    if path.is_dir():
        path = path / AUDIT_JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; expected the audit.json an audit wrote") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(record, dict) or record.get("schema") != AUDIT_SCHEMA:
        found = record.get("schema") if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{path} has schema {found!r}; expected {AUDIT_SCHEMA!r}")
    return record


# ---- the public entry ---------------------------------------------------------------------


def audit(
    model: nn.Module | str | Path | LoadedModel | Any,
    data: GroupedDataset | Split | Any,
    *,
    precisions: str | Sequence[str | Precision | Any] = DEFAULT_PRECISIONS,
    group_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: Preprocess | Callable[[Inputs], Inputs] | None = None,
    calibration: Tensor | dict[str, Tensor] | Split | None = None,
    calib_size: int = 256,
    calib_balanced: bool = False,
    calib_seed: int | None = None,
    calibration_method: str = "minmax",
    method: str = "ptq",
    quantize: Quantizer | None = None,
    qat_config: TrainConfig | None = None,
    lsq: bool = False,
    batch_size: int = 256,
    n_bootstrap: int = 1000,
    confidence: float = CONFIDENCE,
    random_state: int = 0,
    pos_label: int | None = None,
    workdir: str | Path | None = None,
    show_progress: bool = False,
    nonfinite: str = "error",
) -> AuditResult:
    """Evaluate ``model`` at fp32 and at every precision in ``precisions`` on ``data``.

    ``model``: an ``nn.Module``; a path to an ``.onnx`` file (run by ONNX Runtime; it audits fp32
    and deployed ``ort:*`` precisions); or a :class:`~fairquant.models.load.LoadedModel`, whose
    source is recorded. ``data``: a :class:`GroupedDataset` (its test split; calibration from its
    training split), a :class:`Split`, or a torch ``Dataset`` / ``DataLoader`` yielding
    ``(x, y, g)`` with ``x`` a tensor or a dict of tensors, read batch by batch (once per
    precision, in the same order: no shuffling), so peak memory is bounded by the batch, not the
    data set. Group and class names come from ``group_names``/``class_names``, else from the
    data (a ``group_names``/``classes`` attribute), else the codes themselves.

    ``precisions``: fairquant's simulated ones (``int8``, ``int4-pc``, ``int8-pc-a8``, ...; see
    :mod:`fairquant.quant.precision`) and deployed ones (``torch:int8``, ``ort:int8``,
    ``torchao:int8wo``, ...; :mod:`fairquant.quant.deployed`), comma-separated or a sequence.
    ``preprocess`` maps each batch to the model's input: a :class:`Preprocess` (for a
    GroupedDataset it first undoes the data's own standardization when it sets mean and std) or
    any function of the batch's ``x``. Static activation ranges (``-a<k>``) and deployed
    artifacts are calibrated on ``calibration`` (inputs, or a Split to draw ``calib_size``
    samples from, random or ``calib_balanced`` across groups, seeded by ``calib_seed``, default
    ``random_state``);
    without it, on the GroupedDataset's training split, or else on the first ``calib_size``
    audited samples (said in ``notes``). ``method="qat"`` fine-tunes a copy per simulated
    precision on the GroupedDataset's training split (:func:`~fairquant.quant.qat.qat_finetune`
    with ``qat_config``, learned step sizes with ``lsq``); ``quantize(model, precision)``
    replaces the method's quantizer.

    fp32 is always evaluated first: it is the reference for excess loss, accuracy drop and
    agreement; its rows have method ``none``. Every number gets a ``confidence`` interval from
    ``n_bootstrap`` group-stratified bootstrap resamples of the per-sample outcomes (0: none).
    A deployed precision's rows also carry :data:`DEPLOYED_METRICS`.

    ``nonfinite``: a sample whose logits hold NaN or ±inf at some precision stops the audit with
    an error naming the precision and how many samples (``"error"``, the default); with
    ``"wrong"`` the sample is counted as wrong at that precision (predicted class ``-1``: no
    class, so no class gains a false positive) with the loss ``max(ln K, its fp32 loss)`` (K
    classes: the loss of a uniform guess, and never below fp32's, so it cannot lower the
    precision's loss or excess loss), said in ``notes`` and ``record["nonfinite"]``; no row is
    dropped.
    """
    check_bootstrap(n_bootstrap, confidence)
    if nonfinite not in NONFINITE:
        raise ConfigError(
            f"nonfinite={nonfinite!r}: expected 'error' or 'wrong' (what to do with a sample "
            "whose logits are NaN or infinite)"
        )
    loaded = _as_loaded(model)
    source = as_batches(data, batch_size=batch_size)
    order = _precisions(precisions)
    is_onnx = not isinstance(loaded.model, nn.Module)
    simulated = [p for p in order if not p.deployed and not p.is_reference]
    deployed = [p for p in order if p.deployed]
    if is_onnx and simulated:
        raise ConfigError(
            f"precision(s) {[p.name for p in simulated]} quantize a PyTorch model; an ONNX model "
            "audits fp32 and the deployed ort:* precisions"
        )
    if method != "ptq" and deployed:
        raise ConfigError(
            f"deployed precisions {[p.name for p in deployed]} are post-training quantization; "
            f"they cannot run with method={method!r}"
        )
    if method == "qat" and quantize is None:
        quantize = _qat(simulated, data, qat_config, lsq, show_progress)
    notes = list(loaded.notes)
    transform = _transform(preprocess, data)
    if is_onnx:  # a clear error naming the file before any precision is built
        example = source.take(min(batch_size, 8))
        loaded.model.check_input(transform(example) if transform is not None else example)
    calib, calib_record = None, None
    if any(p.needs_calibration for p in order if quantize is None or p.deployed):
        calib, calib_record, note = calibration_inputs(
            calibration,
            data=data,
            stream=source,
            size=calib_size,
            balanced=calib_balanced,
            seed=random_state if calib_seed is None else calib_seed,
        )
        notes += [note] if note else []
        calib_record["method"] = calibration_method
        if transform is not None:
            calib = transform(calib)
    num_classes = len(class_names) if class_names is not None else None
    if num_classes is None and source.class_names is not None:
        num_classes = len(source.class_names)
    what = str(loaded.source) if loaded.source is not None else type(loaded.model).__name__

    predictions: dict[str, np.ndarray] = {}
    losses: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    artifacts: dict[str, int] = {}
    bad: dict[str, int] = {}
    y = g = None
    with (
        ExitStack() as stack,
        progress_bar("evaluate", len(order), enabled=show_progress) as advance,
    ):
        work = Path(workdir) if workdir is not None else None
        if work is None and deployed:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fairquant-")))
        for precision in order:
            advance(0, status=precision.name)
            built = _build(loaded.model, precision, quantize, calib, calibration_method, work)
            notes.extend(f"{precision.name}: {note}" for note in built.notes)
            out = _evaluate(built.predict, source, transform, num_classes, what, reference=(y, g))
            if y is None:
                y, g = out[2], out[3]
                num_classes = num_classes or out[4]
            pred, loss = out[0], out[1]
            if not out[5].all():
                bad[precision.name] = _nonfinite(
                    precision.name,
                    out[5],
                    pred,
                    loss,
                    losses.get(order[0].name),
                    out[4],
                    rule=nonfinite,
                    where=source.description,
                )
            predictions[precision.name], losses[precision.name] = pred, loss
            if built.artifact is not None:
                artifacts[precision.name] = built.size_bytes
            else:
                sizes[precision.name] = built.size_bytes
            advance(1)
    assert y is not None and g is not None and num_classes is not None
    if len(y) == 0:
        raise ConfigError(f"{source.description} has no samples")
    names = _group_names(group_names, source.group_names, g, source.description)
    classes = list(class_names or source.class_names or map(str, range(num_classes)))
    frame = FairnessFrame(
        y_true=y,
        groups=g,
        group_names=names,
        class_names=classes,
        predictions=predictions,
        losses=losses,
        reference=order[0].name,
        num_classes=num_classes,
        pos_label=pos_label,
        twins=_twins(order),
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        random_state=random_state,
    )
    table = _tidy(frame, order, method, sizes=sizes, intervals=n_bootstrap > 0)
    extra = _deployed_rows(frame, order, artifacts, method, intervals=n_bootstrap > 0)
    if len(extra):
        table = _merge(table, extra, order)
    for name, k in bad.items():
        loss_rule = "ln {0}" if name == order[0].name else "max(ln {0}, its fp32 loss)"
        notes.append(
            f"{name}: {k} of {len(y)} samples had non-finite logits (NaN or ±inf); counted as "
            f"wrong (no predicted class), each with the loss {loss_rule.format(num_classes)} "
            "(nonfinite='wrong')"
        )
    notes += frame.notes
    for line in [
        _chance_level(y, predictions[order[0].name], classes),
        *small_cells(y, g, classes, names),
    ]:
        if line is not None:
            warnings.warn(line, UserWarning, stacklevel=2)
            notes.append(line)
    record = _record(
        loaded,
        data,
        source,
        preprocess,
        order,
        y,
        method=method,
        calibration=calib_record,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        random_state=random_state,
        batch_size=getattr(data, "batch_size", None) or batch_size,
        group_names=names,
        class_names=classes,
        notes=notes,
        nonfinite={"rule": nonfinite, "samples": bad},
    )
    return AuditResult(
        table=table,
        group_names=list(names),
        precisions=order,
        notes=notes,
        frame=frame,
        samples=PerSample(y=y, g=g, predictions=predictions, losses=losses),
        record=record,
    )


def audit_model(
    model: nn.Module,
    test: Split,
    group_names: list[str],
    precisions: list[Precision],
    *,
    method: str = "ptq",
    quantize: Quantizer | None = None,
    batch_size: int = 512,
    show_progress: bool = True,
    n_bootstrap: int = 1000,
    confidence: float = CONFIDENCE,
    random_state: int = 0,
    pos_label: int | None = None,
) -> AuditResult:
    """:func:`audit` of ``model`` on an in-memory ``test`` split with ``quantize`` making each
    quantized copy (PTQ by default, or e.g. :func:`~fairquant.quant.qat.qat_finetune` bound to a
    training split, with ``method="qat"``); kept for the callers that pass a quantizer that
    already holds its calibration data.

    Each precision also gets its packed model size (metric ``size_bytes``, exact, so its
    interval is the value itself). A group with no test samples is reported (``n = 0``, an
    :class:`EmptyGroupWarning`, a line in ``notes``) and left out of φ(D), never turned into NaN.
    """
    if len(test) == 0:
        raise ConfigError("the test split has no samples in any group")
    return audit(
        model,
        test,
        precisions=precisions,
        group_names=group_names,
        method=method,
        quantize=quantize,
        batch_size=batch_size,
        show_progress=show_progress,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        random_state=random_state,
        pos_label=pos_label,
    )


# ---- pieces -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditTarget:
    """A model and the data to audit it on, as the command line names them: ``label`` is the
    model's name (for titles) and ``preprocess`` the input the model expects, if stated."""

    model: LoadedModel
    data: GroupedDataset
    preprocess: Preprocess | None
    label: str


def load_target(
    *,
    checkpoint: str | Path | None = None,
    model: str | None = None,
    weights: str | Path | None = None,
    spec: DataSpec | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_order: Sequence[str] | None = None,
    normalize: str | None = None,
) -> AuditTarget:
    """Load what to audit: a fairquant ``checkpoint`` with the data it was trained on (checked to
    match), or a ``model`` source (``torchvision:NAME``, ``timm:NAME``, ``package.module:function``,
    ``FILE.onnx``; see :func:`~fairquant.models.load.parse_model_source`) with its ``weights`` and
    the data ``spec`` to audit it on. Classes and input channels default to the data's.

    A model from elsewhere has its own class order and input normalization: ``class_order``
    names its classes in the order of its outputs (the data's targets are recoded to it, exactly:
    :meth:`~fairquant.data.base.GroupedDataset.with_class_order`); ``mean`` and ``std`` state its
    normalization (pixels in [0, 1]). On images one of these is required: ``mean``/``std``, the
    normalization the source itself carries (a timm architecture's ``pretrained_cfg``), or
    ``normalize="data"``, the data's own training-split statistics, chosen on purpose.
    """
    if (checkpoint is None) == (model is None):
        raise ConfigError("give either a checkpoint or a model source (--checkpoint or --model)")
    preprocess = None
    if mean is not None or std is not None or normalize is not None:
        preprocess = Preprocess(
            mean=None if mean is None else tuple(mean),
            std=None if std is None else tuple(std),
            normalize=normalize,
            origin="stated: --mean/--std" if mean is not None else None,
        )
    if checkpoint is not None:
        if spec is not None or weights is not None:
            raise ConfigError(
                f"checkpoint {checkpoint} rebuilds its own model and data; a dataset and weights "
                "go with a model source (--model)"
            )
        if class_order is not None:
            raise ConfigError(
                f"--classes: checkpoint {checkpoint} outputs its data's classes in the data's "
                "coding; a class order goes with a model from elsewhere (--model)"
            )
        ckpt, data = load_with_data(checkpoint)
        loaded = LoadedModel(ckpt.model, ModelSource("checkpoint", str(checkpoint)))
        return AuditTarget(loaded, data, preprocess, ckpt.model_spec.name)
    assert model is not None  # narrowed by the either-or check above
    source = parse_model_source(model, weights=weights)
    if spec is None:
        raise ConfigError(
            f"model {model} needs the data to audit it on: --dataset NAME --root PATH "
            "(fairquant datasets lists them; 'table' reads a CSV or Parquet table)"
        )
    data = load_dataset(spec)
    if class_order is not None:
        data = data.with_class_order(class_order)
    images = data.test.x.ndim == 4
    if images and in_channels is not None and in_channels != data.in_channels:
        if (in_channels, data.in_channels) != (3, 1):
            raise ConfigError(
                f"--in-channels {in_channels}: the data has {data.in_channels} channels; a model "
                "of other channels than the data's takes 3 from gray data (repeated), and a "
                "1-channel model takes colour images loaded gray (--grayscale)"
            )
        preprocess = replace(preprocess or Preprocess(), channels=in_channels)
    channels = in_channels or data.in_channels
    loaded = load_model(source, num_classes=num_classes or data.num_classes, in_channels=channels)
    if images:
        stated = preprocess is not None and (
            preprocess.mean is not None or preprocess.normalize is not None
        )
        if not stated and loaded.preprocess is None:
            raise ConfigError(
                f"--model {model}: state the input normalization it was trained with: --mean and "
                "--std (pixels in [0, 1]; ImageNet's are --mean 0.485,0.456,0.406 --std "
                "0.229,0.224,0.225), or --normalize data to use this data's own training-split "
                "mean and std; a model from elsewhere does not say"
            )
        if not stated:
            channels_only = preprocess.channels if preprocess is not None else None
            preprocess = replace(loaded.preprocess, channels=channels_only)
            loaded.notes.append(f"normalized as {preprocess.origin}")
        assert preprocess is not None
        preprocess.check_channels(channels)
    _probe(loaded, data, preprocess, model)
    return AuditTarget(loaded, data, preprocess, model)


def _probe(loaded: LoadedModel, data: GroupedDataset, preprocess: Any, label: str) -> None:
    """Run the model on two samples: a model that cannot take the data's input (channels, size,
    features) is a one-line error here, before any precision is built."""
    split = data.test if len(data.test) else data.train
    x = split.x[:2]
    transform = _transform(preprocess, data)
    try:
        inputs = transform(x) if transform is not None else x
        if isinstance(loaded.model, nn.Module):
            with torch.inference_mode():
                loaded.model(inputs)
        else:
            loaded.model.predict(inputs)
    except (ConfigError, DataError):
        raise
    except Exception as e:  # the model's own code may raise anything on a wrong input
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(
            f"--model {label} cannot take the data's input {tuple(x.shape)} "
            f"({type(e).__name__}: {first}); expected its input channels (--in-channels), image "
            "size (--image-size) or features to fit the data"
        ) from None


def _as_loaded(model: Any) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        path = str(model)
        if not path.lower().endswith(".onnx"):
            raise ConfigError(
                f"model {path!r}: a path must name an .onnx file; load other models first "
                "(fairquant.models.load.load_model, or torch) and pass the nn.Module"
            )
        return load_model(parse_model_source(path), num_classes=1, in_channels=1)
    if isinstance(model, nn.Module) or callable(getattr(model, "predict", None)):
        return LoadedModel(model, None)  # type: ignore[arg-type]
    raise ConfigError(
        f"model must be an nn.Module, an .onnx path or a LoadedModel; got {type(model).__name__}"
    )


def _precisions(precisions: str | Sequence[Any]) -> list[AnyPrecision]:
    """fp32 first, then each named precision (:func:`parse_precision` reads every spelling); a
    precision listed twice (or under two names) is refused (:func:`check_unique`)."""
    items = precisions.split(",") if isinstance(precisions, str) else list(precisions)
    out = [parse_precision(i) if isinstance(i, str) else i for i in items if str(i).strip()]
    check_unique(out)
    reference = parse_precision("fp32")
    return [reference, *(p for p in out if p != reference)]


def _transform(preprocess: Any, data: Any) -> Callable[[Inputs], Inputs] | None:
    if preprocess is None:
        return None
    if isinstance(preprocess, Preprocess):
        if isinstance(data, GroupedDataset):
            return preprocess.transform(data.mean, data.std)
        return preprocess.transform()
    if callable(preprocess):
        return preprocess
    raise ConfigError(
        f"preprocess must be a Preprocess or a function of a batch; got {type(preprocess).__name__}"
    )


def _qat(
    precisions: list[Precision],
    data: Any,
    config: TrainConfig | None,
    lsq: bool,
    show_progress: bool,
) -> Quantizer:
    """QAT's quantizer: fine-tune on ``data``'s training split (a GroupedDataset's)."""
    if not isinstance(data, GroupedDataset):
        raise ConfigError(
            "method='qat' fine-tunes on the data's training split: pass a GroupedDataset, or "
            "a quantize= function that fine-tunes"
        )
    return make_quantizer(
        "qat",
        precisions,
        data.train,
        qat_config=config or DEFAULT_QAT_CONFIG,
        lsq=lsq,
        seed=data.spec.seed,
        show_progress=show_progress,
    )


def _build(
    model: Any,
    precision: AnyPrecision,
    method: Quantizer | None,
    calib: Inputs | None,
    calibration_method: str,
    work: Path | None,
) -> Quantized:
    """``precision`` built by :func:`fairquant.quant.build.quantize`, or, for a simulated
    precision with a ``method`` (QAT), the module ``method(model, precision)`` returns."""
    if method is not None and isinstance(precision, Precision) and not precision.is_reference:
        module = method(model, precision)
        return Quantized(
            precision,
            packed_size_bytes(model, precision),
            (),
            module_predictor(module),
            state_dict_saver(module),
            module=module,
        )
    return build.quantize(
        model,
        precision,
        calibration=calib,
        calibration_method=calibration_method,
        workdir=work,
    )


def _evaluate(
    predict: Predict,
    source: BatchSource,
    transform: Callable[[Inputs], Inputs] | None,
    num_classes: int | None,
    what: str,
    *,
    reference: tuple[np.ndarray | None, np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """Predicted classes and per-sample losses of one pass over ``source`` (and its y, g), the
    number of classes, and whether each sample's logits are all finite (where they are not, the
    prediction and loss are to be replaced: :func:`_nonfinite`)."""
    out = _Columns(source.size_hint() or 4096)
    width = num_classes
    for x, y, g in source:
        if transform is not None:
            x = transform(x)
        logits = predict(x)
        if logits.ndim != 2 or len(logits) != len(y):
            raise ConfigError(
                f"{what} returned shape {tuple(logits.shape)} for a batch of {len(y)}; expected "
                "logits (batch, classes)"
            )
        if width is None:
            width = logits.shape[1]
        if logits.shape[1] != width:
            raise ConfigError(
                f"{what} outputs {logits.shape[1]} values per sample but the data has {width} "
                "classes; expected one logit per class (--num-classes sets the model's classes)"
            )
        if len(y) and int(y.max()) >= width:
            code = int(y.max())
            names = source.class_names or []
            name = f" ({names[code]!r})" if code < len(names) else ""
            raise DataError(
                f"{source.description} has class code {code}{name} but {what} outputs "
                f"{width} classes"
            )
        out.add(
            pred=logits.argmax(1).numpy(),
            loss=per_sample_loss(logits, y).numpy(),
            y=y.numpy(),
            g=g.numpy(),
            finite=torch.isfinite(logits).all(1).numpy(),
        )
    if out.n == 0:
        raise DataError(f"{source.description} yielded no samples")
    cols = out.columns()
    y_ref, g_ref = reference
    if y_ref is not None and not (
        np.array_equal(y_ref, cols["y"]) and np.array_equal(g_ref, cols["g"])
    ):
        raise DataError(
            f"{source.description} yielded other samples on a second pass (a shuffling "
            "DataLoader?); an audit reads the data once per precision: use shuffle=False"
        )
    assert width is not None
    return cols["pred"], cols["loss"], cols["y"], cols["g"], width, cols["finite"]


def _nonfinite(
    name: str,
    finite: np.ndarray,
    pred: np.ndarray,
    loss: np.ndarray,
    reference_loss: np.ndarray | None,
    num_classes: int,
    *,
    rule: str,
    where: str,
) -> int:
    """Apply ``rule`` to the samples whose logits at precision ``name`` are not all finite;
    return how many there are.

    ``"error"`` raises. ``"wrong"`` sets, in place, their prediction to :data:`NO_CLASS` and
    their loss to ``max(ln K, reference_loss)``: ln K is the cross-entropy of a uniform guess
    over K classes (a model that says nothing), and the floor at the sample's fp32 loss
    (``reference_loss``; none when ``name`` is fp32 itself) keeps its excess loss >= 0, so a
    sample the precision broke never makes it look better than fp32.
    """
    bad = ~finite
    k = int(bad.sum())
    if rule == "error":
        raise ConfigError(
            f"{name} returned non-finite logits (NaN or ±inf) for {k} of {len(finite)} samples "
            f"of {where}; expected finite logits. To count those samples as wrong instead, use "
            "--nonfinite wrong (Python: nonfinite='wrong')"
        )
    pred[bad] = NO_CLASS
    floor = np.full(k, np.log(num_classes))
    if reference_loss is not None:
        floor = np.maximum(floor, reference_loss[bad])
    loss[bad] = floor
    return k


class _Columns:
    """Per-sample outputs of a pass, copied into arrays that double when full.

    Nothing allocated for a batch outlives it: keeping each batch's small output arrays in a list
    pinned glibc's heap between the batches' transient tensors, and a streamed audit's peak RSS
    grew with the data (by ~60 KB a sample of 27 KB in ``bench/stream_memory.py``).
    """

    DTYPES: ClassVar[dict[str, type]] = {
        "pred": np.int64,
        "loss": np.float64,
        "y": np.int64,
        "g": np.int64,
        "finite": np.bool_,
    }

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self.arrays = {k: np.empty(max(capacity, 1), dtype) for k, dtype in self.DTYPES.items()}

    def add(self, **values: np.ndarray) -> None:
        b = len(values["y"])
        size = len(self.arrays["y"])
        if self.n + b > size:
            while size < self.n + b:
                size *= 2
            for k, a in self.arrays.items():
                grown = np.empty(size, a.dtype)
                grown[: self.n] = a[: self.n]
                self.arrays[k] = grown
        for k, v in values.items():
            self.arrays[k][self.n : self.n + b] = v
        self.n += b

    def columns(self) -> dict[str, np.ndarray]:
        return {k: a[: self.n] for k, a in self.arrays.items()}


def _chance_level(y: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> str | None:
    """A warning when fp32 is no better than always answering the most frequent class: the
    model's outputs then likely do not mean what the data's codes mean."""
    counts = np.bincount(y, minlength=len(classes))
    if len(y) == 0 or np.count_nonzero(counts) < 2:
        return None
    accuracy, majority = float(np.mean(predicted == y)), counts.max() / len(y)
    if accuracy > majority:
        return None
    coding = ", ".join(f"{i}={name}" for i, name in enumerate(classes))
    return (
        f"WARNING: fp32 accuracy {100 * accuracy:.1f}% is at or below the majority-class rate "
        f"{100 * majority:.1f}% (always answering {classes[int(counts.argmax())]!r}): the model's "
        "outputs likely do not mean what the data's codes mean. Check the class order (the data "
        f"codes {coding}; state the model's with --classes / class_order) and the preprocessing "
        "(--mean/--std, image size, channels)"
    )


def _group_names(
    given: Sequence[str] | None, declared: list[str] | None, g: np.ndarray, where: str
) -> list[str]:
    names = list(given) if given is not None else declared
    k = int(g.max()) + 1 if len(g) else 0
    if names is None:
        return [str(a) for a in range(k)]
    if k > len(names):
        raise DataError(
            f"{where} has group code {k - 1} but {len(names)} group names {list(names)}"
        )
    return [str(n) for n in names]


def _tidy(
    frame: FairnessFrame,
    order: list[Any],
    method: str,
    *,
    sizes: dict[str, int],
    intervals: bool,
) -> pd.DataFrame:
    """The frame's table with the method and bits of each precision and its packed size (an
    exact number: with intervals on, its interval is the value itself), in :data:`COLUMNS`."""
    by_name = {p.name: p for p in order}
    ci = (lambda b: float(b)) if intervals else (lambda b: float("nan"))
    size_rows = pd.DataFrame(
        [(name, ALL, "size_bytes", float(b), ci(b), ci(b)) for name, b in sizes.items()],
        columns=["model", "group", "metric", "value", "ci_low", "ci_high"],
    )
    table = frame.table[~frame.table.metric.isin(AGREEMENT_METRICS)]  # _deployed_rows's
    table = pd.concat([table, size_rows], ignore_index=True)
    table = table.rename(columns={"model": "precision"})
    table.insert(0, "method", [_method(by_name[n], method) for n in table.precision])
    table.insert(2, "bits", [by_name[n].bits for n in table.precision])
    return _ordered(table, order)


def _method(precision: Any, method: str) -> str:
    """results.csv's ``method``: ``none`` for fp32, the toolchain (``torch``, ``ort``,
    ``torchao``) for a deployed precision, else ``method`` (``ptq``, ``qat``)."""
    if not isinstance(precision, Precision):
        return precision.toolchain
    return "none" if precision.is_reference else method


def _ordered(table: pd.DataFrame, order: list[Any]) -> pd.DataFrame:
    order_index = {p.name: i for i, p in enumerate(order)}
    table = table.sort_values("precision", key=lambda c: c.map(order_index), kind="stable")
    return table.reset_index(drop=True)[COLUMNS]


def _merge(table: pd.DataFrame, extra: pd.DataFrame, order: list[Any]) -> pd.DataFrame:
    return _ordered(pd.concat([table, extra], ignore_index=True), order)


def _twins(order: list[Any]) -> dict[str, str]:
    """``{deployed precision: its simulated twin}`` for the twins the audit evaluates too."""
    names = {p.name for p in order}
    return {p.name: p.twin for p in order if p.deployed and p.twin in names}


def _deployed_rows(
    frame: FairnessFrame, order: list[Any], artifacts: dict[str, int], method: str, *, intervals
) -> pd.DataFrame:
    """For each deployed precision: the frame's agreement (%) of its predictions with fp32's
    (``agreement_fp32``) and with its simulated twin's (``agreement_twin``, when the twin is
    audited too), per group and overall, and its artifact's size on disk (an exact number: with
    intervals on, its interval is the value itself)."""
    rows = []
    agreement = frame.table[frame.table.metric.isin(AGREEMENT_METRICS)]
    for p in order:
        if p.name in artifacts:
            b = float(artifacts[p.name])
            ci = b if intervals else float("nan")
            rows.append((_method(p, method), p.name, p.bits, ALL, "artifact_bytes", b, ci, ci))
        if not p.deployed:
            continue
        mine = agreement[agreement.model == p.name]
        for metric, name in (("agreement", "agreement_fp32"), ("agreement_twin", "agreement_twin")):
            for r in mine[mine.metric == metric].itertuples():
                row = (r.group, name, r.value, r.ci_low, r.ci_high)
                rows.append((_method(p, method), p.name, p.bits, *row))
    return pd.DataFrame(rows, columns=COLUMNS)


def _record(
    loaded: LoadedModel,
    data: Any,
    source: BatchSource,
    preprocess: Any,
    order: list[Any],
    y: np.ndarray,
    **fields: Any,
) -> dict[str, Any]:
    """What ``audit.json`` holds: enough to say what was audited and to audit it again."""
    if loaded.source is not None:
        model = loaded.source.to_dict()
    else:
        model = {"kind": "python", "name": type(loaded.model).__name__}
    if isinstance(data, GroupedDataset):
        data_record: dict[str, Any] = {
            "spec": data.spec.to_dict(),
            "split": "test",
            "target": data.target,
            "group": data.group,
            "samples": len(y),
            "coding": data.coding(),
            "class_order": data.class_order or "the data's own coding",
        }
        if data.features is not None:
            data_record["features"] = list(data.features)
    else:
        data_record = {
            "description": source.description,
            "samples": len(y),
            "coding": coding("target", fields["class_names"], "group", fields["group_names"]),
        }
    pre: dict[str, Any] | None = None
    if isinstance(preprocess, Preprocess):
        pre = preprocess.to_dict()
    elif preprocess is not None:
        pre = {"function": getattr(preprocess, "__qualname__", type(preprocess).__name__)}
    if isinstance(data, GroupedDataset):
        # what the model saw: the data's decoding (size, channels) and, unless stated, its own
        # standardization (images: per channel; tables: per feature)
        pre = pre or Preprocess().to_dict()
        if data.test.x.ndim == 4:
            pre["image_size"] = pre["image_size"] or data.image_size[0]
            pre["channels"] = pre["channels"] or data.in_channels
        if pre.get("mean") is None:
            pre["mean"], pre["std"] = list(data.mean), list(data.std)
            pre["normalization"] = "the data's own: the training split's mean and std" + (
                " (chosen: normalize='data')" if pre.get("normalize") == "data" else ""
            )
    if pre is not None and pre.get("mean") is not None and "normalization" not in pre:
        pre["normalization"] = "stated by the caller"
    return {
        "schema": AUDIT_SCHEMA,
        "fairquant_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "model": model,
        "data": data_record,
        "preprocessing": pre,
        "precisions": [p.name for p in order],
        **fields,
    }
