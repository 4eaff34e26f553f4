"""Curvature estimators against the exact float64 Hessian/GGN of a tiny model (torch.func)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from fairquant.errors import ConfigError
from fairquant.metrics.curvature import (
    GroupCurvature,
    ProbeBudget,
    SampleCurvature,
    check_deterministic,
    group_curvature,
    group_traces,
    hutchinson,
    hutchpp,
    lanczos_max,
)
from fairquant.models import is_piecewise_linear

pytestmark = pytest.mark.usefixtures("one_thread")


K = 3


@pytest.fixture(scope="module")
def tiny(tanh_groups):
    """A 2-layer tanh MLP (172 parameters) in float64 and 90 samples in 3 groups."""
    return tanh_groups(16)


def _exact(model, x, y, g, a, which):
    """Exact gradient, Hessian and GGN of group ``a``'s mean cross-entropy, all parameters."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflat(f):
        out, s = {}, 0
        for n, sh in zip(names, shapes, strict=True):
            out[n] = f[s : s + sh.numel()].reshape(sh)
            s += sh.numel()
        return out

    m = g == a

    def logits(f):
        return functional_call(model, unflat(f), (x[m],))

    def loss(f):
        return nn.functional.cross_entropy(logits(f), y[m])

    if which == "hessian":
        return torch.func.grad(loss)(flat), hessian(loss)(flat)
    jac = jacrev(logits)(flat)  # (n, C, P)
    p = logits(flat).softmax(1)
    lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return None, torch.einsum("ncp,ncd,ndq->pq", jac, lam, jac) / m.sum()


@pytest.mark.parametrize("which", ["hessian", "ggn"])
def test_group_matvecs_and_gradients_are_exact(tiny, which):
    model, x, y, g = tiny
    op = GroupCurvature(model, x, y, g, K, parameters="all", curvature=which, batch_size=20)
    eye = torch.eye(op.dim, dtype=torch.float64)
    for a in range(K):
        grad, exact = _exact(model, x, y, g, a, which)
        torch.testing.assert_close(op.matvec(a, eye), exact, rtol=1e-10, atol=1e-12)
        if grad is not None:
            assert op.grad_norm()[a].item() == pytest.approx(grad.norm().item(), rel=1e-4)


def test_per_group_trace_and_lambda_max_match_exact(tiny):
    model, x, y, g = tiny
    table = group_curvature(
        model, x, y, g, ["a", "b", "c"], parameters="all", rtol=0.05, max_probes=400, seed=0
    )
    assert list(table.group) == ["a", "b", "c"]
    for a, row in table.iterrows():
        grad, h = _exact(model, x, y, g, a, "hessian")
        # within 3 standard errors (a fixed seed; 1 se would fail 1 run in 3 by chance)
        assert abs(row.trace - h.trace().item()) <= 3 * row.trace_se
        assert row.trace_se <= 0.05 * abs(row.trace) or row.trace_matvecs == 2 * 10 + 400
        assert row.lambda_max == pytest.approx(torch.linalg.eigvalsh(h)[-1].item(), rel=1e-4)
        assert row.grad_norm == pytest.approx(grad.norm().item(), rel=1e-4)


def _decaying(seed: int = 0, dim: int = 200) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64)).Q
    return (q * (1.0 / torch.arange(1, dim + 1, dtype=torch.float64) ** 2)) @ q.T


def test_hutchpp_beats_hutchinson_at_equal_matvecs():
    a = _decaying()
    exact = a.trace().item()
    err = {"hutchinson": [], "hutchpp": []}
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        exactly = {"generator": gen, "dtype": torch.float64}
        h = hutchinson(lambda v: v @ a, 200, budget=ProbeBudget(0, 60, 60), **exactly)
        pp = hutchpp(lambda v: v @ a, 200, sketch=20, budget=ProbeBudget(0, 20, 20), **exactly)
        assert h.matvecs == pp.matvecs == 60
        err["hutchinson"].append(abs(h.value - exact))
        err["hutchpp"].append(abs(pp.value - exact))
    assert sum(err["hutchpp"]) < 0.2 * sum(err["hutchinson"])


def test_relative_error_stopping_rule():
    a = _decaying(1)
    gen = torch.Generator().manual_seed(0)
    budget = ProbeBudget(rtol=0.05, block=5)
    est = hutchinson(lambda v: v @ a, 200, budget=budget, generator=gen, dtype=torch.float64)
    assert est.rel_error <= 0.05 and est.matvecs < 500 and est.matvecs % 5 == 0


def test_lanczos_finds_largest_algebraic_not_magnitude():
    a = torch.diag(torch.tensor([-10.0, 1.0, 2.0, 3.0], dtype=torch.float64))
    lam, _ = lanczos_max(
        lambda v: v @ a, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert lam == pytest.approx(3.0, rel=1e-8)


def test_lanczos_started_near_the_top_eigenvector_converges_in_fewer_steps():
    evals = torch.cat([torch.tensor([10.0, 9.0, 8.5]), torch.linspace(0.0, 8.0, 297)])
    q, _ = torch.linalg.qr(
        torch.randn(300, 300, generator=torch.Generator().manual_seed(1)).double()
    )
    a = q @ torch.diag(evals.double()) @ q.T
    common = {"rtol": 1e-6, "min_iter": 1, "dtype": torch.float64}
    lam, cold = lanczos_max(
        lambda v: v @ a, 300, generator=torch.Generator().manual_seed(0), **common
    )
    near = q[:, 0] + 0.1 * q[:, 1]  # mostly along the top eigenvector, as a gradient tends to be
    lam_w, warm = lanczos_max(
        lambda v: v @ a, 300, generator=torch.Generator().manual_seed(0), start=near, **common
    )
    assert lam == pytest.approx(10.0, rel=1e-6) and lam_w == pytest.approx(10.0, rel=1e-6)
    assert warm < cold
    with pytest.raises(ConfigError, match="non-zero vector of 300"):
        lanczos_max(lambda v: v @ a, 300, generator=torch.Generator(), start=torch.zeros(300))


def test_refuses_nondeterministic_model():
    class Noisy(nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x)

    with pytest.raises(ConfigError, match="not deterministic"):
        check_deterministic(Noisy(), torch.zeros(2, 3))
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.BatchNorm1d(3)).train()
    check_deterministic(model, torch.randn(4, 3))
    assert not model.training


