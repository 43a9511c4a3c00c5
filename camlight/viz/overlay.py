"""Heat-map overlays and ground-truth contours, as tensors: (B,3,H,W) float in [0,1]."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

CONTOUR_COLOR = (0.0, 1.0, 0.0)  # green: the ground-truth outline


@lru_cache(maxsize=4)
def _lut(name: str) -> torch.Tensor:
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return torch.tensor([cmap(i / 255)[:3] for i in range(256)], dtype=torch.float32)  # (256,3)


def denormalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the datamodule's normalisation: (B,3,H,W) → [0,1]."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device)[:, None, None]
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device)[:, None, None]
    return (images * s + m).clamp(0, 1)


def colorize(maps: torch.Tensor, cmap: str = "jet") -> torch.Tensor:
    """(B,H,W) in [0,1] → (B,3,H,W) RGB through a matplotlib colormap (256 levels)."""
    idx = (maps.clamp(0, 1) * 255).round().long()
    return _lut(cmap).to(maps.device)[idx].permute(0, 3, 1, 2)


def overlay(images: torch.Tensor, maps: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> torch.Tensor:
    """Blend the colorized map over the image: (1 − alpha) · image + alpha · heat."""
    return (1 - alpha) * images + alpha * colorize(maps, cmap).to(images.dtype)


def contour(masks: torch.Tensor) -> torch.Tensor:
    """(B,H,W) bool: mask pixels with a 4-neighbour outside the mask (or at the image border)."""
    m = masks.float()[:, None]
    cross = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=m.dtype, device=m.device)
    inside = F.conv2d(F.pad(m, (1, 1, 1, 1), value=0.0), cross[None, None]) >= 5
    return (masks & ~inside[:, 0]).bool()


def draw_contour(images: torch.Tensor, masks: torch.Tensor, color=CONTOUR_COLOR) -> torch.Tensor:
    """A copy of `images` with the outline of `masks` painted in `color`."""
    out = images.clone()
    edge = contour(masks)[:, None].expand_as(out)
    paint = torch.as_tensor(color, dtype=out.dtype, device=out.device)[None, :, None, None].expand_as(out)
    return torch.where(edge, paint, out)
