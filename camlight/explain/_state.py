"""Leave the model as it was: mode, `requires_grad`, `.grad`, buffers and the global RNG."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def untouched(model: nn.Module):
    """Run the body with `model` in eval mode (every module's `training` flag False, as `eval()` sets
    it, without calling `train()` overrides) and grad enabled; restore everything afterwards.

    Restored also when the body raises: every module's training flag, every parameter's
    `requires_grad` and `.grad` (the same tensor object), every buffer's values, and the CPU and
    CUDA RNG states. Works inside `torch.no_grad()` and `torch.inference_mode()`.
    """
    modules, params, buffers = _walk(model)
    modes = [(m, m.training) for m in modules]
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in buffers]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    for m, training in modes:  # eval mode, as `model.eval()` sets it, without its walk
        if training:
            m.training = False
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            if m.training != training:
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


def _walk(model: nn.Module) -> tuple[list[nn.Module], list[torch.Tensor], list[torch.Tensor]]:
    """Every module, parameter and buffer of `model`, each once — as `modules()`, `parameters()`
    and `buffers()` give them, but told apart by identity: `nn.Module`'s own walk hashes every
    module, and a torchmetrics metric's hash reads its whole state (30 ms per call on a Classifier)."""
    modules, params, buffers, seen = [], [], [], set()
    stack = [model]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        modules.append(m)
        for group, out in ((m._parameters, params), (m._buffers, buffers)):
            for t in group.values():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
        stack.extend(c for c in reversed(m._modules.values()) if c is not None)
    return modules, params, buffers


def as_input(images: torch.Tensor) -> torch.Tensor:
    """`images` detached, as a normal tensor (a copy only when it is an inference tensor), dtype kept."""
    with torch.inference_mode(False):
        return images.detach().clone() if images.is_inference() else images.detach()
