"""Per-sample second-order terms of the cross-entropy for all groups in one pass (torch.func).

For sample ``i`` with logits ``z_i(θ)``, probabilities ``p_i`` and label ``y_i``, and a direction
``v``, the second derivative of ``ℓ_i(θ + t v)`` at ``t = 0`` splits into

    ``vᵀ H_i v = z_i'ᵀ Λ_i z_i' + r_iᵀ z_i''``,
    ``Λ_i = diag p_i - p_i p_iᵀ``,  ``r_i = p_i - e_{y_i}``

with ``z' = J_i v`` and ``z'' = vᵀ ∇²z_i v``: the generalized Gauss-Newton (GGN) part and the
residual (Schraudolph, 2002; Martens, 2020, "New insights and perspectives on the natural gradient
method", §8). Both come from one forward-over-forward pass (``jvp`` of ``jvp``; no backward pass,
no kept graph), for *all* samples at once, so a probe shared by every group gives each group's
quadratic form ``vᵀ H_a v = 1/n_a Σ_{i∈a} vᵀ H_i v`` from one pass over the data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairquant.errors import ConfigError
from fairquant.metrics.curvature.introspect import Parameters, check_group_data, named_parameters
from fairquant.metrics.curvature.kernel import diagonal_sums
from fairquant.metrics.curvature.linalg import unflatten_batched
from fairquant.metrics.curvature.operators.base import GroupOperator


class SampleCurvature(GroupOperator):
    """Per-sample GGN and residual terms of every group's Hessian (module docstring).

    The GGN part needs no probes at all: ``Tr(J_iᵀ Λ_i J_i)`` is the sum of the exact GGN
    diagonal (:mod:`~fairquant.metrics.curvature.kernel`, the factor of ``Λ_i`` backpropagated). So
    ``Tr(H_a) = Tr(G_a) + Tr(R_a)`` with ``Tr(G_a)`` exact and only the residual ``R_a`` estimated
    by Hutchinson — a control variate: its variance ``2||offdiag R_a||_F²`` replaces the Hessian's,
    whose top outliers (the GGN's) dominate it. For a piecewise-linear network (ReLU, max/avg
    pooling, BatchNorm in eval mode) every logit is linear in each layer's weights, so ``∇²z`` has
    zero diagonal blocks and ``Tr(R_a) = 0``: the estimate then only averages noise around the exact
    ``Tr(G_a)`` (:func:`~fairquant.metrics.curvature.trace.split.group_traces`).
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
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1; got {chunk}")
        self.counts = check_group_data(model, x, y, g, num_groups)
        self.model = model
        self.theta = named_parameters(model, parameters)
        self.dim = sum(p.numel() for p in self.theta.values())
        self.dtype = next(iter(self.theta.values())).dtype
        self.x, self.y, self.g = x.to(self.dtype), y, g
        self.chunk = chunk

    def _group_mean(self, values: Tensor) -> Tensor:
        """``(..., N)`` per-sample values -> ``(..., K)`` group means (0 for an empty group)."""
        k = len(self.counts)
        sums = torch.zeros(*values.shape[:-1], k, dtype=torch.float64)
        sums.index_add_(-1, self.g, values.double())
        return sums / self.counts.clamp(min=1)

    def _logits(self, theta: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.func.functional_call(self.model, theta, (x,))

    def ggn_trace(self) -> Tensor:
        """Exact ``Tr(G_a)`` per group, float64 ``(K,)``: the sum of the per-group GGN diagonal
        (:func:`~fairquant.metrics.curvature.kernel.diagonal_sums`, one pass)."""
        sums = diagonal_sums(
            self.model, self.theta, self.x, self.y, self.g, len(self.counts), chunk=self.chunk
        )
        return sum(d.sum(1) for d in sums.diag.values()) / self.counts.clamp(min=1)

    def _directional(self, v: Tensor):
        """Per chunk of samples: logits ``z``, ``z'`` and ``z''`` along each probe, ``(m, b, C)``,
        with the chunk's labels (forward over forward; no graph is kept)."""
        shaped = dict(zip(self.theta, unflatten_batched(v, list(self.theta.values())), strict=True))
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
        """``vᵀ H_a v`` per probe and group, ``(m, K)``: both parts of the split (module doc)."""
        forms = []
        for z, z1, z2, ys in self._directional(v):
            p = z.softmax(-1)
            r = p - F.one_hot(ys, z.shape[-1]).double()
            ggn = (p * z1**2).sum(-1) - (p * z1).sum(-1) ** 2
            forms.append(ggn + (r * z2).sum(-1))
        return self._group_mean(torch.cat(forms, dim=1))
