"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019, "Layer-Wise Relevance
Propagation: An Overview"), by the gradient trick.

The target logit y_t is the relevance at the top; each Conv2d or Linear layer k → j hands its
output relevance R_k down to its inputs a_j by a rule:

- ε: R_j = Σ_k a_j w_jk / (z_k + ε·sign(z_k)) · R_k, z_k = Σ_j a_j w_jk + b_k;
- γ: the same with every parameter p (weights and biases) replaced by p + γ·p⁺, stabilised by
  1e-9·sign (favours positive contributions; in Montavon et al. 2019 the sum over j includes the
  bias as the weight of a constant input a_0 = 1, and their code applies ρ to it: zennit too);
- z⁺: R_j = Σ_k (a_j w_jk)⁺ / Σ_j' (a_j' w_j'k)⁺ · R_k, bias left out (the z⁺ rule of the deep
  Taylor decomposition, Montavon et al. 2017; LRP-α1β0 of Bach et al. without its bias term, so
  that it conserves relevance), the denominator + 1e-9. (a w)⁺ = a⁺w⁺ + a⁻w⁻, so signed inputs
  (normalised pixels) keep the rule's positivity; on non-negative inputs it is a·w⁺.
- composite (Montavon et al. 2019, "Which LRP rule for which layer?": γ for the lower layers, ε
  above, a rule of its own for the pixels): the L Conv2d/Linear modules of the model, numbered
  1…L in the order the forward pass first calls them: module 1 (the one that reads the pixels)
  z⁺, modules 2…⌈L/2⌉ γ, the others ε. The paper's pixel rule z^B needs the pixel range in the
  model's normalised input space, which the engine does not know: z⁺ stands in for it. Their
  top layers use LRP-0, which is our ε-rule at the default ε = 1e-9.

Batch-norm (an affine layer of its own, not merged into the convolution), average pooling (a
linear layer) and max pooling (winner takes all) follow the ε-rule with ε = 1e-9, whatever `rule`
is: captum's default rule for them, and the gradient up to that stabiliser. ReLU, dropout (eval),
flatten and identity pass relevance as the gradient does; so does a residual addition s = u + v,
which splits R_s in proportion to the summands, R_u = u/s·R_s (the gradient reaches u and v alike,
and R = activation ⊙ gradient).

