"""Models: the `Classifier` LightningModule, its backbones, its GAP and FC heads, and checkpoints."""

from camlight.modules.backbones import BACKBONES
from camlight.modules.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_config,
    load_checkpoint,
    load_classifier,
    read_checkpoint,
)
from camlight.modules.classifier import Classifier, check_architecture
from camlight.modules.heads import HEADS, FcHead, GapHead
from camlight.modules.weights import Preprocessing, Weights, WeightsUnavailable, weights_of

__all__ = [
    "BACKBONES",
    "HEADS",
    "Checkpoint",
    "CheckpointError",
    "Classifier",
    "FcHead",
    "GapHead",
    "Preprocessing",
    "Weights",
    "WeightsUnavailable",
    "check_architecture",
    "checkpoint_config",
    "load_checkpoint",
    "load_classifier",
    "read_checkpoint",
    "weights_of",
]
