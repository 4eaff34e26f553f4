"""The papers' studies as experiment files shipped with fairquant (``presets/*.yaml``).

``liu2025``: Liu et al. (ICML 2025), UTKFace, FER2013, CIFAR-10 and MNIST with the imbalanced
variants, PTQ and QAT at int16/int8/int4, repeated over seeds. ``bellam-kim``: Bellam & Kim,
UTKFace ethnicity on ResNet-18, PTQ at fp16/int8/int4/int3/int2 with the impact flow and the
curvature factors. ``five-arch``: a binary target (gender) with ethnicity x age-bucket groups on
UTKFace, five architectures, PTQ int8/int4, QAT and int4-fl8 mixed precision. Each has the
scales ``tiny`` (seconds, for tests), ``cpu`` (under an hour on two cores) and ``gpu`` (the
papers' sizes). Dataset roots are relative to the data folder (``--data``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from fairquant.errors import unknown_name
from fairquant.experiments.config import ExperimentConfig, load_config, parse_config
from fairquant.options import PRESET_DATA as PRESET_DATA
from fairquant.options import PRESET_PREFIX as PREFIX
from fairquant.options import PRESET_SCALE as PRESET_SCALE


def preset_names() -> list[str]:
    """The shipped presets, by file name without ``.yaml``."""
    folder = resources.files("fairquant.experiments") / "presets"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_preset(
    name: str, *, scale: str = PRESET_SCALE, data_root: str | Path = PRESET_DATA
) -> ExperimentConfig:
    """The preset ``name`` at ``scale``, reading its datasets from ``data_root``."""
    name = name.removeprefix(PREFIX)
    if name not in preset_names():
        raise unknown_name("preset", name, preset_names())
    text = (resources.files("fairquant.experiments") / "presets" / f"{name}.yaml").read_text()
    return parse_config(
        yaml.safe_load(text),
        scale=scale,
        data_root=Path(data_root).resolve(),
        source=f"{PREFIX}{name}",
    )


def load_experiment(
    source: str | Path, *, scale: str | None = None, data_root: str | Path | None = None
) -> ExperimentConfig:
    """The experiment file ``source``, or the shipped preset ``preset:NAME`` (at
    :data:`PRESET_SCALE` and reading :data:`PRESET_DATA` unless ``scale``/``data_root`` say
    otherwise)."""
    if str(source).startswith(PREFIX):
        return load_preset(
            str(source), scale=scale or PRESET_SCALE, data_root=data_root or PRESET_DATA
        )
    return load_config(Path(source), scale=scale, data_root=data_root)


def default_run_dir(source: str | Path, config: ExperimentConfig, scale: str | None) -> Path:
    """``runs/<name>[-<scale>]``: where ``fairquant run`` writes ``source`` without ``--out``
    (a preset's scale is :data:`PRESET_SCALE` unless given)."""
    if str(source).startswith(PREFIX):
        scale = scale or PRESET_SCALE
    return Path("runs") / (config.name + (f"-{scale}" if scale else ""))
