"""8-connected components of foreground masks and their boxes, labelled by SciPy on the CPU.

`scipy.ndimage.label` (a two-pass union-find in C) labels a 224×224 mask in well under a
millisecond whatever its shape; `find_objects` gives every component's bounding slices in the same
pass. Masks go to the CPU once per call, boxes come back as tensors. Where Numba is there (it is a
dependency), `_maxtree` does the boxes of all thresholds at once instead; this labelling is its
fallback and the `wsolevaluation` mode's (whose hole contours need the background's components).
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
    return _as_reference(_contours(fg), *fg.shape)


def _contours(fg: np.ndarray) -> np.ndarray:
    """(n,4) end-exclusive boxes of the components of `fg` and of their holes (grown by one)."""
    outer = component_boxes(fg)
    if len(outer) == 0:
        return outer
    holes = _hole_boxes(fg, outer)
    return np.concatenate([outer, holes]) if len(holes) else outer


def _as_reference(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """wsolevaluation's form of end-exclusive boxes: right and bottom clipped to W − 1, H − 1; none → [[0,0,0,0]]."""
    if len(boxes) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    boxes = boxes.copy()
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


def reference_candidates(quantised: np.ndarray, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (n,4), level of each (n,)): every contour box of `quantised` (H,W) uint8 > int(τ · its
    max) (strict, as `cv2.threshold(..., THRESH_BINARY)`) at every threshold τ, in wsolevaluation's
    form (`contour_boxes`)."""
    peak = int(quantised.max())
    cuts = np.array([int(t * peak) for t in thresholds], dtype=np.int64)  # non-decreasing
    levels = np.searchsorted(cuts, quantised.astype(np.int64), side="left")  # #{k : cut_k < q}
    return _flat([_as_reference(b, *quantised.shape) for b in level_boxes(levels, len(cuts), holes=True)])


def _flat(per_level: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes listed per level → (every box (n,4), its level (n,))."""
    return np.concatenate(per_level), np.repeat(np.arange(len(per_level)), [len(b) for b in per_level])


def reference_best_ious(candidates: tuple[np.ndarray, np.ndarray], gt: np.ndarray, count: int) -> np.ndarray:
    """(count,) per threshold, the best inclusive IoU between its candidate boxes and any
    ground-truth box `gt` (k,4) — wsolevaluation's `BoxEvaluator.accumulate` for one map."""
    best = np.zeros(count)
    if len(gt):
        boxes, which = candidates
        np.maximum.at(best, which, inclusive_iou(boxes, gt).max(1))
    return best


