"""The first convolution's filters as small RGB images (Krizhevsky et al. 2012, fig. 3; Zeiler &
Fergus 2014, fig. 2) and a layer's activation maps for an image, channels sorted by their mean."""

from __future__ import annotations

import torch
from torch import nn

from camlight.inspect._state import evaluating


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """(dotted name, module) of the model's first `nn.Conv2d` in registration order — the one
    that sees the image in every torchvision, timm and camlight CNN.

    Raises:
        ValueError: the model has no 2-D convolution (e.g. a ViT's patch embedding is one; an MLP
            has none).
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError("the model has no nn.Conv2d: there are no image filters to show")


def filter_images(weight: torch.Tensor, scale: str = "all") -> torch.Tensor:
    """(K,3,kh,kw) images in [0,1] of K filters, zero weight at 0.5 grey.

    Args:
        weight: (K,C,kh,kw) convolution weight. With C = 3 each filter is drawn in colour (input
            channel c as colour c; the input's normalisation is not undone, as in the papers'
            figures); otherwise as grey, the mean over its input channels.
        scale: "all" divides every filter by the largest |weight| of the set, so strong and weak
            filters can be compared; "each" divides each filter by its own largest |weight|, so
            every filter's pattern is visible.
    """
    if weight.dim() != 4:
        raise ValueError(f"expected a (K,C,kh,kw) convolution weight, got shape {tuple(weight.shape)}")
    if scale not in ("all", "each"):
        raise ValueError(f"unknown scale {scale!r}; choose 'all' or 'each'")
    w = weight.detach().float().cpu()
    if w.shape[1] != 3:
        w = w.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    if scale == "all":
        peak = w.abs().amax().clamp(min=1e-12)
    else:
        peak = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12)
    return (0.5 + 0.5 * w / peak).clamp(0, 1)


def layer_output(model: nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of module `layer` (a dotted name) for `images`, in eval mode, without gradients.

    The model is left as it was: its training flag and hooks are restored, also when the forward
    raises.

    Raises:
        ValueError: no module of that name (the message lists a few that exist), or its output is
            not a tensor.
    """
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        hint = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(f"layer {layer!r} is not a module of this model; some that are: {hint}") from None
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with evaluating(model), torch.no_grad():
            model(images)
    finally:
        handle.remove()
    if not seen or not isinstance(seen[-1], torch.Tensor):
        raise ValueError(f"layer {layer!r} did not return a tensor in the forward pass")
    return seen[-1].detach()  # the last call, if the module is called more than once


def sorted_channels(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(channel indices, maps) of one image's activations (C,h,w), strongest mean first; the maps
    scaled together to [0,1] (by the largest activation of any channel, negatives clipped), so a
    weak channel looks weak."""
    if activations.dim() != 3:
        raise ValueError(f"expected one image's (C,h,w) activations, got shape {tuple(activations.shape)}")
    a = activations.detach().float().cpu()
    order = a.mean((1, 2)).argsort(descending=True, stable=True)
    peak = a.clamp(min=0).amax().clamp(min=1e-12)
    return order, (a[order].clamp(min=0) / peak)
