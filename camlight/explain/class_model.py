"""Class-model visualization (Simonyan et al. 2014, §2): the image that maximises a class score.

arg max_I S_c(I) − λ‖I‖² for the unnormalised (pre-softmax) score, by gradient ascent from the
dataset mean (zero in normalised space, plus a little noise). The L2 term acts as a decay of the
image by `l2` per step, beside a step of `lr` along the score's gradient scaled to unit mean
magnitude; jitter and Gaussian blur are optional regularisers (Yosinski et al. 2015). The model
is left as it was (see `explain`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from camlight.explain._state import untouched
from camlight.explain.blur import gaussian_blur


def class_model(
    model: nn.Module,
    target: int,
    size: int,
    steps: int = 200,
    lr: float = 0.1,
    l2: float = 0.01,
    jitter: int = 2,
    blur_every: int = 10,
    snapshots: int = 8,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    """Optimise an input (1,3,size,size) in normalised space for class `target`.

    `on_step(step, score)` is called after every step (a progress bar, say).

    Returns:
        (final image (3,S,S), `snapshots` intermediate images, the target's score at each step).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    # The dataset mean (zero in normalised space) plus a little noise: at exactly zero every ReLU of
    # the first block may be off, and the gradient with it.
    x = 0.01 * torch.randn(1, 3, size, size, generator=generator).to(device)
    keep = {round(i * (steps - 1) / max(snapshots - 1, 1)) for i in range(snapshots)}
    shots, scores = [], []
    with untouched(model):
        for step in range(steps):
            dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else (0, 0)
            shifted = torch.roll(x, (dy, dx), dims=(2, 3)).requires_grad_(True)
            score = model(shifted)[0, target]
            (grad,) = torch.autograd.grad(score, shifted)
            grad = torch.roll(grad, (-dy, -dx), dims=(2, 3))
            # The L2 term as decay: x ← (1 − l2)·x + lr·ĝ, ĝ the score's gradient scaled to mean |ĝ| = 1,
            # so that one setting works whatever the scale of the model's scores.
            x = (1 - l2) * x + lr * grad / grad.abs().mean().clamp(min=1e-12)
            if blur_every and (step + 1) % blur_every == 0:
                x = gaussian_blur(x, 3, 0.5)
            scores.append(float(score.detach()))
            if on_step is not None:
                on_step(step, scores[-1])
            if step in keep:
                shots.append(x[0].detach().clone())
    return x[0].detach(), shots, scores
