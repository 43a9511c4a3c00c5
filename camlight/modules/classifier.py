"""The camlight `Classifier`: a backbone and a GAP or FC head, trained with Lightning."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from camlight import __version__
from camlight.modules.backbones import BACKBONES
from camlight.modules.heads import HEADS, FcHead, GapHead
from camlight.modules.weights import multi_process_launch, weights_of
from camlight.modules.zoo import build_backbone, check_backbone, feature_shape, load_backbone_weights, smallest_input


def check_architecture(backbone: str, head: str, image_size: int, width: int = 32) -> tuple[int, int, int]:
    """The feature map's shape (K, h, w) at `image_size`, measured; ValueError, in one line saying
    what to do, for an impossible architecture (a feature map smaller than 2×2 among them)."""
    check_backbone(backbone)
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    shape = feature_shape(backbone, image_size, width)
    if min(shape[1:]) < 2:
        raise ValueError(
            f"image_size={image_size} is too small for backbone {backbone}: its feature map would be "
            f"{shape[1]}×{shape[2]}; use image_size >= {smallest_input(backbone, width)}"
        )
    return shape


class Classifier(pl.LightningModule):
    """A CNN classifier split as `forward(x) == head(features(x))`.

    `features(x)` is the unpooled feature map A (B,K,h,w) of the last conv block, named by
    `target_layer`; `head(A)` gives logits (B,C). The `gap` head (global average pool → linear) is
    CAM-compatible; the `fc` head (flatten → linear → ReLU → dropout → linear) is not.

    Every constructor argument is saved in the checkpoint, so `load_classifier(path)` rebuilds the
    model, its class names and its preprocessing (`image_size`, `mean`, `std`) from the file alone.

    Args:
        backbone: a built-in ("simple_cnn", "resnet18", "vgg16"), any torchvision classification
            model's name, or "timm:<name>" (see `camlight.modules.zoo`).
        head: "gap" or "fc".
        class_names: one name per class; their number is the number of outputs.
        image_size: side of the square inputs the model is trained on.
        mean, std: per-channel normalisation of the inputs, recorded so that new images can be
            prepared alike and shown (default: none, the model takes pixel values in [0,1]).
        width: base channel count of `simple_cnn` (ignored by the torchvision backbones).
        fc_hidden, dropout: size of the hidden layer and dropout rate of the `fc` head.
        pretrained: start from the backbone's ImageNet weights (torchvision's or timm's), loaded
            now when they are in the cache or can be downloaded by this one process; under a
            multi-process launch they are downloaded in `prepare_data` (once per machine) and
            loaded in `setup`.
        eval_resize: how evaluation inputs were prepared: None squashes any image to
            `image_size`² (synthetic data); a number resizes the shorter side to it and centre
            crops `image_size` (photos, as their datamodules do).
        interpolation: the resize's interpolation ("bilinear", or "bicubic" for some weights).
        lr, weight_decay: AdamW; the learning rate follows a one-cycle schedule when `schedule` is
            "onecycle", and stays constant when it is "constant".

    Example::

        model = Classifier("simple_cnn", "gap", class_names=("cat", "dog"), image_size=64)
        a = model.features(x)          # (B, 128, 8, 8)
        logits = model.head(a)         # (B, 2)
    """

    def __init__(
        self,
        backbone: str = "simple_cnn",
        head: str = "gap",
        class_names: Sequence[str] = ("cat", "dog"),
        image_size: int = 64,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        width: int = 32,
        fc_hidden: int = 256,
        dropout: float = 0.5,
        pretrained: bool = False,
        eval_resize: int | None = None,
        interpolation: str = "bilinear",
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        schedule: str = "onecycle",
    ):
        super().__init__()
        shape = check_architecture(backbone, head, image_size, width)
        if len(class_names) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {list(class_names)}")
        if schedule not in ("onecycle", "constant"):
            raise ValueError(f"unknown schedule {schedule!r}; choose 'onecycle' or 'constant'")
        self.save_hyperparameters()
        self.class_names = tuple(class_names)
        self.backbone = build_backbone(backbone, width, image_size)
        self._weights = None  # pretrained weights still to load (see prepare_data and setup)
        if pretrained:
            weights = weights_of(backbone)
            if weights is None:
                raise ValueError(f"backbone {backbone!r} has no pretrained weights; set pretrained=False")
            if weights.cached() or not multi_process_launch():
                load_backbone_weights(backbone, self.backbone, weights)
            else:
                self._weights = weights
        num_classes = len(class_names)
        if head == "gap":
            self.head = GapHead(shape[0], num_classes)
        else:
            self.head = FcHead(shape, num_classes, fc_hidden, dropout)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        # Validation accuracy apart for images with and without a shortcut mark (SyntheticPets'
        # data.shortcut), the marked ones per class: a network that learned the mark fails on
        # marked images of the classes it was not trained on.
        self.shortcut_acc = torch.nn.ModuleDict(
            {"unmarked": MeanMetric(), **{f"marked_{i}": MeanMetric() for i in range(num_classes)}}
        )
        self.run_config: dict | None = None  # the resolved run config, stored in checkpoints when set

    @property
    def target_layer(self) -> str:
        """Dotted name of the module whose output is `features(x)`: the built-ins' last conv block,
        or a zoo model's whole trunk."""
        if self.hparams.backbone in BACKBONES:
            return f"backbone.{list(self.backbone.named_children())[-1][0]}"
        return "backbone"

    def prepare_data(self) -> None:
        """Lightning calls this once per machine: download pretrained weights that are still missing."""
        if self._weights is not None:
            self._weights.state_dict()

    def setup(self, stage: str | None = None) -> None:
        """Lightning calls this on every process after `prepare_data`: load the weights downloaded there."""
        if self._weights is not None:
            load_backbone_weights(self.hparams.backbone, self.backbone, self._weights)
            self._weights = None

    @property
    def preprocessing(self) -> dict:
        """What an input needs before `forward`: resize (shorter side to `eval_resize`, then a
        centre crop of `image_size`; or, when `eval_resize` is None, straight to `image_size`²),
        then normalise with `mean` and `std`."""
        h = self.hparams
        return {
            "image_size": h.image_size,
            "eval_resize": h.get("eval_resize"),
            "mean": tuple(h.mean),
            "std": tuple(h.std),
            "interpolation": h.get("interpolation", "bilinear"),
        }

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) normalised images → feature map A (B,K,h,w)."""
        if self._weights is not None:
            raise RuntimeError("the pretrained weights are not loaded yet: call prepare_data() and setup() first")
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) normalised images → logits (B,C)."""
        return self.head(self.features(x))

    def _step(self, batch: dict, stage: str, accuracy: MulticlassAccuracy) -> torch.Tensor | dict | None:
        if "image" not in batch or len(batch["image"]) == 0:  # every file of the batch was unreadable
            if stage != "train":
                return None
            # A zero loss that still reaches every parameter: under DDP every rank must run the
            # backward pass (its gradient all-reduce), so the step cannot simply be skipped.
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        accuracy(logits, batch["label"])
        on_step = stage == "train"
        n = batch["label"].shape[0]
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=not on_step
        )
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        if stage == "val" and "shortcut_mask" in batch:
            self._log_shortcut_accuracy(logits, batch)
        # Evaluation steps hand their logits on (the explanation callback scores the whole split with them).
        return loss if stage == "train" else {"logits": logits.detach()}

    def _log_shortcut_accuracy(self, logits: torch.Tensor, batch: dict) -> None:
        """val/acc_unmarked and val/acc_marked_<class>: accuracy on images without the shortcut
        mark, and on marked images of each class."""
        correct = (logits.argmax(1) == batch["label"]).float()
        marked = batch["shortcut_mask"].flatten(1).any(1)
        groups = {"unmarked": ~marked}
        groups.update({f"marked_{i}": marked & (batch["label"] == i) for i in range(len(self.class_names))})
        for key, rows in groups.items():
            if rows.any():
                self.shortcut_acc[key].update(correct[rows])
            # logged on every batch and rank alike (under DDP the epoch's reduction is collective)
            name = "unmarked" if key == "unmarked" else f"marked_{self.class_names[int(key[7:])]}"
            self.log(f"val/acc_{name}", self.shortcut_acc[key], on_step=False, on_epoch=True)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch: dict, batch_idx: int) -> dict | None:
        return self._step(batch, "val", self.val_acc)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

    def configure_optimizers(self):
        h = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        if h.schedule == "constant":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=h.lr, total_steps=max(total, 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["camlight"] = {"version": __version__, "config": self.run_config}
