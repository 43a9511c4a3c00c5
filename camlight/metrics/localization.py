"""Localization metrics: how well a map (B,H,W) agrees with ground-truth masks and boxes.

Each metric's maths lives once, in a private `_update` helper returning the per-image values or the
sums a `Metric` accumulates; the functional forms here and the `Metric` classes in
`camlight.metrics.classes` both call it. Maps are any non-negative saliency maps at the ground
truth's resolution (camlight's are in [0,1]); boxes are (B,4) float xyxy pixels, end-exclusive.
"""

from __future__ import annotations

import numpy as np
import torch

from camlight.metrics import _components
from camlight.metrics._components import largest_component_box, level_components, to_numpy

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


def _cuts(maps: torch.Tensor, thresholds) -> tuple[torch.Tensor, torch.Tensor]:
    """(cuts (B,T) τ · max in the maps' dtype, valid (B,)): a map whose max is not finite and
    positive (all zeros, NaN somewhere, inf) has no foreground at any threshold."""
    peak = maps.flatten(1).amax(1)
    cuts = torch.as_tensor(thresholds, dtype=torch.float64).to(maps)[None, :] * peak[:, None]
    return cuts, torch.isfinite(peak) & (peak > 0)


def _thresholded(maps: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(B,T,H,W) foreground of maps (B,H,W) at each threshold τ (T,): at least τ · max, and above 0
    (so a zero map has no box, and τ = 0 does not make the whole image one box — Choe et al.
    threshold strictly)."""
    cuts, valid = _cuts(maps, thresholds)
    fg = (maps[:, None] >= cuts[:, :, None, None]) & (maps[:, None] > 0)
    return fg & valid[:, None, None, None]


def _largest_component_boxes(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B,4) float box of the largest component of each map above `threshold` · max (zeros: none).
    One threshold: SciPy's labelling is faster than the compiled pass, which pays off over many.
    A map shared by the batch (stride 0, the centre baseline) is labelled once."""
    shared = maps.shape[0] > 1 and maps.stride(0) == 0
    fg = to_numpy(_thresholded(maps[:1] if shared else maps, torch.tensor([threshold], dtype=torch.float64))[:, 0])
    boxes = np.stack([largest_component_box(f) for f in fg]) if len(fg) else np.zeros((0, 4))
    boxes = np.repeat(boxes, maps.shape[0], axis=0) if shared else boxes
    return torch.from_numpy(boxes).to(maps.device, torch.float32)


def box_from_map(saliency: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Zhou et al. 2016: (4,) xyxy end-exclusive box of the largest 8-connected component of
    `saliency` (H,W) >= threshold · max (and > 0); zeros when the map has no positive pixel. Of
    components with the same area, the one whose last pixel comes first in row-major order wins."""
    return _largest_component_boxes(saliency[None], threshold)[0]


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
    predicted = _largest_component_boxes(maps, threshold)
    return _best_iou(predicted, box_sets(boxes).to(predicted)) >= iou


DEFAULT_THRESHOLDS = tuple(i / 100 for i in range(100))


def _levels(maps: torch.Tensor, thresholds) -> torch.Tensor:
    """(B,H,W) int64: how many thresholds τ each pixel reaches (map ≥ τ · max, and > 0), so that
    the foreground at the k-th threshold is `levels > k` — `_thresholded`'s sets, all at once."""
    cuts, valid = _cuts(maps, thresholds)
    levels = torch.searchsorted(cuts.contiguous(), maps.flatten(1).contiguous(), right=True).view(maps.shape)
    keep = (maps > 0) & valid[:, None, None]
    return torch.where(keep, levels, torch.zeros_like(levels))


def _compiled_inputs(maps: torch.Tensor, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(maps, cuts) as CPU arrays the compiled code reads: the cuts τ · max taken in the maps'
    own dtype (as `_levels`), both then in float32 (half, bfloat16: exactly) or float64; a map
    without foreground gets infinite cuts."""
    maps = maps.detach()
    cuts, valid = _cuts(maps, thresholds)
    cuts = torch.where(valid[:, None], cuts, torch.full_like(cuts, float("inf")))
    dtype = torch.float64 if maps.dtype == torch.float64 else torch.float32
    return maps.to("cpu", dtype).contiguous().numpy(), cuts.to("cpu", dtype).contiguous().numpy()


def component_scores(
    maps: torch.Tensor, boxes: torch.Tensor | None, thresholds, cam_level: int = -1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The box work of a batch in one pass over each map's components at every threshold (the
    compiled max-tree, images over torch's threads): (best (B,T) float64 on the CPU, the highest
    IoU of any component of `maps` ≥ τ · max (and > 0) with one of the image's boxes, 0 without
    boxes; cam (B,4) float32 on maps' device, the largest component's box at threshold index
    `cam_level`, as `box_from_map`, zeros for −1). A map shared by the batch (stride 0, the centre
    baseline) is labelled once."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B,H,W), got {tuple(maps.shape)}")
    b = maps.shape[0]
    sets = np.zeros((b, 0, 4)) if boxes is None else box_sets(boxes).detach().cpu().double().numpy()
    if len(sets) != b:
        raise ValueError(f"{b} maps but boxes for {len(sets)} images")
    shared = b > 1 and maps.stride(0) == 0
    values, cuts = _compiled_inputs(maps[:1] if shared else maps, thresholds)
    best, cam = _components.score_maps(values, cuts, sets, cam_level, threads=torch.get_num_threads(), shared=shared)
    return torch.from_numpy(best), torch.from_numpy(cam).to(maps.device, torch.float32)


def _hit_counts(best: torch.Tensor, ious) -> torch.Tensor:
    """(T,D) images whose best IoU (B,T) at each threshold reaches each δ."""
    return (best[:, :, None] >= torch.tensor(ious, dtype=best.dtype)).sum(0).float()


def _max_box_acc_update(maps, boxes, thresholds, ious) -> torch.Tensor:
    """(T, D) hit counts: images whose best box over all components at τ reaches IoU δ with one
    of their ground-truth boxes."""
    if _components.score_maps is not None:
        return _hit_counts(component_scores(maps, boxes, thresholds)[0], ious).to(maps.device)
    sets = box_sets(boxes).double().cpu()
    b, t = maps.shape[0], len(thresholds)
    shared = b > 1 and maps.stride(0) == 0  # one map for every image (the centre baseline)
    levels = _levels(maps[:1] if shared else maps.detach(), thresholds).cpu().numpy()
    per_image = [level_components(levels[0], t)] * b if shared else [level_components(lv, t) for lv in levels]
    found = [len(boxes_) for boxes_, _ in per_image]
    if sum(found) == 0:
        return torch.zeros(t, len(ious), device=maps.device)
    candidates = torch.from_numpy(np.concatenate([boxes_ for boxes_, _ in per_image])).double()
    level = torch.from_numpy(np.concatenate([which for _, which in per_image]))
    image = torch.repeat_interleave(torch.arange(b), torch.tensor(found))
    score = _best_iou(candidates, sets[image])  # each candidate against its image's boxes
    best = torch.zeros(b * t, dtype=torch.float64).scatter_reduce(0, image * t + level, score, reduce="amax")
    return _hit_counts(best.view(b, t), ious).to(maps.device)


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
    return binary_iou(maps >= threshold, masks, ignore)


def binary_iou(pred: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) IoU of two (B,H,W) boolean masks; 0 when both are empty; `ignore` pixels count neither way."""
    pred, gt = pred.bool(), masks.bool()
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
