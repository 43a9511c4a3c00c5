"""Maps combined from several runs of one method: test-time augmentation (`aug_smooth`) and
maps from several layers (`layer=[...]`). Both call the engine back through `run`, the
`explain` function itself, so this module needs nothing from it.
"""

from __future__ import annotations

import torch

from camlight.explain._normalize import min_max, upsample

# pytorch-grad-cam's aug_smooth: ttach's HorizontalFlip × Multiply(0.9, 1, 1.1) on the normalised input.
AUGMENTATIONS = tuple((flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1))


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """(..., h, w) → ReLU, then per-map min-max to [0, 1] (pytorch-grad-cam's `scale_cam_image`)."""
    lead = maps.shape[:-2]
    return min_max(maps.clamp(min=0).flatten(0, -3)).view(*lead, *maps.shape[-2:])


def aug_smooth(run, model, x: torch.Tensor, method: str, table: torch.Tensor, layer, memory: int, options: dict):
    """pytorch-grad-cam's `aug_smooth`: the method's map on each of six copies of the images —
    flipped left-right or not, times 0.9, 1 or 1.1 (in the normalised input space) — each ReLU'd,
    upsampled to the input's size and min-max normalised there (as pytorch-grad-cam does), flipped
    back, then averaged. (B,T,H,W) at the input's resolution.

    All six copies go through the model in one batch. The targets are the clean images' (`table`),
    for every copy; pytorch-grad-cam takes each copy's own prediction when no target is given.
    """
    n = x.shape[0]
    batch = torch.cat([(x.flip(-1) if flip else x) * factor for flip, factor in AUGMENTATIONS])
    raw = run(model, batch, [method], table.repeat(len(AUGMENTATIONS), 1), layer, True, memory, **{method: options})
    raw = raw[method]
    size = tuple(x.shape[-2:])
    maps = upsample(raw.clamp(min=0).float().flatten(0, 1), size).view(*raw.shape[:2], *size)
    maps = _unit(maps).unflatten(0, (len(AUGMENTATIONS), n))
    flipped = torch.tensor([flip for flip, _ in AUGMENTATIONS], device=maps.device)
    maps = torch.where(flipped[:, None, None, None, None], maps.flip(-1), maps)
    return maps.mean(dim=0)


def fuse_layers(method: str, per_layer: list[torch.Tensor], size: tuple[int, int], gamma: float) -> torch.Tensor:
    """One map (B,T,H,W) at the input's resolution from a CAM method's raw maps at several layers.

    `layercam`: Jiang et al. 2021's fusion — each layer's map ReLU'd, divided by its maximum and
    scaled by tanh(γ · M) (their eq. 9, γ = `gamma`, 2 in the paper), upsampled, then the
    element-wise maximum over layers. The paper scales the shallow layers' maps; torch-cam scales
    every layer's, as here, so that maps of different magnitudes meet on one scale.
    Other methods: the mean over layers of each map ReLU'd and min-max normalised, pytorch-grad-cam's
    rule for several target layers.
    """
    maps = []
    for raw in per_layer:
        b, t = raw.shape[:2]
        if method == "layercam":
            m = raw.clamp(min=0)
            peak = m.flatten(2).amax(2)[..., None, None]
            m = torch.tanh(gamma * m / torch.where(peak > 0, peak, torch.ones_like(peak)))
        else:
            m = _unit(raw)
        maps.append(upsample(m.float().flatten(0, 1), size).view(b, t, *size))
    stacked = torch.stack(maps)
    return stacked.amax(dim=0) if method == "layercam" else stacked.mean(dim=0)
