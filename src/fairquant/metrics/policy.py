"""fairquant's one statistics policy: every test and interval the project prints follows it.

- Level: ``ALPHA = 0.05``; intervals at ``CONFIDENCE = 0.95``.
- Sidedness: every test is two-sided (``ALTERNATIVE``) unless its docstring states otherwise.
- Multiplicity: within one family of comparisons p-values are adjusted by Holm's step-down
  method (:func:`holm`), which controls the family-wise error rate at ``ALPHA`` under any
  dependence between the tests, given p-values valid at every level down to ``ALPHA / m``; a
  comparison is *significant* when its adjusted p-value is below ``ALPHA``
  (:func:`significant`).
- One family per decision. A family is the set of claims one decision rests on:

  - the verdict: the groups of ONE precision, with every tolerance that precision's decision
    carries (``max_drop`` per group, ``max_phi``): each precision is its own shipping decision,
    so adding fp16 to an audit never weakens the verdict on int8 (``verdict(...,
    family="audit")`` pools the precisions of an audit where one decision covers them all);
  - a run directory's findings (``tests.csv``): every tested comparison of the directory.

- Intervals beside a decision are the ones that decide it: where a decision is adjusted, so is
  the end of the interval that carries it (the verdict's fail side at the level Holm used for
  that group), so a decision and its printed interval never disagree.
- Permutation tests (sign-flip, Spearman) count ties within a stated relative tolerance
  (:data:`fairquant.metrics.uncertainty.TIE_RTOL`) and are exact by enumeration where that is
  cheap, seeded Monte Carlo with its standard error beyond.

The modules that compute tests import these names; none defines its own level or correction.
``docs/statistics.md`` writes the policy out for users: which comparisons are tested, with which
test, and the smallest p-value each test can give.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Bootstrap replicates of an interval over test samples: defined in the torch-free options.py
from fairquant.options import N_BOOTSTRAP as N_BOOTSTRAP

__all__ = [
    "ALPHA",
    "ALTERNATIVE",
    "CONFIDENCE",
    "CORRECTION",
    "N_BOOTSTRAP",
    "holm",
    "significant",
]

ALPHA = 0.05
CONFIDENCE = 0.95
#: The sidedness of every test unless its docstring states otherwise (scipy's spelling).
ALTERNATIVE = "two-sided"
#: The multiplicity correction, by name, as the tables and verdict.json print it.
CORRECTION = "holm"


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order.

    With ``m`` p-values sorted ascending ``p_(1) <= ... <= p_(m)``, the adjusted value of the
    ``i``-th is ``max_{j <= i} min(1, (m - j + 1) p_(j))``. NaN entries (comparisons that could
    not be tested) stay NaN and do not count towards ``m``.

    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def significant(p_adjusted: Sequence[float] | np.ndarray) -> np.ndarray:
    """Whether each (already adjusted) p-value is below :data:`ALPHA`; NaN is never significant.

    >>> significant([0.01, 0.05, float("nan")]).tolist()
    [True, False, False]
    """
    p = np.asarray(p_adjusted, dtype=np.float64)
    return np.nan_to_num(p, nan=1.0) < ALPHA
