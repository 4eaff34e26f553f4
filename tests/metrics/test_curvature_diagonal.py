"""The per-group GGN diagonal and gradient against exact float64 references: the full GGN built
from per-sample Jacobians, curvlinops' GGN operator, and the Hessian trace of a ReLU network."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev

from fairquant.errors import ConfigError
from fairquant.metrics.curvature import ggn_diagonal

pytestmark = pytest.mark.usefixtures("one_thread")


def _flat(model):
    """The model's weights as one flat vector and ``f(flat) -> params dict``."""
    names = [n for n, p in model.named_parameters() if n.endswith("weight")]
    shapes = [dict(model.named_parameters())[n].shape for n in names]
    flat = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1) for n in names])

    def params(v):
        out, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            out[name] = v[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return out

    return names, flat, params


def _reference(model, x, y, g, k):
    """Per group: the full GGN ``1/n Σ J_iᵀ (diag p_i - p_i p_iᵀ) J_i``, the gradient and the loss,
    from the Jacobian of all logits with respect to the flat weights."""
    _, flat, params = _flat(model)
    out = []
    for a in range(k):
        xa, ya = x[g == a], y[g == a]
        jac = jacrev(lambda v, xa=xa: functional_call(model, params(v), (xa,)))(flat)  # (n, C, P)
        p = functional_call(model, params(flat), (xa,)).softmax(1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        ggn = torch.einsum("ncp,ncd,ndq->pq", jac, lam, jac) / len(xa)

        def loss(v, xa=xa, ya=ya):
            return nn.functional.cross_entropy(functional_call(model, params(v), (xa,)), ya)

        out.append((ggn, grad(loss)(flat), loss(flat)))
    return out


def _flat_result(curv, names, a):
    return (
        torch.cat([curv.diag[n][a].reshape(-1) for n in names]),
        torch.cat([curv.grads[n][a].reshape(-1) for n in names]),
    )


def test_diagonal_and_gradient_are_exact_in_float64(tanh_groups):
    model, x, y, g = tanh_groups(5)
    curv = ggn_diagonal(model, x, y, g, 3, chunk=7)
    names, _, _ = _flat(model)
    assert curv.dim == sum(curv.diag[n][0].numel() for n in names)
    for a, (ggn, gradient, loss) in enumerate(_reference(model, x, y, g, 3)):
        diag, grads = _flat_result(curv, names, a)
        assert torch.allclose(diag, ggn.diagonal(), rtol=0, atol=1e-10)
        assert torch.allclose(grads, gradient, rtol=0, atol=1e-10)
        assert curv.loss[a].item() == pytest.approx(loss.item(), abs=1e-12)
        assert (diag >= 0).all()


def test_diagonal_matches_curvlinops_ggn(tanh_groups):
    curvlinops = pytest.importorskip("curvlinops")
    model, x, y, g = tanh_groups(5)
    curv = ggn_diagonal(model, x, y, g, 3)
    names, _, _ = _flat(model)
    weights = [dict(model.named_parameters())[n] for n in names]
    for a in range(3):
        op = curvlinops.GGNLinearOperator(
            model,
            nn.CrossEntropyLoss(),
            weights,
            [(x[g == a], y[g == a])],
            check_deterministic=False,
        )
        dense = op @ torch.eye(op.shape[1], dtype=torch.float64)
        diag, _ = _flat_result(curv, names, a)
        assert torch.allclose(diag, dense.diagonal(), rtol=0, atol=1e-10)


def test_layer_trace_is_the_hessian_trace_of_a_relu_network():
    """Piecewise linear: each logit is linear in each layer's weights, so Tr(H_l) = Tr(G_l)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double().eval()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    g = torch.zeros(40, dtype=torch.long)
    curv = ggn_diagonal(model, x, y, g, 1)
    names, flat, params = _flat(model)
    h = hessian(lambda v: nn.functional.cross_entropy(functional_call(model, params(v), (x,)), y))
    diag = h(flat).diagonal()
    start = 0
    for name in names:
        size = curv.diag[name][0].numel()
        assert curv.diag[name][0].sum().item() == pytest.approx(
            diag[start : start + size].sum().item(), abs=1e-10
        )
        start += size


def test_chunks_and_empty_groups(tanh_groups):
    model, x, y, g = tanh_groups(4)
    g = torch.where(g == 2, 3, g)  # group 2 of 4 is empty
    one = ggn_diagonal(model, x, y, g, 4, chunk=1)
    many = ggn_diagonal(model, x, y, g, 4, chunk=64)
    assert one.present() == [0, 1, 3]
    assert torch.isnan(one.loss[2]) and not torch.isnan(one.loss[[0, 1, 3]]).any()
    for name in one.diag:
        assert torch.allclose(one.diag[name], many.diag[name], rtol=1e-12, atol=1e-15)
        assert torch.allclose(one.grads[name], many.grads[name], rtol=1e-12, atol=1e-15)
        assert not one.diag[name][2].any()
    with pytest.raises(ConfigError, match="chunk must be >= 1"):
        ggn_diagonal(model, x, y, g, 4, chunk=0)


def test_pooled_groups_are_one_group(tanh_groups):
    """Every term is a mean over samples, so pooling by counts is the one-group pass."""
    model, x, y, g = tanh_groups(4)
    g = torch.where(g == 2, 0, g)  # groups of 60 and 30, group 2 empty
    pooled = ggn_diagonal(model, x, y, g, 3).pooled()
    one = ggn_diagonal(model, x, y, torch.zeros_like(g), 1)
    assert pooled.counts.tolist() == [90]
    assert pooled.loss.item() == pytest.approx(one.loss.item(), abs=1e-13)
    for name in one.diag:
        assert torch.allclose(pooled.diag[name], one.diag[name], rtol=1e-12, atol=1e-15)
        assert torch.allclose(pooled.grads[name], one.grads[name], rtol=1e-12, atol=1e-15)
