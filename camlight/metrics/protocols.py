"""The papers' localization protocols over a whole split, as torchmetrics `Metric`s that reduce
across DDP ranks: CAM's localization error, the WSOL benchmark's MaxBoxAccV2 and PxAP, the
pointing game, the causal deletion/insertion AUC and AOPC.

Each protocol follows its paper by default (`compat="paper"`); where the reference code that
produced the published tables differs, a named switch scores maps exactly as that code does:

- `wsol`, `compat="wsolevaluation"` (Choe et al.'s `evaluation.py`): maps quantised to uint8 and
  thresholded strictly (`q > int(τ · max q)`); a box for every contour `cv2.findContours(...,
  RETR_TREE)` returns — the holes of components too — from `cv2.boundingRect`, one pixel wider
  than the component and clipped to W − 1, scored with inclusive (+1) IoU; a map without
  foreground counts the box [0, 0, 0, 0].
- `pointing`, `compat="torchray"` (TorchRay's `PointingGame`): the mean per class is taken over
  *every* class, unseen ones counting 0, and the centre baseline points at (W/2, H/2).

Ground truth is the camlight batch format: maps (B,H,W) of the labelled class, boxes (B,4) or
(B,K,4) xyxy end-exclusive, masks (B,H,W). Images without a box (or mask) are left out of the
box (mask) scores in every mode; PxAP counts every pixel of every image.

`camlight.metrics.protocol_set.Protocols` runs every protocol for every method at once.

Example::

    wsol = WsolBoxes(threshold_grid(0.01), compat="wsolevaluation")
    wsol.update(maps, boxes)
    wsol.compute()    # {"max_box_acc_v2": 0.63, "max_box_acc@30": ..., "best_threshold@30": ...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torchmetrics import Metric

from camlight.metrics import localization as _l
from camlight.metrics._components import reference_best_ious, reference_candidates
from camlight.metrics.classes import _has_box, _has_mask

try:  # PxAP's histograms compiled for maps on the CPU; torch.bucketize elsewhere (and without Numba)
    from camlight.metrics._histogram import pixel_counts
except ImportError:  # pragma: no cover - numba is a dependency, but a platform may lack its wheels
    pixel_counts = None

PROTOCOLS = ("cam_loc", "wsol", "pointing", "causal", "aopc", "grabcut")
# The protocols that score against boxes or masks (and the centre baseline with them).
GROUND_TRUTH_PROTOCOLS = ("cam_loc", "wsol", "pointing", "grabcut")
COMPAT = {"wsol": ("paper", "wsolevaluation"), "pointing": ("paper", "torchray")}
CENTER = "center_baseline"


@dataclass(frozen=True)
class Options:
    """How the protocols score (the papers' values by default).

    Attributes:
        cam_threshold: CAM's box threshold τ · max (0.2; the Grad-CAM paper uses 0.15).
        iou: CAM's IoU for a correct box (0.5).
        topk: CAM's top-k localization errors (k below the number of classes are reported).
        wsol_ious: MaxBoxAccV2's IoU thresholds δ.
        threshold_step: the grid of map thresholds of MaxBoxAccV2 and PxAP, 0 to 1 (0.01 as in
            wsolevaluation's command line; its training scripts use 0.001).
        tolerance: the pointing game's tolerance in pixels (None: 15 · H / 224).
        causal_steps: deletion/insertion curve steps.
        aopc_region: AOPC's square region side in pixels (9 in Samek et al.).
        aopc_steps: AOPC's perturbation steps L (100 in Samek et al.).
        compat: protocol → "paper" or its reference code's name (see `COMPAT`).
    """

    cam_threshold: float = 0.2
    iou: float = 0.5
    topk: tuple[int, ...] = (1, 5)
    wsol_ious: tuple[float, ...] = (0.3, 0.5, 0.7)
    threshold_step: float = 0.01
    tolerance: float | None = None
    causal_steps: int = 32
    aopc_region: int = 9
    aopc_steps: int = 100
    compat: dict = field(default_factory=dict)

    def mode(self, protocol: str) -> str:
        return self.compat.get(protocol, "paper")


def check_protocols(names, compat: dict | None = None) -> list[str]:
    """`names` without repeats; ValueError naming the valid choices for an unknown protocol or mode."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol {', '.join(map(repr, unknown))}; choose from {', '.join(PROTOCOLS)}")
    for protocol, mode in (compat or {}).items():
        if protocol not in COMPAT:
            raise ValueError(f"compat.{protocol}: only {', '.join(COMPAT)} have a reference mode")
        if mode not in COMPAT[protocol]:
            raise ValueError(f"compat.{protocol}={mode!r}; choose from {', '.join(COMPAT[protocol])}")
    return list(dict.fromkeys(names))


def threshold_grid(step: float) -> tuple[float, ...]:
    """0, step, 2·step, ... below 1: the values `np.arange(0, 1, step)` gives, as wsolevaluation builds them."""
    return tuple(i * step for i in range(math.ceil(1.0 / step)))


def center_map(height: int, width: int, device=None) -> torch.Tensor:
    """(H,W) the centre baseline: a Gaussian centred on the image, σ a quarter of each side, max 1."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2) / (height / 4)
    xs = (torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2) / (width / 4)
    return torch.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))


def label_ranks(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) 0-based rank of each label among its image's logits (0: the top-1 prediction); ties
    rank the label first."""
    own = logits.gather(1, labels[:, None].long())
    return (logits > own).sum(1)


# -- CAM: localization error -----------------------------------------------------------------


def cam_boxes(maps: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """(B,4) Zhou et al.'s box of each map: the largest 8-connected component above τ · max."""
    return _l._largest_component_boxes(maps, threshold)


class CamLocalization(Metric):
    """Zhou et al. 2016: top-k and GT-known localization error, per class and overall.

    An image is localized when the box of its labelled class's map (largest component above
    τ · max) has IoU ≥ `iou` with *any* ground-truth box of that class; top-k localization also
    needs the label among the k highest logits (ILSVRC's rule: a guess counts when both its class
    and its box are right, and only the labelled class's guess can be). `compute()` gives errors
    (1 − accuracy) and the classification errors beside them.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, num_classes: int, threshold: float = 0.2, iou: float = 0.5, topk=(1, 5), **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.threshold, self.iou = num_classes, threshold, iou
        self.topk = tuple(k for k in topk if k == 1 or k < num_classes)
        # Localization (gt-known, then top-k) over images with a box; classification over every image.
        self.add_state("located", torch.zeros(1 + len(self.topk), num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("classified", torch.zeros(len(self.topk), num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    @staticmethod
    def per_image(maps, boxes, ranks, threshold: float = 0.2, iou: float = 0.5, topk=(1, 5), predicted=None) -> dict:
        """{"iou": (B,), "gt_known": (B,) bool, "top<k>_loc": (B,) bool} for each image; `predicted`:
        the maps' boxes (`cam_boxes`) when already found."""
        predicted = cam_boxes(maps, threshold) if predicted is None else predicted
        best = _l._best_iou(predicted, _l.box_sets(boxes).to(predicted))
        known = best >= iou
        out = {"iou": best, "gt_known": known}
        for k in topk:
            out[f"top{k}_loc"] = known & (ranks.to(known.device) < k)
        return out

    def update(self, maps, boxes, labels, ranks, scores: dict | None = None) -> None:
        """Accumulate a batch; `scores` are its `per_image` values when already computed."""
        if scores is None:
            scores = self.per_image(maps, boxes, ranks, self.threshold, self.iou, self.topk)
        labels = labels.long()
        for r, k in enumerate(self.topk):
            self.classified[r].index_add_(0, labels, (ranks < k).long())
        self.images.index_add_(0, labels, torch.ones_like(labels))
        valid = _has_box(boxes)
        labels = labels[valid]
        rows = [scores["gt_known"][valid]] + [scores[f"top{k}_loc"][valid] for k in self.topk]
        for r, hit in enumerate(rows):
            self.located[r].index_add_(0, labels, hit.long())
        self.count.index_add_(0, labels, torch.ones_like(labels))

    def _errors(self, located, count, classified, images) -> dict[str, float]:
        out = {}
        if count > 0:
            acc = (_f64(located) / _f64(count)).tolist()
            out["gt_known_loc_err"] = 1 - acc[0]
            out.update({f"top{t}_loc_err": 1 - a for t, a in zip(self.topk, acc[1:], strict=True)})
        if images > 0:
            acc = (_f64(classified) / _f64(images)).tolist()
            out.update({f"top{t}_cls_err": 1 - a for t, a in zip(self.topk, acc, strict=True)})
        return out

    def values(self) -> dict[str, float]:
        """The errors from the current states (`compute()` without torchmetrics' sync and cache)."""
        return self._errors(self.located.sum(1), self.count.sum(), self.classified.sum(1), self.images.sum())

    def compute(self) -> dict[str, float]:
        return self.values()

    def per_class(self) -> list[dict[str, float]]:
        """One dict of errors per class (empty for classes without an image)."""
        return [
            {
                "images": int(self.images[c]),
                **self._errors(self.located[:, c], self.count[c], self.classified[:, c], self.images[c]),
            }
            if self.images[c] > 0
            else {}
            for c in range(self.num_classes)
        ]


# -- WSOL: MaxBoxAccV2 and PxAP --------------------------------------------------------------


def _reference_hits(maps: torch.Tensor, boxes: torch.Tensor, thresholds, ious) -> torch.Tensor:
    """(T,D) hit counts as wsolevaluation's `BoxEvaluator.accumulate` counts them (module docstring)."""
    quantised = (maps.detach().float().cpu() * 255).to(torch.uint8)  # its (map · 255).astype(uint8)
    hits = torch.zeros(len(thresholds), len(ious), dtype=torch.float64)
    limits = torch.tensor(ious, dtype=torch.float64)
    shared = len(maps) > 1 and maps.stride(0) == 0  # one map for every image (the centre baseline)
    candidates = reference_candidates(quantised[0].numpy(), thresholds) if shared else None
    for q, gt in zip(quantised, _l.box_sets(boxes).detach().cpu(), strict=True):
        gt = gt[(gt[:, 2] > gt[:, 0]) & (gt[:, 3] > gt[:, 1])].long()
        found = candidates or reference_candidates(q.numpy(), thresholds)
        best = torch.from_numpy(reference_best_ious(found, gt.numpy(), len(thresholds)))
        hits += best[:, None] >= limits[None, :]
    return hits.float().to(maps.device)


class WsolBoxes(Metric):
    """Choe et al. 2020: MaxBoxAccV2 — box accuracy at every threshold τ of the grid and IoU δ,
    the best τ per δ, averaged over δ — and box accuracy at thresholds frozen beforehand
    (`calibrated`, chosen on a held-out split with `best_thresholds()`).

    Args:
        thresholds: the τ grid (`threshold_grid(0.01)`).
        ious: the δ values.
        compat: "paper" (camlight's components, exact boxes) or "wsolevaluation".
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, thresholds=None, ious=(0.3, 0.5, 0.7), compat: str = "paper", **kwargs):
        super().__init__(**kwargs)
        self.thresholds = tuple(thresholds or threshold_grid(0.01))
        self.ious, self.compat = tuple(ious), compat
        self.add_state(
            "hits", torch.zeros(len(self.thresholds), len(self.ious), dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def counts(self, maps: torch.Tensor, boxes: torch.Tensor, best=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(hits (T,D), images) of one batch, without accumulating (`add` does); `best`: the maps'
        best IoUs per threshold (B,T) when already found (`localization.component_scores`)."""
        valid = _has_box(boxes)
        if best is not None and self.compat == "paper":
            return _l._hit_counts(best[valid.cpu()], self.ious).round().long(), valid.sum()
        maps, boxes = _rows(maps, valid), boxes[valid]
        if self.compat == "wsolevaluation":
            hits = _reference_hits(maps, boxes, self.thresholds, self.ious)
        else:
            hits = _l._max_box_acc_update(maps, boxes, self.thresholds, self.ious)
        return hits.round().long(), valid.sum()

    def add(self, hits: torch.Tensor, images: torch.Tensor) -> None:
        self.hits += hits.to(self.hits.device)
        self.count += images.to(self.count.device)

    def update(self, maps: torch.Tensor, boxes: torch.Tensor, best=None) -> None:
        self.add(*self.counts(maps, boxes, best))

    def curves(self) -> torch.Tensor:
        """(T,D) accuracy at each threshold and IoU."""
        return _f64(self.hits) / _f64(self.count).clamp(min=1)

    def best_thresholds(self) -> list[float]:
        """The τ of the best accuracy for each δ (the first of equals): what a calibration split freezes."""
        return [self.thresholds[int(i)] for i in self.curves().argmax(0)]

    def compute(self) -> dict[str, float]:
        return self.values()

    def values(self, calibrated: list[float] | None = None) -> dict[str, float]:
        """MaxBoxAccV2 and, per δ, its value and threshold; with `calibrated` (a τ per δ) also the
        accuracy at those frozen thresholds."""
        if self.count <= 0:
            return {}
        acc = self.curves()
        best = acc.amax(0)
        out = {"max_box_acc_v2": float(best.mean())}
        for d, value, tau in zip(self.ious, best.tolist(), self.best_thresholds(), strict=True):
            out[f"max_box_acc@{round(d * 100)}"] = value
            out[f"best_threshold@{round(d * 100)}"] = tau
        if calibrated is not None:
            rows = [min(range(len(self.thresholds)), key=lambda i: abs(self.thresholds[i] - t)) for t in calibrated]
            frozen = acc[rows, torch.arange(len(self.ious))]
            out["box_acc_v2_calibrated"] = float(frozen.mean())
            for d, value in zip(self.ious, frozen.tolist(), strict=True):
                out[f"box_acc_calibrated@{round(d * 100)}"] = value
        return out


def float32_edges(edges) -> torch.Tensor:
    """Float64 bin edges as float32, each rounded *up* to the next float32 where float32 rounding
    took it below: for float32 values `v ≥ edge32` then holds exactly when `v ≥ edge64` (what
    `np.histogram` decides in float64), without float64 on the device (MPS has none)."""
    e64 = torch.tensor(tuple(edges), dtype=torch.float64)
    e32 = e64.float()
    up = torch.nextafter(e32, torch.tensor(float("inf")))
    return torch.where(e32.double() < e64, up, e32)


class Pxap(Metric):
    """Choe et al. 2020: pixel average precision over the threshold grid, histograms summed over
    images and ranks. Bins are the grid's intervals compared in float64 (value ≥ edge), as
    `np.histogram` does in wsolevaluation's `MaskEvaluator`, with 1.0 in a bin of its own."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, thresholds=None, **kwargs):
        super().__init__(**kwargs)
        grid = tuple(thresholds or threshold_grid(0.01))
        if grid[0] != 0 or any(b <= a for a, b in zip(grid, grid[1:], strict=False)) or grid[-1] >= 1:
            raise ValueError(f"PxAP thresholds must rise from 0 to below 1, got {grid[:3]}...{grid[-1:]}")
        self.edges = float32_edges((*grid, 1.0))  # not a buffer: a module's .half() must not round it
        self.add_state("pos", torch.zeros(len(grid) + 1, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("neg", torch.zeros(len(grid) + 1, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, maps: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor | None = None) -> None:
        if maps.shape != masks.shape:
            raise ValueError(f"maps and masks must have one shape, got {tuple(maps.shape)} and {tuple(masks.shape)}")
        ignore = None if ignore is None else ignore.expand_as(masks)
        one = maps.dim() == 3 and len(maps) > 1 and maps.stride(0) == 0  # one map for every image: bin it once
        values = (maps[:1] if one else maps).detach().float()
        compiled = pixel_counts is not None and values.dim() == masks.dim() == 3
        if compiled and values.device.type == "cpu" and masks.device.type == "cpu":
            ignored = None if ignore is None else ignore.bool().contiguous().numpy()
            arrays = values.contiguous().numpy(), masks.bool().numpy(), ignored, self.edges.numpy()
            counts = pixel_counts(*arrays, threads=torch.get_num_threads())
            neg, pos = torch.from_numpy(counts)
        else:  # one bincount over (bin, in the mask) keys; ignored pixels go to a last key, dropped
            n = len(self.edges)
            key = torch.bucketize(values.clamp(0, 1), self.edges.to(values.device), right=True) - 1
            key = key.expand_as(maps) + n * masks.bool()
            if ignore is not None:
                key = torch.where(ignore.bool(), 2 * n, key)
            counts = torch.bincount(key.flatten(), minlength=2 * n + 1)
            neg, pos = counts[:n], counts[n : 2 * n]
        self.pos += pos.to(self.pos.device)
        self.neg += neg.to(self.neg.device)

    def values(self) -> dict[str, float]:
        if self.pos.sum() == 0:  # no object pixel: nothing to rank
            return {}
        return {"pxap": _l._pxap_compute(_f64(self.pos), _f64(self.neg))}

    def compute(self) -> dict[str, float]:
        return self.values()


# -- pointing game ---------------------------------------------------------------------------


def _hits_at(points: torch.Tensor, masks: torch.Tensor, tolerance: float | None) -> torch.Tensor:
    """(B,) whether a mask pixel lies strictly within `tolerance` of each (row, col) point (B,2)."""
    tol = _l.default_tolerance(masks.shape[-2]) if tolerance is None else float(tolerance)
    ys = torch.arange(masks.shape[-2], device=masks.device, dtype=torch.float32)[None, :, None]
    xs = torch.arange(masks.shape[-1], device=masks.device, dtype=torch.float32)[None, None, :]
    p = points.to(masks.device, torch.float32)
    dist2 = (ys - p[:, 0, None, None]) ** 2 + (xs - p[:, 1, None, None]) ** 2
    return (masks.bool() & (dist2 < tol * tol)).flatten(1).any(1)


def map_points(maps: torch.Tensor) -> torch.Tensor:
    """(B,2) (row, col) of each map's maximum, the first in row-major order."""
    rows, cols = _l._argmax_points(maps)
    return torch.stack([rows, cols], 1)


def center_points(n: int, height: int, width: int, compat: str = "paper") -> torch.Tensor:
    """(n,2) the centre baseline's point: the centre map's maximum, or TorchRay's (H/2, W/2)."""
    if compat == "torchray":
        return torch.tensor([[height / 2, width / 2]]).expand(n, 2)
    return map_points(center_map(height, width)[None]).expand(n, 2)


class Pointing(Metric):
    """The pointing game (Zhang et al. 2016) per class: `accuracy` (all hits / all images) and
    `mean_class_accuracy` (over the classes seen; with compat="torchray" over every class, as
    TorchRay's `PointingGame.accuracy`)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, tolerance: float | None = None, compat: str = "paper", classes=None, **kwargs):
        super().__init__(**kwargs)
        if tolerance is None and compat == "torchray":
            tolerance = 15.0  # TorchRay's, in pixels at any resolution
        self.num_classes, self.tolerance, self.compat = num_classes, tolerance, compat
        # The classes TorchRay's class mean runs over (the dataset's; default every class).
        self.classes = list(range(num_classes)) if classes is None else list(classes)
        self.add_state("hits", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, points: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, hits=None) -> None:
        """Accumulate a batch of points (B,2) (row, col); `hits` (B,) when already computed."""
        if hits is None:
            hits = _hits_at(points, masks, self.tolerance)
        valid = _has_mask(masks)
        labels = labels.long()[valid]
        self.hits.index_add_(0, labels, hits[valid].long())
        self.counts.index_add_(0, labels, torch.ones_like(labels))

    def compute(self) -> dict[str, float]:
        return self.values()

    def values(self) -> dict[str, float]:
        seen = self.counts > 0
        if not seen.any():
            return {}
        hits, counts, seen = _f64(self.hits), _f64(self.counts), seen.cpu()
        per_class = hits / counts.clamp(min=1)
        mean = per_class[self.classes].mean() if self.compat == "torchray" else per_class[seen].mean()
        return {"pointing": float(hits.sum() / counts.sum()), "pointing_class_mean": float(mean)}

    def per_class(self) -> list[dict[str, float]]:
        return [
            {"images": int(self.counts[c]), "pointing": float(self.hits[c] / self.counts[c])}
            if self.counts[c] > 0
            else {}
            for c in range(self.num_classes)
        ]


def _rows(maps: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """maps[keep], still one shared map (stride 0) when `maps` is one map expanded over the batch."""
    if len(maps) > 1 and maps.stride(0) == 0:
        return maps[:1].expand(int(keep.sum()), *maps.shape[1:])
    return maps[keep]


def _f64(t: torch.Tensor) -> torch.Tensor:
    """A state as float64 on the CPU, for the final ratios (counts are int64 states, exact at any
    split size and on every accelerator; float64 only on the CPU, which MPS lacks)."""
    return t.detach().cpu().double()
