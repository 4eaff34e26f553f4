"""Compare mitigations on the same data and training seeds, quantized by PTQ and QAT.

:func:`compare_mitigations` is a front end of the experiment runner
(:mod:`fairquant.experiments.runner`): it builds the :class:`ExperimentConfig` of one dataset and
one model with a mitigations axis (:func:`mitigation_config`) and runs its cells, resumably and on
any backend (every mitigation with every seed trained once per training recipe: ``none`` and
``balanced-calib`` share a model; then audited at fp32 and each precision with each method).
The run directory is the runner's (``config.yaml``, ``cells/``, ``results.csv``) plus the
comparison, computed from ``results.csv`` by :func:`summarize`:

- ``summary.csv``: every number over seeds, its mean (``value``) and Student-t interval across
  seeds (:func:`~fairquant.metrics.uncertainty.across_seeds`, the one across-seed summary, as
  ``fairquant report`` shows it);
- ``tests.csv``: every comparison of the run directory with its test
  (:func:`~fairquant.experiments.findings.findings`, as ``fairquant report`` states them): among
  them each mitigation against ``none`` at the same method and requested precision (φ(D),
  overall accuracy, worst-group accuracy), by the two-sided paired t-test across seeds,
  Holm-adjusted over the run directory.

FairQAT's rows name the precision it ran (``int4-fl8`` where ``int4`` was asked);
:func:`comparison_table` lines them up with the requested one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fairquant._io import atomic_write
from fairquant.data.base import DataSpec
from fairquant.errors import ConfigError
from fairquant.experiments.cells import qat_of_twin
from fairquant.experiments.config import (
    ExperimentConfig,
    MethodConfig,
    load_config,
    parse_config,
)
from fairquant.experiments.findings import findings
from fairquant.experiments.runner import CONFIG, RESULTS, RunSummary, run_experiment
from fairquant.metrics.frame import ALL
from fairquant.metrics.functional import pareto_front
from fairquant.metrics.policy import CONFIDENCE, N_BOOTSTRAP
from fairquant.metrics.uncertainty import across_seeds
from fairquant.mitigate.pipeline import Mitigation, calibration_note, parse_mitigations
from fairquant.models.registry import ModelSpec
from fairquant.options import DEFAULT_MITIGATIONS as DEFAULT_MITIGATIONS
from fairquant.options import MITIGATION_METHODS, MITIGATION_PRECISIONS, MITIGATION_SEEDS
from fairquant.quant.methods import METHODS
from fairquant.quant.precision import AnyPrecision, Precision, parse_precision, parse_precisions
from fairquant.quant.qat import DEFAULT_QAT_CONFIG
from fairquant.schema import RESULT_COLUMNS
from fairquant.train.loop import TrainConfig

SUMMARY, TESTS = "summary.csv", "tests.csv"
#: Activation-quantized precisions audited with PTQ when a mitigation calibrates balanced:
#: weight-only PTQ has no calibration, so without them balanced calibration changes nothing.
DEFAULT_ACT_PRECISIONS = ("int8-a8", "int4-a8")


@dataclass
class MitigationComparison:
    """The run directory's tables: results, the summary across seeds (:func:`across_seeds`)
    and every comparison with its test (:func:`~fairquant.experiments.findings.findings`)."""

    config: ExperimentConfig
    results: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame
    out: Path
    notes: list[str] = field(default_factory=list)
    group_names: list[str] = field(default_factory=list)
    run: RunSummary | None = None  # what this call ran; None when it only summarised

    @property
    def mitigations(self) -> list[str]:
        return list(self.config.mitigations)

    def requested(self) -> list[tuple[str, Precision]]:
        """``(method, requested precision)`` in table order: fp32, then each method's (a
        deployed precision's method is its toolchain, as in ``results.csv``)."""
        out: list[tuple[str, AnyPrecision]] = [("none", parse_precision("fp32"))]
        for method in self.config.methods:
            for p in self.config.method_precisions(method):
                name = p.toolchain if p.deployed else method.name
                if not p.is_reference and (name, p) not in out:
                    out.append((name, p))
        return out


