"""8-connected components of foreground masks and their boxes, labelled by SciPy on the CPU.

`scipy.ndimage.label` (a two-pass union-find in C) labels a 224×224 mask in well under a
millisecond whatever its shape; `find_objects` gives every component's bounding slices in the same
pass. This is the one place in `camlight.metrics` that leaves torch: masks go to the CPU once per
call, boxes come back as tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity


def _label(fg: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(fg, structure=_EIGHT)


def _boxes(slices: list) -> np.ndarray:
    """(n,4) int64 xyxy end-exclusive boxes from `find_objects` slices (rows, cols)."""
    if not slices:
        return np.zeros((0, 4), dtype=np.int64)
    return np.array([(c.start, r.start, c.stop, r.stop) for r, c in slices], dtype=np.int64)


def component_boxes(fg: np.ndarray) -> np.ndarray:
    """(n,4) int64 xyxy end-exclusive box of every 8-connected component of `fg` (H,W) bool.

    Only the part of `fg` inside its bounding box is labelled (components do not depend on what
    lies around them), which makes thresholds high up a map's range cheap; a single component's
    box is that bounding box.
    """
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    if len(rows) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    y0, x0 = rows[0], cols[0]
    crop = np.ascontiguousarray(fg[y0 : rows[-1] + 1, x0 : cols[-1] + 1])
    labels, n = _label(crop)
    if n == 1:  # one component: its box is the crop (the common case for smooth maps)
        return np.array([[x0, y0, cols[-1] + 1, rows[-1] + 1]], dtype=np.int64)
    return _boxes(ndimage.find_objects(labels)) + np.array([x0, y0, x0, y0])


def largest_component_box(fg: np.ndarray) -> np.ndarray:
    """(4,) int64 xyxy end-exclusive box of the largest 8-connected component of `fg` (H,W) bool;
    zeros when `fg` is empty. Of components with the same area, the one whose last pixel comes
    first in row-major order is taken."""
    labels, n = _label(fg)
    if n == 0:
        return np.zeros(4, dtype=np.int64)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    tied = np.flatnonzero(areas == areas.max()) + 1
    if len(tied) > 1:  # each tied component's last pixel (its largest row-major index), in one pass
        last = ndimage.maximum(np.arange(labels.size).reshape(labels.shape), labels, tied)
        tied = tied[[int(np.argmin(last))]]
    return _boxes([ndimage.find_objects(labels)[tied[0] - 1]])[0]


def to_numpy(fg: torch.Tensor) -> np.ndarray:
    """A bool mask tensor (any device) as a CPU numpy array, without a copy where it is already there."""
    return fg.detach().to("cpu", torch.bool).numpy()
