"""Segmentation from a saliency map (Simonyan et al. 2014, §3.1; the Grad-CAM paper's weakly
supervised segmentation): GrabCut, seeded from the map, then scored against the object's mask.

Seeds as Simonyan et al. set them: pixels above the map's 95 % quantile are foreground, pixels
below its 30 % quantile background (at the quantile itself where ties leave none beyond it: a
ReLU'd CAM is exactly 0 on much of the image) (OpenCV's definite labels, from which GrabCut estimates its
colour models); the rest start as probable background and go where the graph cut puts them. The
image is the one the model saw, in RGB [0,1] (the batch's `rgb`: the callback and explain.py add
it, undoing the normalisation). OpenCV's `cv2.grabCut` (the optional `segment` extra:
opencv-python-headless) does the work.
"""

from __future__ import annotations

import numpy as np
import torch

from camlight.metrics.localization import binary_iou

FOREGROUND, BACKGROUND = 0.95, 0.30  # quantiles of the map (Simonyan et al.)


def check_available() -> None:
    """ImportError, saying what to install, when OpenCV is missing (checked before a run starts)."""
    _cv2()


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("grabcut_iou needs OpenCV: pip install 'camlight[segment]'") from None
    return cv2


def grabcut_masks(
    maps: torch.Tensor,
    images: torch.Tensor,
    foreground: float = FOREGROUND,
    background: float = BACKGROUND,
    iterations: int = 5,
) -> torch.Tensor:
    """(B,H,W) bool: GrabCut's segmentation of each image (B,3,H,W), RGB in [0,1], seeded from its
    map (B,H,W). A map too flat to give both seeds (all values equal) segments nothing."""
    cv2 = _cv2()
    out = torch.zeros(maps.shape, dtype=torch.bool)
    rgb = (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    values = maps.detach().float().cpu().numpy()
    for i in range(len(values)):
        m = values[i]
        hi, lo = np.quantile(m, foreground), np.quantile(m, background)
        if hi <= lo:  # a flat map: no seeds
            continue
        fg, bg = m > hi, m < lo
        if not fg.any():  # ties at the top (a map clipped at its maximum)
            fg = m >= hi
        if not bg.any():  # ties at the bottom (a ReLU'd map is 0 on a third of the image or more)
            bg = m <= lo
        labels = np.full(m.shape, cv2.GC_PR_BGD, dtype=np.uint8)
        labels[fg], labels[bg] = cv2.GC_FGD, cv2.GC_BGD
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(np.ascontiguousarray(rgb[i][..., ::-1]), labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
        out[i] = torch.from_numpy((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))
    return out.to(maps.device)


def grabcut_iou(maps: torch.Tensor, images: torch.Tensor, masks: torch.Tensor, ignore=None) -> torch.Tensor:
    """(B,) IoU of GrabCut's segmentation (seeded from `maps`) with the ground-truth `masks`;
    0 when both are empty; pixels where `ignore` is set count neither way."""
    return binary_iou(grabcut_masks(maps, images), masks.to(maps.device), ignore)
