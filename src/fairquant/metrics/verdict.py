"""A verdict you can ship on: did any group lose more accuracy than allowed, on these samples?

For each quantized precision and each group, the accuracy change against fp32 on the same test
samples is judged against the group's tolerance (``max_drop`` points):

- **pass**: every group's drop is below its tolerance with confidence: the upper end of the
  two-sided ``confidence`` interval of the drop (:func:`~fairquant.metrics.paired.drop_interval`)
  lies below the tolerance, for every group (and φ's upper bound below ``max_phi`` when given);
- **fail**: some group's drop is above its tolerance with confidence: the exact unconditional
  test of "drop <= tolerance" (:func:`~fairquant.metrics.paired.exact_exceed_p`) rejects after
  Holm's correction over the groups of that precision (and φ when ``max_phi`` is given); or φ
  exceeds ``max_phi`` by the pair test of :func:`~fairquant.metrics.paired.gap_pair_tests`;
- **inconclusive**: neither. The group rows say how many test samples would decide it.

One family per decision (:mod:`fairquant.metrics.policy`): each precision is its own shipping
decision, so by default Holm runs over the groups of one precision (and its φ), never over the
precisions of the audit (adding fp16 to an audit must not weaken the verdict on int8);
``family="audit"`` pools them. A FAIL names groups, and a precision fails if *any* group exceeds,
a union of hypotheses: Holm bounds the chance of any false "exceeds" in the family by α, under
any dependence, given p-values valid at every level; the exact test's are (the normal-theory
score test's were not at α/m for many groups with few expected losses: ``docs/statistics.md``).
A PASS needs *every* group within, an intersection-union test (Berger 1982): it is false only if
some group's true drop is at least its tolerance, and that group's own test then wrongly says
"within" with probability at most α / 2, so no correction is needed.

The printed interval is the one that decides (``docs/verdict.md``): its end on the "within" side
(the upper end of the drop) is the ``confidence`` score interval's, which decides a pass; its end
on the "exceeds" side is the exact lower bound at the level Holm used for that group (α/m for the
first, up to α), which decides a fail. Both are found by bisection that starts at the tolerance,
so PASS means the interval lies wholly within the tolerance, FAIL wholly beyond it, and
INCONCLUSIVE that it contains the tolerance, whatever the rounding. Drops and tolerances are
compared in exact rational arithmetic (:func:`~fairquant.metrics.paired.margin_excess`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from fairquant.errors import ConfigError
from fairquant.metrics.frame import FairnessFrame
from fairquant.metrics.paired import (
    drop_interval,
    drop_tests,
    exact_exceed_p,
    exact_lower_bound,
    gap_pair_tests,
    margin_excess,
    mcnemar_exact,
    samples_to_decide,
)
from fairquant.metrics.policy import CONFIDENCE, CORRECTION, holm
from fairquant.metrics.samples import PerSample
from fairquant.metrics.uncertainty import check_bootstrap, percentile_interval
from fairquant.options import DEFAULT_MAX_DROP as DEFAULT_MAX_DROP

__all__ = ["DEFAULT_MAX_DROP", "FAMILIES", "STATUSES", "Tolerance", "Verdict", "verdict"]

#: The accuracy drop (points) every group may lose when no tolerance is given.
#: A precision's (and a group's) possible verdicts.
STATUSES = ("pass", "fail", "inconclusive")
#: Holm families: the groups (and φ) of one precision, the default; or of the whole audit.
FAMILIES = ("precision", "audit")
#: Test samples beyond which a group is not foreseen to be decidable (its drop is within 1e-9
#: points or so of its tolerance); ``n_needed`` is then missing and a note says so.
MAX_FORESEEN = 10**9
#: The between-group gaps reported with their paired-bootstrap change; φ can be judged.
#: Their bootstrap replicates, like the excess loss's, are a :class:`FairnessFrame`'s.
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
    ``max_drop`` (the group's tolerance), ``p_exceed`` (exact unconditional test of a drop above
    the tolerance) and its Holm-adjusted ``p_exceed_holm``, which decides a fail,
    ``p_mcnemar`` / ``p_mcnemar_holm`` (McNemar's exact test of no change, in the same family;
    shown, not used by the decision), ``status``, ``n_needed`` (inconclusive rows: test samples
    that would decide it),
    and ``excess_loss`` with its paired-bootstrap interval (``excess_loss_low``/``_high``).
    ``gaps``: per (precision, metric) for
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
    #: Hypotheses in each Holm family of "exceeds" tests: the groups with samples of one
    #: precision plus its φ (``family="precision"``), or of every precision (``"audit"``).
    n_tests: int
    n_bootstrap: int
    notes: list[str] = field(default_factory=list)
    correction: str = CORRECTION
    family: str = "precision"

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
    n_bootstrap: int | None = None,
    random_state: int | None = None,
    family: str = "precision",
) -> Verdict:
    """Judge every quantized precision of an audit against ``tolerance`` (module docstring).

    ``result_or_samples``: an :class:`~fairquant.AuditResult` (its ``samples`` and
    ``group_names``) or a :class:`~fairquant.metrics.samples.PerSample` (then ``group_names``
    names the group codes; default ``"0"``, ``"1"``, ...). The first model of the samples is the
    reference (fp32). ``precisions``: which to judge (default: all others; a name the samples do
    not hold is an error). ``tolerance``: default :class:`Tolerance` () (2 points, no φ bound).
    The intervals of the excess loss and of the change of the between-group gaps are percentile
    intervals of :class:`~fairquant.metrics.frame.FairnessFrame` replicates, which resample the
    test samples within each group, the same resample for fp32 and every precision: an audit's
    own frame (the replicates behind its results.csv intervals) when it has replicates and
    ``n_bootstrap`` and ``random_state`` are ``None`` or its own; else a frame of the samples
    with ``n_bootstrap`` replicates (``None``: 1,000) seeded by ``random_state`` (``None``: 0).
    ``n_bootstrap=0`` leaves those intervals empty. The accuracy decisions need no bootstrap.
    ``family``: the Holm family of the "exceeds" tests,
    ``"precision"`` (the groups and φ of each precision: each precision is its own decision) or
    ``"audit"`` (every group and φ of every precision judged together).

    A group without test samples cannot be vouched for: its rows are ``inconclusive`` with a
    note, so its precisions cannot pass (another group can still make them fail).
    """
    check_bootstrap(n_bootstrap or 0, confidence)
    if family not in FAMILIES:
        raise ConfigError(f"family {family!r}: expected one of {list(FAMILIES)}")
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
    points = np.broadcast_to([tolerance.for_group(a) for a in names], (q, k))
    limit = points / 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = _group_sums(correct, g, k)
        acc_ref = np.broadcast_to(100.0 * hits[0] / counts, (q, k))
        acc = 100.0 * hits[1:] / counts
        excess = np.where(present, _group_sums(dloss, g, k) / counts, np.nan)
    n_safe = np.where(n > 0, n, 1.0)  # empty groups: computed on 0 of 1, then masked
    mask = np.broadcast_to(present, (q, k))
    p_exceed = np.where(mask, exact_exceed_p(lost, gained, n_safe.astype(np.int64), limit), np.nan)
    p_within = np.where(mask, drop_tests(lost, gained, n_safe, limit)[1], np.nan)
    p_mcnemar = np.where(mask, mcnemar_exact(lost, gained), np.nan)

    # φ against max_phi: one "exceeds" p per precision, in the precision's Holm family
    groups_present = np.flatnonzero(present)
    phi_tests = (
        [gap_pair_tests(d, g, groups_present, tolerance.max_phi, alpha=alpha) for d in dloss]
        if tolerance.max_phi is not None
        else []
    )
    p_phi = np.array([[p for p, _ in phi_tests]]).T if phi_tests else np.empty((q, 0))
    family_p = np.concatenate([p_exceed, p_phi], axis=1)  # (Q, k [+ 1])
    families = [family_p.ravel()] if family == "audit" else list(family_p)
    adjusted, levels = (
        np.concatenate(v).reshape(family_p.shape)
        for v in zip(*(_holm_levels(f, alpha) for f in families), strict=True)
    )
    exceed_holm, phi_holm = adjusted[:, :k], adjusted[:, k:].ravel()
    mcnemar_holm = np.concatenate(
        [holm(f) for f in ([p_mcnemar.ravel()] if family == "audit" else list(p_mcnemar))]
    ).reshape(q, k)
    m = int((~np.isnan(families[0])).sum())
    status = np.where(
        exceed_holm < alpha, "fail", np.where(p_within < alpha, "pass", "inconclusive")
    )
    status = np.where(mask, status, "inconclusive")

    # the printed interval decides: its drop's upper end the score interval at `confidence`
    # (pass), its lower end the exact bound at the level Holm used for the group (fail); both
    # start at the tolerance, so they lie on the side of it that the decision says
    _, high = drop_interval(lost, gained, n_safe, confidence=confidence, split=limit)
    low = np.full((q, k), np.nan)
    low[mask] = exact_lower_bound(
        lost[mask],
        gained[mask],
        n_safe[mask].astype(np.int64),
        level=levels[:, :k][mask],
        split=limit[mask],
    )
    high = np.where(mask, high, np.nan)

    # inconclusive groups: samples that would decide them at the observed rates
    side, gap, needed = samples_needed(lost, gained, n_safe.astype(np.int64), points, alpha, m)
    undecidable = (status == "inconclusive") & mask & np.isnan(needed)
    for i, a in zip(*np.nonzero(undecidable), strict=True):
        notes.append(
            f"{chosen[i]}: group {names[a]!r} drops exactly its tolerance "
            f"({points[i, a]:g} points) on these samples: no number of samples decides it"
            if side[i, a] == 0
            else f"{chosen[i]}: group {names[a]!r} drops within {gap[i, a] * 100:.2g} points of "
            f"its tolerance ({points[i, a]:g}): more than {MAX_FORESEEN:,} samples would decide it"
        )

    frame = _frame(result_or_samples, samples, names, reference, chosen, n_bootstrap, random_state)
    excess_low, excess_high = np.full((q, k), np.nan), np.full((q, k), np.nan)
    changes = None
    if frame is not None:
        rows_of = [frame.models.index(m) for m in chosen]
        reps = frame.replicates("excess_loss")[:, rows_of, :k]
        lo, hi = percentile_interval(reps[:, :, present], confidence)
        excess_low[:, present], excess_high[:, present] = lo, hi
        ref = frame.models.index(reference)
        changes = {  # (B, Q): each precision's gap minus fp32's on the same resample
            metric: frame.replicates(metric)[:, rows_of, -1]
            - frame.replicates(metric)[:, [ref], -1]
            for metric in GAPS
        }

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
                    "max_drop": float(points[i, a]),
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
        changes,
        confidence,
        tolerance,
        phi_tests,
        phi_holm,
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
        n_bootstrap=0 if frame is None else frame.n_bootstrap,
        notes=notes,
        family=family,
    )


def samples_needed(
    lost, gained, n, points, alpha: float, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(side, gap, needed)`` per group: the sign of the observed drop minus the tolerance
    ``points`` and its size (fractions; :func:`~fairquant.metrics.paired.margin_excess`,
    exact), and the test samples that would decide the group at its observed rates
    (:func:`~fairquant.metrics.paired.samples_to_decide`; the fail side at Bonferroni's level
    ``alpha / m``, the most Holm can ask). ``needed`` is NaN where no size decides it (the drop
    equals the tolerance) or more than :data:`MAX_FORESEEN` would; else a whole number."""
    side, gap = margin_excess(lost, gained, n, points)
    z = np.where(
        side > 0, stats.norm.ppf(1 - alpha / (2 * max(m, 1))), stats.norm.ppf(1 - alpha / 2)
    )
    needed = samples_to_decide(
        lost, gained, n, np.asarray(points) / 100.0, z=z, excess=np.where(side != 0, gap, 0.0)
    )
    return side, gap, np.where(needed <= MAX_FORESEEN, needed, np.nan)