def mitigation_config(
    data: DataSpec,
    model: ModelSpec,
    train: TrainConfig,
    *,
    mitigations: Sequence[str] | str = DEFAULT_MITIGATIONS,
    precisions: Sequence[str] | str = MITIGATION_PRECISIONS,
    act_precisions: Sequence[str] | str | None = None,
    methods: Sequence[str] | str = MITIGATION_METHODS,
    seeds: Sequence[int] = MITIGATION_SEEDS,
    qat: TrainConfig = DEFAULT_QAT_CONFIG,
    calib_size: int = MethodConfig.model_fields["calib_size"].default,
    n_bootstrap: int = N_BOOTSTRAP,
) -> ExperimentConfig:
    """The experiment of a mitigation comparison: ``data`` and ``model`` once, ``train`` with
    each of ``seeds``, every mitigation, and each of ``methods`` at ``precisions``.
    ``act_precisions`` (activation-quantized, audited with PTQ only: QAT here fake-quantizes
    weights) default to :data:`DEFAULT_ACT_PRECISIONS` when a mitigation calibrates balanced,
    else none. ``train.seed`` and ``qat.seed`` are replaced by each seed; ``data.seed`` fixes
    the one split."""
    mits = parse_mitigations(mitigations)
    if act_precisions is None:
        act_precisions = DEFAULT_ACT_PRECISIONS if any(m.balanced_calib for m in mits) else ()
    precs = parse_precisions(_names(precisions))
    act = parse_precisions(_names(act_precisions)) if _names(act_precisions) else []
    methods = _names(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"methods must be some of {METHODS}; got {methods}")
    if any(p.act_bits is None for p in act):
        raise ConfigError(
            "act_precisions are the activation-quantized precisions for PTQ (int8-a8, int4-a8); "
            f"got {[p.name for p in act]}"
        )
    deployed = [p.name for p in precs if p.deployed]
    if "qat" in methods and deployed:
        raise ConfigError(
            f"precisions {deployed} are deployed: each is its toolchain's own post-training "
            "quantization, which QAT cannot build; audit them with methods=['ptq'] only"
        )
    weight_only = [
        p.name
        for p in precs
        if not p.is_reference
        and not p.deployed
        and (p.kind != "int" or p.act_bits is not None or p.fold_bn)
    ]
    if "qat" in methods and weight_only:
        raise ConfigError(
            f"QAT takes integer weight-only precisions; got {weight_only} in precisions (put "
            "activation-quantized ones in act_precisions: they are audited with PTQ)"
        )
    names = [p.name for p in precs]
    entries = []
    for method in methods:
        entry: dict[str, object] = {"name": method}
        if method == "ptq":
            entry |= {"precisions": names + [p.name for p in act if p.name not in names]}
            entry |= {"calib_size": calib_size}
        else:
            entry |= {"precisions": names, **_recipe(qat)}
        entries.append(entry)
    spec = model.to_dict()
    dataset = data.to_dict()
    if dataset["root"] is not None:  # config.yaml is read back from the run directory
        dataset["root"] = str(Path(dataset["root"]).resolve())
    document = {
        "name": "mitigate",
        "datasets": [dataset],
        "models": [
            {
                "name": spec.pop("name"),
                "width": spec.pop("width"),
                "options": {k: v for k, v in spec.items() if v is not None},
            }
        ],
        "training": _recipe(train),
        "mitigations": [m.name for m in mits],
        "methods": entries,
        "precisions": names,
        "seeds": [int(s) for s in seeds],
        "bootstrap": n_bootstrap,
    }
    return parse_config(document, source="mitigation comparison")


def _recipe(config: TrainConfig) -> dict[str, object]:
    """A training config's keys but the seed, which each cell sets."""
    return {k: v for k, v in config.to_dict().items() if k != "seed"}


def compare_mitigations(
    data: DataSpec,
    model: ModelSpec,
    train: TrainConfig,
    out: str | Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    show_progress: bool = False,
    **options,
) -> MitigationComparison:
    """Run the mitigation comparison :func:`mitigation_config` describes (``options`` go to it)
    into the run directory ``out`` with the runner's ``backend`` and ``workers``, then
    :func:`summarize` it. A rerun skips finished cells and trained models.
    ``n_bootstrap`` > 0 adds bootstrap intervals over test samples to ``results.csv``; the
    comparison's intervals are across seeds.
    """
    config = mitigation_config(data, model, train, **options)
    run = run_experiment(config, out, backend=backend, workers=workers, show_progress=show_progress)
    comparison = summarize(out, config=config, notes=_notes(config))
    comparison.run = run
    return comparison


def _notes(config: ExperimentConfig) -> list[str]:
    """Where balanced calibration changes nothing, and which QATs are another's."""
    notes: list[str] = []
    for m in parse_mitigations(list(config.mitigations)):
        for method in config.methods:
            if method.name == "qat" and qat_of_twin(m, config):
                note = (
                    f"{m.name} with qat is {m.without_calibration} with qat (QAT calibrates "
                    "nothing); not run twice"
                )
            else:
                precisions = config.method_precisions(method)
                simulated = [p for p in precisions if not p.deployed]
                note = calibration_note(m, method.name, simulated)
                deployed = [p.name for p in precisions if p.deployed]
                if m.balanced_calib and deployed:
                    notes.append(
                        f"{m.name}: the deployed {', '.join(deployed)} are built from the same "
                        "group-balanced calibration images (those with static activation "
                        "ranges calibrate on them)"
                    )
            if note and note not in notes:
                notes.append(note)
    return notes


