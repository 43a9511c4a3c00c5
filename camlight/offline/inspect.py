"""`explain.py filters` and `explain.py activations`: look at the network itself.

`filters` draws the first convolution's filters as an RGB grid; `activations` draws a layer's
activation maps for images, channels sorted by their mean activation, beside the input; `invert`
reconstructs images from each layer's features; `style` transfers a style with the network's own
layers; `segment` turns each method's map into a segmentation by GrabCut. Each writes its folder
whole at the end, or nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from camlight.config import ConfigError
from camlight.datamodules.io import BadFile
from camlight.inspect import filter_images, first_conv, layer_output, sorted_channels
from camlight.offline.commands import EXIT_OK, EXIT_SKIPPED, check_out, device_of
from camlight.offline.inputs import first_images, load_model
from camlight.viz import colorize, denormalize, overlay, save_png, tile_grid, whole_folder, write_csv

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

    with whole_folder(out) as folder:
        write(folder)
    log.info("%d filters of %s drawn in %s", len(shown), name, out / "filters.png")
    return EXIT_OK


def activations(cfg: DictConfig) -> int:
    """A layer's activation maps for images: `out/activations_<image>.png` (the input, then the
    channels strongest first) and `activations.csv` (each image's mean activation per channel)."""
    out = Path(cfg.out)
    check_out(out)
    loaded = load_model(cfg)
    model = loaded.model.to(device_of(cfg.device)).eval()
    from matplotlib import colormaps

    if cfg.cmap not in colormaps:
        raise ConfigError(f"unknown cmap={cfg.cmap!r}; a matplotlib colormap such as viridis, magma or jet")
    items, skipped = first_images(cfg, loaded)
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

    def write(folder: Path) -> None:
        for name, grid in grids.items():
            grid.save(folder / f"activations_{name}.png")
        write_csv(folder / "activations.csv", rows, ["image", "channel", "mean"])
        if skipped:
            (folder / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in skipped))

    with whole_folder(out) as folder:
        write(folder)
    log.info("activations of %s for %d images in %s (skipped %d)", layer, len(items), out, len(skipped))
    return EXIT_SKIPPED if skipped else EXIT_OK


def _default_layer(model: torch.nn.Module) -> str:
    """A camlight Classifier's feature extractor's output (its `target_layer`); other models need layer=."""
    name = getattr(model, "target_layer", None)
    if isinstance(name, str) and name:
        return name
    raise ConfigError("give layer= (a module name, e.g. layer4 or features.7): this model names no target layer")


def invert(cfg: DictConfig) -> int:
    """Feature inversion for images, a column per layer: `out/inversion_<image>.png` (the input,
    then each layer's reconstruction, titled with its relative feature error) and `inversion.csv`."""
    from camlight.inspect.inversion import invert as invert_image

    out = Path(cfg.out)
    check_out(out)
    loaded = load_model(cfg)
    model = loaded.model.to(device_of(cfg.device)).eval()
    layers = list(cfg.layers) if cfg.layers else _blocks(model)
    items, skipped = first_images(cfg, loaded)
    device = next(model.parameters()).device
    pre = loaded.preprocessing
    grids, rows = {}, []
    for item in items:
        x = item.image.to(device)
        tiles, titles = [denormalize(x[None].float().cpu(), pre.mean, pre.std)[0]], ["input"]
        for layer in layers:
            try:
                rec, errors = invert_image(model, x, layer, steps=cfg.steps, lr=cfg.lr, tv=cfg.tv, l2=cfg.l2)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            tiles.append(_stretch(denormalize(rec[None].float().cpu(), pre.mean, pre.std)[0]))
            titles.append(f"{layer.rsplit('.', 1)[-1]} {errors[-1]:.2f}")
            mse = float((rec - x).pow(2).mean())
            rows.append(
                {"image": item.name, "layer": layer, "feature_error": round(errors[-1], 6), "pixel_mse": round(mse, 6)}
            )
        title = f"{item.name}: reconstructed from each layer's features (relative feature error)"
        grids[item.name] = tile_grid(torch.stack(tiles), titles, cols=len(tiles), cell=cfg.cell, title=title)

    def write(folder: Path) -> None:
        for name, grid in grids.items():
            grid.save(folder / f"inversion_{name}.png")
        write_csv(folder / "inversion.csv", rows, ["image", "layer", "feature_error", "pixel_mse"])
        if skipped:
            (folder / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in skipped))

    with whole_folder(out) as folder:
        write(folder)
    log.info("inverted %d images at %d layers; results in %s", len(items), len(layers), out)
    return EXIT_SKIPPED if skipped else EXIT_OK


