"""The per-group GGN diagonal and gradient against exact float64 references: the full GGN built
from per-sample Jacobians, curvlinops' GGN operator, and the Hessian trace of a ReLU network."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev

from fairquant.errors import ConfigError
from fairquant.metrics.curvature import SampleCurvature, ggn_diagonal

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


class _ConvNet(nn.Module):
    """Conv (+ BatchNorm in eval mode, ReLU, max pooling), a grouped strided conv, a 1-d conv,
    average pooling and a linear head: every layer kind the layer-wise kernel takes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.grouped = nn.Conv2d(4, 6, 3, stride=2, groups=2, bias=False)
        self.line = nn.Conv1d(6, 4, 2, padding=1, dilation=2)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        h = torch.relu(self.grouped(h)).flatten(2)  # (n, 6, positions)
        h = torch.relu(self.line(h)).mean(2)
        return self.fc(h)


def _conv_groups(dtype=torch.float64):
    torch.manual_seed(4)
    model = _ConvNet()
    model.bn.running_mean.normal_()
    model.bn.running_var.uniform_(0.5, 2.0)
    model = model.to(dtype).eval()
    x = torch.randn(24, 3, 10, 10, dtype=dtype)
    y, g = torch.randint(0, 5, (24,)), torch.arange(24) % 3
    return model, x, y, g


def _all_flat(model, names):
    shapes = {n: p.shape for n, p in model.named_parameters()}
    flat = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1) for n in names])

    def params(v):
        out, start = {}, 0
        for name in names:
            out[name] = v[start : start + shapes[name].numel()].reshape(shapes[name])
            start += shapes[name].numel()
        return out

    return flat, params


