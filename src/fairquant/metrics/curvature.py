"""Curvature of the loss per group: gradient norm, Hessian trace and largest eigenvalue.

Liu et al. (ICML 2025, Theorem 4.1) bound a group's excess loss under quantization by its
gradient norm ``||g_a|| = ||∇_θ L(θ; D_a)||`` and its Hessian trace ``Tr(H_a)``,
``H_a = ∇²_θ L(θ; D_a)``; Bellam & Kim relate the disparity to ``||g_a||`` and the largest
Hessian eigenvalue ``λ_max(H_a)``. Here ``L(θ; D_a)`` is the mean cross-entropy over the group's
samples.

The estimators are small pure functions of a *batched* matrix-vector product
``matvec(V) = V A`` (``V`` of shape ``(m, P)``, one probe per row, ``A`` symmetric ``P x P``), as in
curvlinops: Hutchinson (1989) and Hutch++ (Meyer et al., 2021) for the trace, each with a standard
error and a relative-error stopping rule, and Lanczos for the largest algebraic eigenvalue.
:class:`GroupCurvature` supplies the matvecs for every group of a dataset at once; that is
fairquant's own part (PyHessian and curvlinops take one dataset at a time):

* each group's forward pass and first backward pass (``create_graph=True``) run once and their graph
  is kept, so every Hessian-vector product afterwards is a single double-backward pass over that
  group's samples only: a probe touches each sample once for all groups together;
* probes are batched (``is_grads_batched``, i.e. ``vmap`` over the double-backward), so a block of
  probes costs one pass instead of one pass each;
* the generalized Gauss-Newton ``G_a = 1/n Σ_i J_iᵀ (diag p_i - p_i p_iᵀ) J_i`` is available in
  place of the Hessian and reuses the same kept forward graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairquant.errors import ConfigError, DataError
from fairquant.metrics.functional import group_counts
from fairquant.models.cnn import SmallCNN
from fairquant.models.resnet import BasicBlock, ResNet18
from fairquant.quant.model import quantized_layers

MatVec = Callable[[Tensor], Tensor]
Curvature = Literal["hessian", "ggn"]
Parameters = Literal["quantized", "all"]


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate: ``value ± stderr`` from ``matvecs`` matrix-vector products."""

    value: float
    stderr: float
    matvecs: int

    @property
    def rel_error(self) -> float:
        """``stderr / |value|`` (inf when the estimate is 0)."""
        return self.stderr / abs(self.value) if self.value != 0 else math.inf


