"""Per-group Hessian (or GGN) matvecs on kept autograd graphs, a block of probes at a time.

fairquant's own part (PyHessian and curvlinops take one dataset at a time): each group's forward
pass and first backward pass (``create_graph=True``) run once and their graph is kept, so every
Hessian-vector product afterwards is a single double-backward pass over that group's samples only
(Pearlmutter, 1994, "Fast exact multiplication by the Hessian"); probes are batched
(``is_grads_batched``, i.e. ``vmap`` over the double-backward), so a block of probes costs one pass
instead of one pass each. The generalized Gauss-Newton ``G_a = 1/n Σ_i J_iᵀ (diag p_i - p_i p_iᵀ)
J_i`` (Schraudolph, 2002) is available in place of the Hessian and reuses the same kept forward
graph: ``J v`` by the double-backward trick, then ``Jᵀ`` of ``(diag p - p pᵀ) J v / n``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairquant.errors import DataError
from fairquant.metrics.curvature.introspect import (
    Curvature,
    Parameters,
    check_curvature,
    check_group_data,
    curvature_parameters,
)
from fairquant.metrics.curvature.linalg import (
    batched_grad,
    flatten,
    flatten_batched,
    unflatten_batched,
)
from fairquant.metrics.curvature.operators.base import GroupOperator


class GroupCurvature(GroupOperator):
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
        check_curvature(curvature)
        self.curvature = curvature
        self.counts = check_group_data(model, x, y, g, num_groups)
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
                grad += flatten(first).detach()
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
        shaped = unflatten_batched(v, self.params)
        if self.curvature == "hessian":
            (first,) = chunk
            return flatten_batched(batched_grad(first, self.params, shaped), len(v))
        logits, probs, dummy, jt, scale = chunk
        jv = batched_grad(jt, [dummy], shaped)[0]  # (m, n, C): J v by the double-backward trick
        hz = probs * (jv - (probs * jv).sum(-1, keepdim=True)) * scale  # (diag p - p pᵀ) J v / n
        return flatten_batched(batched_grad([logits], self.params, [hz]), len(v))

    def grad_norm(self) -> Tensor:
        """``||∇L(θ; D_a)||`` per group (NaN for a group without samples: check :attr:`counts`)."""
        norms = self.grads.double().norm(dim=1)
        return torch.where(self.counts > 0, norms, torch.nan)

    def quadratic_form(self, group: int, delta: Tensor) -> float:
        """``δᵀ H_a δ`` for one flat direction ``δ``."""
        d = delta.to(self.dtype)[None]
        return float((self.matvec(group, d) * d).sum())
