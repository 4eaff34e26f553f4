"""The per-group GGN diagonal kernel: the loss Hessian's factor backpropagated, layer by layer.

For sample ``i`` with logits ``z_i``, probabilities ``p_i`` and label ``y_i``, the cross-entropy's
Hessian in the logits is ``Λ_i = diag p_i - p_i p_iᵀ = S_i S_iᵀ`` with the symmetric factor
``S_i = diag √p_i - p_i √p_iᵀ`` (column ``c``: ``√p_ic (e_c - p_i)``), and the GGN diagonal is

    ``diag G_i = Σ_c (J_iᵀ S_i e_c)²``,  ``∇ℓ_i = J_iᵀ r_i``,  ``r_i = p_i - e_{y_i}``.

BackPACK's ``DiagGGNExact`` (Dangel, Kunstner & Hennig, ICLR 2020) computes it by pushing the
``C`` columns of ``S_i`` back through the network and, at each Linear or Conv layer, forming the
per-sample weight gradient of each column from the layer's input and the column's output gradient
``δ``: ``Σ_s δ_c[o, s] u[k, s]`` over output positions ``s`` (``u``: the unfolded input, ``k``
indexing the weight's fan-in). Here the same scheme runs on PyTorch's own backward pass, with
three savings:

* ``Λ_i`` has rank ``C - 1`` (its rows sum to 0), so ``C - 1`` columns ``√λ_ij q_ij`` of its
  eigendecomposition replace ``S_i``'s ``C``;
* the samples are sorted by group, so a chunk holds a few runs of one group each; ``r_i``'s
  gradient is summed over each run by one matrix product per layer (no per-sample tensor), and
  only the factor's columns are formed per sample, squared and summed;
* one forward pass per chunk and one backward pass batched over the ``C`` vectors (the factor's
  columns and ``r``: ``torch.func.vjp`` with respect to a zero added to every layer's output,
  ``vmap``-ed over the vectors) give every group at once (``DiagGGNExact`` sums over its batch:
  one pass per group).

For a Linear layer without extra dimensions the square factorises, ``(δ_o u_k)² = δ_o² u_k²``,
so nothing per-sample of the weight's size is formed at all.

The scheme needs every differentiated parameter to be the weight or bias of a ``Linear``,
``Conv1d`` or ``Conv2d`` (zero padding) called once per forward pass, with an input no later
operation changes in place. Other parameters (BatchNorm's, a ``Conv3d``'s) take the per-sample
Jacobians instead (``vmap`` of ``jacrev``: ``C`` backward passes per sample); a model the scheme
cannot follow (a layer called twice, a weight also used outside its layer, detected by comparing
the summed per-sample gradients with autograd's on the first chunk) takes them for all parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Layers whose weights and biases take the backpropagated factor (exact types: a subclass may
#: change what its forward pass does with the weight).
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
#: Elements of one layer's per-sample, per-column gradients formed at once (64 Mi: 256 MiB in
#: float32); a larger layer is done in slices of samples.
SLICE_ELEMENTS = 1 << 26


@dataclass
class Sums:
    """Per-group sums over samples (float64): loss ``(K,)``, gradient and GGN diagonal ``(K, P)``
    per parameter name (flattened)."""

    loss: Tensor
    grads: dict[str, Tensor]
    diag: dict[str, Tensor]


class _Unsupported(Exception):
    """The model breaks an assumption of the layer-wise scheme (module doc)."""


def _factor_and_residual(z: Tensor, y: Tensor, dtype: torch.dtype) -> Tensor:
    """``(C, b, C)``: ``C - 1`` columns ``F_i`` with ``F_i F_iᵀ = Λ_i`` (rows ``0..C-2``) and
    ``r_i`` (row ``C - 1``).

    ``Λ_i = Σ_j λ_ij q_ij q_ijᵀ`` (``eigh``, float64) has the eigenvalue 0 along ``1`` (its rows
    sum to 0), so the ``C - 1`` largest pairs give the columns ``√λ_ij q_ij``: one column fewer to
    push back than ``S_i``'s ``C``.
    """
    p = z.double().softmax(1)
    lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    values, vectors = torch.linalg.eigh(lam)  # ascending: the first is the null direction
    cols = (vectors[:, :, 1:] * values[:, None, 1:].clamp(min=0).sqrt()).permute(2, 0, 1)
    r = p - F.one_hot(y, z.shape[1]).double()
    return torch.cat([cols, r[None]]).to(dtype)


def _supported(module: nn.Module) -> bool:
    """Whether the layer-wise scheme takes ``module``'s weight and bias."""
    if type(module) not in LAYERS:
        return False
    return type(module) is nn.Linear or (
        module.padding_mode == "zeros" and not isinstance(module.padding, str)
    )


