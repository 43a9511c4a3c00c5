"""`explain.py filters` and `explain.py activations`: look at the network itself.

`filters` draws the first convolution's filters as an RGB grid; `activations` draws a layer's
activation maps for images, channels sorted by their mean activation, beside the input. Each
writes its folder whole at the end, or nothing.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from camlight.config import ConfigError
from camlight.inspect import filter_images, first_conv, layer_output, sorted_channels
from camlight.offline.commands import EXIT_OK, EXIT_SKIPPED, check_out, device_of
from camlight.offline.inputs import from_files, from_split, load_model
from camlight.viz import colorize, denormalize, tile_grid, write_csv

log = logging.getLogger(__name__)


def filters(cfg: DictConfig) -> int:
    """The first convolution's filters: `out/filters.png` (and `filters.csv`: each filter's norm)."""
    out = Path(cfg.out)
    check_out(out)
    model = load_model(cfg).model
    try:
        name, conv = first_conv(model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    images = filter_images(conv.weight, cfg.scale)
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    order = norms.argsort(descending=True, stable=True) if cfg.sort else torch.arange(len(norms))
    shown = order[: cfg.max_filters]
    title = f"{name}: {conv.out_channels} filters {conv.in_channels}x{conv.kernel_size[0]}x{conv.kernel_size[1]}"
    grid = tile_grid(images[shown], cell=cfg.cell, title=title)

    def write(folder: Path) -> None:
        grid.save(folder / "filters.png")
        rows = [{"filter": int(i), "norm": float(norms[i])} for i in order]
        write_csv(folder / "filters.csv", rows, ["filter", "norm"])

    _write_whole(out, write)
    log.info("%d filters of %s drawn in %s", len(shown), name, out / "filters.png")
    return EXIT_OK


def activations(cfg: DictConfig) -> int:
    """A layer's activation maps for images: `out/activations_<image>.png` (the input, then the
    channels strongest first) and `activations.csv` (each image's mean activation per channel)."""
    out = Path(cfg.out)
    check_out(out)
    loaded = load_model(cfg)
    model = loaded.model.to(device_of(cfg.device)).eval()
    if cfg.input:
        inputs = from_files(Path(cfg.input), loaded)
    else:
        inputs = from_split(OmegaConf.create({"split": cfg.split, "probe_size": cfg.images}), loaded)
    items = list(itertools.islice(inputs.items, cfg.images))
    if not items:
        raise ConfigError(f"no image of {inputs.source} could be read (see the skipped files); nothing to show")
    images = torch.stack([it.image for it in items]).to(next(model.parameters()).device)
    layer = cfg.layer or _default_layer(model)
    try:
        acts = layer_output(model, images, layer)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if acts.dim() != 4:
        raise ConfigError(f"layer {layer!r} gives shape {tuple(acts.shape)}, not (B,C,h,w) maps; choose a conv layer")
    pre = loaded.preprocessing
    shown = denormalize(images.float().cpu(), pre.mean, pre.std)
    grids, rows = {}, []
    for i, item in enumerate(items):
        order, maps = sorted_channels(acts[i])
        means = acts[i].float().mean((1, 2)).cpu()
        keep = order[: cfg.max_channels]
        heat = F.interpolate(maps[None, : cfg.max_channels], size=shown.shape[-2:], mode="nearest")[0]
        tiles = torch.cat([shown[i : i + 1], colorize(heat, cfg.cmap)])
        titles = ["input"] + [f"#{int(c)}" for c in keep]
        title = f"{item.name}: {layer}, {acts.shape[1]} channels {acts.shape[2]}x{acts.shape[3]}, strongest first"
        grids[item.name] = tile_grid(tiles, titles, cell=cfg.cell, title=title)
        rows += [{"image": item.name, "channel": int(c), "mean": float(means[c])} for c in order]
    skipped = inputs.skipped()

    def write(folder: Path) -> None:
        for name, grid in grids.items():
            grid.save(folder / f"activations_{name}.png")
        write_csv(folder / "activations.csv", rows, ["image", "channel", "mean"])
        if skipped:
            (folder / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in skipped))

    _write_whole(out, write)
    log.info("activations of %s for %d images in %s (skipped %d)", layer, len(items), out, len(skipped))
    return EXIT_SKIPPED if skipped else EXIT_OK


def _default_layer(model: torch.nn.Module) -> str:
    """A camlight Classifier's feature extractor's output (its `target_layer`); other models need layer=."""
    name = getattr(model, "target_layer", None)
    if isinstance(name, str) and name:
        return name
    raise ConfigError("give layer= (a module name, e.g. layer4 or features.7): this model names no target layer")


def _write_whole(out: Path, write: Callable[[Path], None]) -> None:
    """`write(folder)` into a hidden folder beside `out`, renamed to `out` when complete."""
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        write(partial)
        if out.exists():  # an empty folder (check_out allows it)
            out.rmdir()
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
