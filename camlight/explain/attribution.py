"""Reference-based attributions: DeepLIFT (Rescale rule) and GradientSHAP.

Both explain y_t(x) − y_t(x') against a reference x' (in the model's normalised input space) and
return signed raw maps (B,3,H,W) whose sum over pixels and channels approximates that difference:
exactly for DeepLIFT on ReLU / max-pool networks, in expectation for GradientSHAP.
"""

from __future__ import annotations

import warnings

import torch

from camlight.explain._rescale import RescaleRule
from camlight.explain.engine import Context, register


def _baseline(value, x: torch.Tensor, method: str) -> torch.Tensor:
    """`value` (a number or a tensor broadcastable to the images) as a (B,3,H,W) tensor like `x`."""
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    try:
        return t.expand_as(x)
    except RuntimeError:
        raise ValueError(
            f"{method} baseline of shape {tuple(t.shape)} does not broadcast to the images {tuple(x.shape)}"
        ) from None


def _rescale_gradient(ctx: Context, x: torch.Tensor, base: torch.Tensor, part: slice, eps: float):
    """DeepLIFT's multipliers ∂y_t/∂x under the Rescale rule for the images `x` = ctx.x[part]
    against `base`: one forward and one backward of the 2n rows [x; base], both halves scored (as
    captum). Targets not yet resolved come from this pass (the whole batch in one part)."""
    z = torch.cat([x, base]).detach().requires_grad_(True)
    with RescaleRule(z.shape[0], eps) as mode:
        logits = ctx.model(z)
    targets = ctx.resolve_targets(logits.detach())[part]
    score = ctx.score(logits, targets.repeat(2)).sum()
    grad = torch.autograd.grad(score, z)[0][: x.shape[0]]
    return grad, mode


