"""Modified ReLU backward rules for guided backprop and deconvnet, for modules and functions alike.

A `TorchFunctionMode` sees every ReLU the forward pass runs — `nn.ReLU` (inplace or not),
`F.relu`, `torch.relu`, `Tensor.relu` and their in-place forms — and replaces it with an autograd
function whose forward is the usual ReLU and whose backward follows the rule:

- "guided" (Springenberg et al. 2015): pass gradient where the forward input was positive *and*
  the incoming gradient is positive;
- "deconv" (Zeiler & Fergus 2014): pass the positive part of the incoming gradient, whatever the
  forward sign.

No module is touched and no hook registered. In-place ReLUs stay in place (an autograd function
that marks its input dirty), so models that ignore the returned value still work.
`seen` counts the ReLUs replaced; `others` counts, by name, the other activations the forward pass
ran (SiLU, GELU, Hardswish, ...), which the rules do not cover and which backpropagate plainly.
`explanation()` says in one sentence what that means for the map.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

RULES = ("guided", "deconv")


class _RuleReLU(torch.autograd.Function):
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


_OUT_OF_PLACE = {F.relu, torch.relu, torch.Tensor.relu}
_IN_PLACE = {torch.relu_, torch.Tensor.relu_, getattr(F, "relu_", torch.relu_)}
# Activations the rules do not cover (EfficientNet: SiLU, sigmoid; ConvNeXt, ViT: GELU; MobileNetV3:
# Hardswish, Hardsigmoid), by the name a user knows them by.
_OTHERS = {
    F.silu: "SiLU",
    F.gelu: "GELU",
    F.hardswish: "Hardswish",
    F.hardsigmoid: "Hardsigmoid",
    F.mish: "Mish",
    F.elu: "ELU",
    F.selu: "SELU",
    F.celu: "CELU",
    F.leaky_relu: "LeakyReLU",
    F.relu6: "ReLU6",
    F.hardtanh: "Hardtanh/ReLU6",  # nn.ReLU6 runs as hardtanh(0, 6)
    F.softplus: "Softplus",
    F.prelu: "PReLU",
    torch.sigmoid: "sigmoid",
    torch.Tensor.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    torch.Tensor.tanh: "tanh",
}


class ReluRule(TorchFunctionMode):
    """Within this mode, every ReLU backpropagates by `rule` ("guided" or "deconv")."""

    def __init__(self, rule: str):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown ReLU rule {rule!r}; choose one of {', '.join(RULES)}")
        self.rule = rule
        self.guided = rule == "guided"
        self.seen = 0
        self.others: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _OUT_OF_PLACE or func in _IN_PLACE:
            self.seen += 1
            inplace = func in _IN_PLACE or kwargs.get("inplace", len(args) > 1 and args[1])
            return (_RuleReLUInplace if inplace else _RuleReLU).apply(args[0], self.guided)
        name = _OTHERS.get(func)
        if name is not None:
            self.others[name] += 1
        return func(*args, **kwargs)

    def explanation(self) -> str | None:
        """Why the map is not (wholly) what the rule defines, or None when every activation was a ReLU."""
        others = ", ".join(f"{name} ×{n}" for name, n in self.others.most_common())
        if self.seen == 0 and not others:
            return (
                f"the {self.rule} ReLU rule saw no ReLU and no other activation it knows in the forward pass (a "
                "scripted or compiled model hides its operations, or its activations are unusual); the map is "
                "the plain gradient"
            )
        if self.seen == 0:
            return (
                f"the {self.rule} rule is defined for ReLU, and this model has none ({others} instead); those "
                "backpropagate plainly, so the map is the plain gradient"
            )
        if others:
            return (
                f"the {self.rule} rule applies to ReLUs only: it changed {self.seen} of them, while {others} "
                f"backpropagate plainly, so the map is only partly {self.rule}"
            )
        return None