def test_bad_options_are_named():
    gen = torch.Generator()
    with pytest.raises(ConfigError, match="min_probes"):
        ProbeBudget(min_probes=1)
    with pytest.raises(ConfigError, match="rtol"):
        ProbeBudget(rtol=-1)
    with pytest.raises(ConfigError, match="block"):
        ProbeBudget(block=0)
    with pytest.raises(ConfigError, match="sketch"):
        hutchpp(lambda v: v, 3, sketch=3, generator=gen)


def _relu_tiny():
    """A ReLU MLP with BatchNorm in eval mode (piecewise linear in each layer's weights)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 4))
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    return model.double().eval()


def test_sample_curvature_forms_and_ggn_trace_are_exact(tiny):
    model, x, y, g = tiny
    op = SampleCurvature(model, x, y, g, K, parameters="all", chunk=40)
    v = torch.randn(3, op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    forms, residual, ggn = op.hessian_forms(v), op.residual_forms(v), op.ggn_trace()
    for a in range(K):
        _, h = _exact(model, x, y, g, a, "hessian")
        _, gn = _exact(model, x, y, g, a, "ggn")
        torch.testing.assert_close(forms[:, a], ((v @ h) * v).sum(1), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(
            residual[:, a], ((v @ (h - gn)) * v).sum(1), rtol=1e-10, atol=1e-12
        )
        assert ggn[a].item() == pytest.approx(gn.trace().item(), rel=1e-10)


def test_group_traces_match_exact_within_se(tiny):
    model, x, y, g = tiny
    op = SampleCurvature(model, x, y, g, K, parameters="all")
    est = group_traces(
        op, budget=ProbeBudget(rtol=0.05), generator=torch.Generator().manual_seed(0)
    )
    for a, t in enumerate(est):
        _, h = _exact(model, x, y, g, a, "hessian")
        assert abs(t.value - h.trace().item()) <= 3 * t.stderr
        assert t.rel_error <= 0.05 and t.matvecs == est[0].matvecs <= 500


def test_piecewise_linear_trace_is_the_exact_ggn_trace(tiny):
    model = _relu_tiny()
    _, x, y, g = tiny
    op = SampleCurvature(model, x, y, g, K, parameters="all")
    est = group_traces(op, piecewise_linear=True, generator=torch.Generator())
    for a in range(K):
        _, h = _exact(model, x, y, g, a, "hessian")
        assert est[a].value == pytest.approx(h.trace().item(), rel=1e-10)
        assert est[a].stderr == 0 and est[a].matvecs == 0
    # the identity needs piecewise linearity: the tanh model's traces differ
    tanh, *_ = tiny
    ggn = SampleCurvature(tanh, x, y, g, K, parameters="all").ggn_trace()
    assert abs(ggn[0].item() - _exact(tanh, x, y, g, 0, "hessian")[1].trace().item()) > 0.1


class _TinyResidual(nn.Module):
    """Conv + BatchNorm (eval) + ReLU with a residual sum, average pooling and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        out = torch.relu(x + self.bn(self.conv(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))


def test_piecewise_linear_identity_holds_for_a_residual_conv_net():
    torch.manual_seed(2)
    model = _TinyResidual()
    model.bn.running_mean.normal_()
    model.bn.running_var.uniform_(0.5, 2.0)
    model = model.double().eval()
    x = torch.randn(30, 2, 4, 4, dtype=torch.float64)
    y, g = torch.randint(0, 3, (30,)), torch.arange(30) % 2
    ggn = SampleCurvature(model, x, y, g, 2, parameters="all").ggn_trace()
    for a in range(2):
        _, h = _exact(model, x, y, g, a, "hessian")
        assert ggn[a].item() == pytest.approx(h.trace().item(), rel=1e-10)


def test_piecewise_linear_detection(tiny):
    from fairquant.models import ModelSpec, build_model

    for name in ("resnet18", "cnn"):
        assert is_piecewise_linear(build_model(ModelSpec(name, 2), in_channels=1, num_classes=3))
    assert is_piecewise_linear(_relu_tiny())
    assert not is_piecewise_linear(tiny[0])  # tanh
    assert not is_piecewise_linear(_TinyResidual())  # a custom forward: not known, so refused

    class Declared(_TinyResidual):
        piecewise_linear = True  # the model says so (test_piecewise_linear_identity_... holds)

    class Undeclared(Declared):  # inherits the flag, not the trust: its forward may differ
        pass

    assert is_piecewise_linear(Declared())
    assert not is_piecewise_linear(Undeclared())
