"""Experiments: studies that train, quantize and audit many cells into one run directory.

:func:`run_experiment` runs a YAML grid (datasets x models x mitigations x seeds) resumably;
:mod:`fairquant.experiments.mitigation` compares mitigations over seeds.
"""

from fairquant.experiments.config import ExperimentConfig, load_config, parse_config
from fairquant.experiments.findings import findings
from fairquant.experiments.runner import RunSummary, run_experiment

__all__ = ["ExperimentConfig", "RunSummary", "load_config", "parse_config", "run_experiment"]
__all__ += ["findings"]
