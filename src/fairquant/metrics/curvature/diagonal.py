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

which is what is computed (the same number, without forming ``S_i``, and never negative in
floating point). Both the gradient and the diagonal come from the per-sample Jacobians (``vmap`` of
``jacrev``: ``C`` backward passes per sample, batched over samples), so every group's
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
import torch.nn.functional as F
from torch import Tensor, nn

from fairquant.errors import ConfigError, DataError
from fairquant.metrics.curvature.introspect import Parameters, check_group_data, named_parameters
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

    def pooled(self) -> GroupDiagonal:
        """All groups as one: the count-weighted means (every term is a mean over samples), the
        same as :func:`ggn_diagonal` with every sample in one group, without another pass."""
        present = self.present()
        if not present:
            raise DataError("no group has samples: nothing to pool")
        w = self.counts[present].double() / self.counts[present].sum()

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

    ``model`` is put in eval mode and must be deterministic; memory grows with
    ``chunk x C x P`` (the chunk's Jacobians, ``P`` parameters).
    """
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1; got {chunk}")
    counts = check_group_data(model, x, y, g, num_groups)
    theta = named_parameters(model, parameters)
    dtype = next(iter(theta.values())).dtype
    x = x.to(dtype)
    grads = {n: torch.zeros(num_groups, p.numel(), dtype=torch.float64) for n, p in theta.items()}
    diag = {n: torch.zeros(num_groups, p.numel(), dtype=torch.float64) for n, p in theta.items()}
    loss = torch.zeros(num_groups, dtype=torch.float64)

    def one(params: dict[str, Tensor], xi: Tensor) -> Tensor:
        return torch.func.functional_call(model, params, (xi[None],))[0]

    jacobian = torch.func.vmap(torch.func.jacrev(one), in_dims=(None, 0))
    with torch.no_grad():
        for s in range(0, len(x), chunk):
            xs, ys, gs = x[s : s + chunk], y[s : s + chunk], g[s : s + chunk]
            jac = jacobian(theta, xs)  # name -> (b, C, *shape)
            z = torch.func.functional_call(model, theta, (xs,)).double()
            loss.index_add_(0, gs, F.cross_entropy(z, ys, reduction="none"))
            # in the model's dtype (float32 halves the memory traffic), summed in float64
            p = z.softmax(1).to(dtype)
            r = p - F.one_hot(ys, z.shape[1]).to(dtype)
            for name, j in jac.items():
                j = j.flatten(2)  # (b, C, P_name)
                grads[name].index_add_(0, gs, torch.einsum("bc,bcp->bp", r, j).double())
                centred = j - torch.einsum("bc,bcp->bp", p, j)[:, None]
                diag[name].index_add_(0, gs, torch.einsum("bc,bcp->bp", p, centred**2).double())
    n = counts.clamp(min=1).double()
    return GroupDiagonal(
        counts=counts,
        dim=sum(p.numel() for p in theta.values()),
        loss=torch.where(counts > 0, loss / n, torch.nan),
        grads={k: (v / n[:, None]).reshape(num_groups, *theta[k].shape) for k, v in grads.items()},
        diag={k: (v / n[:, None]).reshape(num_groups, *theta[k].shape) for k, v in diag.items()},
    )