def level_components(levels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (n,4) int64 end-exclusive, level (n,) ascending): every 8-connected component of
    `levels > k` (H,W) for every k in 0..count−1, by the compiled max-tree (`level_boxes` without it)."""
    if _compiled is None:  # pragma: no cover - numba missing
        return _flat(level_boxes(levels, count))
    flat = _compiled(np.ascontiguousarray(levels, dtype=np.int64), count)[::-1]  # levels ascending
    return flat[:, 1:].copy(), flat[:, 0].copy()


def level_boxes(levels: np.ndarray, count: int, holes: bool = False, start: int = 0) -> list[np.ndarray]:
    """The boxes of the components of `levels > k` (H,W) for every level k in start..count−1 (and
    with `holes`, of their holes too, as `_contours`), without labelling most levels.

    A threshold grid makes labelling the bottleneck of MaxBoxAccV2 (100 labellings of the whole
    map). Whether a level's foreground is one component without holes can be decided for every
    level at once from the profiles of its rows (or of its columns): it is when every foreground
    row is one run, the foreground rows are consecutive, and the runs of neighbouring rows overlap
    or touch diagonally; its box is then the union of the runs. The other levels are labelled, and
    where one has split into components, the levels above are found the same way inside each
    component (each level's foreground is nested in the one below), so mostly only the levels
    where a component splits or bends are labelled.

    Args:
        levels: (H,W) int, pixel p is foreground at level k when levels[p] > k (0 ≤ levels ≤ count).
        count: the number of levels.
        holes: also box the holes (wsolevaluation's contours).
        start: the lowest level wanted.

    Returns:
        count arrays (n_k,4) int64, end-exclusive (those below `start` empty); a level without
        foreground gives (0,4).
    """
    lv = levels.astype(np.int64)
    if not holes and _compiled is not None:  # the max-tree: every level in one pass
        boxes, which = level_components(lv, count)
        cuts = np.searchsorted(which, np.arange(count + 1))
        empty = np.zeros((0, 4), dtype=np.int64)
        return [boxes[cuts[k] : cuts[k + 1]] if k >= start else empty for k in range(count)]
    single, rows, box = _single_levels(lv, count)
    by_cols, _, box_t = _single_levels(np.ascontiguousarray(lv.T), count)
    single, box = single | by_cols, np.where(single[:, None], box, box_t[:, [1, 0, 3, 2]])
    out = [np.zeros((0, 4), dtype=np.int64) for _ in range(count)]
    wanted = rows[start:] > 0
    if wanted.sum() > 4 and single[start:][wanted].mean() < 0.1:  # hardly a blob anywhere: label every level
        for j in range(start, count):
            out[j] = _contours(lv > j) if holes else component_boxes(lv > j)
        return out
    k = start
    while k < count:
        if not rows[k]:
            k += 1
            continue
        if single[k]:
            out[k] = box[k][None]
            k += 1
            continue
        x0, y0, x1, y1 = box[k]  # label only the foreground's box
        fg = lv[y0:y1, x0:x1] > k
        labels, n = _label(fg)
        slices = ndimage.find_objects(labels) if n > 1 else None
        out[k] = box[k][None] if n == 1 else _boxes(slices) + np.array([x0, y0, x0, y0])
        if holes:
            hole_boxes = _hole_boxes(fg, out[k] - np.array([x0, y0, x0, y0])) + np.array([x0, y0, x0, y0])
            out[k] = np.concatenate([out[k], hole_boxes]) if len(hole_boxes) else out[k]
        if n == 1:  # one component that bends: go on level by level
            k += 1
            continue
        if n > FRAGMENTED:  # noise-like maps: labelling each level whole is cheaper than recursing
            for j in range(k + 1, count):
                out[j] = _contours(lv > j) if holes else component_boxes(lv > j)
            return out
        for i, (rs, cs) in enumerate(slices, start=1):
            inside = np.where(labels[rs, cs] == i, lv[y0:y1, x0:x1][rs, cs], 0)  # this component's levels only
            shift = np.array([x0 + cs.start, y0 + rs.start, x0 + cs.start, y0 + rs.start])
            top = int(inside.max())  # its levels from `top` on are empty
            if inside.size < SMALL:  # a few pixels: label its levels directly
                found = {j: (_contours if holes else component_boxes)(inside > j) for j in range(k + 1, top)}
            else:
                found = dict(enumerate(level_boxes(inside, top, holes, k + 1)))
            for j, boxes in found.items():
                if len(boxes):
                    out[j] = np.concatenate([out[j], boxes + shift])
        return out
    return out


FRAGMENTED = 8  # components at a split beyond which level_boxes labels every level instead
SMALL = 1024  # pixels of a component's box below which its levels are labelled directly


def _single_levels(lv: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every level k of `lv > k`: whether it is one component of single-run rows, how many rows
    hold foreground, and the foreground's box (count,4), from the rows' profiles in O(H·W + H·count)."""
    h, w = lv.shape
    width = count + 2
    offsets = (np.arange(h) * width)[:, None]

    def at_most(m: np.ndarray) -> np.ndarray:  # (H,count): per row, entries of m that are ≤ k
        return np.cumsum(np.bincount((offsets + m).ravel(), minlength=h * width).reshape(h, width), 1)[:, :count]

    # A run starts at column j of level k when lv[j−1] ≤ k < lv[j].
    prev = np.concatenate([np.zeros((h, 1), np.int64), lv[:, :-1]], axis=1)
    up = lv > prev
    starts = np.bincount((offsets + prev)[up], minlength=h * width)
    stops = np.bincount((offsets + lv)[up], minlength=h * width)
    runs = np.cumsum((starts - stops).reshape(h, width), axis=1)[:, :count]
    first = at_most(np.maximum.accumulate(lv, axis=1))  # columns before the first foreground one
    last = w - 1 - at_most(np.maximum.accumulate(lv[:, ::-1], axis=1))
    has = first < w  # (H,count)
    rows = has.sum(0)
    y0 = np.argmax(has, axis=0)
    y1 = h - 1 - np.argmax(has[::-1], axis=0)
    touch = (first[1:] <= last[:-1] + 1) & (first[:-1] <= last[1:] + 1)
    apart = (has[1:] & has[:-1] & ~touch).any(0)
    single = (rows > 0) & ~((runs > 1) & has).any(0) & (rows == y1 - y0 + 1) & ~apart
    box = np.stack([np.where(has, first, w).min(0), y0, np.where(has, last, -1).max(0) + 1, y1 + 1], axis=1)
    return single, rows, box


try:  # Numba compiles the max-tree; without it, the profiles and labelling above do the work
    from camlight.metrics._maxtree import component_boxes_by_level as _compiled
    from camlight.metrics._maxtree import score_maps
except ImportError:  # pragma: no cover - numba is a dependency, but a platform may lack its wheels
    _compiled = score_maps = None
