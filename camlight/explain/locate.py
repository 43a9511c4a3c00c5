"""The target layer of any model: given by name (or module, or one call of a module), or found.

A target layer is one call of one module in the forward pass whose output is a spatial map, read
channels first, channels last or as a token grid (`camlight.feature_maps`).

A layer is named `"layer4"`, or `"_swish@-1"` for one call of a module that runs several times in
a forward pass (`@0` the first, `@-1` the last). `locate(model, x)` finds one when none is given:
it runs one forward and one backward pass of one image and takes, in the order module calls
finish, the *last* call whose output is a spatial map on which the top class's score depends
(a non-zero gradient on its spatial part), passing over `nn.Linear` outputs (inside attention and
MLP blocks they are projections: q, k and v side by side, or a widened hidden layer). For CNNs
that is the last conv stage (torchvision's `layer4`, `features`); for ViTs it is the input of the
last block's attention (`ln_1` / `norm1`), because the patch tokens after it reach the class token
no more, so gradients there are zero.
"""

from __future__ import annotations

import difflib
import re
import weakref

import torch
from torch import nn

from camlight.feature_maps import Ambiguous, Layer, SpatialCalls, interpret

__all__ = ["Ambiguous", "Layer", "SpatialCalls", "interpret", "locate", "resolve_layer"]

# -- naming a layer -------------------------------------------------------------------------

_SPEC = re.compile(r"^(?P<name>[\w.]*?)(?:@(?P<call>-?\d+))?$")


def resolve_layer(model: nn.Module, layer: str | nn.Module | Layer) -> Layer:
    """A `Layer` (layout still unknown) from a dotted name, "name@call", a submodule or a Layer."""
    if isinstance(layer, Layer):
        return layer
    names = {m: n for n, m in model.named_modules()}
    if isinstance(layer, nn.Module):
        if layer not in names:
            raise ValueError("layer is not a submodule of the model; pass one of its modules or its dotted name")
        return Layer(names[layer], layer)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a dotted module name or an nn.Module, got {type(layer).__name__}")
    match = _SPEC.match(layer)
    if match is None or not match["name"]:
        raise ValueError(f"layer {layer!r} is not a module name, or a name@call such as '_swish@-1'")
    name, call = match["name"], None if match["call"] is None else int(match["call"])
    try:
        return Layer(name, model.get_submodule(name), call)
    except AttributeError:
        close = difflib.get_close_matches(name, [n for n in names.values() if n], n=5, cutoff=0.4)
        hint = f"closest: {', '.join(close)}" if close else "see model.named_modules()"
        raise ValueError(f"layer {name!r} not found in {type(model).__name__}; {hint}") from None


# -- finding one ----------------------------------------------------------------------------

_FOUND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {(H, W): Layer}


def locate(model: nn.Module, x: torch.Tensor) -> Layer:
    """The target layer of `model` for inputs like `x` (1,3,H,W): the last module call whose output
    is a spatial map the top class's score depends on (see the module docstring). The model is
    left as it was. Remembered per model and input size.

    Raises:
        ValueError: no module output is a spatial map the prediction depends on.
    """
    size = tuple(x.shape[-2:])
    cached = _FOUND.get(model, {}).get(size)
    if cached is not None:
        return cached
    from camlight.explain._state import untouched

    with untouched(model), SpatialCalls(model, size, keep=True) as trace:
        inp = x[:1].detach().clone().requires_grad_(True)
        logits = model(inp)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError(f"the model must return logits (B,C); it returned {type(logits).__name__}")
        seen = [(layer, out) for layer, out in trace.calls if out.requires_grad]
        grads = torch.autograd.grad(logits[0].max(), [out for _, out in seen], allow_unused=True) if seen else []
    for (layer, _), grad in reversed(list(zip(seen, grads, strict=True))):
        if grad is not None and layer.to_map(grad).abs().amax() > 0:
            found = trace.named(layer)
            _FOUND.setdefault(model, {})[size] = found
            return found
    raise ValueError(
        f"no module of {type(model).__name__} outputs a spatial map that its prediction depends on "
        f"(for a {size[0]}×{size[1]} input; an untrained head with zero weights depends on nothing); "
        "pass layer= (a dotted module name, or name@call)"
    )
