"""What a layer still knows about the image: feature inversion (Mahendran & Vedaldi 2015) and, from
the same code, style transfer from Gram matrices (Gatys et al. 2016).

Inversion finds an image x whose features at a layer match those of the original x0:

    min_x ‖Φ(x) − Φ(x0)‖² / ‖Φ(x0)‖² + λ_TV · TV(x) + λ_2 · ‖x‖² / N

(TV: the mean squared difference of neighbouring pixels, the paper's β = 2; images in the
model's normalised space, N pixels). Started from small noise and optimised with Adam, so a row
of layers from shallow to deep shows what each keeps: shallow layers give the image back, deep
ones keep what the class needs.

Style: content features at one layer, Gram matrices G = F Fᵀ / (C·h·w) at several (their
channels' co-activations, blind to where things are), the same optimiser, started from the
content image.

The model is left as it was: eval mode during, its mode restored after, only the image's
gradient taken, hooks removed — also on errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from camlight.inspect._state import evaluating


class _Stop(Exception):
    pass


def layer_features(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """{layer: output} for `x`, with gradients; the forward pass stops after the last layer asked
    for. ValueError for a name that is not a module or not called."""
    modules = {}
    for name in layers:
        try:
            modules[name] = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"layer {name!r} is not a module of this model") from None
    seen: dict[str, torch.Tensor] = {}
    wanted = set(layers)

    def hook(name):
        def keep(_m, _i, out):
            seen[name] = out
            if wanted <= seen.keys():
                raise _Stop

        return keep

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = wanted - seen.keys()
    if missing:
        raise ValueError(f"layers {sorted(missing)} are not called in the forward pass")
    return seen


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (β = 2), over the batch."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return dy + dx


def gram(f: torch.Tensor) -> torch.Tensor:
    """(B,C,C) Gram matrices of features (B,C,h,w), divided by C·h·w."""
    b, c, h, w = f.shape
    flat = f.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def invert(
    model: nn.Module,
    image: torch.Tensor,
    layer: str,
    steps: int = 300,
    lr: float = 0.05,
    tv: float = 0.5,
    l2: float = 1e-3,
    seed: int = 0,
) -> tuple[torch.Tensor, list[float]]:
    """Reconstruct `image` (3,H,W), normalised, from its features at `layer`.

    Returns:
        (the reconstruction (3,H,W), the relative feature error ‖Φ(x) − Φ(x0)‖² / ‖Φ(x0)‖² per step).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x0 = image.detach()[None]
    with evaluating(model):
        with torch.no_grad():
            target = layer_features(model, x0, [layer])[layer].detach()
        scale = target.pow(2).sum().clamp(min=1e-12)
        g = torch.Generator().manual_seed(seed)
        x = (0.1 * torch.randn(x0.shape, generator=g)).to(x0.device).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        errors = []
        for _ in range(steps):
            with torch.enable_grad():
                f = layer_features(model, x, [layer])[layer]
                error = (f - target).pow(2).sum() / scale
                loss = error + tv * total_variation(x) + l2 * x.pow(2).mean()
                (grad,) = torch.autograd.grad(loss, x)
            x.grad = grad
            opt.step()
            errors.append(float(error.detach()))
    return x.detach()[0], errors


def stylize(
    model: nn.Module,
    content: torch.Tensor,
    style: torch.Tensor,
    content_layer: str,
    style_layers: Sequence[str],
    steps: int = 300,
    lr: float = 0.05,
    style_weight: float = 1e3,
    tv: float = 0.1,
) -> tuple[torch.Tensor, list[float]]:
    """Gatys et al.'s style transfer with the model's own layers: an image with the content
    image's features at `content_layer` and the style image's Gram matrices at `style_layers`,
    started from the content image. Returns (the image (3,H,W), the total loss per step)."""
    layers = list(dict.fromkeys([content_layer, *style_layers]))
    c0, s0 = content.detach()[None], style.detach()[None]
    with evaluating(model):
        with torch.no_grad():
            fc = layer_features(model, c0, layers)[content_layer].detach()
            fs = layer_features(model, s0, layers)
            grams = {name: gram(fs[name]).detach() for name in style_layers}
        scale = fc.pow(2).sum().clamp(min=1e-12)
        x = c0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        losses = []
        for _ in range(steps):
            with torch.enable_grad():
                f = layer_features(model, x, layers)
                loss = (f[content_layer] - fc).pow(2).sum() / scale
                loss = loss + style_weight * sum((gram(f[n]) - grams[n]).pow(2).sum() for n in style_layers)
                loss = loss + tv * total_variation(x)
                (grad,) = torch.autograd.grad(loss, x)
            x.grad = grad
            opt.step()
            losses.append(float(loss.detach()))
    return x.detach()[0], losses