@pytest.mark.parametrize("parameters", ["quantized", "all"])
def test_layerwise_kernel_is_exact_on_a_conv_net(parameters):
    """Conv2d (grouped, strided), Conv1d (dilated, padded), Linear, with biases and BatchNorm's
    parameters (the Jacobian path) against the float64 GGN of the Jacobian of all logits."""
    model, x, y, g = _conv_groups()
    curv = ggn_diagonal(model, x, y, g, 3, parameters=parameters, chunk=5)
    names = list(curv.diag)
    if parameters == "all":
        assert {"bn.weight", "bn.bias", "conv.bias", "fc.bias"} <= set(names)
    flat, params = _all_flat(model, names)
    for a in range(3):
        xa, ya = x[g == a], y[g == a]
        jac = jacrev(lambda v, xa=xa: functional_call(model, params(v), (xa,)))(flat)
        p = functional_call(model, params(flat), (xa,)).softmax(1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        diag = torch.einsum("ncp,ncd,ndp->p", jac, lam, jac) / len(xa)
        gradient = torch.einsum("ncp,nc->p", jac, p - nn.functional.one_hot(ya, 5)) / len(xa)
        ours = torch.cat([curv.diag[n][a].reshape(-1) for n in names])
        ours_grad = torch.cat([curv.grads[n][a].reshape(-1) for n in names])
        torch.testing.assert_close(ours, diag, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(ours_grad, gradient, rtol=1e-10, atol=1e-13)


class _Shared(nn.Module):
    """One Linear layer called twice: per-sample products of one call would miss the other."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


class _Tied(nn.Module):
    """A Linear weight also used outside its layer (a tied projection)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.head(h + torch.tanh(x @ self.fc.weight.T))


class _InPlace(nn.Module):
    """A Linear output changed in place before it is used."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu_(self.fc(x)))


class _Tokens(nn.Module):
    """A Linear layer over a sequence (input ``(n, tokens, features)``), mean-pooled."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(4, 5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.mix(x.reshape(len(x), 3, 4))).mean(1))


@pytest.mark.parametrize("cls", [_Shared, _Tied, _InPlace, _Tokens])
def test_sequences_and_models_the_layerwise_kernel_cannot_follow(cls):
    """Shared, tied or in-place layers fall back to Jacobians (or, in place, are followed); a
    Linear over a sequence takes the unfolded path: all exact."""
    torch.manual_seed(0)
    model = cls().double().eval()
    x = torch.randn(30, 12 if cls is _Tokens else 4, dtype=torch.float64)
    y, g = torch.randint(0, 3, (30,)), torch.arange(30) % 2
    curv = ggn_diagonal(model, x, y, g, 2, chunk=7)
    names = list(curv.diag)
    flat, params = _all_flat(model, names)
    for a in range(2):
        xa = x[g == a]
        jac = jacrev(lambda v, xa=xa: functional_call(model, params(v), (xa,)))(flat)
        p = functional_call(model, params(flat), (xa,)).softmax(1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        diag = torch.einsum("ncp,ncd,ndp->p", jac, lam, jac) / len(xa)
        ours = torch.cat([curv.diag[n][a].reshape(-1) for n in names])
        torch.testing.assert_close(ours, diag, rtol=1e-10, atol=1e-13)


def test_float32_kernel_matches_float64():
    model, x, y, g = _conv_groups()
    exact = ggn_diagonal(model, x, y, g, 3, parameters="all")
    single = ggn_diagonal(model.float(), x.float(), y, g, 3, parameters="all")
    for name in exact.diag:
        scale = exact.diag[name].abs().max()
        assert (single.diag[name] - exact.diag[name]).abs().max() <= 1e-5 * scale


def test_diagonal_matches_backpack():
    """BackPACK's DiagGGNExact (``extend(model, use_converter=True)``), group by group, on a conv
    net with BatchNorm in eval mode, ReLU, max and average pooling and a linear head."""
    backpack = pytest.importorskip("backpack", reason="backpack-for-pytorch is not installed")
    from backpack.extensions import DiagGGNExact

    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    )
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    model = model.double().eval()
    _, x, y, g = _conv_groups()
    ours = ggn_diagonal(model, x, y, g, 3, parameters="all")
    names = {id(p): n for n, p in model.named_parameters()}
    net = backpack.extend(model, use_converter=True)
    loss_fn = backpack.extend(nn.CrossEntropyLoss())
    for a in range(3):
        net.zero_grad()
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # BackPACK makes its loss factor in this dtype
        try:
            with backpack.backpack(DiagGGNExact()):
                loss_fn(net(x[g == a]), y[g == a]).backward()
        finally:
            torch.set_default_dtype(default)
        compared = 0
        for p in net.parameters():
            name = names[id(p)]
            torch.testing.assert_close(ours.diag[name][a], p.diag_ggn_exact, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(ours.grads[name][a], p.grad, rtol=1e-9, atol=1e-12)
            compared += 1
        assert compared == len(ours.diag) == 8


def test_ggn_trace_is_the_sum_of_the_diagonal():
    """``SampleCurvature.ggn_trace`` (the diagonal kernel, summed) against the Gram form
    ``Σ_cd Λ_cd (J Jᵀ)_cd`` of per-sample Jacobians it replaced, on the conv net, all parameters."""
    model, x, y, g = _conv_groups()
    trace = SampleCurvature(model, x, y, g, 3, parameters="all", chunk=7).ggn_trace()
    curv = ggn_diagonal(model, x, y, g, 3, parameters="all")
    theta = {n: p.detach() for n, p in model.named_parameters()}

    def one(params, xi):
        return functional_call(model, params, (xi[None],))[0]

    jac = torch.func.vmap(jacrev(one), in_dims=(None, 0))(theta, x)
    gram = sum(torch.einsum("bcp,bdp->bcd", j.flatten(2), j.flatten(2)) for j in jac.values())
    p = model(x).softmax(1)
    lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    per_sample = (lam * gram).sum((1, 2))
    for a in range(3):
        want = per_sample[g == a].mean()
        assert trace[a].item() == pytest.approx(want.item(), rel=1e-10)
        got = sum(d[a].sum() for d in curv.diag.values())
        assert got.item() == pytest.approx(want.item(), rel=1e-10)


def test_both_im2col_paths_agree():
    """One thread unfolds with ``F.unfold``, several with a one-hot depthwise convolution."""
    model, x, y, g = _conv_groups()
    one = ggn_diagonal(model, x, y, g, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = ggn_diagonal(model, x, y, g, 3)
    finally:
        torch.set_num_threads(threads)
    for name in one.diag:
        torch.testing.assert_close(two.diag[name], one.diag[name], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(two.grads[name], one.grads[name], rtol=1e-12, atol=1e-15)