def split_parameters(model: nn.Module, names: list[str]) -> tuple[dict[str, nn.Module], list[str]]:
    """``names`` split into those the layer-wise scheme computes (by name, with their layer) and
    the rest."""
    owner = {}
    for mname, module in model.named_modules():
        if _supported(module):
            for pname in ("weight", "bias"):
                if getattr(module, pname, None) is not None:
                    owner[f"{mname}.{pname}" if mname else pname] = module
    fast = {n: owner[n] for n in names if n in owner}
    return fast, [n for n in names if n not in fast]


def _unfolded(module: nn.Module, u: Tensor, delta: Tensor) -> tuple[Tensor, Tensor, int]:
    """The layer's input as ``(n, k, s)`` (``k``: the weight's fan-in per group, ``s``: output
    positions) and its output gradients as ``(v, n, out, s)``, with the number of groups."""
    if isinstance(module, nn.Linear):
        n = u.shape[0]
        return (
            u.reshape(n, -1, u.shape[-1]).transpose(1, 2),
            delta.flatten(2, -2).transpose(2, 3),
            1,
        )
    if isinstance(module, nn.Conv1d):
        u, delta = u[:, :, None], delta[..., None, :]
        kernel, dilation = (1, *module.kernel_size), (1, *module.dilation)
        padding, stride = (0, *module.padding), (1, *module.stride)
    else:
        kernel, dilation = module.kernel_size, module.dilation
        padding, stride = module.padding, module.stride
    if torch.get_num_threads() == 1:
        unfolded = F.unfold(u, kernel, dilation=dilation, padding=padding, stride=stride)
    else:
        # im2col as a depthwise convolution with one-hot kernels (as unfoldNd does): the same
        # numbers as ``F.unfold`` (each output is one input times 1, plus zeros), in a kernel
        # that threads well where ``F.unfold`` stalls on a busy machine (and is slower alone)
        c, size = u.shape[1], kernel[0] * kernel[1]
        onehot = torch.eye(size, dtype=u.dtype).reshape(size, 1, *kernel).repeat(c, 1, 1, 1)
        unfolded = F.conv2d(u, onehot, stride=stride, padding=padding, dilation=dilation, groups=c)
    return unfolded.flatten(2), delta.flatten(-2), module.groups