def _holm_levels(p: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values of one family and, per hypothesis, the level its decision used:
    ``α/(m − j)`` for the ``j``-th smallest p (from 0) while Holm rejects, and ``α/(m − r)``,
    the level it stopped at, for the rest (``r`` rejections). A hypothesis is rejected exactly
    when its p is below its level, so a bound at that level decides as Holm does. NaN stays NaN.
    """
    adjusted = holm(p)
    levels = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    rejected = int((adjusted[order] < alpha).sum())
    steps = np.arange(m)
    levels[order] = alpha / (m - np.minimum(steps, rejected))
    return adjusted, levels


def _frame(
    result_or_samples,
    samples: PerSample,
    names: list[str],
    reference: str,
    chosen: list[str],
    n_bootstrap: int | None,
    random_state: int | None,
) -> FairnessFrame | None:
    """The frame whose replicates give the verdict's bootstrap intervals (:func:`verdict`):
    the audit's own where it fits, else one of the samples; ``None`` for no replicates."""
    frame = getattr(result_or_samples, "frame", None)
    if (
        isinstance(frame, FairnessFrame)
        and frame.n_bootstrap > 0
        and n_bootstrap in (None, frame.n_bootstrap)
        and random_state in (None, frame.random_state)
        and frame.reference == reference
        and set(chosen) <= set(frame.models)
        and len(frame.group_names) == len(names)
    ):
        return frame
    n_bootstrap = 1000 if n_bootstrap is None else n_bootstrap
    if not n_bootstrap:
        return None
    models = [reference, *chosen]
    with warnings.catch_warnings():  # its notes (empty groups, CEV/SDE) are not the verdict's
        warnings.simplefilter("ignore")
        return FairnessFrame(
            y_true=samples.y,
            groups=np.asarray(samples.g, dtype=np.int64),
            group_names=names,
            predictions={m: samples.predictions[m] for m in models},
            losses={m: samples.losses[m] for m in models},
            reference=reference,
            n_bootstrap=n_bootstrap,
            random_state=0 if random_state is None else random_state,
        )


def _gaps(
    correct, dloss, g, present, chosen, changes, confidence, tolerance, phi_tests, phi_holm
) -> tuple[pd.DataFrame, list[str]]:
    """Rows of φ, accuracy gap and worst-group accuracy per precision, and φ's statuses;
    ``changes``: the bootstrap replicates of each gap's change, ``{metric: (B, Q)}``."""
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
            if changes is not None:
                low, high = percentile_interval(changes[metric][:, i], confidence)
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
