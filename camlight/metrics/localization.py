"""Localization metrics: how well a map (B,H,W) agrees with ground-truth masks and boxes.

Each metric's maths lives once, in a private `_update` helper returning the per-image values or the
sums a `Metric` accumulates; the functional forms here and the `Metric` classes in
`camlight.metrics.classes` both call it. Maps are any non-negative saliency maps at the ground
truth's resolution (camlight's are in [0,1]); boxes are (B,4) float xyxy pixels, end-exclusive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# -- pointing game ---------------------------------------------------------------------------


def default_tolerance(height: int) -> float:
    """15 px at 224 px (Zhang et al. 2016), scaled with the image height."""
    return 15.0 * height / 224.0


def _argmax_points(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of each map's maximum; ties go to the first in row-major order."""
    flat = maps.flatten(1).argmax(dim=1)
    return flat // maps.shape[-1], flat % maps.shape[-1]


def _pointing_hits(maps: torch.Tensor, masks: torch.Tensor, tolerance: float | None) -> torch.Tensor:
    if maps.shape != masks.shape or maps.dim() != 3:
        raise ValueError(f"maps and masks must both be (B,H,W), got {tuple(maps.shape)} and {tuple(masks.shape)}")
    tol = default_tolerance(maps.shape[-2]) if tolerance is None else float(tolerance)
    rows, cols = _argmax_points(maps)
    ys = torch.arange(maps.shape[-2], device=maps.device)[None, :, None]
    xs = torch.arange(maps.shape[-1], device=maps.device)[None, None, :]
    dist2 = (ys - rows[:, None, None]) ** 2 + (xs - cols[:, None, None]) ** 2
    return (masks.bool() & (dist2 < tol * tol)).flatten(1).any(dim=1)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: float | None = None) -> torch.Tensor:
    """Zhang et al. 2016, TorchRay's rule: (B,) bool, a hit when some ground-truth pixel lies strictly
    within `tolerance` pixels (Euclidean) of the map's maximum.

    Args:
        maps: (B,H,W) saliency maps.
        masks: (B,H,W) bool ground truth.
        tolerance: pixels; None = 15·H/224. Images whose mask is empty never hit (the `Metric`
            leaves them out).
    """
    return _pointing_hits(maps, masks, tolerance)


# -- energy-based pointing game --------------------------------------------------------------


def _box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B,H,W) bool: pixels [y0:y1, x0:x1] of each xyxy end-exclusive box."""
    ys = torch.arange(height, device=boxes.device)[None, :, None]
    xs = torch.arange(width, device=boxes.device)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)


def box_sets(boxes: torch.Tensor) -> torch.Tensor:
    """(B,4) one box per image, or (B,K,4) up to K per image padded with zero rows → (B,K,4)."""
    return boxes[:, None] if boxes.dim() == 2 else boxes


def _boxes_region(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B,H,W) bool union of each image's boxes ((B,4) or padded (B,K,4))."""
    sets = box_sets(boxes)
    b, k = sets.shape[:2]
    return _box_mask(sets.reshape(b * k, 4), height, width).view(b, k, height, width).any(1)