def _layer_terms(
    module: nn.Module, u: Tensor, delta: Tensor, runs: Tensor, count: int
) -> Iterator[tuple[str, Tensor, Tensor]]:
    """(parameter kind, gradient, GGN diagonal) of the layer's weight and bias, each summed over
    the samples of every run (``runs[i]``: sample ``i``'s run of equal groups, ``count`` runs;
    shape ``(count, *shape)``), from its input ``u`` and output gradients ``delta`` ``(V, n, ...)``
    (the factor's columns, then ``r`` last)."""
    last = len(delta) - 1
    if isinstance(module, nn.Linear) and u.dim() == 2:
        # (δ_o u_k)² = δ_o² u_k²: summed over a run's samples, a matrix product
        sq = delta[:last].square().sum(0)  # (n, out)
        onehot = F.one_hot(runs, count).to(u.dtype)  # (n, count)
        yield (
            "weight",
            torch.einsum("nr,no,nk->rok", onehot, delta[last], u),
            torch.einsum("nr,no,nk->rok", onehot, sq, u.square()),
        )
        yield "bias", onehot.T @ delta[last], onehot.T @ sq
        return
    unfolded, d, groups = _unfolded(module, u, delta)
    n, k, s = unfolded.shape
    v, out = d.shape[0], d.shape[2]
    unfolded = unfolded.reshape(n, groups, k // groups, s)
    d = d.reshape(v, n, groups, out // groups, s)
    shape = (count, *module.weight.shape)
    diag = torch.zeros(count, groups, out // groups, k // groups, dtype=u.dtype)
    step = max(1, SLICE_ELEMENTS // max(1, (v - 1) * out * (k // groups)))
    for lo in range(0, n, step):
        per = torch.einsum("vngos,ngks->vngok", d[:last, lo : lo + step], unfolded[lo : lo + step])
        diag.index_add_(0, runs[lo : lo + step], per.square_().sum(0))
    grad = torch.stack(
        [
            torch.einsum("ngos,ngks->gok", d[last, runs == a], unfolded[runs == a])
            for a in range(count)
        ]
    )
    yield "weight", grad.reshape(shape), diag.reshape(shape)
    b = d.sum(-1).flatten(2)  # (v, n, out)
    zeros = torch.zeros(count, out, dtype=u.dtype)
    yield (
        "bias",
        zeros.index_add(0, runs, b[last]),
        zeros.index_add(0, runs, b[:last].square().sum(0)),
    )


def _layerwise_chunk(
    model: nn.Module,
    theta: dict[str, Tensor],
    fast: dict[str, nn.Module],
    xs: Tensor,
    ys: Tensor,
    runs: Tensor,
    check: bool,
) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
    """Logits and (gradient, diagonal) summed per run of every parameter in ``fast`` on one
    chunk (:func:`_layer_terms`).

    Each layer's output gradients are the gradients with respect to a zero added to its output:
    ``torch.func.vjp`` of the logits in those zeros, ``vmap``-ed over the ``C`` vectors.
    """
    layers = list(dict.fromkeys(fast.values()))
    seen: dict[nn.Module, list] = {m: [] for m in layers}

    def record(module, inputs, output):
        seen[module].append((inputs[0], inputs[0]._version, output.shape))

    with _hooks(layers, record):
        z = torch.func.functional_call(model, theta, (xs,))
    if any(len(c) != 1 or c[0][0]._version != c[0][1] for c in seen.values()):
        raise _Unsupported  # a layer called twice, or its input changed in place afterwards
    vectors = _factor_and_residual(z, ys, z.dtype)
    zeros = [torch.zeros(seen[m][0][2], dtype=z.dtype) for m in layers]

    def logits(*eps: Tensor) -> Tensor:
        shift = dict(zip(layers, eps, strict=True))
        with _hooks(layers, lambda module, inputs, output: output + shift[module]):
            return torch.func.functional_call(model, theta, (xs,))

    _, vjp = torch.func.vjp(logits, *zeros)
    deltas = torch.func.vmap(vjp)(vectors)
    count = int(runs[-1]) + 1
    terms: dict[str, tuple[Tensor, Tensor]] = {}
    for module, delta in zip(layers, deltas, strict=True):
        wanted = {n.rsplit(".", 1)[-1]: n for n, m in fast.items() if m is module}
        for kind, grad, diag in _layer_terms(module, seen[module][0][0], delta, runs, count):
            if kind in wanted:
                terms[wanted[kind]] = (grad, diag)
    if check:
        _check_gradients(model, theta, xs, vectors[-1], terms)
    return z, terms


@contextmanager
def _hooks(layers: list[nn.Module], hook) -> Iterator[None]:
    """``hook`` as a forward hook of every layer in ``layers``, for the block."""
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _check_gradients(
    model: nn.Module,
    theta: dict[str, Tensor],
    xs: Tensor,
    r: Tensor,
    terms: dict[str, tuple[Tensor, Tensor]],
) -> None:
    """The gradients summed per run must add up to autograd's gradient of ``Σ_i ℓ_i``: otherwise
    some weight reaches the logits other than through its layer's output
    (:class:`_Unsupported`)."""
    leaves = {n: theta[n].detach().requires_grad_() for n in terms}
    with torch.enable_grad():
        z = torch.func.functional_call(model, {**theta, **leaves}, (xs,))
        expected = torch.autograd.grad(z, list(leaves.values()), r, allow_unused=True)
    for name, want in zip(leaves, expected, strict=True):
        got = terms[name][0].sum(0)
        want = torch.zeros_like(got) if want is None else want
        scale = want.abs().max().item() + got.abs().max().item()
        if (got - want).abs().max().item() > 1e-4 * scale + 1e-30:
            raise _Unsupported


def _jacobian_chunk(
    model: nn.Module,
    theta: dict[str, Tensor],
    names: list[str],
    xs: Tensor,
    ys: Tensor,
    runs: Tensor,
) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
    """Logits and (gradient, diagonal) summed per run of ``names`` from per-sample Jacobians:
    entry ``k`` of ``diag G_i`` is the variance of ``J_i[:, k]`` under ``p_i``."""
    chosen = {n: theta[n] for n in names}

    def one(params: dict[str, Tensor], xi: Tensor) -> Tensor:
        return torch.func.functional_call(model, {**theta, **params}, (xi[None],))[0]

    jac = torch.func.vmap(torch.func.jacrev(one), in_dims=(None, 0))(chosen, xs)
    z = torch.func.functional_call(model, theta, (xs,))
    p = z.double().softmax(1).to(z.dtype)
    r = p - F.one_hot(ys, z.shape[1]).to(z.dtype)
    onehot = F.one_hot(runs, int(runs[-1]) + 1).to(z.dtype)
    terms = {}
    for name, j in jac.items():
        centred = j - torch.einsum("bc,bc...->b...", p, j)[:, None]
        terms[name] = (
            torch.einsum("br,bc,bc...->r...", onehot, r, j),
            torch.einsum("br,bc,bc...->r...", onehot, p, centred.square()),
        )
    return z, terms


def diagonal_sums(
    model: nn.Module,
    theta: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    g: Tensor,
    num_groups: int,
    *,
    chunk: int,
) -> Sums:
    """Per group, the sums over its samples of the cross-entropy, its gradient and the exact GGN
    diagonal with respect to ``theta`` (detached parameters of ``model`` by name), in one pass
    over ``x`` in chunks of ``chunk`` samples (module doc)."""
    fast, rest = split_parameters(model, list(theta))
    try:
        return _sums(model, theta, fast, rest, x, y, g, num_groups, chunk)
    except _Unsupported:
        return _sums(model, theta, {}, list(theta), x, y, g, num_groups, chunk)


def _sums(model, theta, fast, rest, x, y, g, num_groups, chunk) -> Sums:
    grads = {n: torch.zeros(num_groups, p.numel(), dtype=torch.float64) for n, p in theta.items()}
    diag = {n: torch.zeros(num_groups, p.numel(), dtype=torch.float64) for n, p in theta.items()}
    loss = torch.zeros(num_groups, dtype=torch.float64)
    order = torch.argsort(g, stable=True)  # a chunk holds few runs of one group each
    x, y, g = x[order], y[order], g[order]
    with torch.no_grad():
        for s in range(0, len(x), chunk):
            xs, ys, gs = x[s : s + chunk], y[s : s + chunk], g[s : s + chunk]
            groups, sizes = torch.unique_consecutive(gs, return_counts=True)
            runs = torch.repeat_interleave(torch.arange(len(groups)), sizes)
            terms = {}
            if fast:
                z, terms = _layerwise_chunk(model, theta, fast, xs, ys, runs, check=s == 0)
            if rest:
                z, more = _jacobian_chunk(model, theta, rest, xs, ys, runs)
                terms.update(more)
            loss.index_add_(0, gs, F.cross_entropy(z.double(), ys, reduction="none"))
            for name, (gr, dg) in terms.items():
                grads[name].index_add_(0, groups, gr.reshape(len(groups), -1).double())
                diag[name].index_add_(0, groups, dg.reshape(len(groups), -1).double())
    return Sums(loss=loss, grads=grads, diag=diag)
