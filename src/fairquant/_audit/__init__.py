"""The quantization audit: evaluate a model at each precision and compare its groups.

This is the path every fairquant feature builds on: a full-precision model and test data with
group labels go in; every precision (fairquant's simulated ones, and the deployed toolchains'
artifacts: ``torch:int8``, ``ort:*``, ``torchao:*``, ``openvino:*``) is built by
:func:`fairquant.quant.build.quantize` and evaluated batch by batch; per-group accuracy, loss,
excess loss ``G(a)`` and the disparity ``φ(D)`` come out as one tidy table (``results.csv``), and
what was audited as a record (``audit.json``). One concern a module:

- ``run``: :func:`audit` and :func:`audit_model`, the precisions and how each is built;
- ``evaluate``: the streaming evaluator (one pass of a built precision over the data);
- ``table``: ``results.csv`` from the :class:`~fairquant.metrics.frame.FairnessFrame`;
- ``record``: ``audit.json``; ``result``: :class:`AuditResult`;
- ``target``: a checkpoint or a model from elsewhere with its data (:func:`load_target`).
"""

from fairquant._audit.result import (
    AUDIT_SCHEMA,
    DEPLOYED_METRICS,
    AuditResult,
    read_audit_json,
)
from fairquant._audit.run import audit, audit_model, audit_precisions
from fairquant._audit.target import AuditTarget, load_target
from fairquant.schema import AUDIT_JSON, RESULTS_CSV

__all__ = [
    "AUDIT_JSON",
    "AUDIT_SCHEMA",
    "DEPLOYED_METRICS",
    "RESULTS_CSV",
    "AuditResult",
    "AuditTarget",
    "audit",
    "audit_model",
    "audit_precisions",
    "load_target",
    "read_audit_json",
]
