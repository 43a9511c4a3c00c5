"""`FiltersCallback`: the first convolution's filters drawn every n epochs, so their formation can
be watched over training (local `explanations/filters_epoch_NNN.png`, W&B `explain/filters`)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from camlight.inspect import filter_images, first_conv
from camlight.viz import tile_grid


class FiltersCallback(pl.Callback):
    """Draw the model's first `nn.Conv2d` filters after every `every_n_epochs`-th training epoch
    and after the last (and before the first, to show where they started), on rank zero only.

    It reads the weights and nothing else: no forward pass, no random numbers, so training with
    it gives the same weights as training without it.

    Args:
        every_n_epochs: draw after epochs n, 2n, ... and after the last; at least 1.
        scale: "all" (one scale for the whole set, the default: filters that grow stand out) or
            "each" (every filter to its own largest weight), as in `filter_images`.
        cell: side of each filter's cell in pixels.
    """

    def __init__(self, every_n_epochs: int = 1, scale: str = "all", cell: int = 24):
        if every_n_epochs < 1:
            raise ValueError(f"filters every_n_epochs must be >= 1, got {every_n_epochs}")
        if scale not in ("all", "each"):
            raise ValueError(f"unknown filter scale {scale!r}; choose 'all' or 'each'")
        self.every_n_epochs, self.scale, self.cell = every_n_epochs, scale, cell
        self.written: list[Path] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self._last: int | None = None  # the last epoch trained, and whether it was drawn
        self._drawn = False
        if trainer.ckpt_path is None:  # a resumed run's start is not the filters' start
            self._draw(trainer, pl_module, "start")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        self._last, self._drawn = epoch, (epoch + 1) % self.every_n_epochs == 0
        if self._drawn:
            self._draw(trainer, pl_module, f"epoch_{epoch:03d}")

    def on_fit_end(self, trainer, pl_module) -> None:
        """The final weights, when the last epoch was not one of every n-th (however training
        ended: max_epochs, max_steps, early stopping)."""
        if self._last is not None and not self._drawn:
            self._draw(trainer, pl_module, f"epoch_{self._last:03d}")

    def _draw(self, trainer, pl_module, tag: str) -> None:
        if not trainer.is_global_zero:
            return
        try:
            name, conv = first_conv(pl_module)
        except ValueError:
            return  # a model without convolutions has no filters to draw
        images = filter_images(conv.weight, self.scale)
        title = f"{name} {tag.replace('_', ' ')}"
        grid = tile_grid(images, cell=self.cell, title=title)
        out = Path(trainer.default_root_dir) / "explanations"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"filters_{tag}.png"
        grid.save(path)
        self.written.append(path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("explain/filters", [str(path)], step=trainer.global_step, caption=[tag])