def rademacher(m: int, dim: int, *, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``m`` probes of ``dim`` independent ±1 entries, shape ``(m, dim)``."""
    return torch.randint(0, 2, (m, dim), generator=generator).to(dtype).mul_(2).sub_(1)


def _quadratic_forms(matvec: MatVec, v: Tensor) -> Tensor:
    """``vᵢᵀ A vᵢ`` for every row of ``v``."""
    return (matvec(v) * v).sum(1)


def _mean_se(samples: list[Tensor]) -> tuple[float, float]:
    q = torch.cat(samples).double()
    se = q.std(unbiased=True).item() / math.sqrt(len(q)) if len(q) > 1 else math.inf
    return q.mean().item(), se


def _sample_until(
    forms: Callable[[int], Tensor],
    *,
    offset: float,
    rtol: float,
    min_probes: int,
    max_probes: int,
    block: int,
) -> tuple[float, float, int]:
    """Draw blocks of quadratic forms until ``se <= rtol * |offset + mean|`` or ``max_probes``."""
    samples: list[Tensor] = []
    drawn = 0
    while drawn < max_probes:
        m = min(block, max_probes - drawn)
        samples.append(forms(m))
        drawn += m
        mean, se = _mean_se(samples)
        if drawn >= min_probes and se <= rtol * abs(offset + mean):
            break
    mean, se = _mean_se(samples)
    return mean, se, drawn


def _check_budget(rtol: float, min_probes: int, max_probes: int, block: int) -> None:
    if rtol < 0:
        raise ConfigError(f"rtol must be >= 0; got {rtol}")
    if not 2 <= min_probes <= max_probes:
        raise ConfigError(
            f"need 2 <= min_probes <= max_probes (a standard error needs two probes); got "
            f"min_probes={min_probes}, max_probes={max_probes}"
        )
    if block < 1:
        raise ConfigError(f"probe block must be >= 1; got {block}")


def hutchinson(
    matvec: MatVec,
    dim: int,
    *,
    rtol: float = 0.05,
    min_probes: int = 10,
    max_probes: int = 500,
    block: int = 10,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> TraceEstimate:
    """Hutchinson's trace estimator (Hutchinson, 1989) with a relative-error stopping rule.

    ``Tr(A) = E[vᵀ A v]`` for Rademacher ``v``; the estimate is the mean of ``m`` quadratic forms
    and its standard error ``s / √m`` (``s``: their sample standard deviation). Probes are drawn in
    blocks of ``block`` (one batched matvec each) until ``stderr <= rtol * |estimate|`` with at
    least ``min_probes`` probes, or ``max_probes`` is reached (``rtol=0``: exactly ``max_probes``).

    >>> a = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    >>> est = hutchinson(lambda v: v @ a, 5, generator=torch.Generator().manual_seed(0),
    ...                  dtype=torch.float64)
    >>> est.value, est.stderr  # a diagonal matrix: every Rademacher probe gives the exact trace
    (15.0, 0.0)
    """
    _check_budget(rtol, min_probes, max_probes, block)
    value, se, m = _sample_until(
        lambda k: _quadratic_forms(matvec, rademacher(k, dim, generator=generator, dtype=dtype)),
        offset=0.0,
        rtol=rtol,
        min_probes=min_probes,
        max_probes=max_probes,
        block=block,
    )
    return TraceEstimate(value, se, m)


def hutchpp(
    matvec: MatVec,
    dim: int,
    *,
    sketch: int = 10,
    rtol: float = 0.05,
    min_probes: int = 10,
    max_probes: int = 500,
    block: int = 10,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff, 2021) with a relative-error stopping rule.

    A sketch ``Q = orth(A S)`` of ``sketch`` Rademacher columns captures the top eigenspace, whose
    trace ``Tr(Qᵀ A Q)`` is computed exactly; Hutchinson estimates the rest,
    ``Tr((I - QQᵀ) A (I - QQᵀ))``, whose variance ``2||offdiag||_F²`` is much smaller when the
    spectrum decays (as a network Hessian's does: a few outliers, then a bulk near zero). The
    standard error is that of the Hutchinson part; its probes are drawn as in :func:`hutchinson`
    until ``stderr <= rtol * |estimate|``. Matvecs: ``2 * sketch`` + residual probes.
    """
    _check_budget(rtol, min_probes, max_probes, block)
    if not 1 <= sketch < dim:
        raise ConfigError(f"Hutch++ sketch size must lie in 1..{dim - 1}; got {sketch}")
    s = rademacher(sketch, dim, generator=generator, dtype=dtype)
    q = torch.linalg.qr(matvec(s).T).Q  # (dim, sketch), orthonormal columns
    low_rank = (matvec(q.T) * q.T).sum().item()

    def residual_forms(k: int) -> Tensor:
        g = rademacher(k, dim, generator=generator, dtype=dtype)
        g = g - (g @ q) @ q.T
        return _quadratic_forms(matvec, g)

    rest, se, m = _sample_until(
        residual_forms,
        offset=low_rank,
        rtol=rtol,
        min_probes=min_probes,
        max_probes=max_probes,
        block=block,
    )
    return TraceEstimate(low_rank + rest, se, 2 * sketch + m)


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
    descent happens in a tiny subspace"), which is what :func:`curvature_table` uses.
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


def check_deterministic(model: nn.Module, x: Tensor) -> nn.Module:
    """Put ``model`` in eval mode (BatchNorm statistics frozen, dropout off) and check it is a
    deterministic function: two identical forward passes must give identical outputs.

    Curvature is the derivative of one fixed function; a model whose outputs differ between calls
    (dropout in a custom module, a sampling layer) has none, so it is refused with a
    :class:`ConfigError`.
    """
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    if not torch.equal(a, b):
        raise ConfigError(
            f"{type(model).__name__} is not deterministic in eval mode (two identical forward "
            f"passes differ by up to {(a - b).abs().max().item():.3g}); curvature needs a fixed "
            "function: remove stochastic layers or make them respect model.eval()"
        )
    return model


def curvature_parameters(model: nn.Module, which: Parameters = "quantized") -> list[nn.Parameter]:
    """The parameters curvature is taken over: ``"quantized"`` = the weights that weight-only
    quantization changes (every Conv/Linear weight, the ``θ`` of Liu et al.'s bound), or ``"all"``.
    """
    if which == "quantized":
        params = [m.weight for _, m in quantized_layers(model)]
    elif which == "all":
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        raise ConfigError(f"parameters must be 'quantized' or 'all'; got {which!r}")
    if not params:
        raise ConfigError(f"{type(model).__name__} has no {which} parameters to differentiate")
    return params


class GroupCurvature:
    """Per-group gradients and Hessian (or GGN) matvecs of the mean cross-entropy of each group.

    Each group's forward pass and gradient (with ``create_graph=True``) are computed once, in
    chunks of at most ``batch_size`` samples, and kept: every later product is one double-backward
    pass over the group's samples, for a whole block of probes at once. Memory grows with the
    number of samples (each kept graph holds its chunk's activations).
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        g: Tensor,
        num_groups: int,
        *,
        parameters: Parameters = "quantized",
        curvature: Curvature = "hessian",
        batch_size: int = 1024,
    ) -> None:
        if curvature not in ("hessian", "ggn"):
            raise ConfigError(f"curvature must be 'hessian' or 'ggn'; got {curvature!r}")
        if not len(x) == len(y) == len(g):
            raise DataError(f"x, y and g differ in length: {len(x)}, {len(y)}, {len(g)}")
        self.curvature = curvature
        self.counts = group_counts(g, num_groups)
        check_deterministic(model, x[: min(len(x), 8)])
        self.params = curvature_parameters(model, parameters)
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self._chunks: list[list[tuple]] = []
        self.loss = torch.zeros(num_groups, dtype=torch.float64)
        grads = []
        for a in range(num_groups):
            idx = torch.nonzero(g == a).flatten()
            chunks, grad = [], torch.zeros(self.dim, dtype=self.dtype)
            for start in range(0, len(idx), batch_size):
                part = idx[start : start + batch_size]
                weight = len(part) / len(idx)
                logits = model(x[part].to(self.dtype))
                loss = F.cross_entropy(logits, y[part]) * weight
                first = torch.autograd.grad(
                    loss, self.params, create_graph=curvature == "hessian", retain_graph=True
                )
                grad += _flat(first).detach()
                self.loss[a] += loss.item()
                if curvature == "hessian":
                    chunks.append((first,))
                else:
                    probs = logits.detach().softmax(1)
                    dummy = torch.zeros_like(logits, requires_grad=True)
                    jt = torch.autograd.grad(logits, self.params, dummy, create_graph=True)
                    chunks.append((logits, probs, dummy, jt, weight / len(part)))
            self._chunks.append(chunks)
            grads.append(grad)
        self.grads = torch.stack(grads)  # (num_groups, dim)

    def present(self) -> list[int]:
        """Groups with at least one sample."""
        return [a for a in range(len(self.counts)) if self.counts[a] > 0]

    def _require(self, group: int) -> None:
        if self.counts[group] == 0:
            raise DataError(f"group {group} has no samples: its curvature is undefined")

    def matvec(self, group: int, v: Tensor) -> Tensor:
        """``V H_a`` (or ``V G_a``) for probes ``V`` of shape ``(m, dim)``."""
        self._require(group)
        out = torch.zeros_like(v)
        for chunk in self._chunks[group]:
            out += self._chunk_matvec(chunk, v)
        return out

    def _chunk_matvec(self, chunk: tuple, v: Tensor) -> Tensor:
        shaped = _unflat(v, self.params)
        if self.curvature == "hessian":
            (first,) = chunk
            return _flat_batched(_batched_grad(first, self.params, shaped), len(v))
        logits, probs, dummy, jt, scale = chunk
        jv = _batched_grad(jt, [dummy], shaped)[0]  # (m, n, C): J v by the double-backward trick
        hz = probs * (jv - (probs * jv).sum(-1, keepdim=True)) * scale  # (diag p - p pᵀ) J v / n
        return _flat_batched(_batched_grad([logits], self.params, [hz]), len(v))

    def grad_norm(self) -> Tensor:
        """``||∇L(θ; D_a)||`` per group (NaN for a group without samples: check :attr:`counts`)."""
        norms = self.grads.double().norm(dim=1)
        return torch.where(self.counts > 0, norms, torch.nan)

    def quadratic_form(self, group: int, delta: Tensor) -> float:
        """``δᵀ H_a δ`` for one flat direction ``δ``."""
        d = delta.to(self.dtype)[None]
        return float((self.matvec(group, d) * d).sum())


def _batched_grad(outputs, inputs, grad_outputs) -> tuple[Tensor, ...]:
    if len(grad_outputs[0]) == 1:  # a single probe: plain double-backward, no vmap overhead
        res = torch.autograd.grad(outputs, inputs, [t[0] for t in grad_outputs], retain_graph=True)
        return tuple(r[None] for r in res)
    return torch.autograd.grad(
        outputs, inputs, grad_outputs, retain_graph=True, is_grads_batched=True
    )


def _flat(tensors) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _flat_batched(tensors, m: int) -> Tensor:
    return torch.cat([t.reshape(m, -1) for t in tensors], dim=1)


def _unflat(v: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    out, start = [], 0
    for p in params:
        out.append(v[:, start : start + p.numel()].reshape(len(v), *p.shape))
        start += p.numel()
    return out


def group_curvature(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    g: Tensor,
    group_names: list[str],
    *,
    curvature: Curvature = "hessian",
    parameters: Parameters = "quantized",
    batch_size: int = 1024,
    **options,
) -> pd.DataFrame:
    """Per-group curvature of ``model`` on ``(x, y, g)``: :func:`curvature_table` of a fresh
    :class:`GroupCurvature` (``options`` go to :func:`curvature_table`)."""
    op = GroupCurvature(
        model,
        x,
        y,
        g,
        len(group_names),
        parameters=parameters,
        curvature=curvature,
        batch_size=batch_size,
    )
    return curvature_table(op, group_names, **options)


def curvature_table(
    op: GroupCurvature,
    group_names: list[str],
    *,
    trace_method: Literal["hutchpp", "hutchinson"] = "hutchpp",
    traces: list[TraceEstimate] | None = None,
    rtol: float = 0.05,
    min_probes: int = 10,
    max_probes: int = 200,
    sketch: int = 10,
    block: int = 10,
    eig_rtol: float = 1e-3,
    eig_min_iter: int = 3,
    eig_max_iter: int = 50,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-group ``grad_norm``, ``trace`` (with ``trace_se``, ``trace_matvecs``) and ``lambda_max``.

    One row per group with samples (groups without samples are left out, never NaN); columns
    ``group, n, loss, grad_norm, trace, trace_se, trace_matvecs, lambda_max, lambda_matvecs``.
    The trace stops at ``trace_se <= rtol * |trace|`` (at least ``min_probes``, at most
    ``max_probes`` probes); ``lambda_max`` (Lanczos, largest algebraic) at a residual
    ``<= eig_rtol * |λ|`` or ``eig_max_iter`` matvecs, started from the group's gradient (plus a
    random vector, :func:`lanczos_max`). ``traces`` (one per group, e.g. from
    :func:`group_traces`) replace the per-group trace estimate.
    """
    if trace_method not in ("hutchpp", "hutchinson"):
        raise ConfigError(f"trace_method must be 'hutchpp' or 'hutchinson'; got {trace_method!r}")
    gen = torch.Generator().manual_seed(seed)
    norms = op.grad_norm()
    rows = []
    for a in op.present():
        mv = lambda v, a=a: op.matvec(a, v)  # noqa: E731
        budget = {
            "rtol": rtol,
            "min_probes": min_probes,
            "max_probes": max_probes,
            "block": block,
            "generator": gen,
            "dtype": op.dtype,
        }
        if traces is not None:
            tr = traces[a]
        elif trace_method == "hutchpp":
            tr = hutchpp(mv, op.dim, sketch=min(sketch, op.dim - 1), **budget)
        else:
            tr = hutchinson(mv, op.dim, **budget)
        lam, lam_mv = lanczos_max(
            mv,
            op.dim,
            rtol=eig_rtol,
            min_iter=min(eig_min_iter, eig_max_iter),
            max_iter=eig_max_iter,
            generator=gen,
            dtype=op.dtype,
            start=op.grads[a] if op.grads[a].norm() > 0 else None,
        )
        rows.append(
            {
                "group": group_names[a],
                "n": int(op.counts[a]),
                "loss": op.loss[a].item(),
                "grad_norm": norms[a].item(),
                "trace": tr.value,
                "trace_se": tr.stderr,
                "trace_matvecs": tr.matvecs,
                "lambda_max": lam,
                "lambda_matvecs": lam_mv,
            }
        )
    return pd.DataFrame(rows)


def _named_parameters(model: nn.Module, which: Parameters) -> dict[str, Tensor]:
    """:func:`curvature_parameters` by name, detached (the point ``θ`` of the curvature)."""
    chosen = {id(p) for p in curvature_parameters(model, which)}
    return {n: p.detach() for n, p in model.named_parameters() if id(p) in chosen}


#: Modules that are piecewise linear in their input and linear in each of their own weights
#: (BatchNorm in eval mode), and fairquant's models, whose forward only composes such modules
#: with sums, pooling and flattening.
PIECEWISE_LINEAR = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.LeakyReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.Sequential,
    ResNet18,
    BasicBlock,
    SmallCNN,
)


