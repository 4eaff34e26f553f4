"""How sure a number is: group-stratified bootstrap, intervals across seeds, paired tests.

Two sources of noise are kept apart. *Test-set noise* (which test images happened to be drawn) is
measured by resampling test samples within each group; it needs one trained model. *Training
noise* (which seed trained the model) needs several trained models and is measured across seeds.

The bootstrap is written here rather than taken from Fairlearn's ``MetricFrame(n_boot=...)``:
Fairlearn resamples the whole test set (a rare group's size then varies and can drop to zero) and
rebuilds a pandas frame per replicate, which is too slow for 1,000 replicates of every metric at
every precision. Here each replicate draws, for every group ``a``, ``n_a`` samples with
replacement from that group, i.e. multinomial counts ``w ~ Mult(n_a, 1/n_a)``, and every metric
is computed from the weighted sums ``Σ_i w_i x_i`` of stored per-sample values (correctness,
loss, changed prediction, ...), all replicates in one matrix product and no model re-evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from fairquant.errors import ConfigError

__all__ = [
    "KEYS",
    "PairedTest",
    "across_seeds",
    "check_bootstrap",
    "paired_seed_test",
    "percentile_interval",
    "seed_interval",
    "stack_seeds",
    "stratified_bootstrap_sums",
]

#: The columns that identify one number in an audit table.
KEYS = ["method", "precision", "bits", "group", "metric"]

_CHUNK = 1 << 22  # replicate x sample weights held at once (32 MiB of float64)


def check_bootstrap(n_bootstrap: int, confidence: float) -> None:
    """Reject a bootstrap size or confidence level that cannot give an interval."""
    if n_bootstrap < 0:
        raise ConfigError(f"n_bootstrap must be >= 0 (0: no intervals), got {n_bootstrap}")
    if 0 < n_bootstrap < 100:
        raise ConfigError(
            f"n_bootstrap={n_bootstrap} is too few replicates for a percentile interval; use "
            ">= 100 (1000 is the default)"
        )
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def stratified_bootstrap_sums(
    values: np.ndarray,
    groups: np.ndarray,
    num_groups: int,
    *,
    n_bootstrap: int,
    random_state: int | np.random.Generator = 0,
    totals: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-group sums of ``values`` (N, F) over ``n_bootstrap`` group-stratified resamples.

    Returns ``(n_bootstrap, num_groups, F)``: replicate ``b`` draws ``n_a`` samples with
    replacement from each group ``a`` and sums their rows. Group sizes are the same in every
    replicate, so a group mean is ``sum / n_a``. Empty groups get zeros. With ``totals`` (N, F2)
    the same resamples also give its sums over all groups, ``(n_bootstrap, F2)`` (else ``None``):
    for quantities that need no per-group breakdown, at a k-th of the memory.

    >>> x = np.ones((5, 1)); g = np.array([0, 0, 0, 1, 1])
    >>> sums, _ = stratified_bootstrap_sums(x, g, 2, n_bootstrap=3)
    >>> sums[:, :, 0].tolist()
    [[3.0, 2.0], [3.0, 2.0], [3.0, 2.0]]
    """
    rng = np.random.default_rng(random_state)
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros((n_bootstrap, num_groups, values.shape[1]))
    out_totals = None if totals is None else np.zeros((n_bootstrap, totals.shape[1]))
    for a in range(num_groups):
        members = groups == a
        rows, n = values[members], int(members.sum())
        if n == 0:
            continue
        total_rows = None if totals is None else np.asarray(totals[members], dtype=np.float64)
        step = max(1, _CHUNK // n)
        for start in range(0, n_bootstrap, step):
            stop = min(start + step, n_bootstrap)
            m = stop - start
            # n draws with replacement per replicate, counted: multinomial(n, 1/n) weights
            draws = rng.integers(0, n, size=(m, n)) + n * np.arange(m)[:, None]
            weights = np.bincount(draws.ravel(), minlength=m * n).reshape(m, n).astype(np.float64)
            out[start:stop, a] = weights @ rows
            if out_totals is not None:
                out_totals[start:stop] += weights @ total_rows
    return out, out_totals


def percentile_interval(
    replicates: np.ndarray, confidence: float = 0.95, *, axis: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The percentile bootstrap interval: the ``(1 ∓ confidence)/2`` quantiles of the replicates.

    >>> low, high = percentile_interval(np.arange(101.0), 0.9)
    >>> round(float(low), 6), round(float(high), 6)
    (5.0, 95.0)
    """
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail], axis=axis)
    return low, high


def seed_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of a metric over training seeds: ``m ± t_{n-1} s / √n``.

    Needs at least two seeds: one seed says nothing about how much training noise there is.

    >>> [round(v, 3) for v in seed_interval([1.0, 2.0, 3.0])]
    [2.0, -0.484, 4.484]
    """
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        raise ConfigError(
            f"an interval across seeds needs at least 2 seeds, got {len(x)}: train the model "
            "with more seeds, or use the bootstrap interval over test samples (n_bootstrap)"
        )
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    mean, sem = x.mean(), x.std(ddof=1) / np.sqrt(len(x))
    half = stats.t.ppf((1.0 + confidence) / 2.0, len(x) - 1) * sem
    return float(mean), float(mean - half), float(mean + half)


def stack_seeds(results: Mapping[int, object] | pd.DataFrame) -> pd.DataFrame:
    """One long table with a ``seed`` column from ``{seed: AuditResult or table}`` (or as is)."""
    if isinstance(results, pd.DataFrame):
        if "seed" not in results.columns:
            raise ConfigError("the table has no 'seed' column; pass {seed: result} instead")
        return results
    if not results:
        raise ConfigError("no results: pass {seed: AuditResult or audit table}")
    frames = []
    for seed, result in results.items():
        table = getattr(result, "table", result)
        frames.append(table[[*KEYS, "value"]].assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


def across_seeds(
    results: Mapping[int, object] | pd.DataFrame, *, confidence: float = 0.95
) -> pd.DataFrame:
    """Mean, standard deviation and Student-t interval of every metric over training seeds.

    ``results`` maps seed to an :class:`~fairquant.AuditResult` (or its ``table``), or is
    one table with a ``seed`` column. Returns one row per (method, precision, bits, group,
    metric) with ``n_seeds``, ``mean``, ``std``, ``ci_low``, ``ci_high``; a table's further key
    columns (e.g. ``dataset``, ``model``, ``mitigation`` of a run directory's ``results.csv``)
    are kept and grouped by too. A number missing for
    some seeds (e.g. a group without test samples) is summarised over the seeds that have it
    (``n_seeds`` says how many); one that only a single seed has gets no row.
    """
    table = stack_seeds(results)
    n_seeds = table.seed.nunique()
    if n_seeds < 2:
        raise ConfigError(
            f"an interval across seeds needs at least 2 seeds, got {n_seeds}: audit models "
            "trained with more seeds, or use the bootstrap interval over test samples"
        )
    keys = [c for c in table.columns if c not in ("seed", "value", "ci_low", "ci_high")]
    rows = []
    for key, part in table.groupby(keys, sort=False, dropna=False):
        values = part.value.to_numpy()
        if len(values) < 2:
            continue  # one seed's number cannot get an interval across seeds
        mean, low, high = seed_interval(values, confidence)
        rows.append((*key, len(values), mean, float(values.std(ddof=1)), low, high))
    return pd.DataFrame(rows, columns=[*keys, "n_seeds", "mean", "std", "ci_low", "ci_high"])


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of one metric across seeds: candidate minus baseline.

    ``effect_size`` is Cohen's d_z (mean paired difference over its standard deviation;
    ``±inf`` when every seed gives the same non-zero difference). ``p_value`` is the sign-flip
    permutation p-value of the mean difference, exact over all 2^n sign patterns up to 16 seeds
    (9,999 random flips beyond); ``min_p_value`` is the smallest p-value those seeds can give.
    """

    metric: str
    group: str
    baseline: str
    candidate: str
    n_seeds: int
    mean_baseline: float
    mean_candidate: float
    difference: float
    ci_low: float
    ci_high: float
    effect_size: float
    p_value: float
    min_p_value: float
    alternative: str

    def to_dict(self) -> dict:
        return asdict(self)


def _select(table: pd.DataFrame, metric: str, group: str, where: Mapping[str, object]) -> pd.Series:
    mask = (table.metric == metric) & (table.group == group)
    for column, value in where.items():
        if column not in table.columns:
            raise ConfigError(f"unknown column {column!r} in {dict(where)}; have {list(table)}")
        mask &= table[column] == value
    rows = table[mask]
    if rows.empty:
        raise ConfigError(f"no {metric!r} rows for group {group!r} with {dict(where)}")
    if rows.seed.duplicated().any():
        raise ConfigError(
            f"{dict(where)} matches several {metric!r} rows per seed; add method or precision"
        )
    return rows.set_index("seed").value


def paired_seed_test(
    results: Mapping[int, object] | pd.DataFrame,
    metric: str,
    *,
    baseline: Mapping[str, object],
    candidate: Mapping[str, object],
    group: str = "all",
    alternative: Literal["greater", "less", "two-sided"] = "greater",
    confidence: float = 0.95,
    random_state: int = 0,
) -> PairedTest:
    """Is ``metric`` larger for ``candidate`` than for ``baseline``, pairing runs by seed?

    ``baseline`` and ``candidate`` select rows, e.g. ``{"precision": "int8"}`` against
    ``{"precision": "int4"}`` ("int4 is less fair than int8" is ``metric="phi"``,
    ``alternative="greater"``), or ``{"method": "ptq", "precision": "int4"}`` against
    ``{"method": "qat", "precision": "int4"}``, or ``{"mitigation": "none", ...}`` against
    ``{"mitigation": "re", ...}`` in a run directory's table. Only seeds that have both are used.
    """
    table = stack_seeds(results)
    a = _select(table, metric, group, baseline)
    b = _select(table, metric, group, candidate)
    seeds = a.index.intersection(b.index)
    if len(seeds) < 2:
        raise ConfigError(
            f"a paired test across seeds needs at least 2 seeds with both {dict(baseline)} and "
            f"{dict(candidate)}, got {len(seeds)}"
        )
    d = b.loc[seeds].to_numpy() - a.loc[seeds].to_numpy()
    mean, low, high = seed_interval(d, confidence)
    sd = d.std(ddof=1)
    # identical differences in every seed leave only rounding noise in sd: no finite d_z
    constant = sd <= 1e-9 * max(1.0, abs(mean))
    effect = (0.0 if mean == 0 else float(np.sign(mean) * np.inf)) if constant else mean / sd
    n = len(d)
    exact = n <= 16
    test = stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        alternative=alternative,
        n_resamples=np.inf if exact else 9999,
        vectorized=True,
        random_state=random_state,
    )
    min_p = 2.0 ** (1 - n) if alternative == "two-sided" else 2.0**-n
    return PairedTest(
        metric=metric,
        group=group,
        baseline=", ".join(f"{k}={v}" for k, v in baseline.items()),
        candidate=", ".join(f"{k}={v}" for k, v in candidate.items()),
        n_seeds=n,
        mean_baseline=float(a.loc[seeds].mean()),
        mean_candidate=float(b.loc[seeds].mean()),
        difference=mean,
        ci_low=low,
        ci_high=high,
        effect_size=float(effect),
        p_value=float(test.pvalue),
        min_p_value=float(min_p if exact else 1.0 / 10000),
        alternative=alternative,
    )
