"""Which methods a model supports, and which layer the CAM family uses on it: decided from what the
methods declare they need, never by running them."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from camlight.explain._model import ModelAccess, NoLayer
from camlight.explain._state import as_input, untouched
from camlight.explain.engine import REGISTRY, Context, check_images, check_methods


def unsupported(
    model: nn.Module, image: torch.Tensor, methods: Sequence[str], layer: str | nn.Module | None = None
) -> dict[str, str]:
    """{method: why} for each method of `methods` that `model` cannot give, decided from what the
    methods declare they need, not by running them: a target layer for the CAM family (`layer=`,
    the model's split, or one `locate` finds on `image`), and for CAM a global-average-pooling
    head, checked on `image` (1,3,H,W) by one forward pass without gradients, shared by every
    method that asks. The model is left as it was. Errors that are not about support (a layer
    that is not a conv layer, say) raise."""
    methods = check_methods(methods)
    check_images(image)
    access = ModelAccess(model, layer)
    reasons = {}
    layered = [m for m in methods if REGISTRY[m].needs & {"layer", "layer_grad"}]
    with untouched(model):
        x = as_input(image[:1])
        if layered:
            try:
                access.prepare(x)
            except NoLayer as e:  # no layer to be had: every method that needs one is out
                reasons = {m: access.missing_layer(m, str(e)) for m in layered}
        conditions = [m for m in methods if m not in reasons and REGISTRY[m].requires is not None]
        if conditions:
            ctx = Context(access, x, 0, {"layer"})
            for m in conditions:
                why = REGISTRY[m].requires(ctx)
                if why is not None:
                    reasons[m] = why
    return reasons


def target_layer(model: nn.Module, image: torch.Tensor, layer: str | nn.Module | None = None) -> str:
    """Which layer the CAM family uses on `model` for images like `image` (1,3,H,W), in words:
    the split, the given `layer=`, or the one `locate` finds, with its layout. One forward pass
    without gradients; the model is left as it was.

    Raises:
        ValueError: no layer can be found, or the given one does not fit.
    """
    check_images(image)
    access = ModelAccess(model, layer)
    with untouched(model), torch.no_grad():
        x = as_input(image[:1])
        try:
            access.prepare(x)
        except NoLayer as e:
            raise ValueError(str(e)) from None
        access.forward(x, layer=True)  # learns the layout of a given layer
    return access.describe()


def supported(model: nn.Module, image: torch.Tensor, methods: Sequence[str], layer=None, who: str = "") -> list[str]:
    """The methods of `methods` that `model` supports (see `unsupported`); each other one (CAM on an
    FC head, say) is dropped with one warning saying why."""
    return drop_unsupported(methods, unsupported(model, image, methods, layer), who)


def drop_unsupported(methods: Sequence[str], reasons: dict[str, str], who: str = "") -> list[str]:
    """`methods` without those `unsupported` gave a reason for, each dropped with one warning."""
    for method, why in reasons.items():
        warnings.warn(f"{who}skipping {method}: {why}", stacklevel=3)
    return [m for m in check_methods(methods) if m not in reasons]
