"""fairquant: when you quantize a model, who pays for it?

Measure, explain and mitigate the disparate impact of quantization on groups of a classifier's data.
This module is the public API, in the spirit of Fairlearn's ``fairlearn.metrics``: a curated set of
entry points over private modules. Names load on first use (PEP 562), so ``import fairquant`` is
cheap and changes nothing in the process.

>>> import fairquant
>>> fairquant.AuditResult.__name__
'AuditResult'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # audit
    "audit": "fairquant._audit",
    "audit_model": "fairquant._audit",
    "AuditResult": "fairquant._audit",
    "read_audit_json": "fairquant._audit",
    "Preprocess": "fairquant.data.preprocess",
    "LoadedModel": "fairquant.models.load",
    "ModelSource": "fairquant.models.load",
    "load_model": "fairquant.models.load",
    "parse_model_source": "fairquant.models.load",
    "PerSample": "fairquant.metrics.samples",
    # verdict
    "verdict": "fairquant.metrics.verdict",
    "Verdict": "fairquant.metrics.verdict",
    "Tolerance": "fairquant.metrics.verdict",
    # explain
    "explain": "fairquant._explain",
    "explain_model": "fairquant._explain",
    "ExplainResult": "fairquant._explain",
    # mitigate
    "allocate": "fairquant.mitigate.allocate",
    "Allocation": "fairquant.mitigate.allocate",
    "search_smallest": "fairquant.mitigate.search",
    "compare_searches": "fairquant.mitigate.search",
    "SearchConfig": "fairquant.mitigate.search",
    "SearchResult": "fairquant.mitigate.search",
    "smallest_within": "fairquant.mitigate.search",
    "repair": "fairquant.mitigate.repair",
    "RepairResult": "fairquant.mitigate.repair",
    "RepairUnreachable": "fairquant.mitigate.repair",
    "write_repair": "fairquant.report.repair",
    "compare_mitigations": "fairquant.experiments.mitigation",
    "MitigationComparison": "fairquant.experiments.mitigation",
    # experiments and reports
    "run_experiment": "fairquant.experiments",
    "RunSummary": "fairquant.experiments",
    "ExperimentConfig": "fairquant.experiments",
    "load_config": "fairquant.experiments",
    "write_report": "fairquant.report.html",
    # data
    "DataSpec": "fairquant.data",
    "GroupedDataset": "fairquant.data",
    "Split": "fairquant.data",
    "load_dataset": "fairquant.data",
    # models and training
    "ModelSpec": "fairquant.models",
    "TrainConfig": "fairquant.train",
    "TrainHistory": "fairquant.train",
    "held_out_validation": "fairquant.train",
    "Checkpoint": "fairquant.train",
    "fit": "fairquant.train",
    "load_checkpoint": "fairquant.train",
    "load_with_data": "fairquant.train",
    "save_checkpoint": "fairquant.train",
    # quantization
    "Precision": "fairquant.quant",
    "Quantized": "fairquant.quant",
    "parse_precision": "fairquant.quant",
    "parse_precisions": "fairquant.quant",
    "quantize": "fairquant.quant",
    # metrics
    "FairnessFrame": "fairquant.metrics.frame",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fairquant' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
