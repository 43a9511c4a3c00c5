"""Access to a model's target layer: through a `features`/`head` split, or through a forward hook.

`ModelAccess.forward` runs one forward pass and returns the logits and, when asked, the layer's
activations A (B,K,h,w), whatever the layer's own layout (channels last and token grids are turned
into A and back, see `camlight.explain.locate`). Where gradients with respect to A are wanted but
none with respect to the input, everything before the layer runs without autograd and A becomes a
fresh leaf: the backward pass then only crosses the rest of the model.

The layer is the model's split (a camlight `Classifier`), the one given (`layer=`, a name, a
module, or one call of a module as "name@call"), the model's own `target_layer` name, or else the
one `locate` finds on the first image.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from camlight.explain.locate import Ambiguous, Layer, locate, resolve_layer

_CALLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {(name, (H, W)): calls per forward}


class NoLayer(ValueError):
    """No target layer could be found, or the call named does not exist."""


def _has_split(model: nn.Module) -> bool:
    """The camlight model split: `features(x)`, a `head` module and a `target_layer` name.

    All three are required: some models (torchvision's Swin) have `features` and `head` with other
    layers between them, and must be explained through a hooked layer instead.
    """
    return (
        callable(getattr(model, "features", None))
        and isinstance(getattr(model, "head", None), nn.Module)
        and isinstance(getattr(model, "target_layer", None), str)
    )


class ModelAccess:
    """How the engine reaches logits and the activations A of the target layer.

    Args:
        model: a camlight `Classifier` (or any module with `features(x)`, a `head` module and a
            `target_layer` name), or any classifier returning logits (B,C).
        layer: None (the split, the model's `target_layer`, or one found by `locate`), or the
            target layer: dotted name, "name@call", module, or `Layer`.
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module | Layer | None = None):
        self.model = model
        self.split = layer is None and _has_split(model)
        self.layer: Layer | None = None
        if layer is not None:
            self.layer = resolve_layer(model, layer)
        elif not self.split and isinstance(getattr(model, "target_layer", None), str):
            self.layer = resolve_layer(model, model.target_layer)
        self.auto = not self.split and self.layer is None  # to be found on the first image

    def missing_layer(self, method: str, why: str) -> str:
        """Why `method` cannot run without a target layer, and what to do."""
        return f"{method} needs a target layer: {why}"

    def prepare(self, x: torch.Tensor) -> None:
        """Find the layer (when none was given) and fix which call of it counts, for inputs like `x`.

        Raises:
            NoLayer: no layer found, or the given one's call does not exist.
        """
        if self.split:
            return
        if self.auto:
            try:
                self.layer, self.auto = locate(self.model, x[:1]), False
            except ValueError as e:
                raise NoLayer(str(e)) from None
        if self.layer.call is not None and self.layer.call < 0:
            total = self._calls(x[:1])
            if -self.layer.call > total:
                raise NoLayer(str(self._missing_call(total)))
            self._named_call = self.layer.call  # "@-1" stays how it is shown
            self.layer = replace(self.layer, call=total + self.layer.call)

    def _calls(self, x: torch.Tensor) -> int:
        """How often the layer's module runs in one forward pass (counted once per input size)."""
        key = (self.layer.name, tuple(x.shape[-2:]))
        known = _CALLS.setdefault(self.model, {})
        if key not in known:
            count = [0]
            handle = self.layer.module.register_forward_hook(lambda m, i, o: count.__setitem__(0, count[0] + 1))
            try:
                with torch.no_grad():
                    self.model(x)
            finally:
                handle.remove()
            known[key] = count[0]
        return known[key]

    def describe(self) -> str:
        """The layer in words: "the camlight split (backbone.block4)" or the hooked layer's spec and layout."""
        if self.split:
            return f"{self.model.target_layer} (the model's features/head split)"
        if self.layer is None:
            return "not chosen yet"
        return replace(
            self.layer, call=self._named_call if self._named_call is not None else self.layer.call
        ).describe()

    _named_call: int | None = None

    def head_module(self) -> nn.Module | None:
        """The module that maps A to logits, where the model exposes one."""
        return self.model.head if self.split else None

    def forward(self, x: torch.Tensor, layer: bool = False, layer_grad: bool = False):
        """One forward pass.

        Args:
            x: (B,3,H,W) input; when it requires grad, the whole pass is recorded.
            layer: also return A (B,K,h,w), the target layer's output as a map.
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

    def _at_layer(self, x: torch.Tensor, replace_output: Callable[[Layer, torch.Tensor], torch.Tensor]):
        """A forward hook on the layer's module that calls `replace_output(layer, output)` at the
        layer's call (learning its layout from the first output) and returns what that returns."""
        calls = [0]
        size = tuple(x.shape[-2:])

        def hook(module, inputs, output):
            index = calls[0]
            calls[0] += 1
            target = self.layer.call
            if target is None and index > 0:
                raise ValueError(
                    f"layer {self.layer.name!r} ran {index + 1} times in one forward pass; name one call of it, "
                    f"e.g. '{self.layer.name}@-1' for the last"
                )
            if target is not None and index != target:
                return None
            if not isinstance(output, torch.Tensor):
                raise ValueError(
                    f"layer {self.layer.spec!r} outputs {type(output).__name__}, not a tensor; choose a conv layer or block"
                )
            if self.layer.layout is None:
                try:
                    self.layer = self.layer.with_layout(output, size)
                except Ambiguous as e:
                    raise ValueError(
                        f"layer {self.layer.spec!r}: {e}; choose a layer whose layout can be told apart (e.g. a "
                        "permute to (B,C,h,w) after it)"
                    ) from None
            return replace_output(self.layer, output)

        return self.layer.module.register_forward_hook(hook), calls

    def _missing_call(self, calls: int) -> ValueError:
        if calls == 0:
            return ValueError(f"layer {self.layer.spec!r} did not run in the forward pass; choose a layer on the path")
        return ValueError(
            f"layer {self.layer.spec!r}: {self.layer.name} ran {calls} time(s) in one forward pass "
            "(calls count from 0; -1 is the last)"
        )

    def _hooked(self, x: torch.Tensor, leaf: bool):
        seen: list[torch.Tensor] = []
        grad_mode = torch.is_grad_enabled()

        def capture(layer: Layer, output: torch.Tensor) -> torch.Tensor:
            a = layer.to_map(output)
            if leaf:
                torch.set_grad_enabled(True)
                a = a.detach().requires_grad_(True)
            seen.append(a)
            # Later in-place ops (an inplace ReLU after the layer) must not change the saved A.
            return layer.from_map(a.clone(), output)

        handle, calls = self._at_layer(x, capture)
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
            raise self._missing_call(calls[0])
        return logits, seen[0]

    def head_fn(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function mapping a batch of (modified) activations A of image `x` (1,3,H,W) to logits.

        With the split it is the head alone. With a hook, every call is one full forward pass of
        `x` with the hook swapping in the given batch at the layer, so the layers after the target
        see the whole batch while those before it run on one image. Where the model's tail cannot
        take a batch larger than its input (found on the first call, then remembered), each call
        runs the model on as many copies of `x` instead.
        """
        if self.split:
            return self.model.head

        def run(a: torch.Tensor) -> torch.Tensor:
            if self._tail_batches is not False:
                try:
                    with self._swap(x, a):
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
            with self._swap(x, a):
                return self.model(x.expand(a.shape[0], *x.shape[1:]))

        return run

    _tail_batches: bool | None = None

    @contextmanager
    def _swap(self, x: torch.Tensor, a: torch.Tensor):
        # A copy, so that an in-place op after the layer cannot change `a` for a retry.
        handle, _ = self._at_layer(x, lambda layer, output: layer.from_map(a.clone(), output))
        try:
            yield
        finally:
            handle.remove()
