"""Each group's mean gradient and exact diagonal of the generalized Gauss-Newton, in one pass.

For sample ``i`` with logits ``z_i(θ) ∈ R^C``, probabilities ``p_i = softmax(z_i)``, label ``y_i``
and Jacobian ``J_i = ∂z_i/∂θ`` (``C x P``), the cross-entropy has

    ``∇ℓ_i = J_iᵀ r_i``,  ``r_i = p_i - e_{y_i}``,
    ``G_i = J_iᵀ Λ_i J_i``,  ``Λ_i = diag p_i - p_i p_iᵀ = S_i S_iᵀ``,
    ``S_i = diag √p_i - p_i √p_iᵀ``

(the generalized Gauss-Newton, Schraudolph 2002; ``S_i`` is the symmetric factor of the loss
Hessian BackPACK's ``DiagGGNExact`` backpropagates, Dangel et al., ICLR 2020, "BackPACK: Packing
more into backprop"). Its diagonal is ``diag G_i = Σ_c (J_iᵀ S_i e_c)²``; written out, entry ``k``
is the variance of the column ``J_i[:, k]`` under ``p_i``,

    ``(G_i)_kk = Σ_c p_ic (J_i[c, k] - J̄_ik)²``,  ``J̄_ik = Σ_c p_ic J_i[c, k]``,

the form the per-sample Jacobian path computes (:mod:`.kernel`; never negative in floating
point). For Linear and Conv layers the kernel instead backpropagates the ``C`` columns of ``S_i``
and ``r_i`` layer by layer, as BackPACK does. Either way every group's
``g_a = 1/n_a Σ_{i∈a} ∇ℓ_i`` and ``diag G_a = 1/n_a Σ_{i∈a} diag G_i`` cost one pass over the
data, whatever the number of groups, layers or quantization directions asked of them afterwards.

Summed over a layer's weights the diagonal gives the layer's GGN trace ``Tr(G_{a,l})``, which
equals the Hessian's ``Tr(H_{a,l})`` exactly for a piecewise-linear network
(:func:`fairquant.models.piecewise.is_piecewise_linear`): the trace HAWQ-V2 weights a layer's
quantization error with (Dong et al., NeurIPS 2020, "HAWQ-V2: Hessian aware trace-weighted
quantization of neural networks").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fairquant.errors import ConfigError, DataError
from fairquant.metrics.curvature.introspect import Parameters, check_group_data, named_parameters
from fairquant.metrics.curvature.kernel import diagonal_sums
from fairquant.metrics.curvature.operators.base import GroupOperator


@dataclass(frozen=True)
class GroupDiagonal(GroupOperator):
    """Per-group mean cross-entropy, gradient and exact GGN diagonal (float64), per parameter.

    ``grads[name]`` and ``diag[name]`` have shape ``(K, *shape)`` (row ``a``: group ``a``; zero for
    a group without samples, see :attr:`counts`); ``loss`` is ``(K,)`` (NaN for such a group).
    """

    counts: Tensor
    dim: int
    loss: Tensor
    grads: dict[str, Tensor]
    diag: dict[str, Tensor]

    def pooled(self, weights: Tensor | None = None) -> GroupDiagonal:
        """All groups as one: the means weighted by ``weights`` (one per group, normalised over
        the groups with samples; default: the counts, which gives the same as
        :func:`ggn_diagonal` with every sample in one group, without another pass; a population's
        group shares give that population's expected gradient and diagonal from any sample of
        each group)."""
        present = self.present()
        if not present:
            raise DataError("no group has samples: nothing to pool")
        w = (self.counts if weights is None else torch.as_tensor(weights))[present].double()
        if len(w) and (not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0):
            raise ConfigError(
                f"pooling weights must be finite, >= 0 and not all 0 over the groups with samples; "
                f"got {w.tolist()}"
            )
        w = w / w.sum()

        def pool(t: Tensor) -> Tensor:
            return torch.tensordot(w, t[present], dims=1)[None]

        return GroupDiagonal(
            counts=self.counts.sum()[None],
            dim=self.dim,
            loss=pool(self.loss),
            grads={k: pool(v) for k, v in self.grads.items()},
            diag={k: pool(v) for k, v in self.diag.items()},
        )


def ggn_diagonal(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    g: Tensor,
    num_groups: int,
    *,
    parameters: Parameters = "quantized",
    chunk: int = 32,
) -> GroupDiagonal:
    """Every group's mean gradient and exact GGN diagonal of the mean cross-entropy (module doc),
    in one pass over ``x`` in chunks of ``chunk`` samples.

    ``model`` is put in eval mode and must be deterministic. The kernel
    (:mod:`.kernel`) backpropagates the factor of the loss Hessian layer by layer for Linear and
    Conv layers (memory: the chunk's output gradients, ``(C + 1) x chunk`` times the activations)
    and takes per-sample Jacobians for any other parameter (memory ``chunk x C x P``).
    """
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1; got {chunk}")
    counts = check_group_data(model, x, y, g, num_groups)
    theta = named_parameters(model, parameters)
    sums = diagonal_sums(
        model, theta, x.to(next(iter(theta.values())).dtype), y, g, num_groups, chunk=chunk
    )
    loss, grads, diag = sums.loss, sums.grads, sums.diag
    n = counts.clamp(min=1).double()
    return GroupDiagonal(
        counts=counts,
        dim=sum(p.numel() for p in theta.values()),
        loss=torch.where(counts > 0, loss / n, torch.nan),
        grads={k: (v / n[:, None]).reshape(num_groups, *theta[k].shape) for k, v in grads.items()},
        diag={k: (v / n[:, None]).reshape(num_groups, *theta[k].shape) for k, v in diag.items()},
    )
