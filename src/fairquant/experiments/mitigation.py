"""Compare mitigations on the same data and training seeds, quantized by PTQ and QAT.

For every training seed and every mitigation (:mod:`fairquant.mitigate.pipeline`) a model is
trained once per training recipe (``balanced-calib`` reuses the unmitigated model), then audited
at fp32 and each precision with each method. Everything goes to a run directory:

- ``results.csv``: the audit table with the cell keys (``dataset, model, mitigation, seed,
  method, precision, bits, group, metric, value, ci_low, ci_high``), one row per key, rewritten
  atomically after every cell, so an interrupted run keeps what it finished;
- ``run.json``: the setup; ``checkpoints/<recipe>__seed<k>.pt``: the trained models;
- ``summary.csv``: every metric's mean and Student-t interval across seeds
  (:func:`~fairquant.metrics.uncertainty.across_seeds`);
- ``tests.csv``: paired sign-flip tests across seeds of each mitigation against ``none`` at the
  same method and requested precision (:func:`~fairquant.metrics.uncertainty.paired_seed_test`):
  φ(D) lower, overall accuracy different, worst-group accuracy higher.

A rerun with the same directory skips finished cells and trained models; the setup must match.
FairQAT's rows name the precision it ran (``int4-fl8`` where ``int4`` was asked);
:func:`comparison_table` lines them up with the requested one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from fairquant._io import atomic_write
from fairquant.audit import ALL, audit_model
from fairquant.data.base import DataSpec, GroupedDataset
from fairquant.data.registry import load_dataset
from fairquant.errors import ConfigError
from fairquant.experiments.cells import RESULT_COLUMNS
from fairquant.metrics.functional import pareto_front
from fairquant.metrics.uncertainty import across_seeds, paired_seed_test
from fairquant.mitigate.pipeline import (
    Mitigation,
    calibration_note,
    mitigated_quantizer,
    mitigated_split,
    parse_mitigations,
    train_mitigated,
)
from fairquant.models.registry import ModelSpec, sized_for
from fairquant.quant.methods import METHODS
from fairquant.quant.precision import Precision, parse_precisions
from fairquant.quant.qat import DEFAULT_QAT_CONFIG
from fairquant.train.checkpoint import load_checkpoint, save_checkpoint
from fairquant.train.loop import TrainConfig

RESULTS, RUN, SUMMARY, TESTS = "results.csv", "run.json", "summary.csv", "tests.csv"
DEFAULT_MITIGATIONS = ("none", "gt", "re", "over", "weighted", "fairqat", "balanced-calib")
#: Activation-quantized precisions audited (PTQ only) when a mitigation calibrates balanced:
#: weight-only PTQ has no calibration, so without them balanced calibration changes nothing.
DEFAULT_ACT_PRECISIONS = ("int8-a8", "int4-a8")
#: The paired tests against ``none``: metric, group, alternative (what would show a benefit).
TESTED = (("phi", "less"), ("accuracy", "two-sided"), ("worst_group_accuracy", "greater"))


@dataclass(frozen=True)
class MitigationSetup:
    """What a mitigation comparison runs; ``run.json`` holds it."""

    data: DataSpec
    model: ModelSpec
    train: TrainConfig
    qat: TrainConfig
    mitigations: tuple[str, ...]
    precisions: tuple[str, ...]
    act_precisions: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    calib_size: int
    n_bootstrap: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"], d["model"] = self.data.to_dict(), self.model.to_dict()
        d["train"], d["qat"] = self.train.to_dict(), self.qat.to_dict()
        return json.loads(json.dumps(d))  # tuples -> lists, as read back from the file

    def fixed(self) -> dict[str, Any]:
        """The part a rerun into the same directory must share (cells may be added)."""
        d = self.to_dict()
        for key in ("mitigations", "precisions", "act_precisions", "methods", "seeds"):
            del d[key]
        return d


@dataclass
class MitigationComparison:
    """The run directory's tables: results, the summary across seeds and the paired tests."""

    setup: MitigationSetup
    results: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame
    out: Path
    notes: list[str] = field(default_factory=list)
    group_names: list[str] = field(default_factory=list)

    def requested(self) -> list[tuple[str, Precision]]:
        """``(method, requested precision)`` in table order: fp32, then each method's."""
        out: list[tuple[str, Precision]] = [("none", parse_precisions("fp32")[0])]
        for method in self.setup.methods:
            for p in _method_precisions(self.setup, method):
                if not p.is_reference:
                    out.append((method, p))
        return out


