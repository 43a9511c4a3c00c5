"""DeepLIFT's Rescale rule for every nonlinearity the forward pass runs, module or function.

The model runs once on a batch of 2B rows, the B inputs x followed by their B references x'
(Shrikumar et al. 2017, in the gradient form of Ancona et al. 2018, as captum's `DeepLift` runs
it). A `TorchFunctionMode` sees every nonlinearity call and replaces it with an autograd function
whose forward is the call itself and whose backward multiplies the incoming gradient by DeepLIFT's
multiplier instead of the local derivative:

- elementwise f (ReLU in every spelling — `nn.ReLU`, `F.relu`, `torch.relu(_)`, `Tensor.relu(_)`,
  inplace or not — ReLU6/Hardtanh, LeakyReLU, ELU, SELU, CELU, SiLU, GELU, Hardswish, Mish,
  Softplus, PReLU, sigmoid, tanh, Hardsigmoid, LogSigmoid): m = (f(z) − f(z')) / (z − z') where
  |z − z'| ≥ eps, else the local derivative f'(·) of each half at its own point (captum's
  convention). Both halves get the same multiplier.
- max-pooling (`F.max_pool1d/2d/3d`, with or without indices, `torch.max_pool*d`,
  `F.adaptive_max_pool1d/2d`), captum's rule: each window's Δout = max(o, o') − o' (from the
  input's half) + o − max(o, o') (from the reference's half) is sent to the argmax of the half
  with the larger maximum, weighted by that half's incoming gradient, and divided there by
  Δin = z − z'; where |Δin| < eps, the plain max-pool gradient. Windows sharing an argmax add
  up (captum's `max_unpool` keeps only one of them; see docs/explain.md).

With these multipliers, Σ_i (x_i − x'_i) · ∂y/∂x_i = y(x) − y(x') (summation-to-delta) for any
network made of affine layers (convolutions, linear, batch norm in eval mode, average pooling,
additions) and the nonlinearities above. Products of two activations (attention, squeeze-and-
excitation gates), softmax, normalisation over features and other nonlinear operations keep
their plain chain rule, as in captum: there the identity is approximate.

A nonlinearity whose input does not have 2B rows in its first dimension (a parameter, a
sequence-first tensor) is left plain and counted in `skipped`. No module is touched and no hook
registered; inplace calls stay inplace (the autograd function marks its input dirty).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from math import prod

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from camlight.explain._rules import _RECTIFIERS, _call

_RELU = {F.relu, torch.relu, torch.Tensor.relu}
_RELU_INPLACE = {F.relu_, torch.relu_, torch.Tensor.relu_}
# Elementwise nonlinearities beyond the rectifiers of `_rules`: function → (name, out-of-place, inplace?).
_SQUASHERS: dict[Callable, tuple[str, Callable, bool]] = {
    torch.sigmoid: ("sigmoid", torch.sigmoid, False),
    torch.Tensor.sigmoid: ("sigmoid", torch.sigmoid, False),
    torch.sigmoid_: ("sigmoid", torch.sigmoid, True),
    torch.Tensor.sigmoid_: ("sigmoid", torch.sigmoid, True),
    torch.tanh: ("tanh", torch.tanh, False),
    torch.Tensor.tanh: ("tanh", torch.tanh, False),
    torch.tanh_: ("tanh", torch.tanh, True),
    torch.Tensor.tanh_: ("tanh", torch.tanh, True),
    F.logsigmoid: ("LogSigmoid", F.logsigmoid, False),
}
# Max-pooling call → (the function returning (out, indices), position of `return_indices` or None
# when the call always returns indices, or -1 when it never does).
_POOLS: dict[Callable, tuple[Callable, int | None]] = {
    F.max_pool1d: (F.max_pool1d_with_indices, 6),
    F.max_pool2d: (F.max_pool2d_with_indices, 6),
    F.max_pool3d: (F.max_pool3d_with_indices, 6),
    F.max_pool1d_with_indices: (F.max_pool1d_with_indices, None),
    F.max_pool2d_with_indices: (F.max_pool2d_with_indices, None),
    F.max_pool3d_with_indices: (F.max_pool3d_with_indices, None),
    torch.max_pool1d: (F.max_pool1d_with_indices, -1),
    torch.max_pool2d: (F.max_pool2d_with_indices, -1),
    torch.max_pool3d: (F.max_pool3d_with_indices, -1),
    F.adaptive_max_pool1d: (F.adaptive_max_pool1d_with_indices, 2),
    F.adaptive_max_pool2d: (F.adaptive_max_pool2d_with_indices, 2),
    F.adaptive_max_pool1d_with_indices: (F.adaptive_max_pool1d_with_indices, None),
    F.adaptive_max_pool2d_with_indices: (F.adaptive_max_pool2d_with_indices, None),
}
_SPATIAL = {
    F.max_pool1d_with_indices: 1,
    F.max_pool2d_with_indices: 2,
    F.max_pool3d_with_indices: 3,
    F.adaptive_max_pool1d_with_indices: 1,
    F.adaptive_max_pool2d_with_indices: 2,
}


def _local_derivative(fn: Callable, z: torch.Tensor, relu: bool) -> torch.Tensor:
    """f'(z), elementwise."""
    if relu:
        return (z > 0).to(z.dtype)
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)
        (local,) = torch.autograd.grad(fn(leaf), leaf, torch.ones_like(leaf))
    return local


