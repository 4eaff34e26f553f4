"""A verdict you can ship on: did any group lose more accuracy than allowed, on these samples?

For each quantized precision and each group, the accuracy change against fp32 on the same test
samples is judged against the group's tolerance (``max_drop`` points):

- **pass**: every group's drop is below its tolerance with confidence: the upper end of the
  two-sided ``confidence`` interval of the drop (:func:`~fairquant.metrics.paired.drop_interval`)
  lies below the tolerance, for every group (and φ's upper bound below ``max_phi`` when given);
- **fail**: some group's drop is above its tolerance with confidence: the score test of "drop <=
  tolerance" rejects after Holm's correction over every group x precision of the audit, *and*
  McNemar's exact test of "no change" rejects after Holm over the same family (so a FAIL line
  never prints a McNemar p above α); or φ exceeds ``max_phi`` by the pair test of
  :func:`~fairquant.metrics.paired.gap_pair_tests` (in the same Holm family);
- **inconclusive**: neither. The group rows say how many test samples would decide it.

How the multiplicity correction enters, and why the two claims differ (``docs/verdict.md``):
a FAIL names groups, and a precision fails if *any* group exceeds, a union of hypotheses; each
named group must be protected against a false claim, so the "exceeds" p-values of all groups x
precisions (and φ's) form one family adjusted by Holm (:func:`fairquant.metrics.policy.holm`),
which bounds the chance of *any* false "exceeds" in the audit by α. A PASS needs *every* group
within, an intersection-union test (Berger 1982): it is false only if some group's true drop is at
least its tolerance, and that group's own test then wrongly rejects with probability at most
α / 2, so no correction is needed, and applying one would only cost power. Both claims are
one-sided, but each uses one end of the *two-sided* ``confidence`` interval (the project's
intervals, :data:`fairquant.metrics.policy.CONFIDENCE`), so each errs with nominal probability
``α / 2``; measured exactly over all tables, at most 3.4 % for a false fail and 2.5 % for a
false pass at group sizes 20 to 2,000 (``tests/metrics/test_paired.py``), below α = 5 %.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from fairquant.errors import ConfigError
from fairquant.metrics.paired import (
    drop_interval,
    drop_tests,
    gap_pair_tests,
    mcnemar_exact,
    paired_bootstrap,
    samples_to_decide,
)
from fairquant.metrics.policy import CONFIDENCE, CORRECTION, holm
from fairquant.metrics.samples import PerSample
from fairquant.metrics.uncertainty import check_bootstrap, percentile_interval
from fairquant.options import DEFAULT_MAX_DROP as DEFAULT_MAX_DROP

__all__ = ["DEFAULT_MAX_DROP", "STATUSES", "Tolerance", "Verdict", "verdict"]

#: The accuracy drop (points) every group may lose when no tolerance is given.
#: A precision's (and a group's) possible verdicts.
STATUSES = ("pass", "fail", "inconclusive")
#: The between-group gaps reported with their paired-bootstrap change; φ can be judged.
GAPS = ("phi", "accuracy_gap", "worst_group_accuracy")


def _alpha(confidence: float) -> float:
    """The level of the tests whose decisions use ``confidence`` intervals' ends: 0.05 for 0.95
    (rounded, not 1 − 0.95's 0.050000000000000044, which verdict.json would print)."""
    return round(1.0 - confidence, 12)


def _points(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r}: expected a number of accuracy points") from None
    if not 0 <= value < 100:
        raise ConfigError(f"{name} {value:g}: expected accuracy points in [0, 100)")
    return value


@dataclass(frozen=True)
class Tolerance:
    """What a quantized model may lose: ``max_drop`` accuracy points in every group (fp32 accuracy
    minus quantized, on the same test samples), ``per_group`` overrides by group name, and
    optionally ``max_phi``, a bound on φ(D) (max − min of the groups' excess losses G(a), the
    cross-entropy units of :mod:`fairquant.metrics.frame`).

    >>> Tolerance.parse(["2", "Others=1"]).for_group("Others")
    1.0
    """

    max_drop: float = DEFAULT_MAX_DROP
    per_group: Mapping[str, float] = field(default_factory=dict)
    max_phi: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_drop", _points("max_drop", self.max_drop))
        groups = {str(k): _points(f"max_drop for {k!r}", v) for k, v in self.per_group.items()}
        object.__setattr__(self, "per_group", groups)
        if self.max_phi is not None:
            try:
                phi = float(self.max_phi)
            except (TypeError, ValueError):
                raise ConfigError(f"max_phi {self.max_phi!r}: expected a number >= 0") from None
            if not 0 <= phi < np.inf:
                raise ConfigError(f"max_phi {phi:g}: expected a finite number >= 0")
            object.__setattr__(self, "max_phi", phi)

    def for_group(self, group: str) -> float:
        """The largest accuracy drop (points) ``group`` may have."""
        return self.per_group.get(group, self.max_drop)

    def check_groups(self, group_names: Sequence[str]) -> None:
        """Refuse overrides for groups the data does not have (a typo would go unjudged)."""
        unknown = [g for g in self.per_group if g not in group_names]
        if unknown:
            raise ConfigError(
                f"max_drop overrides for unknown groups {unknown}; the groups are "
                f"{list(group_names)}"
            )

    def to_dict(self) -> dict:
        return {
            "max_drop": self.max_drop,
            "per_group": dict(self.per_group),
            "max_phi": self.max_phi,
        }

    @classmethod
    def parse(
        cls, max_drop: Sequence[str] | None = None, max_phi: float | None = None
    ) -> Tolerance | None:
        """A tolerance from the command line's ``--max-drop`` items and ``--max-phi``.

        Each item is ``POINTS`` (every group; at most one) or ``GROUP=POINTS`` (an override; the
        group name may itself contain ``=``, the last one splits). Overrides need a ``POINTS``
        for the other groups. No item and no ``max_phi``: ``None`` (no verdict).
        """
        items = list(max_drop or [])
        if not items and max_phi is None:
            return None
        default, overrides = None, {}
        for item in items:
            group, sep, points = str(item).rpartition("=")
            if not sep:
                if default is not None:
                    raise ConfigError(
                        f"--max-drop given twice for every group ({default!r}, {item!r}); "
                        "write overrides as GROUP=POINTS"
                    )
                default = item
                continue
            if not group.strip():
                raise ConfigError(f"--max-drop {item!r}: expected POINTS or GROUP=POINTS")
            if group.strip() in overrides:
                raise ConfigError(f"--max-drop: group {group.strip()!r} is given twice")
            overrides[group.strip()] = _points(f"--max-drop {item!r}:", points)
        if default is None:
            raise ConfigError(
                "--max-drop: give the points every group may lose (e.g. --max-drop 2) "
                f"besides the overrides {list(overrides)}"
                if overrides
                else "--max-phi needs --max-drop too (e.g. --max-drop 2)"
            )
        return cls(_points(f"--max-drop {default!r}:", default), overrides, max_phi)


@dataclass(frozen=True)
class Verdict:
    """The verdict of each quantized precision, with the numbers behind it.

    ``status``: ``{precision: "pass" | "fail" | "inconclusive"}``. ``table``: one row per
    (precision, group): ``n`` test samples, ``lost`` / ``gained`` (samples only fp32 / only the
    quantized model classifies correctly), ``accuracy_fp32``, ``accuracy``, ``change`` (quantized
    − fp32, points, negative is a drop) with its paired interval ``ci_low``/``ci_high``,
    ``max_drop`` (the group's tolerance), ``p_exceed`` and its Holm-adjusted ``p_exceed_holm``
    (drop above the tolerance), ``p_mcnemar`` / ``p_mcnemar_holm`` (McNemar's exact test of no
    change), ``status``, ``n_needed`` (inconclusive rows: test samples that would decide it),
    and ``excess_loss`` with its paired-bootstrap interval. ``gaps``: per (precision, metric) for
    φ, the accuracy gap and the worst-group accuracy: the fp32 and quantized value, the change
    with its paired-bootstrap interval, and for φ with ``max_phi`` its test and status.
    """

    status: dict[str, str]
    table: pd.DataFrame
    gaps: pd.DataFrame
    tolerance: Tolerance
    group_names: list[str]
    reference: str
    confidence: float
    #: Hypotheses in the Holm family of "exceeds" tests (groups x precisions, plus φ per precision).
    n_tests: int
    n_bootstrap: int
    notes: list[str] = field(default_factory=list)
    correction: str = CORRECTION

    @property
    def alpha(self) -> float:
        return _alpha(self.confidence)

    @property
    def overall(self) -> str:
        """``fail`` if any precision fails, else ``inconclusive`` if any is, else ``pass``."""
        values = set(self.status.values())
        return next(s for s in ("fail", "inconclusive", "pass") if s in values)

    def by_group(self, column: str = "change") -> pd.DataFrame:
        """Groups x precisions of one column of :attr:`table` (e.g. ``change``, ``status``)."""
        if column not in self.table.columns or column in ("precision", "group"):
            raise ConfigError(f"unknown column {column!r}; have {list(self.table.columns)[2:]}")
        wide = self.table.pivot(index="group", columns="precision", values=column)
        return wide.reindex(index=self.group_names, columns=list(self.status))


def _group_sums(values: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    """``(M, N)`` per-sample values summed per group: ``(M, k)``."""
    return np.asarray(values, dtype=np.float64) @ np.eye(k)[g]


def _inputs(result_or_samples, group_names) -> tuple[PerSample, list[str]]:
    samples = getattr(result_or_samples, "samples", result_or_samples)
    if samples is None:
        raise ConfigError(
            "the audit result keeps no per-sample predictions (samples is None): audit again "
            "with fairquant.audit or audit_model to get a verdict"
        )
    if not isinstance(samples, PerSample):
        raise ConfigError(
            f"verdict needs an AuditResult or a PerSample, got {type(result_or_samples).__name__}"
        )
    names = (
        group_names if group_names is not None else getattr(result_or_samples, "group_names", None)
    )
    k = int(samples.g.max()) + 1 if len(samples.g) else 0
    names = [str(n) for n in names] if names is not None else [str(a) for a in range(k)]
    if k > len(names):
        raise ConfigError(f"group code {k - 1} is outside the {len(names)} group names {names}")
    return samples, names


def _precisions(samples: PerSample, precisions: Sequence[str] | None) -> tuple[str, list[str]]:
    models = list(samples.predictions)
    if not models:
        raise ConfigError("the samples hold no predictions")
    reference, others = models[0], models[1:]
    if precisions is None:
        precisions = others
    unknown = [p for p in precisions if p not in samples.predictions]
    if unknown:
        raise ConfigError(f"precisions {unknown} are not in the audit's samples; it has {models}")
    chosen = [p for p in dict.fromkeys(precisions) if p != reference]
    if not chosen:
        raise ConfigError(
            f"nothing to judge: the verdict compares quantized precisions with {reference!r}, "
            f"and the samples hold {models}"
        )
    missing = [p for p in [reference, *chosen] if p not in samples.losses]
    if missing:
        raise ConfigError(f"the samples hold no per-sample losses for {missing}")
    return reference, chosen


def verdict(
    result_or_samples,
    tolerance: Tolerance | None = None,
    *,
    group_names: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    confidence: float = CONFIDENCE,
    n_bootstrap: int = 1000,
    random_state: int = 0,
) -> Verdict:
    """Judge every quantized precision of an audit against ``tolerance`` (module docstring).

    ``result_or_samples``: an :class:`~fairquant.AuditResult` (its ``samples`` and
    ``group_names``) or a :class:`~fairquant.metrics.samples.PerSample` (then ``group_names``
    names the group codes; default ``"0"``, ``"1"``, ...). The first model of the samples is the
    reference (fp32). ``precisions``: which to judge (default: all others; a name the samples do
    not hold is an error). ``tolerance``: default :class:`Tolerance` () (2 points, no φ bound).
    ``n_bootstrap`` paired-bootstrap replicates (seeded by ``random_state``) give the intervals of
    the excess loss and the between-group gaps; 0 leaves those intervals empty. The accuracy
    decisions need no bootstrap.

    A group without test samples cannot be vouched for: its rows are ``inconclusive`` with a
    note, so its precisions cannot pass (another group can still make them fail).
    """
    check_bootstrap(n_bootstrap, confidence)
    tolerance = Tolerance() if tolerance is None else tolerance
    samples, names = _inputs(result_or_samples, group_names)
    reference, chosen = _precisions(samples, precisions)
    tolerance.check_groups(names)
    alpha, k, q = _alpha(confidence), len(names), len(chosen)
    y, g = np.asarray(samples.y), np.asarray(samples.g, dtype=np.int64)
    counts = np.bincount(g, minlength=k)
    present = counts > 0
    notes = [
        f"group {names[a]!r} has no test samples: its accuracy change cannot be judged, so no "
        "precision can pass"
        for a in np.flatnonzero(~present)
    ]

    correct = np.stack([samples.predictions[m] == y for m in [reference, *chosen]])
    dloss = np.stack([samples.losses[m] - samples.losses[reference] for m in chosen])
    lost = _group_sums(correct[0] & ~correct[1:], g, k).astype(np.int64)  # (Q, k)
    gained = _group_sums(~correct[0] & correct[1:], g, k).astype(np.int64)
    n = np.broadcast_to(counts, (q, k)).astype(np.float64)
    limit = np.broadcast_to([tolerance.for_group(a) for a in names], (q, k)) / 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = _group_sums(correct, g, k)
        acc_ref = np.broadcast_to(100.0 * hits[0] / counts, (q, k))
        acc = 100.0 * hits[1:] / counts
        excess = np.where(present, _group_sums(dloss, g, k) / counts, np.nan)
    n_safe = np.where(n > 0, n, 1.0)  # empty groups: computed on 0 of 1, then masked
    low, high = drop_interval(lost, gained, n_safe, confidence=confidence)
    p_exceed, p_within = drop_tests(lost, gained, n_safe, limit)
    p_mcnemar = mcnemar_exact(lost, gained)
    mask = np.broadcast_to(present, (q, k))
    p_exceed, p_within, p_mcnemar, low, high = (
        np.where(mask, v, np.nan) for v in (p_exceed, p_within, p_mcnemar, low, high)
    )

    # φ against max_phi: one "exceeds" p per precision, in the same Holm family
    groups_present = np.flatnonzero(present)
    phi_tests = (
        [gap_pair_tests(d, g, groups_present, tolerance.max_phi, alpha=alpha) for d in dloss]
        if tolerance.max_phi is not None
        else []
    )
    family = np.concatenate([p_exceed.ravel(), [p for p, _ in phi_tests]])
    adjusted = holm(family)
    exceed_holm = adjusted[: q * k].reshape(q, k)
    mcnemar_holm = holm(p_mcnemar.ravel()).reshape(q, k)
    exceeds = (exceed_holm < alpha) & (mcnemar_holm < alpha)
    within = p_within < alpha
    status = np.where(exceeds, "fail", np.where(within, "pass", "inconclusive"))
    m = int((~np.isnan(family)).sum())

    # inconclusive groups: samples that would decide them at the observed rates; the fail side
    # at Bonferroni's level alpha / m, the most Holm can ask
    drop = (lost - gained) / n_safe
    z = np.where(
        drop > limit, stats.norm.ppf(1 - alpha / (2 * max(m, 1))), stats.norm.ppf(1 - alpha / 2)
    )
    needed = samples_to_decide(lost, gained, n_safe, limit, z=z)
    undecidable = (status == "inconclusive") & mask & ~np.isfinite(needed)
    for i, a in zip(*np.nonzero(undecidable), strict=True):
        notes.append(
            f"{chosen[i]}: group {names[a]!r} drops exactly its tolerance "
            f"({limit[i, a] * 100:g} points) on these samples: no number of samples decides it"
        )

    reps = (
        paired_bootstrap(correct, dloss, g, k, n_bootstrap=n_bootstrap, random_state=random_state)
        if n_bootstrap
        else None
    )
    excess_low, excess_high = np.full((q, k), np.nan), np.full((q, k), np.nan)
    if reps is not None:
        lo, hi = percentile_interval(reps["excess_loss"][:, :, present], confidence)
        excess_low[:, present], excess_high[:, present] = lo, hi

    rows = []
    for i, precision in enumerate(chosen):
        for a, group in enumerate(names):
            decided = status[i, a] != "inconclusive" or not present[a]
            rows.append(
                {
                    "precision": precision,
                    "group": group,
                    "n": int(counts[a]),
                    "lost": int(lost[i, a]),
                    "gained": int(gained[i, a]),
                    "accuracy_fp32": acc_ref[i, a],
                    "accuracy": acc[i, a],
                    "change": acc[i, a] - acc_ref[i, a],
                    "ci_low": -100.0 * high[i, a],
                    "ci_high": -100.0 * low[i, a],
                    "max_drop": 100.0 * limit[i, a],
                    "p_exceed": p_exceed[i, a],
                    "p_exceed_holm": exceed_holm[i, a],
                    "p_mcnemar": p_mcnemar[i, a],
                    "p_mcnemar_holm": mcnemar_holm[i, a],
                    "status": status[i, a],
                    "n_needed": pd.NA if decided or undecidable[i, a] else int(needed[i, a]),
                    "excess_loss": excess[i, a],
                    "excess_loss_low": excess_low[i, a],
                    "excess_loss_high": excess_high[i, a],
                }
            )
    table = pd.DataFrame(rows)
    table["n_needed"] = table["n_needed"].astype("Int64")

    gaps, phi_status = _gaps(
        correct,
        dloss,
        g,
        present,
        chosen,
        reps,
        confidence,
        tolerance,
        phi_tests,
        adjusted[q * k :],
    )
    verdicts = {}
    for i, precision in enumerate(chosen):
        here = [*status[i], *([phi_status[i]] if phi_status else [])]
        if "fail" in here:
            verdicts[precision] = "fail"
        elif all(s == "pass" for s in here) and present.all():
            verdicts[precision] = "pass"
        else:
            verdicts[precision] = "inconclusive"
    return Verdict(
        status=verdicts,
        table=table,
        gaps=gaps,
        tolerance=tolerance,
        group_names=names,
        reference=reference,
        confidence=confidence,
        n_tests=m,
        n_bootstrap=n_bootstrap,
        notes=notes,
    )


def _gaps(
    correct, dloss, g, present, chosen, reps, confidence, tolerance, phi_tests, phi_holm
) -> tuple[pd.DataFrame, list[str]]:
    """Rows of φ, accuracy gap and worst-group accuracy per precision, and φ's statuses."""
    k = len(present)
    counts = np.bincount(g, minlength=k)[present]
    acc = 100.0 * _group_sums(correct, g, k)[:, present] / counts  # (M, k')
    excess = _group_sums(dloss, g, k)[:, present] / counts  # (Q, k')
    point = {
        "phi": (np.zeros(len(chosen)), excess.max(1) - excess.min(1)),
        "accuracy_gap": (
            np.repeat(acc[0].max() - acc[0].min(), len(chosen)),
            acc[1:].max(1) - acc[1:].min(1),
        ),
        "worst_group_accuracy": (np.repeat(acc[0].min(), len(chosen)), acc[1:].min(1)),
    }
    alpha = _alpha(confidence)
    rows, phi_status = [], []
    for i, precision in enumerate(chosen):
        for metric in GAPS:
            ref, value = point[metric][0][i], point[metric][1][i]
            low = high = np.nan
            if reps is not None:
                low, high = percentile_interval(reps[metric][:, i], confidence)
            row = {
                "precision": precision,
                "metric": metric,
                "fp32": ref,
                "value": value,
                "change": value - ref,
                "ci_low": float(low),
                "ci_high": float(high),
                "max": np.nan,
                "p_exceed": np.nan,
                "p_exceed_holm": np.nan,
                "status": "not judged",
            }
            if metric == "phi" and phi_tests:
                p, within = phi_tests[i]
                s = "fail" if phi_holm[i] < alpha else "pass" if within else "inconclusive"
                phi_status.append(s)
                row |= {
                    "max": tolerance.max_phi,
                    "p_exceed": p,
                    "p_exceed_holm": phi_holm[i],
                    "status": s,
                }
            rows.append(row)
    return pd.DataFrame(rows), phi_status
