"""Pixel-space gradient methods: saliency, deconvnet, guided backprop, SmoothGrad, Integrated Gradients.

Raw maps are signed (B,3,H,W); normalised maps take the largest |value| over colour channels.
"""

from __future__ import annotations

import torch

from camlight.explain.engine import Context, register

_BASES = {"saliency": None, "guided_backprop": "guided", "deconvnet": "deconv"}


@register("saliency", "pixel", needs=("x_grad",))
def saliency(ctx: Context) -> torch.Tensor:
    """Simonyan et al. 2014: ∂y_c/∂x, y_c the pre-softmax score."""
    return ctx.plain().grad_x


@register("deconvnet", "pixel")
def deconvnet(ctx: Context) -> torch.Tensor:
    """Zeiler & Fergus 2014: through every rectifier only the positive gradient passes, whatever the forward input."""
    return ctx.rule_gradient("deconv")


@register("guided_backprop", "pixel")
def guided_backprop(ctx: Context) -> torch.Tensor:
    """Springenberg et al. 2015: through every rectifier f, max(0, f'(x)·g); for ReLU, the gradient
    passes where its input and the gradient are positive."""
    return ctx.rule_gradient("guided")


@register("smoothgrad", "pixel", n_samples=25, noise=0.15, base="saliency", seed=0)
def smoothgrad(ctx: Context, n_samples: int, noise: float, base: str, seed: int) -> torch.Tensor:
    """Smilkov et al. 2017: the mean of `base`'s gradient over `n_samples` noisy copies of the input.

    Noise is Gaussian with σ = `noise` × (max − min) of each image, drawn from a generator seeded
    with `seed` (the global RNG is not used).
    """
    if base not in _BASES:
        raise ValueError(f"smoothgrad base must be one of {', '.join(_BASES)}, got {base!r}")
    if n_samples < 1:
        raise ValueError(f"smoothgrad n_samples must be >= 1, got {n_samples}")
    x = ctx.x
    if ctx.predicts:
        ctx.logits()  # the targets are the clean image's prediction, not a noisy copy's
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1))[:, None, None, None]
    generator = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros_like(x)
    for _ in range(n_samples):
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        total += ctx.input_gradient(x + sigma * eps, _BASES[base])[0]
    return total / n_samples


@register("integrated_gradients", "pixel", steps=50, baseline=0.0, batch_size=None)
def integrated_gradients(ctx: Context, steps: int, baseline, batch_size: int | None) -> torch.Tensor:
    """Sundararajan et al. 2017: (x − x') ⊙ ∫₀¹ ∂y_c/∂x(x' + α(x − x')) dα, trapezoid rule over `steps` points.

    `baseline` x' is a number (in the model's normalised input space) or a tensor broadcastable
    to the images. `batch_size` bounds the images per forward pass (default: as many as the memory
    budget allows, at least one point of the path per pass).
    """
    if steps < 2:
        raise ValueError(f"integrated_gradients steps must be >= 2, got {steps}")
    x = ctx.x
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    if ctx.predicts:
        ctx.logits()  # the targets are the clean image's prediction, not a path point's
    alphas = torch.linspace(0, 1, steps, device=x.device, dtype=x.dtype)
    weights = torch.full((steps,), 1.0 / (steps - 1), device=x.device, dtype=x.dtype)
    weights[0] = weights[-1] = 0.5 / (steps - 1)
    total = torch.zeros_like(x)
    n = x.shape[0]
    per_pass = max(1, ctx.rows("integrated_gradients", batch_size, "backward") // n)
    for start in range(0, steps, per_pass):
        a = alphas[start : start + per_pass]
        w = weights[start : start + per_pass]
        points = (base[None] + a[:, None, None, None, None] * (x - base)[None]).flatten(0, 1)
        grads = ctx.input_gradient(points)[0]
        total += (grads.view(len(a), *x.shape) * w[:, None, None, None, None]).sum(0)
    return (x - base) * total


@register("input_x_gradient", "pixel", needs=("x_grad",))
def input_x_gradient(ctx: Context) -> torch.Tensor:
    """Shrikumar et al. 2016: x ⊙ ∂y_c/∂x (captum's InputXGradient), from the plain pass's gradient."""
    return ctx.x * ctx.plain().grad_x
