"""Experiments: a YAML grid of datasets x models x mitigations x seeds, run resumably."""

from fairquant.experiments.config import ExperimentConfig, load_config, parse_config
from fairquant.experiments.runner import RunSummary, run_experiment

__all__ = ["ExperimentConfig", "RunSummary", "load_config", "parse_config", "run_experiment"]
