"""Feature trunks of zoo models: a torchvision or timm classifier without its classifier, x → A (B,C,h,w).

- torchvision: the model runs as it is and stops at the last module call, outside its classifier
  (the `fc`, `classifier`, `head` or `heads` child), whose output is a spatial map (`layer4`,
  `features`, Swin's `permute`, ViT's `encoder`), found by one forward pass on the meta device.
  The classifier is replaced by `nn.Identity`, so no parameter goes unused (DDP needs that).
- timm: `forward_features(x)`, with the classifier reset (`reset_classifier(0)`).

Either way the trunk's output is read in its own layout (channels first, channels last, or the
patch tokens after the class token) and returned channels first; see `camlight.explain.locate`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from camlight.feature_maps import Layer, SpatialCalls, interpret

CLASSIFIER_CHILDREN = ("fc", "classifier", "head", "heads")
REFERENCE_SIZE = 224  # the input side the trunk's end is found at


def _at_reference_size(trace, size: int):
    """`trace(side)` at the reference size, where every family's maps are still spatial; at `size`
    for models that take one size only."""
    try:
        return trace(max(size, REFERENCE_SIZE))
    except (RuntimeError, ValueError, AssertionError):
        return trace(size)


class _Stop(Exception):
    """Raised by the trunk's hook once the feature map is in hand: the rest of the model is not run."""


def _classifier_child(model: nn.Module) -> str | None:
    children = dict(model.named_children())
    found = [name for name in CLASSIFIER_CHILDREN if name in children]
    return found[-1] if found else None


def trunk_layer(model: nn.Module, size: int) -> Layer:
    """The last module call outside the classifier whose output is a spatial map, for `size`² inputs,
    traced by one forward pass (on the meta device when the model lives there)."""
    classifier = _classifier_child(model)
    outside = {m: n for n, m in model.named_modules() if n and not (classifier and n.split(".")[0] == classifier)}
    device = next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad(), SpatialCalls(model, (size, size), outside) as trace:
            model.eval()(torch.zeros(1, 3, size, size, device=device))
    finally:
        for m, training in modes:  # a trunk built for training must come back in training mode
            m.training = training
    if not trace.calls:
        raise ValueError(
            f"{type(model).__name__} has no spatial feature map at {size}×{size} px; use a larger image_size"
        )
    last = trace.calls[-1][0]
    return replace(last, call=None if trace.counts[last.name] == 1 else last.call)


class TorchvisionTrunk(nn.Module):
    """A torchvision classifier up to its last spatial feature map; the classifier removed.

    Args:
        net: the model (its classifier child is replaced by `nn.Identity`).
        size: the input side the layer and its layout are traced at.
    """

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        layer = _at_reference_size(lambda side: trunk_layer(net, side), size)
        classifier = _classifier_child(net)
        if classifier is not None:
            setattr(net, classifier, nn.Identity())
        self.net = net
        self.layer_name, self.call = layer.name, layer.call or 0
        self.layout, self.prefix, self.grid = layer.layout, layer.prefix, layer.grid

    def _layer(self, size: tuple[int, int], output: torch.Tensor) -> Layer:
        layer = Layer(self.layer_name, self.net.get_submodule(self.layer_name), self.call)
        if self.layout != "tokens":
            return replace(layer, layout=self.layout)
        return layer.with_layout(output, size)  # the grid follows the input size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        found: list[torch.Tensor] = []
        calls = [0]

        def hook(module, inputs, output):
            calls[0] += 1
            if calls[0] - 1 == self.call:
                found.append(output)
                raise _Stop

        handle = self.net.get_submodule(self.layer_name).register_forward_hook(hook)
        try:
            self.net(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not found:
            raise RuntimeError(f"the trunk's layer {self.layer_name} did not run")
        return self._layer(tuple(x.shape[-2:]), found[0]).to_map(found[0])


class TimmTrunk(nn.Module):
    """A timm model's `forward_features`, channels first; the classifier reset."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        net.reset_classifier(0)
        self.net = net
        device = next(net.parameters()).device
        training = net.training

        def features(side: int):
            with torch.no_grad():
                return side, net.eval().forward_features(torch.zeros(1, 3, side, side, device=device))

        try:
            side, out = _at_reference_size(features, size)
        finally:
            net.train(training)
        found = interpret(tuple(out.shape), (side, side))
        if found is None:
            raise ValueError(f"timm model's features {tuple(out.shape)} are not a spatial map at {size}×{size} px")
        self.layout = found[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net.forward_features(x)
        layer = Layer("forward_features", self.net, layout=self.layout)
        if self.layout == "tokens":
            layer = layer.with_layout(out, tuple(x.shape[-2:]))
        return layer.to_map(out)
