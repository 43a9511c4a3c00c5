"""Models: the `Classifier` LightningModule, its backbones and its GAP and FC heads."""

from camlight.modules.backbones import BACKBONES, PretrainedWeightsMissing
from camlight.modules.classifier import Classifier, check_architecture, checkpoint_config, load_classifier
from camlight.modules.heads import HEADS, FcHead, GapHead

__all__ = [
    "BACKBONES",
    "HEADS",
    "Classifier",
    "FcHead",
    "GapHead",
    "PretrainedWeightsMissing",
    "check_architecture",
    "checkpoint_config",
    "load_classifier",
]
