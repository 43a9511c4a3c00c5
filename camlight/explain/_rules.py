"""Modified backward rules for guided backprop and deconvnet, for every rectifier, module or function.

A `TorchFunctionMode` sees every activation the forward pass runs — `nn.ReLU` (inplace or not),
`F.relu`, `torch.relu`, `Tensor.relu` and their in-place forms, and likewise ReLU6, LeakyReLU,
ELU, SELU, CELU, SiLU (Swish), GELU, Hardswish, Mish, Softplus and PReLU — and replaces each with
an autograd function whose forward is the activation itself and whose backward follows the rule:

- "guided" (Springenberg et al. 2015): the activation's own derivative times the incoming
  gradient, then only the positive part passes. For ReLU that is their rule exactly (gradient
  where the input was positive *and* the gradient is positive); for a smooth rectifier f it is
  max(0, f'(x)·g): the forward derivative is kept and the backward signal gated to positive values.
- "deconv" (Zeiler & Fergus 2014): the positive part of the incoming gradient, whatever the
  forward input, for every rectifier.

Neither captum nor pytorch-grad-cam states a rule beyond ReLU: both change `nn.ReLU` modules only,
so on SiLU, GELU or Hardswish networks their guided backprop is the plain gradient, or a hybrid on
MobileNetV3. Gates and squashers (sigmoid, Hardsigmoid, tanh: the squeeze-and-excitation gates of
EfficientNet and MobileNetV3) are not rectifiers and backpropagate plainly here too. Hardtanh
counts as a rectifier when its lower bound is 0 (ReLU6).

No module is touched and no hook registered. In-place activations stay in place (an autograd
function that marks its input dirty), so models that ignore the returned value still work.
`rectifiers` counts, by name, those the rule replaced; none at all means they were out of reach
(TorchScript, `torch.compile`, or activations written as custom autograd functions), and
`explanation()` says so in one sentence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

RULES = ("guided", "deconv")


class _RuleReLU(torch.autograd.Function):
    """ReLU, with its own backward kernel for the guided rule (as fast as a plain gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, guided: bool) -> torch.Tensor:
        out = torch.relu(x)
        ctx.guided = guided
        if guided:
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.guided:
            (out,) = ctx.saved_tensors
            # ReLU's own backward kernel (grad where out > 0, else 0), then the positive part in place.
            return torch.ops.aten.threshold_backward(grad, out, 0).clamp_(min=0), None
        return grad.clamp(min=0), None


class _RuleReLUInplace(torch.autograd.Function):
    """The same rule for in-place ReLUs: writes into its input, as the replaced call would."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, guided: bool) -> torch.Tensor:
        torch.relu_(x)
        ctx.mark_dirty(x)
        ctx.guided = guided
        if guided:
            ctx.save_for_backward(x)
        return x

    backward = staticmethod(_RuleReLU.backward)


def _rule_backward(ctx, grad: torch.Tensor):
    if not ctx.guided:
        return grad.clamp(min=0), None, None
    (x,) = ctx.saved_tensors
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        (local,) = torch.autograd.grad(ctx.fn(leaf), leaf, grad)  # f'(x) · g
    return local.clamp_(min=0), None, None


class _RuleRectifier(torch.autograd.Function):
    """Any rectifier `fn` (out of place) with the rule's backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable, guided: bool) -> torch.Tensor:
        ctx.fn, ctx.guided = fn, guided
        if guided:
            ctx.save_for_backward(x)
        return fn(x)

    backward = staticmethod(_rule_backward)