def _method_precisions(
    setup: MitigationSetup, method: str, mitigation: Mitigation | None = None
) -> list[Precision]:
    """The precisions ``method`` audits for ``mitigation`` (for any of them when None):
    ``act_precisions`` only with PTQ, and only for mitigations that calibrate balanced and their
    twins without it (``none`` for ``balanced-calib``), the comparisons they serve."""
    precs = parse_precisions(list(setup.precisions))
    if method == "ptq" and setup.act_precisions and _gets_act(setup, mitigation):
        precs += [p for p in parse_precisions(list(setup.act_precisions)) if p not in precs]
    return precs


def _gets_act(setup: MitigationSetup, mitigation: Mitigation | None) -> bool:
    if mitigation is None or mitigation.balanced_calib:
        return True
    mits = parse_mitigations(list(setup.mitigations))
    return mitigation.name in [_without_calibration(m) for m in mits if m.balanced_calib]


def compare_mitigations(
    data: DataSpec,
    model: ModelSpec,
    train: TrainConfig,
    out: str | Path,
    *,
    mitigations: Sequence[str] | str = DEFAULT_MITIGATIONS,
    precisions: Sequence[str] | str = ("fp32", "int8", "int4"),
    act_precisions: Sequence[str] | str | None = None,
    methods: Sequence[str] = ("ptq", "qat"),
    seeds: Sequence[int] = (0, 1, 2),
    qat: TrainConfig = DEFAULT_QAT_CONFIG,
    calib_size: int = 256,
    n_bootstrap: int = 0,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> MitigationComparison:
    """Train each mitigation with each seed of ``seeds`` (``train.seed`` is replaced) on ``data``
    (one split, ``data.seed``), quantize with each of ``methods`` at ``precisions``, and write the
    run directory ``out``. ``act_precisions`` (PTQ only, for the mitigations that calibrate
    balanced and their twins without it) defaults to :data:`DEFAULT_ACT_PRECISIONS` when a
    mitigation calibrates balanced, else none.
    ``n_bootstrap`` > 0 adds bootstrap intervals over test samples to ``results.csv``; the
    comparison's intervals are across seeds. ``log`` receives one line per finished cell.
    """
    say = log or (lambda _: None)
    mits = parse_mitigations(mitigations)
    if act_precisions is None:
        act_precisions = DEFAULT_ACT_PRECISIONS if any(m.balanced_calib for m in mits) else ()
    setup = MitigationSetup(
        data=data,
        model=model,
        train=train,
        qat=qat,
        mitigations=tuple(m.name for m in mits),
        precisions=tuple(p.name for p in parse_precisions(_names(precisions))),
        act_precisions=tuple(p.name for p in parse_precisions(_names(act_precisions)))
        if _names(act_precisions)
        else (),
        methods=tuple(methods),
        seeds=tuple(int(s) for s in seeds),
        calib_size=calib_size,
        n_bootstrap=n_bootstrap,
    )
    _check_setup(setup)
    dataset = load_dataset(data)
    setup = replace(setup, model=sized_for(model, dataset.image_size[0]))  # a ViT's input side
    out = Path(out)
    _claim(out, setup)
    results = _read_results(out)
    notes: list[str] = []
    for m in mits:
        for method in setup.methods:
            note = calibration_note(m, method, _method_precisions(setup, method, m))
            if note and note not in notes:
                notes.append(note)
    for seed in setup.seeds:
        for key in dict.fromkeys(m.training_key for m in mits):
            cells = [
                (m, method)
                for m in mits
                if m.training_key == key
                for method in setup.methods
                if not _done(results, m.name, seed, method)
                and not _redundant_qat(m, method, mits, notes)
            ]
            if not cells:
                continue
            start = time.perf_counter()
            trained = _trained(out, dataset, setup, cells[0][0], seed, show_progress)
            say(f"seed {seed} {key}: model ready in {time.perf_counter() - start:.0f}s")
            qat_data = None
            for m, method in cells:
                start = time.perf_counter()
                qat_config = replace(setup.qat, seed=seed)
                if method == "qat" and qat_data is None:
                    qat_data = mitigated_split(dataset.train, m, seed=seed)
                precs = m.precisions(_method_precisions(setup, method, m))
                quantize = mitigated_quantizer(
                    m,
                    method,
                    precs,
                    dataset.train,
                    num_classes=dataset.num_classes,
                    qat_config=qat_config,
                    calib_size=setup.calib_size,
                    qat_data=qat_data,
                    seed=seed,
                    show_progress=show_progress,
                )
                table = audit_model(
                    trained,
                    dataset.test,
                    dataset.group_names,
                    precs,
                    method=method,
                    quantize=quantize,
                    n_bootstrap=setup.n_bootstrap,
                    random_state=seed,
                    show_progress=show_progress,
                ).table
                if _has_reference(results, m.name, seed):
                    table = table[table.method != "none"]
                table = table.assign(
                    dataset=data.name, model=model.name, mitigation=m.name, seed=seed
                )[RESULT_COLUMNS]
                results = pd.concat([results, table], ignore_index=True)
                _write_results(out, results)
                say(
                    f"seed {seed} {m.name} {method} "
                    f"({', '.join(p.name for p in precs)}): {time.perf_counter() - start:.0f}s"
                )
    return summarize(out, setup=setup, notes=notes, group_names=dataset.group_names)


def _names(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _check_setup(setup: MitigationSetup) -> None:
    bad = [m for m in setup.methods if m not in METHODS]
    if bad or not setup.methods:
        raise ConfigError(f"methods must be some of {METHODS}; got {list(setup.methods)}")
    if not setup.seeds or len(set(setup.seeds)) != len(setup.seeds):
        raise ConfigError(f"seeds must be distinct and at least one; got {list(setup.seeds)}")
    act = parse_precisions(list(setup.act_precisions)) if setup.act_precisions else []
    if any(p.act_bits is None for p in act):
        raise ConfigError(
            "act_precisions are the activation-quantized precisions for PTQ (int8-a8, int4-a8); "
            f"got {list(setup.act_precisions)}"
        )
    if "qat" in setup.methods:
        bad = [
            p.name
            for p in parse_precisions(list(setup.precisions))
            if not p.is_reference and (p.kind != "int" or p.act_bits is not None or p.fold_bn)
        ]
        if bad:
            raise ConfigError(
                f"QAT takes integer weight-only precisions; got {bad} in precisions (put "
                "activation-quantized ones in act_precisions: they are audited with PTQ)"
            )


def _claim(out: Path, setup: MitigationSetup) -> None:
    """Write ``run.json``, or check that the one there describes the same setup."""
    path = out / RUN
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        fixed = setup.fixed()
        diff = sorted(k for k in fixed if old.get(k) != fixed[k])
        if diff:
            raise ConfigError(
                f"{out} holds a run with a different {', '.join(diff)}; use another output "
                "folder or the same options"
            )
        merged = setup.to_dict()
        for key in ("mitigations", "precisions", "act_precisions", "methods", "seeds"):
            merged[key] = list(dict.fromkeys([*old.get(key, []), *merged[key]]))
        setup_dict = merged
    else:
        setup_dict = setup.to_dict()
    text = json.dumps(setup_dict, indent=2)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def _read_results(out: Path) -> pd.DataFrame:
    path = out / RESULTS
    if not path.exists():
        return pd.DataFrame(columns=RESULT_COLUMNS)
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if list(table.columns) != RESULT_COLUMNS:
        raise ConfigError(f"{path} has columns {list(table.columns)}; expected {RESULT_COLUMNS}")
    return table.astype({"group": str, "mitigation": str, "precision": str, "method": str})


def _write_results(out: Path, results: pd.DataFrame) -> None:
    atomic_write(out / RESULTS, lambda tmp: results.to_csv(tmp, index=False))


def _done(results: pd.DataFrame, mitigation: str, seed: int, method: str) -> bool:
    return bool(
        ((results.mitigation == mitigation) & (results.seed == seed) & (results.method == method))
        .to_numpy()
        .any()
    )


def _has_reference(results: pd.DataFrame, mitigation: str, seed: int) -> bool:
    return _done(results, mitigation, seed, "none")


def _without_calibration(m: Mitigation) -> str:
    return "+".join(p for p in m.name.split("+") if p != "balanced-calib") or "none"


def _redundant_qat(m: Mitigation, method: str, mits: list[Mitigation], notes: list[str]) -> bool:
    """QAT of ``x+balanced-calib`` is the QAT of ``x``: skipped when ``x`` is compared too."""
    twin = _without_calibration(m)
    if method != "qat" or not m.balanced_calib or twin not in [o.name for o in mits]:
        return False
    note = f"{m.name} with qat is {twin} with qat (QAT calibrates nothing); not run twice"
    if note not in notes:
        notes.append(note)
    return True


def _trained(
    out: Path,
    dataset: GroupedDataset,
    setup: MitigationSetup,
    mitigation: Mitigation,
    seed: int,
    show_progress: bool,
):
    """The model of ``mitigation``'s training recipe and ``seed``, from its checkpoint if any."""
    config = replace(setup.train, seed=seed)
    path = out / "checkpoints" / f"{_file_key(mitigation.training_key)}__seed{seed}.pt"
    if path.exists():
        ckpt = load_checkpoint(path)
        if ckpt.train_config != config or ckpt.model_spec != setup.model:
            raise ConfigError(f"{path} was trained with other settings; delete it to retrain")
        return ckpt.model
    net, history = train_mitigated(
        dataset, setup.model, config, mitigation, show_progress=show_progress
    )
    save_checkpoint(
        path,
        model=net,
        model_spec=setup.model,
        dataset=dataset,
        train_config=config,
        history=history,
    )
    return net


def _file_key(name: str) -> str:
    """A file-name-safe form of a recipe name.

    >>> _file_key("weighted:1,2+over")
    'weighted-1_2+over'
    """
    return name.replace(":", "-").replace(",", "_")


def summarize(
    out: str | Path,
    *,
    setup: MitigationSetup | None = None,
    notes: list[str] | None = None,
    group_names: list[str] | None = None,
    confidence: float = 0.95,
) -> MitigationComparison:
    """Summary across seeds and paired tests against ``none`` from a run directory's files,
    written to ``summary.csv`` and ``tests.csv``.

    With one seed the summary holds that seed's values (``n_seeds`` 1, no interval).
    """
    out = Path(out)
    results = _read_results(out)
    if results.empty:
        raise ConfigError(f"{out / RESULTS} has no results yet")
    if setup is None:
        d = json.loads((out / RUN).read_text())
        setup = MitigationSetup(
            data=DataSpec.from_dict(d["data"]),
            model=ModelSpec.from_dict(d["model"]),
            train=TrainConfig.from_dict(d["train"]),
            qat=TrainConfig.from_dict(d["qat"]),
            **{k: tuple(d[k]) for k in ("mitigations", "precisions", "act_precisions")},
            methods=tuple(d["methods"]),
            seeds=tuple(d["seeds"]),
            calib_size=d["calib_size"],
            n_bootstrap=d["n_bootstrap"],
        )
    if results.seed.nunique() >= 2:
        summary = across_seeds(results, confidence=confidence)
    else:
        summary = results.drop(columns=["seed"]).rename(columns={"value": "mean"})
        summary = summary.assign(n_seeds=1, std=float("nan"), ci_low=float("nan"))
        summary = summary.assign(ci_high=float("nan"))
    if group_names is None:
        group_names = [g for g in dict.fromkeys(results.group) if g != ALL]
    comparison = MitigationComparison(
        setup=setup,
        results=results,
        summary=summary,
        tests=pd.DataFrame(),
        out=out,
        notes=list(notes or []),
        group_names=list(group_names),
    )
    comparison.tests = _paired_tests(comparison, confidence)
    atomic_write(out / SUMMARY, lambda tmp: summary.to_csv(tmp, index=False))
    atomic_write(out / TESTS, lambda tmp: comparison.tests.to_csv(tmp, index=False))
    return comparison


def _cell(m: Mitigation, method: str, p: Precision) -> dict[str, object]:
    return {"mitigation": m.name, "method": method, "precision": m.precision(p).name}


def _paired_tests(comparison: MitigationComparison, confidence: float) -> pd.DataFrame:
    results = comparison.results
    rows = []
    names = set(results.mitigation)
    if "none" not in names or results.seed.nunique() < 2:
        return pd.DataFrame()
    baseline = parse_mitigations("none")[0]
    for m in parse_mitigations([n for n in comparison.setup.mitigations if n in names]):
        if m.name == "none":
            continue
        for method, p in comparison.requested():
            for metric, alternative in TESTED:
                if metric == "phi" and p.is_reference:
                    continue  # φ(D) is 0 at fp32 by definition
                base, cand = _cell(baseline, method, p), _cell(m, method, p)
                if _missing(results, cand, metric) or _missing(results, base, metric):
                    continue
                test = paired_seed_test(
                    results,
                    metric,
                    baseline=base,
                    candidate=cand,
                    alternative=alternative,  # type: ignore[arg-type]
                    confidence=confidence,
                )
                rows.append({"mitigation": m.name, "method": method, "requested": p.name,
                             "precision": cand["precision"], **test.to_dict()})  # fmt: skip
    return pd.DataFrame(rows)


def _missing(results: pd.DataFrame, where: dict[str, object], metric: str) -> bool:
    mask = (results.metric == metric) & (results.group == ALL)
    for column, value in where.items():
        mask &= results[column] == value
    return int(results[mask].seed.nunique()) < 2


def comparison_table(comparison: MitigationComparison, method: str, precision: str) -> pd.DataFrame:
    """The papers' Tables 2/3/5 in form for one method and requested precision: one row per
    mitigation; columns per-group accuracy, overall accuracy, φ(D) and worst-group accuracy, each
    as mean, ci_low, ci_high across seeds (MultiIndex columns ``(quantity, stat)``), plus
    ``precision`` (what the mitigation ran, e.g. ``int4-fl8`` for FairQAT's ``int4``)."""
    s = comparison.summary
    requested = parse_precisions(precision)[0]
    quantities = [*comparison.group_names, "overall", "phi", "worst_group_accuracy"]
    rows, index = [], []
    for m in parse_mitigations(list(comparison.setup.mitigations)):
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
            for stat in ("mean", "ci_low", "ci_high"):
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
            "accuracy": acc["mean"],
            "accuracy_low": acc["ci_low"],
            "accuracy_high": acc["ci_high"],
            "phi": phi["mean"],
            "phi_low": phi["ci_low"],
            "phi_high": phi["ci_high"],
            "bits": acc["bits"],
        }
    ).reset_index()
    return points.assign(pareto=pareto_front(points.accuracy.to_numpy(), points.phi.to_numpy()))
