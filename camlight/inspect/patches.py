"""Top-activating patches (Zeiler & Fergus 2014, fig. 2) and class-specific units (Zhou et al.
2016, fig. 8).

`TopActivations` streams a split: for each chosen unit (a channel of a layer) it keeps the k images
whose strongest activation of that unit is largest, with where it was. Memory is k × units,
whatever the split's size; as a torchmetrics `Metric` its states gather across DDP ranks and the
final top-k is taken over all of them. `crop` cuts the patch an activation sees, using the
receptive field computed by `camlight.inspect.receptive`. `class_units` ranks a layer's channels
for a class: by the GAP head's weight (CAM's w_k^c) or, for any model, by Grad-CAM's α_k^c.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import Metric

from camlight.inspect._state import evaluating
from camlight.inspect.receptive import ReceptiveField


class TopActivations(Metric):
    """The k strongest activations of each unit over everything passed to `update`.

    Each image counts once per unit, at its strongest position (the maximum over the map), so the
    k patches of a unit come from k different images. Ties go to the lower image index, so the
    result does not depend on batch order or on how DDP split the data.

    Args:
        channels: the channels (units) of the layer to follow.
        k: patches kept per unit.
    """

    full_state_update = False

    def __init__(self, channels: Sequence[int], k: int = 9, **kwargs):
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.channels, self.k = [int(c) for c in channels], int(k)
        n = len(self.channels)
        self.add_state("values", torch.zeros(0, n), dist_reduce_fx="cat")
        self.add_state("images", torch.zeros(0, n, dtype=torch.long), dist_reduce_fx="cat")
        self.add_state("rows", torch.zeros(0, n, dtype=torch.long), dist_reduce_fx="cat")
        self.add_state("cols", torch.zeros(0, n, dtype=torch.long), dist_reduce_fx="cat")

    def update(self, activations: torch.Tensor, index: torch.Tensor) -> None:
        """activations (B,C,h,w) of the layer; index (B,) the images' numbers in the split."""
        if activations.dim() != 4:
            raise ValueError(f"expected (B,C,h,w) activations, got shape {tuple(activations.shape)}")
        a = activations[:, self.channels].detach().float()
        width = a.shape[-1]
        values, where = a.flatten(2).max(2)  # (B,n)
        images = index.to(a.device).long()[:, None].expand_as(where)
        merged = [
            torch.cat([getattr(self, name), new.to(getattr(self, name).dtype)])
            for name, new in (("values", values), ("images", images), ("rows", where // width), ("cols", where % width))
        ]
        self.values, self.images, self.rows, self.cols = _top(*merged, self.k)

    def compute(self) -> dict[str, torch.Tensor]:
        """{"channels" (n,), "values", "images", "rows", "cols" (k',n)}: rank r of unit u is
        column u, row r, strongest first (k' = min(k, images seen))."""
        # After a DDP sync the states hold every rank's top-k: stacked (ranks, k, n) or a list.
        states = [_rows_of(getattr(self, name), len(self.channels)) for name in ("values", "images", "rows", "cols")]
        values, images, rows, cols = _top(*states, self.k)
        return {"channels": torch.tensor(self.channels), "values": values, "images": images, "rows": rows, "cols": cols}


def _rows_of(state, n: int) -> torch.Tensor:
    """A state as (rows, n), whatever shape the gathering across ranks left it in."""
    if isinstance(state, (list, tuple)):
        state = torch.cat([t.reshape(-1, n) for t in state]) if len(state) else torch.zeros(0, n)
    return state.reshape(-1, n)


def _top(values, images, rows, cols, k: int):
    """Per column, the k largest values (ties: the lower image first), and their fields."""
    order = images.argsort(dim=0, stable=True)
    values, images, rows, cols = (t.gather(0, order) for t in (values, images, rows, cols))
    order = (-values).argsort(dim=0, stable=True)[:k]
    return tuple(t.gather(0, order) for t in (values, images, rows, cols))


def crop(image: torch.Tensor, field: ReceptiveField, row: int, col: int, fill: float = 0.5) -> torch.Tensor:
    """The patch unit (row, col) sees: (3, r_y, r_x), the image's pixels where the field lies on
    the image and `fill` grey where it hangs over the border (the padding the network saw), so
    every patch of a layer has the same size and its content the same place. A field that covers
    the whole input returns the image."""
    _, height, width = image.shape
    if field.whole:
        return image
    y0, y1, x0, x1 = field.box(row, col, height, width)
    ry, rx = int(field.size[0]), int(field.size[1])
    top = int(torch.tensor(field.start[0] + row * field.jump[0] - (ry - 1) / 2).ceil())
    left = int(torch.tensor(field.start[1] + col * field.jump[1] - (rx - 1) / 2).ceil())
    out = torch.full((image.shape[0], ry, rx), fill, dtype=image.dtype)
    out[:, y0 - top : y1 - top, x0 - left : x1 - left] = image[:, y0:y1, x0:x1]
    return out


def head_weights(model: nn.Module, channels: int) -> torch.Tensor:
    """(classes, channels) weight of the model's last `nn.Linear` taking `channels` inputs — a GAP
    head's w_k^c (CAM). Raises ValueError when there is none (an FC head on flattened maps)."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == channels]
    if not linear:
        raise ValueError(
            f"no linear layer takes the {channels} channels directly (not a global-average-pooling head); "
            "rank by gradcam instead"
        )
    return linear[-1].weight.detach()


def gradcam_alpha(model: nn.Module, images: torch.Tensor, layer: str, target: int) -> torch.Tensor:
    """(B,C) Grad-CAM's α_k^c = mean over positions of ∂y_c/∂A_k at `layer`, per image. The model
    is left as it was (mode restored, hook removed, no parameter's .grad touched)."""
    module = model.get_submodule(layer)
    seen: list[torch.Tensor] = []

    def leaf(_m, _i, out):  # a leaf the gradient can reach even when every parameter is frozen
        seen.append(out.detach().requires_grad_(True))
        return seen[-1]

    handle = module.register_forward_hook(leaf)
    try:
        with evaluating(model), torch.enable_grad():
            logits = model(images)
            (grad,) = torch.autograd.grad(logits[:, target].sum(), seen[-1])
    finally:
        handle.remove()
    return grad.mean((2, 3)).detach()


def class_units(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(channels, scores) of the n channels with the largest score: `scores` (C,) is a class's
    row of `head_weights`, or `gradcam_alpha` averaged over the images of the class."""
    top = scores.detach().float().topk(min(n, scores.numel()))
    return top.indices, top.values
