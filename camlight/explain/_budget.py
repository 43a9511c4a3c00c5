"""The memory budget of perturbation methods: what one forward pass of one image holds, measured."""

from __future__ import annotations

import weakref

import torch
from torch import nn

DEFAULT_MEMORY = 2**30  # bytes of activations one evaluation of a perturbation method may hold

_FORWARD_BYTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {(shape, dtype): bytes}


def forward_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of activations one forward pass of one image like `x` materialises: the sum of every
    leaf module's output, measured once per model, input shape and dtype (an upper bound of what
    a pass without autograd holds at once, and about what one with autograd keeps for backward)."""
    key = (tuple(x.shape[1:]), x.dtype)
    known = _FORWARD_BYTES.setdefault(model, {})
    if key not in known:
        total = [x[:1].numel() * x.element_size()]

        def count(module, inputs, output):
            if isinstance(output, torch.Tensor):
                total[0] += output.numel() * output.element_size()

        leaves = [m for m in model.modules() if not any(True for _ in m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        try:
            with torch.no_grad():
                model(x[:1])
        finally:
            for h in handles:
                h.remove()
        known[key] = total[0]
    return known[key]


def batch_limit(method: str, batch_size: int) -> int:
    """A method's `batch_size` option, checked (see `Context.rows` for how it combines with the
    memory budget)."""
    if batch_size < 1:
        raise ValueError(f"{method} batch_size must be >= 1, got {batch_size}")
    return batch_size