def is_piecewise_linear(model: nn.Module) -> bool:
    """Whether every module of ``model`` is one of :data:`PIECEWISE_LINEAR` (in eval mode), so that
    each logit is linear in each layer's weights and ``Tr(H_a) = Tr(G_a)`` exactly
    (:class:`SampleCurvature`). Conservative: any other module (a custom forward) gives ``False``.
    """
    return all(
        type(m) in PIECEWISE_LINEAR or isinstance(m, nn.modules.batchnorm._BatchNorm)
        for m in model.modules()
    )


class SampleCurvature:
    """Per-sample second-order terms of the cross-entropy, all groups in one pass (torch.func).

    For sample ``i`` with logits ``z_i(θ)``, probabilities ``p_i`` and label ``y_i``, and a
    direction ``v``, the second derivative of ``ℓ_i(θ + t v)`` at ``t = 0`` splits into

        ``vᵀ H_i v = z_i'ᵀ Λ_i z_i' + r_iᵀ z_i''``,
        ``Λ_i = diag p_i - p_i p_iᵀ``,  ``r_i = p_i - e_{y_i}``

    with ``z' = J_i v`` and ``z'' = vᵀ ∇²z_i v``: the generalized Gauss-Newton (GGN) part and the
    residual. Both come from one forward-over-forward pass (``jvp`` of ``jvp``; no backward pass, no
    kept graph), for *all* samples at once, so a probe shared by every group gives each group's
    quadratic form ``vᵀ H_a v = 1/n_a Σ_{i∈a} vᵀ H_i v`` from one pass over the data.

    The GGN part needs no probes at all: ``Tr(J_iᵀ Λ_i J_i) = Σ_cd Λ_i,cd (J_i J_iᵀ)_cd`` is exact
    from the per-sample Jacobians (``vmap`` of ``jacrev``: ``C`` backward passes). So
    ``Tr(H_a) = Tr(G_a) + Tr(R_a)`` with ``Tr(G_a)`` exact and only the residual ``R_a`` estimated
    by Hutchinson — a control variate: its variance ``2||offdiag R_a||_F²`` replaces the Hessian's,
    whose top outliers (the GGN's) dominate it. For a piecewise-linear network (ReLU, max/avg
    pooling, BatchNorm in eval mode) every logit is linear in each layer's weights, so ``∇²z`` has
    zero diagonal blocks and ``Tr(R_a) = 0``: the estimate then only averages noise around the exact
    ``Tr(G_a)``.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        g: Tensor,
        num_groups: int,
        *,
        parameters: Parameters = "quantized",
        chunk: int = 64,
    ) -> None:
        if not len(x) == len(y) == len(g):
            raise DataError(f"x, y and g differ in length: {len(x)}, {len(y)}, {len(g)}")
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1; got {chunk}")
        self.model = check_deterministic(model, x[: min(len(x), 8)])
        self.theta = _named_parameters(model, parameters)
        self.dim = sum(p.numel() for p in self.theta.values())
        self.dtype = next(iter(self.theta.values())).dtype
        self.x, self.y, self.g = x.to(self.dtype), y, g
        self.counts = group_counts(g, num_groups)
        self.chunk = chunk

    def present(self) -> list[int]:
        """Groups with at least one sample."""
        return [a for a in range(len(self.counts)) if self.counts[a] > 0]

    def _group_mean(self, values: Tensor) -> Tensor:
        """``(..., N)`` per-sample values -> ``(..., K)`` group means (0 for an empty group)."""
        k = len(self.counts)
        sums = torch.zeros(*values.shape[:-1], k, dtype=torch.float64)
        sums.index_add_(-1, self.g, values.double())
        return sums / self.counts.clamp(min=1)

    def _logits(self, theta: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.func.functional_call(self.model, theta, (x,))

    def ggn_trace(self) -> Tensor:
        """Exact ``Tr(G_a)`` per group, float64 ``(K,)``, from per-sample Jacobians."""
        out = []
        with torch.no_grad():
            for s in range(0, len(self.x), self.chunk):
                xs = self.x[s : s + self.chunk]

                def one(theta, xi):
                    return self._logits(theta, xi[None])[0]

                jac = torch.func.vmap(torch.func.jacrev(one), in_dims=(None, 0))(self.theta, xs)
                gram = sum(
                    torch.einsum("bcp,bdp->bcd", j.flatten(2), j.flatten(2)) for j in jac.values()
                )
                p = self._logits(self.theta, xs).double().softmax(1)
                lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
                out.append((lam * gram.double()).sum((1, 2)))
        return self._group_mean(torch.cat(out))

    def _directional(self, v: Tensor):
        """Per chunk of samples: logits ``z``, ``z'`` and ``z''`` along each probe, ``(m, b, C)``,
        with the chunk's labels (forward over forward; no graph is kept)."""
        params = list(self.theta.values())
        shaped = dict(zip(self.theta, _unflat(v, params), strict=True))
        for s in range(0, len(self.x), self.chunk):
            xs, ys = self.x[s : s + self.chunk], self.y[s : s + self.chunk]

            def along(direction, xs=xs):
                def first(theta):
                    return torch.func.jvp(lambda th: self._logits(th, xs), (theta,), (direction,))

                (z, z1), (_, z2) = torch.func.jvp(first, (self.theta,), (direction,))
                return z, z1, z2

            with torch.no_grad():
                z, z1, z2 = torch.func.vmap(along)(shaped)
            yield z.double(), z1.double(), z2.double(), ys

    def residual_forms(self, v: Tensor) -> Tensor:
        """``vᵀ R_a v`` per probe and group, ``(m, K)``, for flat probes ``v`` ``(m, dim)``."""
        forms = []
        for z, _, z2, ys in self._directional(v):
            r = z.softmax(-1) - F.one_hot(ys, z.shape[-1]).double()
            forms.append((r * z2).sum(-1))
        return self._group_mean(torch.cat(forms, dim=1))

    def hessian_forms(self, v: Tensor) -> Tensor:
        """``vᵀ H_a v`` per probe and group, ``(m, K)``: both parts of the split (class doc)."""
        forms = []
        for z, z1, z2, ys in self._directional(v):
            p = z.softmax(-1)
            r = p - F.one_hot(ys, z.shape[-1]).double()
            ggn = (p * z1**2).sum(-1) - (p * z1).sum(-1) ** 2
            forms.append(ggn + (r * z2).sum(-1))
        return self._group_mean(torch.cat(forms, dim=1))