@register("deeplift", "pixel", baseline=0.0, eps=1e-10, batch_size=None)
def deeplift(ctx: Context, baseline, eps: float, batch_size: int | None) -> torch.Tensor:
    """Shrikumar et al. 2017, DeepLIFT with the Rescale rule: (x − x') ⊙ m, m the multipliers.

    As captum's `DeepLift` computes it (Ancona et al. 2018's gradient form): x and x' run as one
    batch; through every elementwise nonlinearity f (ReLU and its relatives, sigmoid, tanh; the list
    in `camlight.explain._rescale`) the gradient is multiplied by (f(z) − f(z'))/(z − z') instead of
    f'(z) (the local derivative where |z − z'| < `eps`), through max-pooling by captum's max-pool
    rule; products of activations, softmax and normalisations keep their chain rule, as in captum.
    Unlike captum, the rule reaches every nonlinearity
    call, module or function (`F.relu` in a forward), and a module called several times (the ReLU
    of torchvision's ResNet blocks, on which captum raises); overlapping max-pool windows that
    share an argmax add their contributions (captum keeps one). Summation-to-delta:
    Σ map = y_t(x) − y_t(x') on networks of affine layers, these nonlinearities and max-pooling.

    `baseline` x' is a number (in the model's normalised input space; 0 is the data's mean) or a
    tensor broadcastable to the images. `batch_size` bounds the rows per pass (two per image;
    default: as many as the memory budget allows).
    """
    x = ctx.x
    base = _baseline(baseline, x, "deeplift")
    if eps < 0:
        raise ValueError(f"deeplift eps must be >= 0, got {eps}")
    per_pass = max(1, ctx.rows("deeplift", batch_size, "backward") // 2)
    if ctx.predicts or (ctx.targets is None and per_pass < x.shape[0]):
        ctx.logits()  # the targets are the clean image's prediction, from a forward of x alone
    grads, skipped = [], set()
    for start in range(0, x.shape[0], per_pass):
        part = slice(start, start + per_pass)
        grad, mode = _rescale_gradient(ctx, x[part], base[part], part, eps)
        grads.append(grad)
        skipped |= set(mode.skipped)
    if skipped:
        warnings.warn(
            f"deeplift left {', '.join(sorted(skipped))} with its plain gradient where its input did not "
            "hold the batch's rows first: Σ map may differ from y(x) − y(x')",
            stacklevel=4,
        )
    elif isinstance(ctx.model, torch.jit.ScriptModule):
        warnings.warn("deeplift cannot see inside a scripted model: the map is (x − x') ⊙ ∂y/∂x", stacklevel=4)
    return (x - base) * torch.cat(grads)


def _references(baselines, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The reference set (N,3,H,W): `baselines` as given (a number, an image (3,H,W) or anything
    broadcastable to it, or N images), or for None the zero image and one standard-normal image
    drawn from `generator`."""
    shape = x.shape[1:]
    if baselines is None:
        noise = torch.randn((1, *shape), generator=generator, device=x.device, dtype=x.dtype)
        return torch.cat([torch.zeros_like(noise), noise])
    t = torch.as_tensor(baselines, dtype=x.dtype, device=x.device)
    if t.dim() <= len(shape):
        t = t[None]
    try:
        return t.expand(t.shape[0], *shape)
    except RuntimeError:
        raise ValueError(
            f"gradient_shap baselines of shape {tuple(t.shape)} do not broadcast to (N, {', '.join(map(str, shape))})"
        ) from None


def _draws(n_refs: int, n_samples: int, x: torch.Tensor, generator: torch.Generator):
    """(reference index, α), each (n_samples, B): which reference and which point of the segment
    from it to the image each sample takes; drawn before any noise."""
    shape = (n_samples, x.shape[0])
    index = torch.randint(n_refs, shape, generator=generator, device=x.device)
    alpha = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
    return index, alpha


def _noise(x: torch.Tensor, stdevs: float, generator: torch.Generator) -> torch.Tensor:
    """One sample's Gaussian noise (B,3,H,W) of standard deviation `stdevs`."""
    return stdevs * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@register("gradient_shap", "pixel", n_samples=5, stdevs=0.0, baselines=None, seed=0, batch_size=None)
def gradient_shap(ctx: Context, n_samples: int, stdevs: float, baselines, seed: int, batch_size: int | None):
    """Lundberg & Lee 2017 (expected gradients), as captum's `GradientShap` computes it: the mean over
    `n_samples` draws of ∂y_t/∂x(α x̃ + (1 − α) x') ⊙ (x̃ − x'), where each draw takes a reference x'
    uniformly from the set `baselines`, α ~ U(0, 1), and x̃ = x + ε with ε ~ N(0, `stdevs`²)
    (absolute, in the normalised input space, as captum's `stdevs`; captum multiplies by the noisy
    x̃ − x', and so do we). Its expectation sums to E[y_t(x̃)] − E[y_t(x')].

    `baselines`: a number, an image broadcastable to (3,H,W), or N images (N,3,H,W), shared by all
    images; None (default): the zero image (the data's mean in normalised space) and one
    standard-normal image (noise of the data's spread), each draw picks one of the two.
    Every draw comes from a generator seeded with `seed` (never the global RNG), in a fixed
    order: the default noise reference, the indices and α of all samples, then each sample's noise.
    All samples of all images are batched, `batch_size` rows per pass (default: as many as the
    memory budget allows, at least one sample of every image). captum's default `n_samples` is 5.
    """
    if n_samples < 1:
        raise ValueError(f"gradient_shap n_samples must be >= 1, got {n_samples}")
    if stdevs < 0:
        raise ValueError(f"gradient_shap stdevs must be >= 0, got {stdevs}")
    x = ctx.x
    if ctx.predicts:
        ctx.logits()  # the targets are the clean image's prediction, not a sample's
    generator = torch.Generator(device=x.device).manual_seed(seed)
    refs = _references(baselines, x, generator)
    index, alpha = _draws(refs.shape[0], n_samples, x, generator)
    per_pass = max(1, ctx.rows("gradient_shap", batch_size, "backward") // x.shape[0])
    total = torch.zeros_like(x)
    for start in range(0, n_samples, per_pass):
        k = min(per_pass, n_samples - start)
        inputs = x.expand(k, *x.shape)
        if stdevs > 0:
            inputs = inputs + torch.stack([_noise(x, stdevs, generator) for _ in range(k)])
        base = refs[index[start : start + k]]
        a = alpha[start : start + k, :, None, None, None]
        points = a * inputs + (1 - a) * base
        grads = ctx.input_gradient(points.flatten(0, 1))[0].view(k, *x.shape)
        total += (grads * (inputs - base)).sum(0)
    return total / n_samples