def style(cfg: DictConfig) -> int:
    """Gatys et al.'s style transfer with the model's own layers: `out/stylized.png` (content,
    style, result) and `out/result.png`."""
    from camlight.inspect.inversion import stylize
    from camlight.offline.inputs import prepare

    out = Path(cfg.out)
    check_out(out)
    loaded = load_model(cfg)
    model = loaded.model.to(device_of(cfg.device)).eval()
    pre = loaded.preprocessing
    images = []
    for key in ("content", "style"):
        path = Path(str(cfg[key])) if cfg[key] else None
        if path is None or not path.is_file():
            raise ConfigError(f"{key}= must be an image file; got {cfg[key]}")
        try:
            images.append(prepare(path, pre.as_dict()))
        except BadFile as e:
            raise ConfigError(f"{key}={path}: {e}") from None
    try:
        blocks = _blocks(model) if not (cfg.content_layer and cfg.style_layers) else []
    except ConfigError:
        raise ConfigError(
            "give content_layer= and style_layers=[...] (module names): this model has no backbone blocks to default to"
        ) from None
    content_layer = cfg.content_layer or blocks[-2 if len(blocks) > 1 else -1]
    style_layers = list(cfg.style_layers) if cfg.style_layers else blocks
    device = next(model.parameters()).device
    try:
        result, losses = stylize(
            model,
            images[0].to(device),
            images[1].to(device),
            content_layer,
            style_layers,
            steps=cfg.steps,
            lr=cfg.lr,
            style_weight=cfg.style_weight,
            tv=cfg.tv,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    shown = [denormalize(t[None].float().cpu(), pre.mean, pre.std)[0] for t in (*images, result)]
    shown[2] = shown[2].clamp(0, 1)
    grid = tile_grid(torch.stack(shown), ["content", "style", "result"], cols=3, cell=cfg.cell)

    def write(folder: Path) -> None:
        grid.save(folder / "stylized.png")
        save_png(shown[2], folder / "result.png")

    with whole_folder(out) as folder:
        write(folder)
    log.info(
        "style: loss %.3g → %.3g over %d steps (content %s, style %s); %s",
        losses[0],
        losses[-1],
        len(losses),
        content_layer,
        ", ".join(style_layers),
        out,
    )
    return EXIT_OK


def _blocks(model: torch.nn.Module) -> list[str]:
    """A camlight Classifier's backbone blocks, shallow to deep; other models need layers=."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, torch.nn.Sequential) and len(backbone) > 1:
        return [f"backbone.{name}" for name, _ in backbone.named_children()]
    raise ConfigError("give layers=[...] (module names, shallow to deep, e.g. [layer1,layer2,layer3,layer4])")


def _stretch(image: torch.Tensor) -> torch.Tensor:
    """Min-max to [0,1]: a reconstruction may leave the data's range."""
    return (image - image.min()) / (image.max() - image.min()).clamp(min=1e-12)


def segment(cfg: DictConfig) -> int:
    """Segmentation from saliency: for each image `out/segment_<image>.png` (rows: methods; columns:
    the map, the map at 0.5 of its maximum, GrabCut seeded from it) and `segment.csv` (per image
    and method: mask IoU of both where the image has a mask)."""
    from camlight.explain import check_methods, explain
    from camlight.metrics.localization import binary_iou, mask_iou
    from camlight.metrics.segmentation import check_available, grabcut_masks

    try:
        methods = check_methods(list(cfg.methods))
        check_available()
    except (ValueError, ImportError) as e:
        raise ConfigError(str(e)) from None
    out = Path(cfg.out)
    check_out(out)
    loaded = load_model(cfg)
    model = loaded.model.to(device_of(cfg.device)).eval()
    items, skipped = first_images(cfg, loaded)
    device = next(model.parameters()).device
    x = torch.stack([it.image for it in items]).to(device)
    pre = loaded.preprocessing
    rgb = denormalize(x.float().cpu(), pre.mean, pre.std)
    labels = [it.label for it in items]
    if cfg.target == "label" and None in labels:
        raise ConfigError("target=label needs ground truth: leave out input= (the probe set), or use target=top1")
    targets = torch.tensor(labels, device=device) if cfg.target == "label" else None
    try:
        maps = {m: v.cpu() for m, v in explain(model, x, methods, targets=targets, layer=cfg.get("layer")).items()}
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cuts = {m: grabcut_masks(maps[m], rgb) for m in methods}
    rows, grids = [], {}
    for i, item in enumerate(items):
        has_mask = item.mask is not None and bool(item.mask.any())
        tiles, titles = [], []
        for m in methods:
            thresholded = (maps[m][i] >= 0.5).float()
            row = {"image": item.name, "method": m}
            if has_mask:
                mask, ignore = item.mask[None], None if item.ignore is None else item.ignore[None]
                row["mask_iou"] = round(float(mask_iou(maps[m][i : i + 1], mask, ignore=ignore)[0]), 6)
                row["grabcut_iou"] = round(float(binary_iou(cuts[m][i : i + 1], mask, ignore)[0]), 6)
            rows.append(row)
            tiles += [overlay(rgb[i : i + 1], maps[m][i : i + 1])[0], rgb[i] * thresholded, rgb[i] * cuts[m][i].float()]
            shown = [f" IoU {row[k]:.2f}" if has_mask else "" for k in ("mask_iou", "grabcut_iou")]
            titles += [m, f"map>=0.5{shown[0]}", f"GrabCut{shown[1]}"]
        title = f"{item.name}: segmentation from each method's map (Simonyan et al. 3.1)"
        grids[item.name] = tile_grid(torch.stack(tiles), titles, cols=3, cell=cfg.cell, title=title)

    def write(folder: Path) -> None:
        for name, grid in list(grids.items())[: cfg.max_images]:
            grid.save(folder / f"segment_{name}.png")
        write_csv(folder / "segment.csv", rows)
        if skipped:
            (folder / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in skipped))

    with whole_folder(out) as folder:
        write(folder)
    log.info("segmented %d images with %s; results in %s", len(items), ", ".join(methods), out)
    return EXIT_SKIPPED if skipped else EXIT_OK
