"""Localization and faithfulness metrics: functional forms, torchmetrics `Metric` classes, and the
table of both by name (`METRICS`)."""

from camlight.metrics.classes import (
    AverageDrop,
    BoxAccuracy,
    DeletionAUC,
    EnergyPointingGame,
    IncreaseInConfidence,
    InsertionAUC,
    MaskIoU,
    MaxBoxAccV2,
    PointingGame,
    PxAP,
)
from camlight.metrics.faithfulness import aopc, average_drop, deletion_auc, increase_in_confidence, insertion_auc
from camlight.metrics.localization import (
    box_accuracy,
    box_from_map,
    box_iou,
    energy_pointing_game,
    mask_iou,
    max_box_acc_v2,
    pointing_game,
    pxap,
)
from camlight.metrics.registry import (
    GROUND_TRUTH_METRICS,
    METRICS,
    MetricSpec,
    boxes_of,
    check_metrics,
    has_ground_truth,
)

__all__ = [
    "GROUND_TRUTH_METRICS",
    "METRICS",
    "AverageDrop",
    "BoxAccuracy",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "MaskIoU",
    "MaxBoxAccV2",
    "MetricSpec",
    "PointingGame",
    "PxAP",
    "aopc",
    "average_drop",
    "box_accuracy",
    "box_from_map",
    "box_iou",
    "boxes_of",
    "check_metrics",
    "deletion_auc",
    "energy_pointing_game",
    "has_ground_truth",
    "increase_in_confidence",
    "insertion_auc",
    "mask_iou",
    "max_box_acc_v2",
    "pointing_game",
    "pxap",
]