Gradient trick (Montavon et al. 2019, section 10.2.2): within `relevance_rules`, each of those
layers returns its own output z through one autograd node whose backward hands g ⊙ c to z', the
layer under the rule's modified parameters, with c = z / stab(z') a constant (what
z'·c + (z − z'·c).detach() computes, in fewer passes): the forward values are the model's own, bit
for bit, while the backward pass carries ∂/∂a = ρ(W)ᵀ (g ⊙ z / stab(z')). The relevance at a
layer's output is z ⊙ g, so input ⊙ gradient is the rule's relevance, and at the pixels
x ⊙ ∂y_t/∂x is the map (B,3,H,W), signed; it sums to y_t on a network without biases for ε → 0
(up to the 1e-9 stabilisers). The γ-rule is ill-conditioned where a layer's output z < 0 still
carries relevance (before a residual addition, or a negative target logit on top): z' = z + γ·Σa w⁺
may then pass through 0.

Which layers LRP handles is declared (`refusal`): a model with any other leaf module type (LayerNorm,
attention, GELU, Tanh, a subclass of a supported type, a custom module) or a container with
parameters of its own is refused without running, so `unsupported(model, image, ["lrp"])` gives the
reason and `explain` raises it. The check reads module types only: functions a container's forward
calls (F.gelu, a product of activations) are beyond it.

Where captum 0.9's `LRP` differs (equal otherwise, `tests/test_explain_lrp.py`):
- its GammaRule changes weights but keeps the bias (equal to ours where biases are ≤ 0 or absent);
- its Alpha1_Beta0_Rule clamps the weights and keeps the input's sign (a w⁺): equal to our z⁺ on
  non-negative inputs with `set_bias_to_zero=True`;
- on a residual addition written `out += identity` (torchvision's ResNet) it hands the whole
  relevance to both summands, so relevance is not conserved; it splits in proportion only through
  its own `Addition_Module`;
- it hooks modules (and refuses a Conv/Linear used twice); no hook is registered here, and a module
  called several times follows its rule at every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from camlight.explain.engine import Context, register

RULES = ("epsilon", "gamma", "zplus", "composite")
STABILISER = 1e-9  # denominators of the γ and z⁺ rules (captum's PropagationRule.STABILITY_FACTOR)

# Leaf modules with a rule; those with the ε-rule at ε = 1e-9 (captum's default rule for them: for
# these linear, or winner-takes-all, maps the gradient up to the stabiliser); those that pass
# relevance as the gradient does. Exact types: a subclass may compute anything (timm's
# BatchNormAct2d applies an activation inside).
RULE_LAYERS = (nn.Conv2d, nn.Linear)
STABILISED_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
)
GRADIENT_LAYERS = (nn.ReLU, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.Identity)
HANDLED = "Conv2d, Linear, BatchNorm1d/2d, ReLU, max and average pooling, Dropout, Flatten, Identity"


def _not_a_layer(module: nn.Module) -> bool:
    """Modules a model may own that its forward pass does not run: losses and torchmetrics metrics."""
    return isinstance(module, nn.modules.loss._Loss) or type(module).__module__.startswith("torchmetrics")


def refusal(model: nn.Module) -> str | None:
    """Why LRP cannot explain `model`, in one line, or None: the first leaf module whose type has no
    rule, or the first container with parameters of its own (used by its forward, outside any layer)."""
    skipped: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(s + ".") for s in skipped):
            continue
        if _not_a_layer(module):
            skipped.append(name)
            continue
        where = name or "the model itself"
        children = any(True for _ in module.children())
        if children and any(True for _ in module.parameters(recurse=False)):
            return (
                f"lrp has no rule for the parameters {type(module).__name__} ({where}) uses in its own forward; "
                f"it handles {HANDLED}; use gradcam or integrated_gradients"
            )
        if not children and type(module) not in RULE_LAYERS + STABILISED_LAYERS + GRADIENT_LAYERS:
            return (
                f"lrp has no rule for {type(module).__name__} ({where}); it handles {HANDLED}; "
                "use gradcam or integrated_gradients"
            )
    return None


def _lrp_supported(ctx: Context) -> str | None:
    return refusal(ctx.model)


def _ratio(z: torch.Tensor, z_mod: torch.Tensor, eps: float) -> torch.Tensor:
    """z / (z' + eps·sign(z')), sign(0) = +1 (captum's and zennit's convention), eps > 0; no graph."""
    den = torch.copysign(z_mod.new_full((), eps), z_mod)  # ±eps with the sign of z' (+0 → +eps)
    return torch.div(z, den.add_(z_mod), out=den)


class _Rescale(torch.autograd.Function):
    """The gradient trick in one node: the values of `z`, and the incoming gradient times `c` passed
    to `z_mod` (as z' · c + (z − z'·c).detach() would, in fewer passes over the activations)."""

    @staticmethod
    def forward(ctx, z_mod: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(c)
        return z.clone()  # a new tensor: an inplace ReLU may follow

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (c,) = ctx.saved_tensors
        return grad * c, None, None


def _rule_of(index: int, total: int, rule: str) -> str:
    """The rule of the Conv2d/Linear module called `index`-th (0-based) of `total` in the model."""
    if rule != "composite":
        return rule
    if index == 0:
        return "zplus"
    return "gamma" if index < math.ceil(total / 2) else "epsilon"


def _affine(module: nn.Module, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(a, weight, bias)
    return F.linear(a, weight, bias)


def _modified(module: nn.Module, a: torch.Tensor, rule: str, gamma: float) -> torch.Tensor:
    """z' of the γ or z⁺ rule: the layer on `a` under modified parameters (constants, no graph to them)."""
    w = module.weight.detach()
    b = None if module.bias is None else module.bias.detach()
    if rule == "gamma":
        return _affine(module, a, w + gamma * w.clamp(min=0), None if b is None else b + gamma * b.clamp(min=0))
    return _affine(module, a.clamp(min=0), w.clamp(min=0), None) + _affine(module, a.clamp(max=0), w.clamp(max=0), None)


def _relevance_forward(module: nn.Module, original: Callable, rule: Callable[[], tuple[str, float]], gamma: float):
    def forward(a: torch.Tensor) -> torch.Tensor:
        which, epsilon = rule()
        if which == "epsilon":
            z = original(a)
            if epsilon == 0:  # z / z = 1: the gradient itself (and R = z·g = 0 where z = 0)
                return z
            return _Rescale.apply(z, z, _ratio(z.detach(), z.detach(), epsilon))
        with torch.no_grad():
            z = original(a)
        z_mod = _modified(module, a, which, gamma)
        return _Rescale.apply(z_mod, z, _ratio(z, z_mod.detach(), STABILISER))

    return forward


@contextmanager
def relevance_rules(model: nn.Module, rule: str = "epsilon", epsilon: float = 1e-9, gamma: float = 0.25) -> Iterator:
    """Within this context, every nn.Conv2d and nn.Linear module of `model` computes its own output
    with the gradient of the LRP `rule` (see the module docstring), so that input ⊙ ∂y/∂input is the
    relevance. Their `forward` is swapped on the instance and restored on exit, also on exceptions;
    no hook is registered and no parameter changed."""
    layers = [m for m in model.modules() if type(m) in RULE_LAYERS]
    order: dict[int, int] = {}  # id(module) → its rank among the modules called so far

    def rule_for(module: nn.Module) -> Callable[[], tuple[str, float]]:
        if type(module) in STABILISED_LAYERS:
            return lambda: ("epsilon", STABILISER)

        def which() -> tuple[str, float]:
            index = order.setdefault(id(module), len(order))
            return _rule_of(index, len(layers), rule), epsilon

        return which

    saved = [(m, m.__dict__.get("forward")) for m in model.modules() if type(m) in RULE_LAYERS + STABILISED_LAYERS]
    try:
        for m, own in saved:
            original = own if own is not None else type(m).forward.__get__(m)
            m.forward = _relevance_forward(m, original, rule_for(m), gamma)
        yield
    finally:
        for m, own in saved:
            if own is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = own


@register("lrp", "pixel", requires=_lrp_supported, rule="epsilon", epsilon=1e-9, gamma=0.25)
def lrp(ctx: Context, rule: str, epsilon: float, gamma: float) -> torch.Tensor:
    """Bach et al. 2015 / Montavon et al. 2019: layer-wise relevance propagation of the target logit
    down to the pixels, (B,3,H,W), signed, summing to about y_t. `rule`: "epsilon" (every Conv2d and
    Linear: R_j = Σ_k a_j w_jk/(z_k + ε·sign z_k) R_k), "gamma" (every one: parameters p + γp⁺),
    "zplus" (every one: (a_j w_jk)⁺, bias left out) or "composite" (the first z⁺, the lower half γ,
    the rest ε, in the order of the forward pass); `epsilon` ε (the ε layers), `gamma` γ.
    Batch-norm and pooling follow the ε-rule at ε = 1e-9 (captum's default rule for them); ReLU,
    dropout and residual additions pass relevance as the gradient does. Models with other layer
    types are refused (see `camlight.explain.lrp`)."""
    if rule not in RULES:
        raise ValueError(f"lrp rule must be one of {', '.join(RULES)}, got {rule!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon >= 0:
        raise ValueError(f"lrp epsilon must be a number >= 0, got {epsilon!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not gamma >= 0:
        raise ValueError(f"lrp gamma must be a number >= 0, got {gamma!r}")
    why = refusal(ctx.model)
    if why is not None:
        raise ValueError(why)
    x = ctx.x.detach().requires_grad_(True)
    with relevance_rules(ctx.model, rule, float(epsilon), float(gamma)):
        logits = ctx.model(x)
    targets = ctx.resolve_targets(logits.detach())  # the forward values are the model's own
    grad = torch.autograd.grad(ctx.score(logits, targets).sum(), x)[0]
    return x.detach() * grad
