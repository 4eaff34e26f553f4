"""Cells: the unit of work of an experiment, their content-addressed keys and what one does.

A cell is one (dataset, model, training, mitigation, seed): its model is trained once, then
quantized and audited for every method at each of its precisions (and explained, when the
experiment asks). Two keys address its files under ``RUN_DIR/cells/``:

- the *cell key*, a hash of the canonical JSON of what determines the trained model (data spec,
  model spec, training config with the seed, the mitigation's training recipe): the cell's
  folder, holding ``cell.json`` and the checkpoint ``model.pt`` (mitigations that train alike,
  such as ``none`` and ``balanced-calib``, share it);
- the *evaluation key*, a hash of what the audit adds (the mitigation, methods with their
  precisions, bootstrap size, explain settings): the finished cell's tables
  ``results-<key>.csv`` (and ``explain-<key>.csv``), so asking for another precision re-audits
  without retraining.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from fairquant._audit import AuditResult, audit
from fairquant.data.base import DataSpec, GroupedDataset
from fairquant.data.registry import load_dataset
from fairquant.experiments.config import (
    DatasetConfig,
    ExperimentConfig,
    MethodConfig,
    ModelConfig,
)
from fairquant.mitigate.pipeline import (
    Mitigation,
    mitigated_quantizer,
    parse_mitigation,
    train_mitigated,
)
from fairquant.models.registry import sized_for
from fairquant.schema import RESULT_COLUMNS, CellKey, cell_label
from fairquant.train.checkpoint import load_checkpoint, save_checkpoint

#: Method keys added after run directories existed (QAT's optimizer, momentum, weight decay and
#: schedule): they enter the evaluation key only when they differ from their defaults, so the
#: finished cells of an older run directory stay finished.
LATER_METHOD_KEYS = ("optimizer", "momentum", "weight_decay", "schedule")


def digest(payload: Any) -> str:
    """A stable short hash of JSON-serializable ``payload`` (key order does not matter).

    >>> digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})
    True
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Cell:
    """One (dataset, model, training, mitigation, seed) of an experiment."""

    experiment: ExperimentConfig
    dataset: DatasetConfig
    model: ModelConfig
    mitigation: str
    seed: int

    @property
    def keys(self) -> dict[str, Any]:
        """The cell's values of the ``results.csv`` key columns."""
        return CellKey(self.dataset.key, self.model.key, self.mitigation, self.seed)._asdict()

    @property
    def label(self) -> str:
        """``<dataset>__<model>__<mitigation>__seed<k>``: the cell's name in file names."""
        return cell_label(**self.keys)

    def data_spec(self) -> DataSpec:
        return self.dataset.spec(Path(self.experiment.data_root))

    def canonical(self) -> dict[str, Any]:
        """Everything that determines the trained model."""
        return {
            "data": self.data_spec().to_dict(),
            "model": self.model.spec().to_dict(),
            "training": self.experiment.training.train_config(self.seed).to_dict(),
            "mitigation": parse_mitigation(self.mitigation).training_key,
        }

    def evaluation(self) -> dict[str, Any]:
        """Everything the audit of a trained model adds."""
        exp = self.experiment
        methods = []
        for method in exp.methods:
            m = method.model_dump()
            for name in LATER_METHOD_KEYS:
                if m[name] == type(method).model_fields[name].default:
                    del m[name]
            m["precisions"] = [p.name for p in exp.method_precisions(method)]
            methods.append(m)
        explain = None
        if exp.explain.enabled:
            explain = exp.explain.model_dump()
            explain["precisions"] = [p.name for p in exp.explain_precisions()]
        return {
            "mitigation": self.mitigation,
            "methods": methods,
            "bootstrap": exp.bootstrap,
            "explain": explain,
        }

    @property
    def key(self) -> str:
        return digest(self.canonical())

    @property
    def eval_key(self) -> str:
        return digest(self.evaluation())


def expand(config: ExperimentConfig) -> list[Cell]:
    """The grid's cells in a fixed order: datasets, then models, mitigations, seeds."""
    return [
        Cell(config, dataset, model, mitigation, seed)
        for dataset in config.datasets
        for model in config.models
        for mitigation in config.mitigations
        for seed in config.seeds
    ]


@dataclass
class CellOutput:
    """What a finished cell hands back: its rows of ``results.csv``, explain factors and the
    audits' notes (what each toolchain quantized, how it was calibrated, ...)."""

    results: pd.DataFrame
    factors: pd.DataFrame | None
    trained: bool
    notes: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=2)
