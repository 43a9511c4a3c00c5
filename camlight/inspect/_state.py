"""Looking leaves the model as it was: eval mode for the look, every module's mode restored after."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluating(model: nn.Module):
    """Run the body with `model` in eval mode; every module's training flag is restored after,
    also when the body raises. (Gradients are taken with `torch.autograd.grad` with respect to
    inputs or activations only, so no parameter's `.grad` is touched.)"""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
