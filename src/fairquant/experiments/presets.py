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
from fairquant.experiments.config import ExperimentConfig, parse_config

PREFIX = "preset:"


def preset_names() -> list[str]:
    """The shipped presets, by file name without ``.yaml``."""
    folder = resources.files("fairquant.experiments") / "presets"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_preset(
    name: str, *, scale: str = "cpu", data_root: str | Path = "../shared/data"
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