def _names(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def summarize(
    out: str | Path,
    *,
    config: ExperimentConfig | None = None,
    notes: list[str] | None = None,
    confidence: float = CONFIDENCE,
) -> MitigationComparison:
    """The summary across seeds (:func:`across_seeds`) and every comparison with its test
    (:func:`~fairquant.experiments.findings.findings`) of a run directory's ``results.csv`` and
    ``config.yaml`` (read there unless ``config`` is given), written to ``summary.csv`` and
    ``tests.csv``.

    With one seed the summary holds that seed's values (``n_seeds`` 1, its bootstrap interval
    if it has one) and no comparison is tested.
    """
    out = Path(out)
    if config is None:
        if not (out / CONFIG).is_file():
            raise ConfigError(f"{out} holds no {CONFIG} of a mitigation comparison")
        config = load_config(out / CONFIG)
    if len(config.datasets) != 1 or len(config.models) != 1:
        raise ConfigError(
            f"{out}: a mitigation comparison has one dataset and one model; this run has "
            f"{len(config.datasets)} and {len(config.models)} (report it with `fairquant report`)"
        )
    results = _read_results(out / RESULTS)
    summary = across_seeds(results, confidence=confidence)
    comparison = MitigationComparison(
        config=config,
        results=results,
        summary=summary,
        tests=findings(results),
        out=out,
        notes=list(notes or []),
        group_names=[g for g in dict.fromkeys(results.group) if g != ALL],
    )
    atomic_write(out / SUMMARY, lambda tmp: summary.to_csv(tmp, index=False))
    atomic_write(out / TESTS, lambda tmp: comparison.tests.to_csv(tmp, index=False))
    return comparison


def _read_results(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(f"{path} has no results yet")
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if list(table.columns) != RESULT_COLUMNS:
        raise ConfigError(f"{path} has columns {list(table.columns)}; expected {RESULT_COLUMNS}")
    if table.empty:
        raise ConfigError(f"{path} has no results yet")
    return table.astype({"group": str, "mitigation": str, "precision": str, "method": str})


def _cell(m: Mitigation, method: str, p: Precision) -> dict[str, object]:
    return {"mitigation": m.name, "method": method, "precision": m.precision(p).name}


def comparison_table(comparison: MitigationComparison, method: str, precision: str) -> pd.DataFrame:
    """The papers' Tables 2/3/5 in form for one method and requested precision: one row per
    mitigation; columns per-group accuracy, overall accuracy, φ(D) and worst-group accuracy, each
    as value (the mean across seeds), ci_low, ci_high (MultiIndex columns ``(quantity, stat)``),
    plus
    ``precision`` (what the mitigation ran, e.g. ``int4-fl8`` for FairQAT's ``int4``)."""
    s = comparison.summary
    requested = parse_precisions(precision)[0]
    quantities = [*comparison.group_names, "overall", "phi", "worst_group_accuracy"]
    rows, index = [], []
    for m in parse_mitigations(list(comparison.mitigations)):
        cell = _cell(m, method, requested)
        mask = pd.Series(True, index=s.index)
        for column, value in cell.items():
            mask &= s[column] == value
        part = s[mask]
        if part.empty:
            continue
        row: dict[tuple[str, str], object] = {("precision", ""): cell["precision"]}
        for q in quantities:
            if q in comparison.group_names:
                sel = part[(part.metric == "accuracy") & (part.group == q)]
            elif q == "overall":
                sel = part[(part.metric == "accuracy") & (part.group == ALL)]
            else:
                sel = part[(part.metric == q) & (part.group == ALL)]
            for stat in ("value", "ci_low", "ci_high"):
                row[(q, stat)] = float(sel[stat].iloc[0]) if len(sel) else float("nan")
        rows.append(row)
        index.append(m.name)
    table = pd.DataFrame(rows, index=pd.Index(index, name="mitigation"))
    if not table.empty:
        table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def pareto_points(comparison: MitigationComparison) -> pd.DataFrame:
    """One row per mitigation x method x precision: overall accuracy and φ(D), mean and
    interval across seeds, and whether the point is on the Pareto front (no other point has
    both higher accuracy and lower φ(D))."""
    s = comparison.summary[comparison.summary.group == ALL]
    acc = s[s.metric == "accuracy"].set_index(["mitigation", "method", "precision"])
    phi = s[s.metric == "phi"].set_index(["mitigation", "method", "precision"])
    points = pd.DataFrame(
        {
            "accuracy": acc["value"],
            "accuracy_low": acc["ci_low"],
            "accuracy_high": acc["ci_high"],
            "phi": phi["value"],
            "phi_low": phi["ci_low"],
            "phi_high": phi["ci_high"],
            "bits": acc["bits"],
        }
    ).reset_index()
    return points.assign(pareto=pareto_front(points.accuracy.to_numpy(), points.phi.to_numpy()))
