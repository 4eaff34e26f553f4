"""The quantization audit: evaluate a model at each precision and compare its groups.

This is the path every fairquant feature builds on: a full-precision model and test data with
group labels go in; quantized copies (fairquant's simulated precisions, and the deployed
toolchains' artifacts: ``torch:int8``, ``ort:*``, ``torchao:*``) are evaluated batch by batch;
per-group accuracy, loss, excess loss ``G(a)`` and the disparity ``φ(D)`` come out as one tidy
table (``results.csv``), and what was audited as a record (``audit.json``).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from fairquant._audit.evaluate import _evaluate, _nonfinite
from fairquant._audit.record import _record
from fairquant._audit.result import AuditResult
from fairquant._audit.table import (
    _chance_level,
    _deployed_rows,
    _group_names,
    _merge,
    _tidy,
    _twins,
)
from fairquant._audit.target import _as_loaded, _transform
from fairquant._progress import progress_bar
from fairquant.data.base import GroupedDataset, Split, small_cells
from fairquant.data.preprocess import Preprocess
from fairquant.data.stream import Inputs, as_batches
from fairquant.errors import ConfigError
from fairquant.metrics.frame import FairnessFrame
from fairquant.metrics.policy import CONFIDENCE
from fairquant.metrics.samples import PerSample
from fairquant.metrics.uncertainty import (
    check_bootstrap,
)
from fairquant.models.load import LoadedModel
from fairquant.options import (
    DEFAULT_QAT_CONFIG,
    NONFINITE,  # "error": refuse the audit; "wrong": see _nonfinite
    TrainConfig,
)
from fairquant.quant import build
from fairquant.quant.artifact import Quantized
from fairquant.quant.calibrate import calibration_inputs
from fairquant.quant.methods import Quantizer, make_quantizer
from fairquant.quant.precision import (
    DEFAULT_PRECISIONS,
    AnyPrecision,
    Precision,
    check_unique,
    parse_precision,
)


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
    order = audit_precisions(precisions)
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


def audit_precisions(precisions: str | Sequence[Any]) -> list[AnyPrecision]:
    """fp32 first, then each named precision (:func:`parse_precision` reads every spelling); a
    precision listed twice (or under two names) is refused (:func:`check_unique`)."""
    items = precisions.split(",") if isinstance(precisions, str) else list(precisions)
    out = [parse_precision(i) if isinstance(i, str) else i for i in items if str(i).strip()]
    check_unique(out)
    reference = parse_precision("fp32")
    return [reference, *(p for p in out if p != reference)]


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
        return build.simulated(model, precision, method(model, precision))
    return build.quantize(
        model,
        precision,
        calibration=calib,
        calibration_method=calibration_method,
        workdir=work,
    )
