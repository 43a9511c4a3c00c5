"""Leave the model as it was: mode, `requires_grad`, `.grad`, buffers and the global RNG."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def untouched(model: nn.Module):
    """Run the body with `model` in eval mode and grad enabled; restore everything afterwards.

    Restored also when the body raises: every module's training flag, every parameter's
    `requires_grad` and `.grad` (the same tensor object), every buffer's values, and the CPU and
    CUDA RNG states. Works inside `torch.no_grad()` and `torch.inference_mode()`.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for p, flag, grad in zip(params, flags, grads, strict=True):
                if p.requires_grad != flag:
                    p.requires_grad_(flag)
                p.grad = grad
            for b, saved in buffers:
                if not torch.equal(b, saved):
                    b.copy_(saved)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def as_input(images: torch.Tensor) -> torch.Tensor:
    """`images` detached, as a normal tensor (a copy only when it is an inference tensor), dtype kept."""
    with torch.inference_mode(False):
        return images.detach().clone() if images.is_inference() else images.detach()
