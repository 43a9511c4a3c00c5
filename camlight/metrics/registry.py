"""Every metric by name: how to build its `Metric`, feed it from a batch, and score one image.

The callback and `explain.py` both score maps from batches in the camlight format (`image`,
`label`, `mask`, `box`, `boxes`, optionally `ignore`, and `rgb` for grabcut_iou); this table is
the one place that says which batch entries each metric reads.

Example::

    spec = METRICS["pointing_game"]
    metric = spec.build(num_classes=2)
    spec.update(metric, maps, batch, model, targets)
    spec.per_image(maps, batch, model, targets)    # (B,) one value per image
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics import Metric

from camlight.metrics import classes as C
from camlight.metrics import faithfulness as F
from camlight.metrics import localization as L
from camlight.metrics import segmentation as S

Maps = torch.Tensor  # (B,H,W) in [0,1]
Batch = dict


def boxes_of(batch: Batch) -> torch.Tensor:
    """Every ground-truth box of each image ((B,K,4), photos with several objects) or its one box (B,4)."""
    return batch["boxes"] if "boxes" in batch else batch["box"]


def rgb_of(batch: Batch) -> torch.Tensor:
    """The batch's images as RGB in [0,1] (`rgb`), which GrabCut segments; the callers that score
    grabcut_iou add it (the normalisation undone)."""
    if "rgb" not in batch:
        raise ValueError("grabcut_iou needs the batch's images as RGB in [0,1] under 'rgb'")
    return batch["rgb"]


def has_ground_truth(batch: Batch) -> torch.Tensor:
    """(B,) whether each image has a ground-truth mask (photos without annotations have none)."""
    return batch["mask"].flatten(1).any(1) if "mask" in batch else torch.zeros(len(batch["image"]), dtype=torch.bool)


@dataclass(frozen=True)
class MetricSpec:
    """A metric as the callback and `explain.py` use it.

    Attributes:
        name: the metric's name in logs and files.
        build: num_classes → a fresh torchmetrics `Metric`.
        update: (metric, maps, batch, model, targets) → None; accumulates one batch.
        per_image: (maps, batch, model, targets) → (B,) values, or None for a metric defined only
            over a whole set (MaxBoxAccV2 and PxAP choose thresholds or rank pixels across images).
        ground_truth: whether it needs masks or boxes (a set without them cannot be scored).
    """

    name: str
    build: Callable[[int], Metric]
    update: Callable[[Metric, Maps, Batch, nn.Module, torch.Tensor], None]
    per_image: Callable[[Maps, Batch, nn.Module, torch.Tensor], torch.Tensor] | None
    ground_truth: bool


def _gt(name, build, update, per_image=None) -> MetricSpec:
    return MetricSpec(name, build, update, per_image, ground_truth=True)


def _model(name, build, per_image) -> MetricSpec:
    def update(metric, maps, batch, model, targets):
        metric.update(model, batch["image"], maps, targets)

    return MetricSpec(
        name,
        build,
        update,
        lambda maps, batch, model, targets: per_image(model, batch["image"], maps, targets),
        ground_truth=False,
    )


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        _gt(
            "pointing_game",
            lambda c: C.PointingGame(c),
            lambda m, maps, b, model, t: m.update(maps, b["mask"], b["label"]),
            lambda maps, b, model, t: L.pointing_game(maps, b["mask"]),
        ),
        _gt(
            "energy_pointing_game",
            lambda c: C.EnergyPointingGame(),
            lambda m, maps, b, model, t: m.update(maps, boxes_of(b)),
            lambda maps, b, model, t: L.energy_pointing_game(maps, boxes_of(b)),
        ),
        _gt(
            "box_accuracy",
            lambda c: C.BoxAccuracy(),
            lambda m, maps, b, model, t: m.update(maps, boxes_of(b)),
            lambda maps, b, model, t: L.box_accuracy(maps, boxes_of(b)),
        ),
        _gt("max_box_acc_v2", lambda c: C.MaxBoxAccV2(), lambda m, maps, b, model, t: m.update(maps, boxes_of(b))),
        _gt(
            "mask_iou",
            lambda c: C.MaskIoU(),
            lambda m, maps, b, model, t: m.update(maps, b["mask"], b.get("ignore")),
            lambda maps, b, model, t: L.mask_iou(maps, b["mask"], ignore=b.get("ignore")),
        ),
        _gt("pxap", lambda c: C.PxAP(), lambda m, maps, b, model, t: m.update(maps, b["mask"], b.get("ignore"))),
        _gt(
            "grabcut_iou",
            lambda c: C.GrabCutIoU(),
            lambda m, maps, b, model, t: m.update(maps, rgb_of(b), b["mask"], b.get("ignore")),
            lambda maps, b, model, t: S.grabcut_iou(maps, rgb_of(b), b["mask"], b.get("ignore")),
        ),
        _model("deletion_auc", lambda c: C.DeletionAUC(), F.deletion_auc),
        _model("insertion_auc", lambda c: C.InsertionAUC(), F.insertion_auc),
        _model("average_drop", lambda c: C.AverageDrop(), F.average_drop),
        _model("increase_in_confidence", lambda c: C.IncreaseInConfidence(), F.increase_in_confidence),
    )
}

GROUND_TRUTH_METRICS = tuple(name for name, spec in METRICS.items() if spec.ground_truth)


def check_metrics(names, who: str = "metric") -> list[str]:
    """`names` without repeats, in order; ValueError naming the valid ones for an unknown name."""
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown {who} {', '.join(map(repr, unknown))}; choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))