def _multiplier(z: torch.Tensor, out: torch.Tensor, fn: Callable, relu: bool, eps: float) -> torch.Tensor:
    """DeepLIFT's multiplier for an elementwise f: (B,...) shared by both halves, or (2,B,...) where
    some |z − z'| < eps take each half's own derivative."""
    z2, out2 = z.unflatten(0, (2, -1)), out.unflatten(0, (2, -1))
    delta_in = z2[0] - z2[1]
    small = delta_in.abs() < eps
    m = (out2[0] - out2[1]) / delta_in
    if not small.any():
        return m
    local = _local_derivative(fn, z, relu).unflatten(0, (2, -1))
    return torch.where(small, local, m)


class _Rescale(torch.autograd.Function):
    """An elementwise nonlinearity `fn` on [x; x'] rows, with the Rescale rule's backward."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, fn: Callable, relu: bool, inplace: bool, eps: float) -> torch.Tensor:
        out = fn(z)
        ctx.save_for_backward(_multiplier(z, out, fn, relu, eps))
        if not inplace:
            return out
        z.copy_(out)
        ctx.mark_dirty(z)
        return z

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (m,) = ctx.saved_tensors
        return (grad.unflatten(0, (2, -1)) * m).flatten(0, 1), None, None, None, None


def _scatter(values: torch.Tensor, indices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Σ of `values` (N,C,*out) into zeros of `shape` (N,C,*in) at the flat spatial `indices`;
    windows sharing an index add up."""
    flat = values.new_zeros(*shape[:2], prod(shape[2:]))
    return flat.scatter_add_(2, indices.flatten(2), values.flatten(2)).view(shape)


class _RescaleMaxPool(torch.autograd.Function):
    """Max-pooling on [x; x'] rows with captum's DeepLIFT rule (see the module docstring)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, pool: Callable, eps: float):
        out, indices = pool(z)
        ctx.mark_non_differentiable(indices)
        delta_in = z.unflatten(0, (2, -1))
        delta_in = delta_in[0] - delta_in[1]
        ctx.save_for_backward(delta_in, out, indices)
        ctx.shape, ctx.eps = z.shape, eps
        return out, indices

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_indices):
        delta_in, out, indices = ctx.saved_tensors
        half = (ctx.shape[0] // 2, *ctx.shape[1:])
        o, o_ref = out.unflatten(0, (2, -1))
        g, g_ref = grad.unflatten(0, (2, -1))
        i, i_ref = indices.unflatten(0, (2, -1))
        top = torch.maximum(o, o_ref)
        numerator = _scatter(g * (top - o_ref), i, half) + _scatter(g_ref * (o - top), i_ref, half)
        plain = _scatter(grad, indices, ctx.shape).unflatten(0, (2, -1))
        small = delta_in.abs() < ctx.eps
        m = torch.where(small, plain, numerator / torch.where(small, 1.0, delta_in))
        return m.flatten(0, 1), None, None


def _pool_call(func, args: tuple, kwargs: dict) -> tuple[Callable, bool]:
    """(z → (out, indices) of the pooling call, whether the call returns indices)."""
    with_indices, position = _POOLS[func]
    args, kwargs = list(args), dict(kwargs)
    returns = position is None or bool(kwargs.pop("return_indices", False))
    if position is not None and position >= 0 and len(args) > position:
        returns = returns or bool(args[position])
        del args[position]
    rest = args[1:]
    return (lambda t: with_indices(t, *rest, **kwargs)), returns


class RescaleRule(TorchFunctionMode):
    """Within this mode, every nonlinearity on a batch of `rows` = 2B rows (B inputs, then their B
    references) backpropagates DeepLIFT's Rescale multipliers (see the module docstring)."""

    def __init__(self, rows: int, eps: float = 1e-10):
        super().__init__()
        self.rows, self.eps = rows, eps
        self.seen: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def _fits(self, t, name: str, dims: int | None = None) -> bool:
        """Whether `t` holds the batch's 2B rows (and has `dims` dimensions), counted either way."""
        if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == self.rows and dims in (None, t.dim()):
            self.seen[name] += 1
            return True
        self.skipped[name] += 1
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU or func in _RELU_INPLACE:
            if not self._fits(args[0], "ReLU"):
                return func(*args, **kwargs)
            inplace = func in _RELU_INPLACE or bool(kwargs.get("inplace", len(args) > 1 and args[1]))
            return _Rescale.apply(args[0], torch.relu, True, inplace, self.eps)
        if func in _RECTIFIERS:
            if not self._fits(args[0], _RECTIFIERS[func][0]):
                return func(*args, **kwargs)
            fn, inplace = _call(func, args, kwargs)
            return _Rescale.apply(args[0], fn, False, inplace, self.eps)
        if func in _SQUASHERS or func is F.hardsigmoid:
            name, fn, inplace = _SQUASHERS.get(func, ("Hardsigmoid", F.hardsigmoid, False))
            if not self._fits(args[0], name):
                return func(*args, **kwargs)
            if func is F.hardsigmoid:
                inplace = bool(kwargs.get("inplace", len(args) > 1 and args[1]))
            return _Rescale.apply(args[0], fn, False, inplace, self.eps)
        if func in _POOLS:
            if not self._fits(args[0], "MaxPool", _SPATIAL[_POOLS[func][0]] + 2):
                return func(*args, **kwargs)
            pool, returns = _pool_call(func, args, kwargs)
            out, indices = _RescaleMaxPool.apply(args[0], pool, self.eps)
            return (out, indices) if returns else out
        return func(*args, **kwargs)
