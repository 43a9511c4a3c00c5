"""FullGrad (Srinivas & Fleuret 2019): the input-gradient and every layer's bias-gradients.

For a network of conv, batch-norm, linear, ReLU and pooling layers, the output is exactly
f(x) = Σ ∇ₓf ⊙ x + Σ_layers Σ ∇_{z_l}f ⊙ b_l (the full-gradient decomposition, b_l the bias each
layer adds to its output z_l). The saliency map keeps the spatial terms: ψ(∇ₓf ⊙ x) plus, for every
conv and batch-norm layer, ψ(∇_{z_l}f ⊙ b_l) summed over channels, ψ = |·| → min-max → bilinear
upsample to the input's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from camlight.explain.engine import Context, register

CONVENTIONS = ("paper", "grad-cam")


def bias_layers(model: nn.Module) -> list[tuple[nn.Module, torch.Tensor]]:
    """(module, the bias it adds to each output channel) for every Conv2d with a bias and every
    BatchNorm2d: b − μ·γ/√(σ² + ε) in evaluation mode (the authors' `tensor_extractor`)."""
    out = []
    for m in model.modules():
        if type(m) is nn.Conv2d and m.bias is not None:
            out.append((m, m.bias.detach()))
        elif type(m) is nn.BatchNorm2d and m.track_running_stats and m.running_mean is not None:
            weight = m.weight.detach() if m.weight is not None else torch.ones_like(m.running_mean)
            bias = m.bias.detach() if m.bias is not None else torch.zeros_like(m.running_mean)
            out.append((m, bias - m.running_mean * weight / torch.sqrt(m.running_var + m.eps)))
    return out


def _scaled(maps: torch.Tensor, per_channel: bool, size: tuple[int, int], corners: bool) -> torch.Tensor:
    """Σ_c ψ(maps)_c, (B,H,W): |maps| (B,C,h,w) min-max normalised per image (or per image and
    channel), summed over channels, upsampled. (Upsampling is linear, so summing first is the sum of
    the upsampled channels, at 1/C of the cost.)"""
    maps = maps.abs()
    flat = maps.flatten(2) if per_channel else maps.flatten(1)[:, None]
    lo = flat.amin(-1)[..., None]
    flat = flat - lo
    flat = flat / (flat.amax(-1)[..., None] + (1e-7 if per_channel else 1e-6))
    summed = flat.view_as(maps).sum(1)
    if tuple(summed.shape[-2:]) == tuple(size):
        return summed
    return F.interpolate(summed[:, None], size=size, mode="bilinear", align_corners=corners)[:, 0]


@register("fullgrad", "signed", convention="paper", aug_smooth=False)
def fullgrad(ctx: Context, convention: str) -> torch.Tensor:
    """Srinivas & Fleuret 2019: ψ(∇ₓy_c ⊙ x) summed over colour channels + Σ_l Σ_c ψ(∇_{z_l}y_c ⊙ b_l),
    over every Conv2d with a bias and every BatchNorm2d (whatever target layer is set); (B,H,W) ≥ 0.

    `convention="paper"` follows the authors' code: ψ normalises each image's whole tensor (all
    channels together, ε = 1e-6) and upsamples with align_corners=True. `"grad-cam"` follows
    pytorch-grad-cam: each channel normalised on its own (ε = 1e-7), half-pixel upsampling — it
    lets a channel of noise weigh as much as the channel that carries the decision.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"fullgrad convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    layers = bias_layers(ctx.model)
    grads: dict[int, torch.Tensor] = {}  # layer index → ∂y/∂z_l, z_l as the layer returned it

    def keep(index):
        def hook(module, inputs, output):
            if index in calls:
                raise ValueError(
                    f"fullgrad needs each Conv2d and BatchNorm2d to run once per forward pass; "
                    f"{type(module).__name__} runs more often"
                )
            calls.add(index)
            if output.requires_grad:  # a tensor hook sees z_l before any in-place op after the layer
                output.register_hook(lambda g: grads.__setitem__(index, g))

        return hook

    calls: set[int] = set()
    handles = [m.register_forward_hook(keep(i)) for i, (m, _) in enumerate(layers)]
    x = ctx.x.detach().requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = ctx.model(x)
    finally:
        for h in handles:
            h.remove()
    targets = ctx.resolve_targets(logits.detach())
    (grad_x,) = torch.autograd.grad(ctx.score(logits, targets).sum(), x)
    per_channel, corners = convention == "grad-cam", convention == "paper"
    size = ctx.size
    total = _scaled(grad_x * x.detach(), per_channel, size, corners)
    for index, (_, bias) in enumerate(layers):
        grad = grads.get(index)  # none: the layer does not reach the target
        if grad is not None and grad.dim() == 4:
            total += _scaled(grad * bias[None, :, None, None], per_channel, size, corners)
    return total
