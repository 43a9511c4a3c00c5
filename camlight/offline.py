"""Explain a checkpoint on a folder of images (or its own data split), offline: `explain.py`.

Writes into `out/`: `overlays/<image>__<method>.png` (and `__input.png`), `grid.png`, `maps.npz`
(float maps in [0,1] keyed "<image>/<method>"), `results.csv` (a row per image: prediction,
probability, target, and per-method localization scores where ground truth exists), `index.html`
(a self-contained report: every image inlined) and `skipped.txt` (bad files and why).
Usage mistakes raise `ConfigError` before `out/` exists; bad files are skipped and counted.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from camlight.config import ConfigError
from camlight.datamodules import DataError, PhotoDataModule, from_config
from camlight.datamodules.base import Skipped
from camlight.datamodules.io import EXTENSIONS, BadFile, is_image, read_rgb
from camlight.datamodules.transforms import eval_transform
from camlight.explain import METHODS, explain, supported
from camlight.metrics import energy_pointing_game, pointing_game
from camlight.modules import Classifier, checkpoint_config, load_classifier
from camlight.viz import denormalize, draw_contour, overlay, probe_grid

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SKIPPED = 0, 3


@dataclass
class Item:
    name: str  # unique, file-name safe
    image: torch.Tensor  # (3,S,S) normalised
    label: int | None = None
    mask: torch.Tensor | None = None
    box: torch.Tensor | None = None
    boxes: torch.Tensor | None = None  # (K,4) every ground-truth box (photos with several objects)


def load_model(path: str | None) -> Classifier:
    if not path:
        raise ConfigError("checkpoint= is required: the .ckpt file of a camlight run")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint {p} not found; give the path of a .ckpt file")
    try:
        return load_classifier(p)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a camlight checkpoint"
        raise ConfigError(
            f"{p} is not a camlight checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        ) from None


def image_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image(p))


def decode(path: Path, size: int) -> np.ndarray:
    """RGB uint8 (S,S,3): any common image file squashed to `size`²; raises ValueError with the reason."""
    rgb = read_rgb(path, draft=size)  # JPEG: decode at a reduced scale when possible
    return np.array(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def _normalise(rgb: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def prepare(path: Path, pre: dict) -> torch.Tensor:
    """(3,S,S) normalised input from an image file, prepared as the checkpoint's evaluation data was:
    shorter side to `eval_resize` and a centre crop, or (without `eval_resize`) squashed to S².

    Raises:
        BadFile: unreadable, truncated or too large.
    """
    size, resize = pre["image_size"], pre.get("eval_resize")
    if not resize:
        return _normalise(decode(path, size), pre["mean"], pre["std"])
    from torchvision import tv_tensors

    rgb = read_rgb(path)  # no JPEG draft: the datamodules decode at full size, and so must this
    transform = eval_transform(size, resize, pre["mean"], pre["std"])
    return transform(tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1))).as_subclass(torch.Tensor)


def _names(paths: list[Path], root: Path) -> list[str]:
    base = root if root.is_dir() else root.parent
    return [str(p.relative_to(base).with_suffix("")).replace("/", "__") for p in paths]


def file_items(root: Path, model: Classifier) -> tuple[list[Item], list[tuple[str, str]]]:
    pre = model.preprocessing
    items, skipped = [], []
    paths = image_files(root)
    for path, name in zip(paths, _names(paths, root), strict=True):
        try:
            image = prepare(path, pre)
        except BadFile as e:
            skipped.append((str(path), str(e)))
            continue
        items.append(Item(name, image))
    return items, skipped


def split_items(cfg: DictConfig, model: Classifier, checkpoint: str) -> tuple[list[Item], list[tuple[str, str]]]:
    """The checkpoint's own validation or test data (or its probe set), with ground truth."""
    run_cfg = checkpoint_config(checkpoint)
    if not run_cfg or "data" not in run_cfg:
        raise ConfigError(f"{checkpoint} holds no data config (not saved by train.py); use input= instead of split=")
    pre = model.preprocessing
    d = dict(run_cfg["data"])
    d.setdefault("name", "synthetic")
    if d["name"] == "synthetic":
        d.update(train_size=1, cache=False)
    try:
        dm = from_config(d, pre["mean"], pre["std"], num_workers=0)
        if isinstance(dm, PhotoDataModule):
            dm.setup()
    except (DataError, ValueError) as e:
        raise ConfigError(f"cannot load the checkpoint's {cfg.split} data: {e}") from None
    if cfg.probe_size:
        if cfg.split != "val":
            raise ConfigError("probe_size= works with split=val (the probe set is drawn from validation data)")
        try:
            batch = dm.probe_batch(cfg.probe_size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        skipped = sorted(getattr(dm, "skipped", {}).items())
        samples = [{k: v[j] for k, v in batch.items()} for j in range(len(batch["image"]))]
        # photos: the dataset index (a bad file can leave the probe short); synthetic: the probe position
        ids = batch["index"].tolist() if "index" in batch else list(range(len(samples)))
        return _split_rows(cfg.split, samples, ids), skipped
    dataset = dm.dataset(cfg.split) if isinstance(dm, PhotoDataModule) else dm.datasets[cfg.split]
    if len(dataset) == 0:
        raise ConfigError(f"the checkpoint's {cfg.split} split is empty")
    samples, skipped, ids = [], [], []
    for i in range(len(dataset)):
        s = dataset[i]
        if isinstance(s, Skipped):
            skipped.append((s.path, s.reason))
        else:
            samples.append(s)
            ids.append(i)
    return _split_rows(cfg.split, samples, ids), skipped


def _split_rows(split: str, samples: list[dict], ids) -> list[Item]:
    """An Item per sample (no batch tensor of the whole split), named by its index in the split."""
    return [
        Item(f"{split}_{i:05d}", s["image"], int(s["label"]), s["mask"], s["box"], s.get("boxes"))
        for s, i in zip(samples, ids, strict=True)
    ]


def _targets(
    cfg: DictConfig, model: Classifier, logits: torch.Tensor, items: list[Item]
) -> list[tuple[str, torch.Tensor]]:
    """[(suffix, targets (B,))]: one entry, or k for target=topk."""
    t = str(cfg.target)
    if t == "top1":
        return [("", logits.argmax(1))]
    if t == "topk":
        k = min(cfg.k, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        return [(f"_top{r + 1}", top[:, r]) for r in range(k)]
    if t == "label":
        return [("", torch.tensor([it.label for it in items]))]
    index = int(t) if t.isdigit() else model.class_names.index(t)
    return [("", torch.full((len(items),), index, dtype=torch.long))]


def check(cfg: DictConfig, model: Classifier) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {', '.join(map(repr, unknown))}; choose from {', '.join(METHODS)}")
    if bool(cfg.input) == bool(cfg.split):
        raise ConfigError("give exactly one of input= (an image or a folder) and split= (val or test)")
    t = str(cfg.target)
    if t == "label" and not cfg.split:
        raise ConfigError("target=label needs ground truth: use split=val or split=test, or target=top1")
    if t not in ("top1", "topk", "label"):
        valid = t.isdigit() and int(t) < len(model.class_names)
        if not valid and t not in model.class_names:
            raise ConfigError(
                f"unknown target {t!r}; use top1, topk, label, a class index below {len(model.class_names)} "
                f"or a class name: {', '.join(model.class_names)}"
            )
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out={out} already exists and is not empty; choose another out=")


def run(cfg: DictConfig, progress: bool = True) -> int:
    """Explain, write `cfg.out`, return the exit code (0 all explained, 3 some files skipped).

    Raises:
        ConfigError: a usage mistake, before anything is written.
    """
    model = load_model(cfg.checkpoint)
    check(cfg, model)
    if cfg.input:
        root = Path(cfg.input)
        if not root.exists():
            raise ConfigError(f"input {root} not found; give an image file or a folder")
        items, skipped = file_items(root, model)
        if not items and not skipped:
            raise ConfigError(f"no images ({', '.join(sorted(EXTENSIONS))}) found in {root}")
    else:
        items, skipped = split_items(cfg, model, cfg.checkpoint)
    device = _device(cfg.device)
    model = model.to(device)
    out = Path(cfg.out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    methods = supported(model, items[0].image[None].to(device), list(cfg.methods)) if items else list(cfg.methods)
    rows, maps_out, grid_parts = [], {}, []
    bar = _progress(len(items), progress)
    for start in range(0, len(items), cfg.batch_size):
        chunk = items[start : start + cfg.batch_size]
        x = torch.stack([it.image for it in chunk]).to(device)
        with torch.no_grad():
            probs = model(x).softmax(1)
        for suffix, targets in _targets(cfg, model, probs, chunk):
            maps = explain(model, x, methods, targets=targets.to(device)) if methods else {}
            _write(out, model, chunk, x, probs, targets, maps, suffix, rows, maps_out)
            if suffix in ("", "_top1") and len(grid_parts) < 16:
                grid_parts.append((chunk, x.cpu(), probs.cpu(), {m: v.cpu() for m, v in maps.items()}))
        bar.update(len(chunk))
    bar.close()
    np.savez_compressed(out / "maps.npz", **maps_out)
    _write_csv(out / "results.csv", rows)
    _write_html(out, cfg, rows, maps_out)
    if grid_parts:
        _grid(model, grid_parts).save(out / "grid.png")
    (out / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in skipped))
    log.info("explained %d images, skipped %d; results in %s", len(items), len(skipped), out)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _device(name: str) -> torch.device:
    """ "auto" → cuda when available, else cpu; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _NoBar:
    def update(self, n): ...
    def close(self): ...


def _progress(total: int, show: bool, unit: str = "img", desc: str = "explaining"):
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc)


def _write(out, model, chunk, x, probs, targets, maps, suffix, rows, maps_out) -> None:
    mean, std = model.preprocessing["mean"], model.preprocessing["std"]
    images = denormalize(x.float().cpu(), mean, std)
    conf, pred = probs.max(1)
    names = model.class_names
    for i, it in enumerate(chunk):
        if not suffix or suffix == "_top1":
            _save_png(images[i], out / "overlays" / f"{it.name}__input.png")
        row = {
            "file": it.name,
            "predicted": names[int(pred[i])],
            "probability": round(float(conf[i]), 6),
            "target": names[int(targets[i])] + suffix.replace("_", " ").rstrip(),
            "target_probability": round(float(probs[i, int(targets[i])]), 6),
        }
        if it.label is not None:
            row["label"] = names[it.label]
        for m, v in maps.items():
            heat = v[i].float().cpu()
            maps_out[f"{it.name}/{m}{suffix}"] = heat.numpy()
            _save_png(overlay(images[i : i + 1], heat[None])[0], out / "overlays" / f"{it.name}__{m}{suffix}.png")
            if it.mask is not None and it.mask.any():  # photos without ground truth score nothing
                row[f"{m}/pointing_game"] = int(pointing_game(heat[None], it.mask[None].bool())[0])
                boxes = it.box if it.boxes is None else it.boxes
                row[f"{m}/energy_pointing_game"] = round(float(energy_pointing_game(heat[None], boxes[None])[0]), 6)
        rows.append(row)


def _save_png(image: torch.Tensor, path: Path) -> None:
    """(3,H,W) in [0,1] → PNG."""
    rgb = (image.clamp(0, 1) * 255).round().byte()
    Image.fromarray(rgb.permute(1, 2, 0).numpy()).save(path)


def _write_html(out: Path, cfg: DictConfig, rows: list[dict], maps_out: dict) -> None:
    from camlight.viz.html import offline_report

    methods = list(dict.fromkeys(k.split("/", 1)[1] for k in maps_out))
    files = list(dict.fromkeys(r["file"] for r in rows))
    images = {f: out / "overlays" / f"{f}__input.png" for f in files}
    overlays = {(f, m): out / "overlays" / f"{f}__{m}.png" for f in files for m in methods}
    overlays = {k: v for k, v in overlays.items() if v.is_file()}
    first: dict[str, dict] = {}
    for r in rows:  # with target=topk an image has a row per class; the page shows them as columns
        first.setdefault(r["file"], r)
    report_rows = list(first.values())
    title = f"camlight — {Path(str(cfg.checkpoint)).name} on {cfg.input or cfg.split}"
    (out / "index.html").write_text(offline_report(title, report_rows, methods, images, overlays))


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["file"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _grid(model, parts):
    mean, std = model.preprocessing["mean"], model.preprocessing["std"]
    chunk = [it for c, *_ in parts for it in c][:16]
    x = torch.cat([p[1] for p in parts])[:16]
    probs = torch.cat([p[2] for p in parts])[:16]
    maps = {m: torch.cat([p[3][m] for p in parts])[:16] for m in parts[0][3]}
    images = denormalize(x.float(), mean, std)
    inputs = images
    if all(it.mask is not None for it in chunk):
        inputs = draw_contour(images, torch.stack([it.mask for it in chunk]).bool())
    conf, pred = probs.max(1)
    titles = [f"{it.name[:14]}: {model.class_names[int(pred[i])]} {conf[i]:.2f}" for i, it in enumerate(chunk)]
    overlays = {m: overlay(images, v) for m, v in maps.items()}
    cells = {m: [("", None)] * len(chunk) for m in maps}
    return probe_grid(inputs, overlays, titles, cells)


def visualize(cfg: DictConfig, progress: bool = True) -> int:
    """`explain.py visualize-class`: write `<class>.png` and `<class>_steps.png` into `cfg.out`."""
    from camlight.explain.class_model import class_model

    model = load_model(cfg.checkpoint)
    names = model.class_names
    t = "" if cfg.target is None else str(cfg.target)
    if not t:
        raise ConfigError(f"class= is required: one of {', '.join(names)} (or its index)")
    if t.isdigit() and int(t) < len(names):
        index = int(t)
    elif t in names:
        index = names.index(t)
    else:
        raise ConfigError(f"unknown class {t!r}; choose one of {', '.join(names)} (or an index below {len(names)})")
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out={out} already exists and is not empty; choose another out=")
    device = _device(cfg.device)
    model = model.to(device)
    size = model.preprocessing["image_size"]
    bar = _progress(cfg.steps, progress, unit="step", desc=f"class {names[index]}")

    def on_step(step: int, score: float) -> None:
        bar.update(1)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(score=f"{score:.3g}", refresh=False)

    image, shots, scores = class_model(
        model,
        index,
        size,
        steps=cfg.steps,
        lr=cfg.lr,
        l2=cfg.l2,
        jitter=cfg.jitter,
        blur_every=cfg.blur_every,
        on_step=on_step,
    )
    bar.close()
    mean, std = model.preprocessing["mean"], model.preprocessing["std"]
    out.mkdir(parents=True, exist_ok=True)
    name = names[index]
    _save_png(_display(image, mean, std), out / f"{name}.png")
    strip = torch.cat([_display(s, mean, std) for s in shots], dim=2)
    _save_png(strip, out / f"{name}_steps.png")
    log.info("class %s: score %.3f → %.3f over %d steps; %s", name, scores[0], scores[-1], len(scores), out)
    return EXIT_OK


def _display(image: torch.Tensor, mean, std) -> torch.Tensor:
    """Denormalise, then stretch to [0,1] (the optimised image may leave the data's range)."""
    x = image.cpu()[None] * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-12)
    return x[0]
