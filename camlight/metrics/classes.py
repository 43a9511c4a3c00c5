"""torchmetrics `Metric` classes: accumulate with `update`, reduce across DDP ranks, `compute` a float.

Each class calls the same helper as its functional form (`camlight.metrics.localization`,
`camlight.metrics.faithfulness`); states are float32 sums (every accelerator has float32, MPS
has no float64), registered with `dist_reduce_fx="sum"`. Images whose ground truth is empty are
left out of the localization scores (PxAP counts every pixel, as in Choe et al.).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from camlight.metrics import faithfulness as _f
from camlight.metrics import localization as _l


class _MeanMetric(Metric):
    """Mean of per-image values over every image seen (on every rank)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float32), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float32), dist_reduce_fx="sum")

    def _accumulate(self, values: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        values = values.float()
        if valid is not None:
            values = values[valid]
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> float:
        return float(self.total / self.count) if self.count > 0 else float("nan")


def _has_mask(masks: torch.Tensor) -> torch.Tensor:
    return masks.flatten(1).any(1)


def _has_box(boxes: torch.Tensor) -> torch.Tensor:
    """(B,) whether an image has a box: (B,4), or (B,K,4) padded with zero rows."""
    sets = _l.box_sets(boxes)
    return ((sets[..., 2] > sets[..., 0]) & (sets[..., 3] > sets[..., 1])).any(1)


class PointingGame(Metric):
    """Pointing game (Zhang et al. 2016): `compute()` → {"accuracy", "mean_class_accuracy"}.

    Args:
        num_classes: classes of the labels passed to `update`.
        tolerance: pixels; None = 15·H/224.

    Example::

        pg = PointingGame(num_classes=2)
        pg.update(maps, masks, labels)
        pg.compute()   # {"accuracy": 0.9, "mean_class_accuracy": 0.88}
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, tolerance: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.tolerance = num_classes, tolerance
        self.add_state("hits", torch.zeros(num_classes, dtype=torch.float32), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(num_classes, dtype=torch.float32), dist_reduce_fx="sum")

    def update(self, maps: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> None:
        hits = _l._pointing_hits(maps, masks, self.tolerance)
        valid = _has_mask(masks)
        labels = labels.long()
        self.hits.index_add_(0, labels[valid], hits[valid].float())
        self.counts.index_add_(0, labels[valid], torch.ones_like(hits[valid], dtype=torch.float32))

    def compute(self) -> dict[str, float]:
        seen = self.counts > 0
        if not seen.any():
            return {"accuracy": float("nan"), "mean_class_accuracy": float("nan")}
        return {
            "accuracy": float(self.hits.sum() / self.counts.sum()),
            "mean_class_accuracy": float((self.hits[seen] / self.counts[seen]).mean()),
        }


class EnergyPointingGame(_MeanMetric):
    """Energy-based pointing game (Wang et al. 2020), mean over images with a box."""

    def update(self, maps: torch.Tensor, boxes: torch.Tensor) -> None:
        self._accumulate(_l.energy_pointing_game(maps, boxes), _has_box(boxes))


class BoxAccuracy(_MeanMetric):
    """Box accuracy (Zhou et al. 2016) at `threshold` · max and IoU `iou`."""

    def __init__(self, threshold: float = 0.2, iou: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.iou = threshold, iou

    def update(self, maps: torch.Tensor, boxes: torch.Tensor) -> None:
        self._accumulate(_l.box_accuracy(maps, boxes, self.threshold, self.iou), _has_box(boxes))


class MaxBoxAccV2(Metric):
    """MaxBoxAccV2 (Choe et al. 2020): hit counts per (threshold, IoU) summed over images and ranks."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, thresholds=None, ious=(0.3, 0.5, 0.7), **kwargs):
        super().__init__(**kwargs)
        self.thresholds, self.ious = tuple(thresholds or _l.DEFAULT_THRESHOLDS), tuple(ious)
        self.add_state(
            "hits", torch.zeros(len(self.thresholds), len(self.ious), dtype=torch.float32), dist_reduce_fx="sum"
        )
        self.add_state("count", torch.tensor(0.0, dtype=torch.float32), dist_reduce_fx="sum")

    def update(self, maps: torch.Tensor, boxes: torch.Tensor) -> None:
        valid = _has_box(boxes)
        self.hits += _l._max_box_acc_update(maps[valid], boxes[valid], self.thresholds, self.ious).float()
        self.count += valid.sum()

    def compute(self) -> float:
        return float((self.hits / self.count).amax(0).mean()) if self.count > 0 else float("nan")


class MaskIoU(_MeanMetric):
    """IoU of the map thresholded at `threshold` with the mask."""

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold

    def update(self, maps: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor | None = None) -> None:
        self._accumulate(_l.mask_iou(maps, masks, self.threshold, ignore), _has_mask(masks))


class GrabCutIoU(_MeanMetric):
    """IoU of GrabCut's segmentation, seeded from the map, with the mask (`segmentation.grabcut_iou`)."""

    def update(self, maps: torch.Tensor, images: torch.Tensor, masks: torch.Tensor, ignore=None) -> None:
        from camlight.metrics.segmentation import grabcut_iou

        self._accumulate(grabcut_iou(maps, images, masks, ignore), _has_mask(masks))


class PxAP(Metric):
    """Pixel average precision (Choe et al. 2020) from histograms summed over images and ranks."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("pos", torch.zeros(_l.PXAP_BINS, dtype=torch.float32), dist_reduce_fx="sum")
        self.add_state("neg", torch.zeros(_l.PXAP_BINS, dtype=torch.float32), dist_reduce_fx="sum")

    def update(self, maps: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor | None = None) -> None:
        pos, neg = _l._pxap_update(maps, masks, ignore=ignore)
        self.pos += pos.float()
        self.neg += neg.float()

    def compute(self) -> float:
        return _l._pxap_compute(self.pos, self.neg)


class _CausalAUC(_MeanMetric):
    """Mean of a per-image causal AUC (`_auc`) over every image seen."""

    _auc = staticmethod(_f.deletion_auc)

    def __init__(self, steps: int = 32, batch_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.batch_size = steps, batch_size

    def update(self, model, images, maps, targets) -> None:
        self._accumulate(self._auc(model, images, maps, targets, self.steps, self.batch_size))


class DeletionAUC(_CausalAUC):
    """Deletion AUC (Petsiuk et al. 2018); lower is better."""

    higher_is_better = False
    _auc = staticmethod(_f.deletion_auc)


class InsertionAUC(_CausalAUC):
    """Insertion AUC (Petsiuk et al. 2018); higher is better."""

    _auc = staticmethod(_f.insertion_auc)


class AverageDrop(_MeanMetric):
    """Average drop (Chattopadhyay et al. 2018), relative, in [0,1]; lower is better."""

    higher_is_better = False

    def update(self, model, images, maps, targets) -> None:
        self._accumulate(_f.average_drop(model, images, maps, targets))


class IncreaseInConfidence(_MeanMetric):
    """Share of images whose masked version is more confident (Chattopadhyay et al. 2018)."""

    def update(self, model, images, maps, targets) -> None:
        self._accumulate(_f.increase_in_confidence(model, images, maps, targets))