def energy_pointing_game(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Wang et al. 2020 (Score-CAM): (B,) Σ map inside the box / Σ map, the map clipped at 0.

    Boxes are xyxy: x indexes columns, y rows (the authors' code swaps them). With several boxes
    per image ((B,K,4), zero rows as padding) the energy inside their union counts. A map with no
    positive energy scores 0.
    """
    energy = maps.clamp(min=0)
    inside = (energy * _boxes_region(boxes, *maps.shape[-2:])).flatten(1).sum(1)
    total = energy.flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), torch.zeros_like(total))


# -- boxes from maps -------------------------------------------------------------------------


def _components(fg: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of (N,H,W) bool masks: (N,H,W) float, 0 for background.

    Each foreground pixel starts with its own id (index + 1). Every round, labels spread to
    neighbours by 3×3 max-pooling and then jump: a pixel takes the label of the pixel its label
    names. Labels only ever name pixels of the same component and only grow, so each component
    ends with its largest id. The jumps cut the rounds for blob-like and noisy masks (what maps
    give) to a few dozen; a worst-case shape still needs one round per pixel of its length.
    """
    n, h, w = fg.shape
    dtype = torch.float32 if h * w < 2**24 else torch.float64  # ids must be exact
    ids = torch.arange(1, h * w + 1, device=fg.device, dtype=dtype).view(1, h, w).expand(n, h, w)
    labels = torch.where(fg, ids, torch.zeros_like(ids))
    mask = fg.to(dtype)
    while True:
        spread = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * mask
        flat = spread.view(n, -1)
        jumped = flat.gather(1, (flat.long() - 1).clamp(min=0)).view(n, h, w) * mask
        new = torch.maximum(spread, jumped)
        if torch.equal(new, labels):
            return labels
        labels = new


def _boxes_of(keep: torch.Tensor) -> torch.Tensor:
    """(N,4) xyxy end-exclusive box of the pixels where `keep` (N,H,W) holds; zeros when none."""
    rows, cols = keep.any(dim=2), keep.any(dim=1)
    h, w = keep.shape[-2:]
    ar_h = torch.arange(h, device=keep.device)
    ar_w = torch.arange(w, device=keep.device)
    y0 = torch.where(rows, ar_h, h).amin(1)
    y1 = torch.where(rows, ar_h + 1, 0).amax(1)
    x0 = torch.where(cols, ar_w, w).amin(1)
    x1 = torch.where(cols, ar_w + 1, 0).amax(1)
    box = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(keep.flatten(1).any(1)[:, None], box, torch.zeros_like(box))


def _thresholded(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """Foreground: at least threshold · max, and above 0 (so a zero map has no box, and τ = 0 does
    not make the whole image one box — Choe et al. threshold strictly)."""
    peak = maps.flatten(1).amax(1)[:, None, None]
    return (maps >= threshold * peak) & (maps > 0)


def _largest_component_boxes(fg: torch.Tensor) -> torch.Tensor:
    labels = _components(fg)
    n = labels.shape[0]
    flat = labels.flatten(1).long()
    counts = torch.zeros(n, labels.shape[1] * labels.shape[2] + 1, device=labels.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=counts.dtype))
    counts[:, 0] = 0  # background
    biggest = counts.argmax(1)  # ties: the smallest id
    return _boxes_of((labels == biggest[:, None, None].to(labels.dtype)) & fg)


def box_from_map(saliency: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Zhou et al. 2016: (4,) xyxy end-exclusive box of the largest 8-connected component of
    `saliency` (H,W) >= threshold · max (and > 0); zeros when the map has no positive pixel."""
    return _largest_component_boxes(_thresholded(saliency[None], threshold))[0]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) IoU of xyxy end-exclusive boxes (N,4) and (N,4)."""
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    area = lambda z: (z[:, 2] - z[:, 0]).clamp(min=0) * (z[:, 3] - z[:, 1]).clamp(min=0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def _best_iou(predicted: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """(N,) IoU of each predicted box (N,4) with the best-matching of its ground-truth boxes (N,K,4)."""
    n, k = sets.shape[:2]
    return box_iou(predicted[:, None].expand(n, k, 4).reshape(-1, 4), sets.reshape(-1, 4)).view(n, k).amax(1)


def box_accuracy(maps: torch.Tensor, boxes: torch.Tensor, threshold: float = 0.2, iou: float = 0.5) -> torch.Tensor:
    """Zhou et al. 2016: (B,) bool, IoU(box of the largest component above threshold·max, GT box) >= iou.

    With several ground-truth boxes per image ((B,K,4), zero rows as padding) the best-matching
    one counts, as in the ILSVRC localization protocol. `threshold` 0.2 as in CAM; 0.15 is the
    Grad-CAM paper's choice.
    """
    predicted = _largest_component_boxes(_thresholded(maps, threshold))
    return _best_iou(predicted, box_sets(boxes).to(predicted)) >= iou


DEFAULT_THRESHOLDS = tuple(i / 100 for i in range(100))


def _max_box_acc_update(maps, boxes, thresholds, ious) -> torch.Tensor:
    """(T, D) hit counts: images whose best box over all components at τ reaches IoU δ with one
    of their ground-truth boxes."""
    b, h, w = maps.shape
    sets = box_sets(boxes)
    hits = torch.zeros(len(thresholds), len(ious), device=maps.device)
    iou_t = torch.tensor(ious, device=maps.device)
    for t, tau in enumerate(thresholds):
        fg = _thresholded(maps, tau)
        labels = _components(fg)
        best = torch.zeros(b, device=maps.device)
        for i in range(b):
            ids = labels[i].unique()
            ids = ids[ids > 0]
            if len(ids) == 0:
                continue
            cand = _boxes_of(labels[i][None] == ids[:, None, None])
            gt = sets[i].to(cand)
            best[i] = _best_iou(cand, gt[None].expand(len(cand), *gt.shape)).max()
        hits[t] = (best[:, None] >= iou_t).sum(0)
    return hits


def max_box_acc_v2(maps, boxes, thresholds=None, ious=(0.3, 0.5, 0.7)) -> float:
    """Choe et al. 2020: for each IoU δ the best box accuracy over thresholds τ (boxes from every
    component, the best-matching one counts), averaged over δ.

    Thresholds apply to τ·max of each map (τ itself for maps in [0,1] with max 1, as in their code).
    """
    hits = _max_box_acc_update(maps, boxes, thresholds or DEFAULT_THRESHOLDS, ious)
    return float((hits / maps.shape[0]).amax(0).mean())


# -- masks -----------------------------------------------------------------------------------


def mask_iou(
    maps: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5, ignore: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) IoU of (map >= threshold) with the mask; 0 when both are empty. Pixels where `ignore`
    (B,H,W) is set (e.g. a trimap's uncertain boundary) count neither way."""
    pred, gt = maps >= threshold, masks.bool()
    if ignore is not None:
        keep = ~ignore.bool()
        pred, gt = pred & keep, gt & keep
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


PXAP_BINS = 101  # [0, .01), ..., [.99, 1), and 1.0 on its own, as in Choe et al.'s code


def _pxap_update(
    maps: torch.Tensor, masks: torch.Tensor, bins: int = PXAP_BINS, ignore: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Histograms (bins,) of map values on mask pixels and on background pixels (values clamped
    to [0,1]); pixels where `ignore` is set are in neither."""
    idx = (maps.clamp(0, 1) * (bins - 1)).floor().long()
    gt = masks.bool()
    keep = torch.ones_like(gt) if ignore is None else ~ignore.bool()
    pos = torch.bincount(idx[gt & keep], minlength=bins).float()
    neg = torch.bincount(idx[~gt & keep], minlength=bins).float()
    return pos, neg


def _pxap_compute(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Area under the precision-recall curve over the thresholds of the histogram's bin edges."""
    tp = pos.flip(0).cumsum(0).flip(0)  # pixels >= each bin's lower edge
    fp = neg.flip(0).cumsum(0).flip(0)
    if tp[0] == 0:
        return 0.0
    precision = tp / (tp + fp).clamp(min=1)
    recall = tp / tp[0]
    # Σ (r_i − r_{i+1}) · p_i, thresholds rising (recall falling), as in Choe et al.'s code.
    recall_next = torch.cat([recall[1:], recall.new_zeros(1)])
    return float(((recall - recall_next) * precision).sum())


def pxap(maps: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor | None = None) -> float:
    """Choe et al. 2020: pixel average precision of the map as a per-pixel mask predictor, over
    thresholds 0, 0.01, ..., 0.99, 1.0 (maps clamped to [0,1]). Every pixel of every image counts,
    also of images without a mask (they add negatives), except those where `ignore` is set; with
    no positive pixel at all it is 0."""
    return _pxap_compute(*_pxap_update(maps, masks, ignore=ignore))
