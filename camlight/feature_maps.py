"""Module outputs read as feature maps: channels first, channels last, or a transformer's token grid.

A target layer (for the CAM family) or a trunk's end (for training) is one call of one module,
whose output is a spatial map:

- channels first, (B,C,h,w): CNN blocks;
- channels last, (B,h,w,C): Swin's stages, ConvNeXt's blocks inside timm;
- tokens, (B,p+h·w,C): a transformer's patch tokens after p prefix tokens (class, distillation or
  register tokens), on the h×w patch grid.

`Layer` turns such an output into A (B,C,h,w) and back. Which layout an output has is decided
from its shape and the input's size (`interpret`): a spatial side is the input's side divided by
a whole stride (±1 for borders, and up to `SLACK` cells lost to unpadded convolutions), in the
input's aspect ratio. An output that fits more than one layout (say (B,8,8,8) at 64 px) is
refused, never guessed. `SpatialCalls` records every module call whose output is such a map.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

MAX_PREFIX_TOKENS = 8  # class + distillation + register tokens


class Ambiguous(ValueError):
    """An output whose layout cannot be told from its shape."""


@dataclass(frozen=True)
class Layer:
    """One call of one module, whose output is a spatial map in a known layout.

    Attributes:
        name: dotted module name.
        module: the module.
        call: which of its calls in one forward pass (None: it must run once; negative: from the end).
        layout: "nchw", "nhwc" or "tokens"; None until the first output has been seen.
        prefix: tokens before the patch grid (tokens layout).
        grid: (h, w) of the patch grid (tokens layout).
    """

    name: str
    module: nn.Module
    call: int | None = None
    layout: str | None = None
    prefix: int = 0
    grid: tuple[int, int] | None = None

    @property
    def spec(self) -> str:
        """How to name this layer again: "layer4" or "_swish@-1"."""
        return self.name if self.call is None else f"{self.name}@{self.call}"

    def describe(self) -> str:
        if self.layout == "tokens":
            h, w = self.grid
            return f"{self.spec} (tokens on a {h}×{w} grid after {self.prefix} prefix token(s))"
        return f"{self.spec} ({'channels last' if self.layout == 'nhwc' else 'channels first'})"

    def with_layout(self, output: torch.Tensor, size: tuple[int, int]) -> Layer:
        """This layer with the layout of `output` (its output for an input of `size` (H,W))."""
        found = interpret(tuple(output.shape), size)
        if found is None:
            raise ValueError(
                f"layer {self.spec!r} outputs shape {tuple(output.shape)}, not a spatial map for a "
                f"{size[0]}×{size[1]} input ((B,C,h,w), (B,h,w,C) or tokens (B,p+h·w,C)); choose a conv layer or block"
            )
        return replace(self, layout=found[0], prefix=found[1], grid=found[2])

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        """The module's output → A (B,C,h,w)."""
        if self.layout == "nchw":
            return output
        if self.layout == "nhwc":
            return output.permute(0, 3, 1, 2)
        b, _, c = output.shape
        h, w = self.grid
        return output[:, self.prefix :].reshape(b, h, w, c).permute(0, 3, 1, 2)

    def from_map(self, a: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """A (N,C,h,w) → the module's layout; prefix tokens come from `output` (its own batch of
        1 or N), so the layers after this one see what they would have seen."""
        if self.layout == "nchw":
            return a
        if self.layout == "nhwc":
            return a.permute(0, 2, 3, 1)
        n, c = a.shape[:2]
        tokens = a.permute(0, 2, 3, 1).reshape(n, -1, c)
        prefix = output[:, : self.prefix].to(tokens.dtype)
        return torch.cat([prefix.expand(n, *prefix.shape[1:]), tokens], dim=1)


# -- layouts --------------------------------------------------------------------------------


SLACK = 4  # cells a side may lose to unpadded convolutions (LeNet-like nets), at any stride


def _spatial(h: int, w: int, size: tuple[int, int]) -> bool:
    """Whether (h, w) can be a map of the input (H, W): both sides > 1, the input's aspect ratio
    within one cell, and one whole stride s with H/s − SLACK ≤ h ≤ ⌈H/s⌉ + 1 (and alike for w)."""
    height, width = size
    if not (1 < h <= height and 1 < w <= width) or abs(h * width - w * height) > max(height, width):
        return False

    def fits(side: int, full: int, s: int) -> bool:
        return full // s - SLACK <= side <= -(-full // s) + 1

    return any(fits(h, height, s) and fits(w, width, s) for s in range(1, height + 1))


def interpret(shape: tuple[int, ...], size: tuple[int, int]) -> tuple[str, int, tuple[int, int]] | None:
    """(layout, prefix tokens, (h, w)) of an output `shape` for an input of `size` (H, W); None
    when it is not a spatial map.

    Raises:
        Ambiguous: the shape fits more than one layout.
    """
    found = []
    if len(shape) == 4:
        _, a, b, c = shape
        if _spatial(b, c, size):
            found.append(("nchw", 0, (b, c)))
        if _spatial(a, b, size):
            found.append(("nhwc", 0, (a, b)))
    elif len(shape) == 3:
        _, n, _ = shape
        for prefix in range(min(MAX_PREFIX_TOKENS, n - 4) + 1):
            cells = n - prefix
            for h in range(2, cells // 2 + 1):
                if cells % h == 0 and _spatial(h, cells // h, size):
                    found.append(("tokens", prefix, (h, cells // h)))
            if found:  # the fewest prefix tokens that leave a grid: more would be a coincidence
                break
    if len(found) > 1:
        options = ", ".join(f"{lay} {g[0]}×{g[1]}" + (f" after {p} token(s)" if p else "") for lay, p, g in found)
        raise Ambiguous(f"an output of shape {tuple(shape)} could be {options}")
    return found[0] if found else None


class SpatialCalls:
    """Forward hooks that record every module call whose output is a spatial map, in the order the
    calls finish: `calls` holds (Layer with call index and layout, the output as the model went on
    to use it). `counts` is how often each module ran. Used as a context manager around one forward.

    Args:
        model: the model.
        size: the input's (H, W).
        modules: the modules to watch, by name (default: every named submodule).
        keep: hand the rest of the model a copy of each recorded output (so that later in-place
            ops leave the recorded one intact, to differentiate it).
    """

    def __init__(self, model: nn.Module, size: tuple[int, int], modules: dict | None = None, keep: bool = False):
        self.size, self.keep = size, keep
        self.names = modules if modules is not None else {m: n for n, m in model.named_modules() if n}
        self.calls: list[tuple[Layer, torch.Tensor]] = []
        self.counts: dict[str, int] = {}
        self._tokens: set[int] = set()

    def _hook(self, module, inputs, output):
        name = self.names[module]
        index = self.counts.get(name, 0)
        self.counts[name] = index + 1
        if isinstance(module, nn.Linear) or not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return None  # a linear projection on tokens (q, k, v side by side) is no feature map
        try:
            found = interpret(tuple(output.shape), self.size)
        except Ambiguous:
            return None
        if found is None:
            return None
        if found[0] == "tokens":
            self._tokens.add(output.shape[1])
        elif output.shape[-1] == output.shape[-2] in self._tokens:
            return None  # (B, heads, N, N): attention weights over N tokens, not an image map
        out = output.clone() if self.keep else output
        self.calls.append((Layer(name, module, index, *found), out))
        return out if self.keep else None

    def named(self, layer: Layer) -> Layer:
        """`layer` named as "name" when its module ran once, else "name@-k" counted from the end."""
        total = self.counts[layer.name]
        return replace(layer, call=None if total == 1 else layer.call - total)

    def __enter__(self) -> SpatialCalls:
        self._handles = [m.register_forward_hook(self._hook) for m in self.names]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
