"""Class-model visualization (Simonyan et al. 2014, §2): the image that maximises a class score —
or, with a neuron target, a unit of an intermediate layer (its channel's sum or max over space,
or one spatial neuron: "what image does this neuron want").

arg max_I S_c(I) − λ‖I‖² for the unnormalised (pre-softmax) score, by gradient ascent from the
dataset mean (zero in normalised space, plus a little noise). The L2 term acts as a decay of the
image by `l2` per step, beside a step of `lr` along the score's gradient scaled to unit mean
magnitude; jitter and Gaussian blur are optional regularisers (Yosinski et al. 2015). The model
is left as it was (see `explain`).

The start: "mean" (the dataset mean plus a little noise, the default), "zeros" (exactly the
dataset mean), "noise" (N(0, 1) in normalised space: random pixels at the data's spread), or an
image (3,S,S) normalised as the model expects — ascent from a real photo is the DeepDream case.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from camlight.explain._state import untouched
from camlight.explain.blur import gaussian_blur
from camlight.explain.neuron import Neuron, NeuronModel, is_neuron_spec, parse_neuron

STARTS = ("mean", "zeros", "noise")


def class_model(
    model: nn.Module,
    target: int | str | Neuron,
    size: int,
    steps: int = 200,
    lr: float = 0.1,
    l2: float = 0.01,
    jitter: int = 2,
    blur_every: int = 10,
    snapshots: int = 8,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    start: str | torch.Tensor = "mean",
) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    """Optimise an input (1,3,size,size) in normalised space for `target`: a class index, or a
    neuron (a `Neuron` or its text, "layer4:12", "layer4:12:max", "layer4:12:3:5").

    `on_step(step, score)` is called after every step (a progress bar, say).

    Returns:
        (final image (3,S,S), `snapshots` intermediate images, the target's score at each step).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = next(model.parameters()).device
    if is_neuron_spec(target):
        model = NeuronModel(model, target if isinstance(target, Neuron) else parse_neuron(target))
        target = 0
    generator = torch.Generator().manual_seed(seed)
    x = _start(start, size, generator).to(device)
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


def _start(start, size: int, generator: torch.Generator) -> torch.Tensor:
    """The first image (1,3,S,S) in normalised space."""
    if isinstance(start, torch.Tensor):
        if tuple(start.shape[-3:]) != (3, size, size):
            raise ValueError(f"the start image must be (3,{size},{size}), got {tuple(start.shape)}")
        return start.detach().float().reshape(1, 3, size, size).clone()
    if start == "mean":
        # A little noise: at exactly the mean every ReLU of the first block may be off, and the
        # gradient with it.
        return 0.01 * torch.randn(1, 3, size, size, generator=generator)
    if start == "zeros":
        return torch.zeros(1, 3, size, size)
    if start == "noise":
        return torch.randn(1, 3, size, size, generator=generator)
    raise ValueError(f"unknown start {start!r}; choose {', '.join(STARTS)} or give an image")
