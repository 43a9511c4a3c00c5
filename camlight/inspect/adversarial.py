"""Fooling images: how little change makes the network say something else.

- `fgsm`: the fast gradient sign method (Goodfellow et al. 2015), one untargeted step of size ε
  along the sign of the loss gradient — the usual robustness number, accuracy against ε;
- `fool`: its iterative, targeted form (the basic iterative method of Kurakin et al. 2017): steps
  of α toward a chosen class, each projected back into the L∞ ball of radius `max_eps` around the
  image and into the valid pixel range, until the network predicts the target. The ε an image
  needed is the L∞ size of the perturbation at its first success.

ε is in pixel units of 255 (ε = 8 means every pixel moves by at most 8/255 of the range), on
the image before normalisation: `mean` and `std` turn it into each channel's normalised units.
The model is left as it was: eval mode during the attack, its mode restored after, and only the
input's gradient taken (no parameter's `.grad` is touched).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from camlight.inspect._state import evaluating


def _scale(mean, std, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-channel size of one pixel unit of 255 in normalised space, lowest, highest valid value)."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32, device=device)[:, None, None]
    return 1.0 / (255.0 * s), (0.0 - m) / s, (1.0 - m) / s


def _loss_grad(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂ cross-entropy(model(x), classes) / ∂x, logits), summed over the batch."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, classes, reduction="sum"), x)
    return grad, logits.detach()


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, mean, std) -> torch.Tensor:
    """One untargeted FGSM step of `eps` pixel units (of 255) from `images` (normalised), away
    from `labels`, clamped to the valid pixel range."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    unit, lo, hi = _scale(mean, std, images.device)
    if eps == 0:
        return images.detach().clone()
    with evaluating(model):
        grad, _ = _loss_grad(model, images, labels)
    return torch.maximum(torch.minimum(images.detach() + eps * unit * grad.sign(), hi), lo)


def fool(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor | int,
    mean,
    std,
    max_eps: float = 16.0,
    step: float = 0.25,
    steps: int | None = None,
) -> dict[str, torch.Tensor]:
    """Targeted iterative FGSM: push each image toward class `target` within an L∞ budget.

    Args:
        images: (B,3,H,W) normalised.
        target: the class to reach, an int or (B,).
        max_eps: the budget, pixel units of 255.
        step: α per step, pixel units of 255.
        steps: at most this many steps (default: enough to reach the budget, and as many again).

    Returns:
        {"adversarial": (B,3,H,W) the perturbed images (at the first success, else the last step),
        "success": (B,) bool, "eps_needed": (B,) the L∞ size in pixel units at the first success
        (NaN where the budget did not suffice), "steps": (B,) the steps taken}.
    """
    if max_eps <= 0 or step <= 0:
        raise ValueError(f"max_eps and step must be > 0, got {max_eps} and {step}")
    n = images.shape[0]
    target = torch.as_tensor(target, device=images.device).long().expand(n).clone()
    steps = steps or 2 * math.ceil(max_eps / step)
    unit, lo, hi = _scale(mean, std, images.device)
    x0 = images.detach()
    x = x0.clone()
    done = torch.zeros(n, dtype=torch.bool, device=images.device)
    taken = torch.zeros(n, dtype=torch.long, device=images.device)
    best = x0.clone()
    with evaluating(model):
        for k in range(steps + 1):
            grad, logits = _loss_grad(model, x, target)
            hit = (logits.argmax(1) == target) & ~done
            best[hit], taken[hit] = x[hit], k
            done |= hit
            if done.all() or k == steps:
                break
            moved = x - step * unit * grad.sign()  # descend the loss of the target class
            moved = torch.maximum(torch.minimum(moved, x0 + max_eps * unit), x0 - max_eps * unit)
            moved = torch.maximum(torch.minimum(moved, hi), lo)
            x = torch.where(done[:, None, None, None], x, moved)
    best[~done] = x[~done]
    taken[~done] = steps
    eps = ((best - x0) / unit).abs().flatten(1).amax(1)
    return {
        "adversarial": best,
        "success": done,
        "eps_needed": torch.where(done, eps, torch.full_like(eps, float("nan"))),
        "steps": taken,
    }