class _RuleRectifierInplace(torch.autograd.Function):
    """Any rectifier `fn`, written into its input as the in-place call would, with the rule's backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable, guided: bool) -> torch.Tensor:
        ctx.fn, ctx.guided = fn, guided
        if guided:
            ctx.save_for_backward(x.clone())  # the input, before it is overwritten
        x.copy_(fn(x))
        ctx.mark_dirty(x)
        return x

    backward = staticmethod(_rule_backward)


_RELU_OUT_OF_PLACE = {F.relu, torch.relu, torch.Tensor.relu}
_RELU_IN_PLACE = {torch.relu_, torch.Tensor.relu_, F.relu_}

# Rectifier → (name, out-of-place function, position of its `inplace` argument or None).
_RECTIFIERS: dict[Callable, tuple[str, Callable, int | None]] = {
    F.relu6: ("ReLU6", F.relu6, 1),
    F.hardtanh: ("ReLU6/Hardtanh", F.hardtanh, 3),  # nn.ReLU6 runs as hardtanh(0, 6)
    F.hardtanh_: ("ReLU6/Hardtanh", F.hardtanh, None),
    F.leaky_relu: ("LeakyReLU", F.leaky_relu, 2),
    F.leaky_relu_: ("LeakyReLU", F.leaky_relu, None),
    F.elu: ("ELU", F.elu, 2),
    F.elu_: ("ELU", F.elu, None),
    F.selu: ("SELU", F.selu, 1),
    F.selu_: ("SELU", F.selu, None),
    F.celu: ("CELU", F.celu, 2),
    F.celu_: ("CELU", F.celu, None),
    F.silu: ("SiLU", F.silu, 1),
    F.gelu: ("GELU", F.gelu, None),
    F.hardswish: ("Hardswish", F.hardswish, 1),
    F.mish: ("Mish", F.mish, 1),
    F.softplus: ("Softplus", F.softplus, None),
    F.prelu: ("PReLU", F.prelu, None),
}
_IN_PLACE_ONLY = {F.hardtanh_, F.leaky_relu_, F.elu_, F.selu_, F.celu_}


def _call(func, args: tuple, kwargs: dict) -> tuple[Callable, bool]:
    """(t → the activation of t, out of place; whether the call was in place) for a rectifier call."""
    _, out_of_place, position = _RECTIFIERS[func]
    args, kwargs = list(args), dict(kwargs)
    inplace = func in _IN_PLACE_ONLY or bool(kwargs.pop("inplace", False))
    if position is not None and len(args) > position:
        inplace = inplace or bool(args[position])
        args[position] = False
    rest = args[1:]
    return (lambda t: out_of_place(t, *rest, **kwargs)), inplace


def _hardtanh_floor(func, args: tuple, kwargs: dict) -> float:
    if func not in (F.hardtanh, F.hardtanh_):
        return 0.0
    return float(kwargs.get("min_val", args[1] if len(args) > 1 else -1.0))


class ReluRule(TorchFunctionMode):
    """Within this mode, every rectifier backpropagates by `rule` ("guided" or "deconv")."""

    def __init__(self, rule: str):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
        self.rule = rule
        self.guided = rule == "guided"
        self.rectifiers: Counter[str] = Counter()

    @property
    def seen(self) -> int:
        """How many rectifier calls the rule replaced."""
        return sum(self.rectifiers.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_OUT_OF_PLACE or func in _RELU_IN_PLACE:
            self.rectifiers["ReLU"] += 1
            inplace = func in _RELU_IN_PLACE or kwargs.get("inplace", len(args) > 1 and args[1])
            return (_RuleReLUInplace if inplace else _RuleReLU).apply(args[0], self.guided)
        if func in _RECTIFIERS and _hardtanh_floor(func, args, kwargs) >= 0:
            fn, inplace = _call(func, args, kwargs)
            self.rectifiers[_RECTIFIERS[func][0]] += 1
            return (_RuleRectifierInplace if inplace else _RuleRectifier).apply(args[0], fn, self.guided)
        return func(*args, **kwargs)

    def explanation(self) -> str | None:
        """Why the map is not what the rule defines, or None when the rule reached the model's rectifiers."""
        if self.seen:
            return None
        return (
            f"the {self.rule} rule saw no rectifier (ReLU, ReLU6, SiLU, GELU, Hardswish, ...) in the forward pass: "
            "a scripted or compiled model hides them, or they are custom autograd functions; the map is the "
            "plain gradient"
        )
