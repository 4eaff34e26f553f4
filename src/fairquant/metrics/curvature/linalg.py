"""Generic linear algebra of the curvature estimators: probes, quadratic forms and flat vectors.

Every estimator here is a pure function of a *batched* matrix-vector product ``matvec(V) = V A``
(``V`` of shape ``(m, P)``, one probe per row, ``A`` symmetric ``P x P``), as in curvlinops; the
helpers below flatten a model's parameter tensors into the ``P``-vectors those products act on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: ``matvec(V) = V A`` for probes ``V`` of shape ``(m, P)``.
MatVec = Callable[[Tensor], Tensor]


def rademacher(m: int, dim: int, *, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``m`` probes of ``dim`` independent ±1 entries, shape ``(m, dim)``."""
    return torch.randint(0, 2, (m, dim), generator=generator).to(dtype).mul_(2).sub_(1)


def quadratic_forms(matvec: MatVec, v: Tensor) -> Tensor:
    """``vᵢᵀ A vᵢ`` for every row ``vᵢ`` of ``v``, shape ``(m,)``."""
    return (matvec(v) * v).sum(1)


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """One flat vector of the entries of ``tensors``, in order."""
    return torch.cat([t.reshape(-1) for t in tensors])


def flatten_batched(tensors: Sequence[Tensor], m: int) -> Tensor:
    """``(m, P)``: each of ``tensors`` (leading dimension ``m``) flattened per row, concatenated."""
    return torch.cat([t.reshape(m, -1) for t in tensors], dim=1)


def unflatten_batched(v: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split the rows of ``v`` ``(m, P)`` into tensors shaped ``(m, *t.shape)`` for ``t`` in
    ``like`` (the inverse of :func:`flatten_batched`)."""
    out, start = [], 0
    for t in like:
        out.append(v[:, start : start + t.numel()].reshape(len(v), *t.shape))
        start += t.numel()
    return out


def batched_grad(
    outputs: Sequence[Tensor], inputs: Sequence[Tensor], grad_outputs: Sequence[Tensor]
) -> tuple[Tensor, ...]:
    """Vector-Jacobian products of ``outputs`` for a batch of ``grad_outputs`` (leading dimension
    ``m``), keeping the graph: ``vmap`` over the backward pass (``is_grads_batched``), or a plain
    backward pass for a single probe (no ``vmap`` overhead)."""
    if len(grad_outputs[0]) == 1:
        res = torch.autograd.grad(outputs, inputs, [t[0] for t in grad_outputs], retain_graph=True)
        return tuple(r[None] for r in res)
    return torch.autograd.grad(
        outputs, inputs, grad_outputs, retain_graph=True, is_grads_batched=True
    )
