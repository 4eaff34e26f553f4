"""PTQ or QAT as one function ``quantize(model, precision) -> quantized copy``: the method an
audit of fairquant's simulated precisions applies (PTQ builds through
:func:`fairquant.quant.build.quantize`, the one quantizer; QAT fine-tunes first)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.options import CALIB_SIZE, QUANT_METHODS
from fairquant.quant.build import quantize
from fairquant.quant.calibrate import calibration_inputs
from fairquant.quant.precision import Precision
from fairquant.quant.qat import DEFAULT_QAT_CONFIG, qat_finetune
from fairquant.train.loop import TrainConfig

Quantizer = Callable[[nn.Module, Precision], nn.Module]
METHODS = QUANT_METHODS


def make_quantizer(
    method: str,
    precisions: list[Precision],
    train: Split,
    *,
    qat_config: TrainConfig = DEFAULT_QAT_CONFIG,
    lsq: bool = False,
    calibration: str = "minmax",
    calib_size: int = CALIB_SIZE,
    calib_balanced: bool = False,
    class_weights: Tensor | None = None,
    focal_gamma: float = 0.0,
    seed: int = 0,
    show_progress: bool = True,
) -> Quantizer:
    """The quantizer an audit applies to each of ``precisions``, checked before any work starts.

    ``ptq`` rounds the trained weights (and calibrates activation ranges on ``calib_size``
    training images, random or balanced across groups, for ``-a<k>`` precisions); ``qat``
    fine-tunes a copy per precision with ``qat_config`` (learned step sizes with ``lsq``), its
    cross-entropy weighted by ``class_weights`` when given (focal with ``focal_gamma`` > 0).
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}; got {method!r}")
    if method == "qat":
        bad = [p.name for p in precisions if not p.is_reference and p.kind != "int"]
        bad += [p.name for p in precisions if p.act_bits is not None or p.fold_bn]
        if bad:
            raise ConfigError(
                "QAT takes integer weight-only precisions (int8, int4, int4-fl8, int4-pc, ...); "
                f"got {bad}"
            )
        return lambda m, p: qat_finetune(
            m,
            train,
            p,
            qat_config,
            lsq=lsq,
            class_weights=class_weights,
            focal_gamma=focal_gamma,
            show_progress=show_progress,
        )
    calib_x = None
    if any(p.needs_calibration for p in precisions):
        calib_x, _, _ = calibration_inputs(
            train, size=calib_size, balanced=calib_balanced, seed=seed
        )
    return lambda m, p: (
        quantize(m, p, calibration=calib_x, calibration_method=calibration).module
    )
