"""`explain.py patches` and `explain.py units`: the image patches that drive units most, over a
whole split, through the same Lightning predict loop as `explain.py evaluate` (so `trainer.devices`
and `strategy=ddp` split the split; each process keeps its own top-k, merged when the pass ends).

`patches` follows the channels asked for (`channels=[...]`, or all of them); `units` picks the
channels a class relies on (CAM paper, fig. 8): the GAP head's largest weights for that class, or
for any model the largest Grad-CAM α averaged over the first `alpha_images` images of the class.
Writes `patches.png` (a row per unit: its k patches, cut to the unit's receptive field, each titled
with its activation) and `patches.csv`; the folder appears whole at the end, or not at all.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from camlight.config import ConfigError
from camlight.evaluate.command import Indexed, image_namer, label_map, split_pass, split_predict
from camlight.evaluate.loop import SplitPass
from camlight.inspect import layer_output
from camlight.inspect.patches import TopActivations, class_units, crop, gradcam_alpha, head_weights
from camlight.inspect.receptive import receptive_field
from camlight.viz import denormalize, tile_grid, whole_folder, write_csv

log = logging.getLogger(__name__)


class PatchSearch(SplitPass):
    """`predict_step` feeds each batch's activations of `layer` to a `TopActivations`; after the
    pass, `result` holds the top-k over every process."""

    def __init__(self, model: torch.nn.Module, layer: str, channels, k: int):
        super().__init__(model)
        self.layer = layer
        self.top = TopActivations(channels, k)
        self.result: dict | None = None

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        if self.usable(batch):
            self.top.update(layer_output(self.model, batch["image"], self.layer), batch["index"])

    def on_predict_epoch_end(self) -> None:
        self.result = self.top.compute()


def run(cfg, progress: bool = True) -> int:
    """Search, draw and write `cfg.out` on rank 0; return the exit code (0)."""
    loaded, model, dm = split_pass(cfg)
    layer = cfg.layer or getattr(model, "target_layer", None)
    if not isinstance(layer, str) or not layer:
        raise ConfigError("give layer= (a module name, e.g. layer4 or features.7): this model names no target layer")
    first = next((s for _, s in dm.samples(cfg.split)), None)
    if first is None:
        raise ConfigError(f"no usable image in the {cfg.split} split")
    try:
        shape = layer_output(model, first["image"][None], layer).shape
        field = receptive_field(model, layer)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if len(shape) != 4:
        raise ConfigError(f"layer {layer!r} gives shape {tuple(shape)}, not (B,C,h,w) maps; choose a conv layer")
    channels, scores, why = _channels(cfg, model, dm, layer, shape[1], loaded.class_names)
    search = PatchSearch(model, layer, channels, int(cfg.k))
    with split_predict(cfg, search, dm, progress=progress) as trainer:
        if trainer.is_global_zero:
            _write(Path(cfg.out), cfg, search.result, scores, why, field, dm, loaded, layer)
    return 0


def _channels(cfg, model, dm, layer: str, count: int, names) -> tuple[list[int], list[float] | None, str]:
    """(channels, their class scores or None, a title) from `channels=` or from `target=` (units)."""
    target = cfg.get("target")
    if target is None and "rank_by" in cfg:
        raise ConfigError("class= is required: the class whose units to show (a name or an index)")
    if target is None:
        channels = list(range(count)) if cfg.channels is None else [int(c) for c in cfg.channels]
        bad = [c for c in channels if not 0 <= c < count]
        if bad:
            raise ConfigError(f"channels {bad} are not channels of {layer} (it has {count}: 0-{count - 1})")
        return channels, None, f"{layer}: the strongest patches of each unit"
    lowered = [str(n).lower() for n in names]
    if str(target).lower() in lowered:
        c = lowered.index(str(target).lower())
    elif str(target).isdigit() and int(target) < len(names):
        c = int(target)
    else:
        raise ConfigError(f"unknown class {target!r}; choose one of {', '.join(map(str, names[:10]))}")
    if cfg.rank_by == "weight":
        try:
            scores = head_weights(model, count)[c]
        except ValueError as e:
            raise ConfigError(str(e)) from None
        how = "largest GAP-head weight"
    else:
        mapped = label_map(dm.class_names, names)  # the data's labels as the model's classes
        of_class = _of_class(dm, cfg.split, c, mapped)
        images = [s["image"] for _, s in zip(range(int(cfg.alpha_images)), of_class, strict=False)]
        if not images:
            raise ConfigError(f"no image of class {names[c]} in the {cfg.split} split to average Grad-CAM's α over")
        scores = gradcam_alpha(model, torch.stack(images), layer, c).mean(0)
        how = f"largest Grad-CAM α (mean over {len(images)} {names[c]} images)"
    channels, values = class_units(scores, int(cfg.units))
    return channels.tolist(), values.tolist(), f"{layer}: the units of class {names[c]} ({how})"


def _of_class(dm, split: str, c: int, mapped: list[int] | None):
    for _, s in dm.samples(split):
        label = int(s["label"])
        if (label if mapped is None else mapped[label]) == c:
            yield s


def _write(out: Path, cfg, result: dict, scores, why: str, field, dm, loaded, layer: str) -> None:
    """patches.png and patches.csv into a hidden folder, renamed to `out` when complete."""
    dataset, pre = Indexed(dm.dataset(cfg.split)), loaded.preprocessing
    namer = image_namer(dm.dataset(cfg.split), cfg.split, dm.root)
    channels, values = result["channels"].tolist(), result["values"]
    order = list(range(len(channels)))
    if scores is None:  # rows strongest first
        order.sort(key=lambda u: -float(values[0, u]) if len(values) else 0.0)
    shown = order[: cfg.max_units]
    rows, tiles, titles = [], [], []
    size = int(first_image_size(dataset))
    for u in order:
        for r in range(values.shape[0]):
            index, i, j = int(result["images"][r, u]), int(result["rows"][r, u]), int(result["cols"][r, u])
            box = field.box(i, j, size, size)
            rows.append(
                {
                    "unit": channels[u],
                    "score": "" if scores is None else round(scores[u], 6),
                    "rank": r + 1,
                    "image": namer(index),
                    "row": i,
                    "col": j,
                    "activation": round(float(values[r, u]), 6),
                    "y0": box[0],
                    "y1": box[1],
                    "x0": box[2],
                    "x1": box[3],
                }
            )
            if u in shown:
                image = denormalize(dataset[index]["image"][None].float(), pre.mean, pre.std)[0]
                tiles.append(crop(image, field, i, j))
                titles.append(f"#{channels[u]} {float(values[r, u]):.1f}" if r == 0 else f"{float(values[r, u]):.1f}")
    grid = tile_grid(torch.stack(tiles), titles, cols=values.shape[0], cell=cfg.cell, title=why) if tiles else None
    with whole_folder(out) as partial:
        if grid is not None:
            grid.save(partial / "patches.png")
        columns = ["unit", "score", "rank", "image", "row", "col", "activation", "y0", "y1", "x0", "x1"]
        write_csv(partial / "patches.csv", rows, columns)
    log.info("%d units of %s, %d patches each, in %s", len(channels), layer, values.shape[0], out)


def first_image_size(dataset) -> int:
    """The side of the model's (square) input, read off the split's first usable image."""
    for k in range(len(dataset)):
        item = dataset[k]
        if isinstance(item, dict):
            return item["image"].shape[-1]
    raise ConfigError("no usable image in the split")
