"""The largest eigenvalue of a symmetric operator by Lanczos iteration."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from fairquant.errors import ConfigError
from fairquant.metrics.curvature.linalg import MatVec


def lanczos_max(
    matvec: MatVec,
    dim: int,
    *,
    rtol: float = 1e-4,
    min_iter: int = 10,
    max_iter: int = 100,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    start: Tensor | None = None,
) -> tuple[float, int]:
    """Largest *algebraic* eigenvalue of a symmetric ``A`` by Lanczos; returns ``(λ, matvecs)``.

    Lanczos with full reorthogonalisation builds the tridiagonal ``T_k = V_kᵀ A V_k`` of the Krylov
    space of a random start; the largest Ritz value ``θ`` of ``T_k`` converges to ``λ_max`` at a
    rate governed by the square root of the spectral gap (power iteration: the gap itself), and
    from the correct side: unlike power iteration, which finds the largest *magnitude*, it never
    returns a large negative eigenvalue. It stops when the residual ``||A y - θ y|| = β_k |s_k|``
    (``s``: the Ritz vector in the Krylov basis) is at most ``rtol * |θ|``, which bounds the
    eigenvalue error by the same (Parlett, *The Symmetric Eigenvalue Problem*, Thm 10.1.1), and
    the largest Ritz value grew by at most ``rtol * |θ|`` in the last step. A small residual only
    says ``θ`` is near *some* eigenvalue: a random start in a space of ~10⁵ parameters has tiny
    components along every eigenvector, so the largest outlier can appear only after a few more
    steps (misconvergence); at least ``min_iter`` steps are therefore taken.

    ``start`` (say, the gradient) is mixed half and half with the random vector: a start with an
    O(1) component along the top eigenvectors instead of O(1/sqrt(dim)) converges in fewer steps,
    and the random half keeps every eigenvector present. The gradient of a trained network lies
    mostly in the span of the top Hessian eigenvectors (Gur-Ari, Roberts & Dyer, 2018, "Gradient
    descent happens in a tiny subspace"), which is what
    :func:`~fairquant.metrics.curvature.tables.curvature_table` uses.

    >>> a = torch.diag(torch.tensor([-5.0, 1.0, 2.0], dtype=torch.float64))
    >>> gen = torch.Generator().manual_seed(0)
    >>> lam, steps = lanczos_max(lambda v: v @ a, 3, generator=gen, dtype=torch.float64)
    >>> round(lam, 12), steps  # 2, not the -5 of largest magnitude; exact after dim steps
    (2.0, 3)
    """
    if not 1 <= min_iter <= max_iter:
        raise ConfigError(f"Lanczos needs 1 <= min_iter <= max_iter; got {min_iter}, {max_iter}")
    v = torch.randn(dim, generator=generator, dtype=torch.float64).to(dtype)
    if start is not None:
        if start.shape != (dim,) or not torch.isfinite(start).all() or start.norm() == 0:
            raise ConfigError(
                f"Lanczos start must be a finite, non-zero vector of {dim} entries; got shape "
                f"{tuple(start.shape)}"
            )
        # the random half keeps every eigenvector in the Krylov space (probability 1)
        v = start.to(dtype) / start.norm() + v / v.norm()
    basis = [v / v.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    theta = prev = math.nan
    for k in range(min(max_iter, dim)):
        w = matvec(basis[-1][None])[0]
        alphas.append(torch.dot(w, basis[-1]).item())
        stacked = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice is enough (Kahan)
            w = w - (stacked @ w) @ stacked
        beta = w.norm().item()
        evals, evecs = np.linalg.eigh(_tridiagonal(alphas, betas))
        prev, theta = theta, float(evals[-1])
        converged = (
            k + 1 >= min_iter
            and beta * abs(evecs[-1, -1]) <= rtol * abs(theta)
            and theta - prev <= rtol * abs(theta)
        )
        if converged or k + 1 == dim or beta == 0:
            return theta, k + 1
        betas.append(beta)
        basis.append(w / beta)
    return theta, len(alphas)


def _tridiagonal(alphas: list[float], betas: list[float]) -> np.ndarray:
    t = np.diag(np.asarray(alphas))
    if betas:
        off = np.asarray(betas)
        t += np.diag(off, 1) + np.diag(off, -1)
    return t
