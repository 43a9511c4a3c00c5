"""Neuron targets: explain one unit of an intermediate layer instead of a class (Zeiler & Fergus
2014's projections; "pick a single intermediate neuron, take the gradient of its value with
respect to the pixels").

`Neuron("layer4", 123)` is channel 123 of `layer4`'s output, its activations summed over space
(`reduce="max"`: their maximum); `Neuron("layer4", 123, 3, 5)` is the single neuron at row 3,
column 5. Specs as text: "layer4:123", "layer4:123:max", "layer4:123:3:5".

The engine explains a neuron by wrapping the model in `NeuronModel`, whose one "logit" is the
neuron's value; the forward pass stops at the neuron's layer. Every method that needs only an
objective to differentiate or perturb takes such a target (the gradient family, occlusion, the
CAM family at an earlier layer); CAM itself needs a classifier's GAP head and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Neuron:
    """A unit of module `layer`'s output (B,C,h,w): `channel`, reduced over space by `reduce`
    ("sum" or "max"), or the single neuron at (`row`, `col`)."""

    layer: str
    channel: int
    row: int | None = None
    col: int | None = None
    reduce: str = "sum"

    def __post_init__(self):
        if self.channel < 0:
            raise ValueError(f"neuron channel must be >= 0, got {self.channel}")
        if (self.row is None) != (self.col is None):
            raise ValueError("give both the row and the column of a single neuron, or neither")
        if self.reduce not in ("sum", "max"):
            raise ValueError(f"unknown neuron reduction {self.reduce!r}; choose sum or max")

    def __str__(self) -> str:
        if self.row is not None:
            return f"{self.layer}:{self.channel}:{self.row}:{self.col}"
        return f"{self.layer}:{self.channel}" + (":max" if self.reduce == "max" else "")


def parse_neuron(spec: str) -> Neuron:
    """ "layer:channel", "layer:channel:max" or "layer:channel:row:col" → `Neuron`; ValueError
    saying the accepted forms otherwise."""
    parts = str(spec).split(":")
    forms = "layer:channel, layer:channel:max or layer:channel:row:col (e.g. layer4:123 or layer4:123:3:5)"
    try:
        if len(parts) == 2:
            return Neuron(parts[0], int(parts[1]))
        if len(parts) == 3 and parts[2] in ("sum", "max"):
            return Neuron(parts[0], int(parts[1]), reduce=parts[2])
        if len(parts) == 4:
            return Neuron(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError as e:
        if "neuron" in str(e):
            raise
    raise ValueError(f"bad neuron target {spec!r}; write {forms}")


def is_neuron_spec(targets) -> bool:
    """True for a `Neuron` or a text spec holding a colon."""
    return isinstance(targets, Neuron) or (isinstance(targets, str) and ":" in targets)


class _Stop(Exception):
    def __init__(self, output):
        self.output = output


class NeuronModel(nn.Module):
    """`model` cut at `neuron.layer`: forward returns (B,1), the neuron's value per image. The
    rest of the network does not run. Wrapping adds nothing to `model` (a hook lives only during
    a forward call)."""

    def __init__(self, model: nn.Module, neuron: Neuron):
        super().__init__()
        self.model, self.neuron = model, neuron
        try:
            self._layer = model.get_submodule(neuron.layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            hint = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ValueError(
                f"neuron layer {neuron.layer!r} is not a module of this model; some that are: {hint}"
            ) from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def stop(_module, _inputs, output):
            raise _Stop(output)

        handle = self._layer.register_forward_hook(stop)
        try:
            self.model(x)
        except _Stop as s:
            a = s.output
        else:
            raise ValueError(f"neuron layer {self.neuron.layer!r} is not called in the forward pass")
        finally:
            handle.remove()
        if not isinstance(a, torch.Tensor) or a.dim() != 4:
            shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise ValueError(f"neuron layer {self.neuron.layer!r} gives {shape}, not (B,C,h,w) maps")
        n = self.neuron
        if n.channel >= a.shape[1]:
            raise ValueError(f"neuron channel {n.channel} out of range: {n.layer} has {a.shape[1]} channels")
        maps = a[:, n.channel]
        if n.row is not None:
            if not (0 <= n.row < maps.shape[1] and 0 <= n.col < maps.shape[2]):
                raise ValueError(
                    f"neuron ({n.row}, {n.col}) is outside {n.layer}'s {maps.shape[1]}x{maps.shape[2]} map"
                )
            value = maps[:, n.row, n.col]
        else:
            value = maps.flatten(1).sum(1) if n.reduce == "sum" else maps.flatten(1).amax(1)
        return value[:, None]
