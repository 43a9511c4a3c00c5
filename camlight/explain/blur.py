"""A separable Gaussian blur whose borders repeat the edge pixels, for any image size.

Used by class-model visualization (a light blur between ascent steps) and by the insertion metric
(its blurred starting image). torchvision's `gaussian_blur` reflects at the borders, which needs
images larger than the kernel's radius; replicating works for every size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_blur(images: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(B,C,H,W) → (B,C,H,W): each channel convolved with a `size`-tap Gaussian of std `sigma`
    along rows and columns, edges replicated."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"blur size must be a positive odd number, got {size}")
    x = torch.arange(size, dtype=images.dtype, device=images.device) - size // 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c, pad = images.shape[1], size // 2
    out = F.pad(images, (pad, pad, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    out = F.pad(out, (0, 0, pad, pad), mode="replicate")
    return F.conv2d(out, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)
