"""Localization and faithfulness metrics: functional forms and torchmetrics `Metric` classes."""

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
from camlight.metrics.faithfulness import average_drop, deletion_auc, increase_in_confidence, insertion_auc
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

__all__ = [
    "AverageDrop",
    "BoxAccuracy",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "MaskIoU",
    "MaxBoxAccV2",
    "PointingGame",
    "PxAP",
    "average_drop",
    "box_accuracy",
    "box_from_map",
    "box_iou",
    "deletion_auc",
    "energy_pointing_game",
    "increase_in_confidence",
    "insertion_auc",
    "mask_iou",
    "max_box_acc_v2",
    "pointing_game",
    "pxap",
]
