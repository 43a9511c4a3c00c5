"""The one normalisation every map goes through (DESIGN.md, Explain API)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def channel_max_abs(attr: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) signed attributions → (B,H,W): the largest |value| over channels (Simonyan et al.)."""
    return attr.abs().amax(dim=1)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B,h,w) → (B,H,W), bilinear with align_corners=False."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1]; a constant map becomes zeros, never NaN."""
    flat = maps.flatten(1)
    lo = flat.amin(dim=1)[:, None, None]
    span = flat.amax(dim=1)[:, None, None] - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - lo) / safe, torch.zeros_like(maps)).float()


def finish(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Layer- or pixel-resolution maps (B,h,w) (ReLU already applied where defined) → (B,H,W) in [0,1]."""
    return min_max(upsample(maps.float(), size))