def group_traces(
    op: SampleCurvature,
    *,
    curvature: Curvature = "hessian",
    rtol: float = 0.05,
    min_probes: int = 10,
    max_probes: int = 500,
    block: int = 5,
    piecewise_linear: bool = False,
    generator: torch.Generator,
) -> list[TraceEstimate]:
    """``Tr(H_a)`` (or ``Tr(G_a)``) of every group: exact GGN trace + shared-probe residual.

    ``Tr(G_a)`` is exact (:meth:`SampleCurvature.ggn_trace`; ``stderr`` 0, no probes). With
    ``piecewise_linear=True`` the caller asserts the network is piecewise linear in each layer's
    weights (ReLU, pooling, BatchNorm in eval mode, residual sums: the registered models), where
    ``Tr(R_a) = 0`` exactly (:class:`SampleCurvature`), so ``Tr(H_a) = Tr(G_a)`` is returned
    exact too. Otherwise, for the Hessian, Rademacher probes shared by all groups are drawn in
    blocks of ``block`` (one forward-over-forward pass over the data per block) until every
    group's standard error is at most ``rtol`` times its estimate (at least ``min_probes``, at
    most ``max_probes``; ``rtol=0``: exactly ``max_probes``). ``matvecs`` counts the probes; each
    covers every group at once.
    """
    if curvature not in ("hessian", "ggn"):
        raise ConfigError(f"curvature must be 'hessian' or 'ggn'; got {curvature!r}")
    _check_budget(rtol, min_probes, max_probes, block)
    ggn = op.ggn_trace()
    if curvature == "ggn" or piecewise_linear:
        return [TraceEstimate(ggn[a].item(), 0.0, 0) for a in range(len(ggn))]
    present = op.present()
    samples: list[Tensor] = []
    drawn = 0
    while drawn < max_probes:
        m = min(block, max_probes - drawn)
        probes = rademacher(m, op.dim, generator=generator, dtype=op.dtype)
        samples.append(op.residual_forms(probes))
        drawn += m
        q = torch.cat(samples)
        mean, se = q.mean(0), q.std(0) / math.sqrt(len(q))
        if drawn >= min_probes and all(se[a] <= rtol * abs(ggn[a] + mean[a]) for a in present):
            break
    q = torch.cat(samples)
    mean, se = q.mean(0), q.std(0) / math.sqrt(len(q))
    return [TraceEstimate((ggn[a] + mean[a]).item(), se[a].item(), drawn) for a in range(len(ggn))]
