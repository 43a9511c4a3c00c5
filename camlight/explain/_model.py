"""Access to a model's target layer: through a `features`/`head` split, or through a forward hook.

`ModelAccess.forward` runs one forward pass and returns the logits and, when asked, the layer's
activations A. Where gradients with respect to A are wanted but none with respect to the input,
everything before the layer runs without autograd and A becomes a fresh leaf: the backward pass
then only crosses the head.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn


def _has_split(model: nn.Module) -> bool:
    """The camlight model split: `features(x)`, a `head` module and a `target_layer` name.

    All three are required: some models (torchvision's Swin) have `features` and `head` with other
    layers between them, and must be explained through `layer=` instead.
    """
    return (
        callable(getattr(model, "features", None))
        and isinstance(getattr(model, "head", None), nn.Module)
        and isinstance(getattr(model, "target_layer", None), str)
    )


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """(dotted name, module) of `layer`, given by name or as a submodule of `model`."""
    names = {m: n for n, m in model.named_modules()}
    if isinstance(layer, nn.Module):
        if layer not in names:
            raise ValueError("layer is not a submodule of the model; pass one of its modules or its dotted name")
        return names[layer], layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a dotted module name or an nn.Module, got {type(layer).__name__}")
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        close = difflib.get_close_matches(layer, [n for n in names.values() if n], n=5, cutoff=0.4)
        hint = f"closest: {', '.join(close)}" if close else "see model.named_modules()"
        raise ValueError(f"layer {layer!r} not found in {type(model).__name__}; {hint}") from None


class ModelAccess:
    """How the engine reaches logits and the activations A of the target layer.

    Args:
        model: a camlight `Classifier` (or any module with `features(x)`, a `head` module and a
            `target_layer` name), or any classifier returning logits (B,C).
        layer: None to use the split; otherwise the target layer (dotted name or module), hooked.
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module | None = None):
        self.model = model
        self.split = layer is None and _has_split(model)
        self.layer_name, self.layer = (None, None) if layer is None else resolve_layer(model, layer)
        if layer is None and not self.split:
            self.layer_name = getattr(model, "target_layer", None)
            if isinstance(self.layer_name, str):
                self.layer = resolve_layer(model, self.layer_name)[1]

    @property
    def has_layer(self) -> bool:
        return self.split or self.layer is not None

    def missing_layer(self, method: str) -> str:
        """Why `method` cannot run without a target layer, and what to do."""
        return (
            f"{method} needs a target layer: pass layer= (a dotted module name such as 'layer4', "
            f"or the module), or use a camlight Classifier (features(), head, target_layer)"
        )

    def head_module(self) -> nn.Module | None:
        """The module that maps A to logits, where the model exposes one."""
        return self.model.head if self.split else None

    def forward(self, x: torch.Tensor, layer: bool = False, layer_grad: bool = False):
        """One forward pass.

        Args:
            x: (B,3,H,W) input; when it requires grad, the whole pass is recorded.
            layer: also return A (B,K,h,w), the target layer's output.
            layer_grad: A must be differentiable; without input gradients the part before the
                layer runs without autograd and A is a leaf.

        Returns:
            (logits (B,C), A or None)
        """
        if not layer:
            return self.model(x), None
        if self.split:
            if layer_grad and not x.requires_grad:
                with torch.no_grad():
                    a = self.model.features(x)
                a = a.detach().requires_grad_(True)
            else:
                a = self.model.features(x)
            # The head gets a copy: an in-place op in it must not change the A we return.
            return self.model.head(a.clone()), a
        return self._hooked(x, layer_grad and not x.requires_grad)

    def _hooked(self, x: torch.Tensor, leaf: bool):
        seen: list[torch.Tensor] = []
        grad_mode = torch.is_grad_enabled()

        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(
                    f"layer {self.layer_name!r} must output a (B,K,h,w) tensor, got {got}; choose a conv layer or block"
                )
            if seen:
                raise ValueError(
                    f"layer {self.layer_name!r} ran twice in one forward pass; choose a layer that runs once"
                )
            if leaf:
                torch.set_grad_enabled(True)
                output = output.detach().requires_grad_(True)
            seen.append(output)
            # Later in-place ops (an inplace ReLU after the layer) must not change the saved A.
            return output.clone()

        handle = self.layer.register_forward_hook(hook)
        try:
            if leaf:
                with torch.no_grad():
                    logits = self.model(x)
            else:
                logits = self.model(x)
        finally:
            handle.remove()
            torch.set_grad_enabled(grad_mode)  # the hook may have switched it on mid-forward
        if not seen:
            raise ValueError(f"layer {self.layer_name!r} did not run in the forward pass; choose a layer on the path")
        return logits, seen[0]

    def head_fn(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function mapping a batch of (modified) activations of image `x` (1,3,H,W) to logits.

        With the split it is the head alone. With a hook, every call is one full forward pass of
        `x` with the hook swapping in the given batch of activations, so the layers after the target
        see the whole batch while those before it run on one image. Where the model's tail cannot
        take a batch larger than its input (found on the first call, then remembered), each call
        runs the model on as many copies of `x` instead.
        """
        if self.split:
            return self.model.head

        def run(a: torch.Tensor) -> torch.Tensor:
            if self._tail_batches is not False:
                try:
                    with self._swap(a):
                        out = self.model(x)
                    if out.shape[0] == a.shape[0]:
                        self._tail_batches = True
                        return out
                except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError since 2.5
                    raise
                except RuntimeError:
                    if self._tail_batches:
                        raise
                self._tail_batches = False
            with self._swap(a):
                return self.model(x.expand(a.shape[0], *x.shape[1:]))

        return run

    _tail_batches: bool | None = None  # can the layers after the target take a larger batch?

    @contextmanager
    def _swap(self, a: torch.Tensor):
        # A copy, so that an in-place op after the layer cannot change `a` for a retry.
        handle = self.layer.register_forward_hook(lambda m, i, o: a.clone())
        try:
            yield
        finally:
            handle.remove()
