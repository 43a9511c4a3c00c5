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


_FOUR = ndimage.generate_binary_structure(2, 1)  # 4-connectivity: the background's, in contour tracing


def contour_boxes(fg: np.ndarray) -> np.ndarray:
    """(n,4) int64 boxes of every contour `cv2.findContours(fg, RETR_TREE, ...)` finds, as
    wsolevaluation forms them: `x, y, w, h = cv2.boundingRect(c)`, box `(x, y, x + w, y + h)` with
    the right and bottom edges clipped to W − 1 and H − 1, to be scored as *inclusive* pixel boxes.

    Without OpenCV: the outer contours are the 8-connected components of `fg` (their bounding
    rectangle is the component's box); the hole contours are the 4-connected background regions
    that do not reach the image's edge, and the pixels tracing such a hole lie one pixel outside
    it, so its rectangle is the hole's box grown by one pixel on every side. An empty `fg` gives
    the reference's `[[0, 0, 0, 0]]`.
    """
    height, width = fg.shape
    outer = component_boxes(fg)
    if len(outer) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    holes = _hole_boxes(fg, outer)
    boxes = np.concatenate([outer, holes]) if len(holes) else outer
    boxes[:, 2] = np.minimum(boxes[:, 2], width - 1)
    boxes[:, 3] = np.minimum(boxes[:, 3], height - 1)
    return boxes


def _hole_boxes(fg: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """(n,4) end-exclusive boxes of the holes of `fg`, each grown by one pixel on every side."""
    x0, y0 = outer[:, 0].min(), outer[:, 1].min()
    x1, y1 = outer[:, 2].max(), outer[:, 3].max()
    background = ~fg[y0:y1, x0:x1]  # holes lie inside the foreground's box
    labels, n = ndimage.label(background, structure=_FOUR)
    if n == 0:
        return np.zeros((0, 4), dtype=np.int64)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inside = np.setdiff1d(np.arange(1, n + 1), edge)  # regions that do not reach the crop's edge
    if len(inside) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    slices = ndimage.find_objects(labels)
    boxes = _boxes([slices[i - 1] for i in inside])
    return boxes + np.array([x0 - 1, y0 - 1, x0 + 1, y0 + 1])


def inclusive_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,m) IoU of integer boxes (n,4) and (m,4) scored as inclusive pixel ranges (+1), as
    wsolevaluation's `calculate_multiple_iou`; a degenerate union scores 0."""
    a, b = a[:, None, :].astype(np.float64), b[None, :, :].astype(np.float64)
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    union = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    union = union + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def reference_best_ious(quantised: np.ndarray, gt: np.ndarray, thresholds) -> np.ndarray:
    """(T,) for each threshold τ, the best IoU between any contour box of `quantised` (H,W) uint8
    > int(τ · its max) (strict, as `cv2.threshold(..., THRESH_BINARY)`) and any ground-truth box
    `gt` (k,4) — wsolevaluation's `BoxEvaluator.accumulate` for one map."""
    peak = int(quantised.max())
    if len(gt) == 0:
        return np.zeros(len(thresholds))
    return np.array([inclusive_iou(contour_boxes(quantised > int(t * peak)), gt).max() for t in thresholds])