def _load(spec_json: str) -> GroupedDataset:
    """Datasets stay loaded for the next cells of the same data in this process."""
    return load_dataset(DataSpec.from_dict(json.loads(spec_json)))


def run_cell(cell: Cell, folder: str) -> CellOutput:
    """Train (or load the cached checkpoint of) ``cell``'s model, then audit every method (but
    QAT where it is another mitigation's of the grid: :func:`qat_of_twin`) at all its
    precisions, simulated and deployed, in one audit per method.

    Writes the checkpoint to ``folder/model.pt`` atomically; the tables are returned for the
    runner to store, so a worker on another machine needs no shared disk.
    """
    exp = cell.experiment
    data = _load(json.dumps(cell.data_spec().to_dict(), sort_keys=True))
    checkpoint = Path(folder) / "model.pt"
    train_config = exp.training.train_config(cell.seed)
    trained = not checkpoint.exists()
    mitigation = parse_mitigation(cell.mitigation)
    if trained:
        spec = sized_for(cell.model.spec(), data.image_size[0])
        model, history = train_mitigated(data, spec, train_config, mitigation)
        save_checkpoint(
            checkpoint,
            model=model,
            model_spec=spec,
            dataset=data,
            train_config=train_config,
            history=history,
        )
    else:
        model = load_checkpoint(checkpoint).model
    tables, notes = [], []
    for method in exp.methods:
        if method.name == "qat" and qat_of_twin(mitigation, exp):
            continue
        audit = _audit(cell, model, data, method, mitigation)
        notes += [f"{method.name}: {note}" for note in audit.notes]
        table = audit.table
        if tables:  # the fp32 reference once per cell
            table = table[table.method != "none"]
        tables.append(table)
    results = _with_keys(pd.concat(tables, ignore_index=True), cell)
    factors = None
    if exp.explain.enabled:
        from fairquant._explain import explain_model

        settings = exp.explain
        explained = explain_model(
            model,
            data.test,
            data.group_names,
            exp.explain_precisions(),
            train_counts=data.counts()["train"],
            curvature=settings.curvature,
            rtol=settings.rtol,
            max_probes=settings.max_probes,
            sketch=settings.sketch,
            eig_max_iter=settings.eig_max_iter,
            samples_per_group=settings.samples_per_group,
            seed=cell.seed,
            show_progress=False,
        )
        factors = _with_keys(explained.factors, cell)
    return CellOutput(
        results=results[RESULT_COLUMNS],
        factors=factors,
        trained=trained,
        notes=list(dict.fromkeys(notes)),
    )


def _audit(
    cell: Cell, model: nn.Module, data: GroupedDataset, method: MethodConfig, mitigation: Mitigation
) -> AuditResult:
    """One :func:`fairquant.audit` of the cell's model at every precision of ``method``.

    PTQ builds each precision with :func:`fairquant.quant.build.quantize`, simulated and
    deployed alike, every one that calibrates (``-a<k>``, ``torch:int8``, static ``ort:``) on
    the same ``calib_size`` training images (group-balanced with ``balanced-calib``, seeded by
    the cell's seed); QAT fine-tunes each precision with the mitigation's data and loss."""
    exp = cell.experiment
    precisions = exp.method_precisions(method)
    quantize = None
    if method.name == "qat":
        quantize = mitigated_quantizer(
            mitigation,
            method.name,
            precisions,
            data.train,
            num_classes=data.num_classes,
            qat_config=method.qat_config(cell.seed),
            calib_size=method.calib_size,
            seed=cell.seed,
        )
    return audit(
        model,
        data.test,
        precisions=mitigation.precisions(precisions),  # the table names what ran (FairQAT: -fl8)
        group_names=data.group_names,
        calibration=data.train,
        calib_size=method.calib_size,
        calib_balanced=mitigation.balanced_calib,
        calib_seed=cell.seed,
        method=method.name,
        quantize=quantize,
        batch_size=512,
        n_bootstrap=exp.bootstrap,
        random_state=cell.seed,
    )


def qat_of_twin(mitigation: Mitigation, exp: ExperimentConfig) -> bool:
    """Whether the QAT of ``mitigation`` is the QAT of another mitigation of the grid: QAT
    calibrates nothing, so ``x+balanced-calib`` fine-tunes exactly as ``x`` does."""
    return mitigation.balanced_calib and mitigation.without_calibration in exp.mitigations


def _with_keys(table: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    keys = pd.DataFrame({k: [v] * len(table) for k, v in cell.keys.items()})
    return pd.concat([keys, table.reset_index(drop=True)], axis=1)
