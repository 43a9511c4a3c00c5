"""What `explain.py` explains: the checkpoint, and images from files or from the checkpoint's own data.

Images are prepared one at a time, as the run asks for them, exactly as the checkpoint's evaluation
data was prepared. A file that cannot be used is skipped and listed, never fatal; a usage mistake
raises `ConfigError` before anything is written.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from camlight.config import ConfigError
from camlight.datamodules import DataError, from_config
from camlight.datamodules.io import EXTENSIONS, BadFile, find_images, read_photo
from camlight.datamodules.transforms import eval_transform, resized_size
from camlight.modules import CheckpointError, WeightsUnavailable
from camlight.modules.resolve import Resolved, resolve
from camlight.offline.names import file_stem


@dataclass
class Item:
    """One image to explain, with its ground truth where it has one."""

    name: str  # unique, file-name safe (`camlight.offline.names.file_stem` of the key)
    image: torch.Tensor  # (3,S,S) normalised
    label: int | None = None
    mask: torch.Tensor | None = None  # (S,S) bool
    box: torch.Tensor | None = None  # (4,)
    boxes: torch.Tensor | None = None  # (K,4) every ground-truth box (photos with several objects)
    ignore: torch.Tensor | None = None  # (S,S) bool, pixels neither object nor background
    relative: str | None = None  # input=: the path relative to input=, as found ("sub/a.jpg")

    @property
    def key(self) -> str:
        """What outputs are keyed by: the relative path of a file, the name of a split's sample."""
        return self.name if self.relative is None else self.relative

    def as_sample(self) -> dict[str, torch.Tensor]:
        """The item in the camlight sample format (the fields it has)."""
        fields = {"image": self.image, "mask": self.mask, "box": self.box, "boxes": self.boxes, "ignore": self.ignore}
        sample = {k: v for k, v in fields.items() if v is not None}
        if self.label is not None:
            sample["label"] = torch.tensor(self.label)
        return sample


@dataclass
class Inputs:
    """The images of a run, prepared lazily: `items` yields them one at a time."""

    items: Iterable[Item]
    total: int  # how many will be tried (bad files included), for the progress bar
    skipped: Callable[[], list[tuple[str, str]]]  # (path, reason) of the bad files met so far
    source: str  # what was explained, for titles
    first: Item | None = None  # the first good item (peeked), to decide method support


def load_model(cfg: DictConfig) -> Resolved:
    """The model of `checkpoint=` (read once and safely, see `camlight.modules.checkpoint`) or of
    `model=` (see `camlight.modules.resolve`)."""
    spec = cfg.get("model") or cfg.checkpoint
    if not spec:
        raise ConfigError("checkpoint= or model= is required: a camlight .ckpt, torchvision:<name>, timm:<name> ...")
    if cfg.get("model") and cfg.checkpoint:
        raise ConfigError("give one of checkpoint= and model=, not both")
    if cfg.checkpoint and not Path(cfg.checkpoint).is_file():
        raise ConfigError(f"checkpoint {cfg.checkpoint} not found; give the path of a .ckpt file")
    try:
        return resolve(
            str(spec),
            weights=cfg.get("weights"),
            classes=cfg.get("classes"),
            image_size=cfg.get("image_size"),
            mean=cfg.get("mean"),
            std=cfg.get("std"),
        )
    except (CheckpointError, WeightsUnavailable, ValueError) as e:
        raise ConfigError(str(e)) from None


# A photo is decoded at a reduced scale (`read_photo`'s `least`) only while its shorter side stays
# >= REDUCE_GAP × what the resize needs: only photos at least twice that (8× `eval_resize`) are
# reduced, then resampled by Pillow with the exact geometry. On scikit-image's 12 sample photos
# (PNG and JPEG), inputs so prepared differ from the datamodules' full-size decode by at most 4/255
# per pixel and 0.5/255 on average (`python benchmarks/decode_memory.py --fidelity`; without the
# flag it measures the memory saved); smaller photos are prepared bit for bit as the datamodules do.
REDUCE_GAP = 4


def decode(path: Path, size: int) -> np.ndarray:
    """RGB uint8 (S,S,3): any accepted image file, upright, squashed to `size`²; raises BadFile
    with the reason. Decoded at a reduced scale while both sides stay >= REDUCE_GAP × size."""
    return read_photo(path, REDUCE_GAP * size).resized(size, size)


def _normalise(rgb: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def prepare(path: Path, pre: dict) -> torch.Tensor:
    """(3,S,S) normalised input from an image file, prepared as the checkpoint's evaluation data was:
    shorter side to `eval_resize` and a centre crop, or (without `eval_resize`) squashed to S².

    A photo much larger than needed is decoded at a reduced scale and resampled by Pillow (see
    REDUCE_GAP); any other is decoded at full size and resized by torchvision, as the datamodules do.

    Raises:
        BadFile: unreadable, truncated or too large.
    """
    size, resize = pre["image_size"], pre.get("eval_resize")
    if not resize:
        return _normalise(decode(path, size), pre["mean"], pre["std"])
    from torchvision import tv_tensors

    interpolation = pre.get("interpolation", "bilinear")
    # Pillow's bilinear and bicubic filters are torchvision's antialiased ones (within 1/255)
    photo = read_photo(path, REDUCE_GAP * resize if interpolation in ("bilinear", "bicubic") else None)
    rgb = photo.resized(*resized_size(*photo.size, resize), interpolation) if photo.reduced else photo.rgb
    transform = eval_transform(size, resize, pre["mean"], pre["std"], interpolation, resized=photo.reduced)
    return transform(tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1))).as_subclass(torch.Tensor)


def _relative(path: Path, root: Path) -> str:
    """The path of an input relative to input= ("sub/a.jpg"; the file's name when input= is a file)."""
    return path.relative_to(root if root.is_dir() else root.parent).as_posix()


def from_files(root: Path, model: Resolved, done: Container[str] = ()) -> Inputs:
    """An image file, or every image under a folder (recursively), prepared for the model; the
    files whose relative path is in `done` are left out before they are read."""
    if not root.exists():
        raise ConfigError(f"input {root} not found; give an image file or a folder")
    paths, passed_over = find_images(root)
    if not paths:
        why = f"; passed over {passed_over[0][0]}: {passed_over[0][1]}" if passed_over else ""
        more = f" and {len(passed_over) - 1} more" if len(passed_over) > 1 else ""
        raise ConfigError(f"no images ({', '.join(sorted(EXTENSIONS))}) found in {root}{why}{more}")
    pre = model.preprocessing.as_dict()
    skipped: list[tuple[str, str]] = list(passed_over)  # broken links, link loops ...: listed too
    total = len(paths) - (sum(_relative(p, root) in done for p in paths) if done else 0)

    def items() -> Iterator[Item]:
        for path in paths:
            key = _relative(path, root)
            if key in done:
                continue
            try:
                yield Item(file_stem(key), prepare(path, pre), relative=key)
            except BadFile as e:
                skipped.append((str(path), str(e)))

    return _peek(Inputs(items(), total, lambda: list(skipped), str(root)))


def from_split(cfg: DictConfig, model: Resolved) -> Inputs:
    """The checkpoint's own validation or test data (or its probe set), with ground truth."""
    run_cfg = model.config
    if not run_cfg or "data" not in run_cfg:
        raise ConfigError(f"{model.name} holds no data config (not saved by train.py); use input= instead of split=")
    pre = model.preprocessing.as_dict()
    data = {**run_cfg["data"], "cache": False}
    data.setdefault("name", "synthetic")
    try:
        dm = from_config(
            data, pre["mean"], pre["std"], num_workers=0, resize=pre["eval_resize"], interpolation=pre["interpolation"]
        )
        dm.setup()
    except (DataError, ValueError) as e:
        raise ConfigError(f"cannot load the checkpoint's {cfg.split} data: {e}") from None
    skipped = lambda: sorted(dm.bad_files().items())  # noqa: E731
    if cfg.probe_size:
        try:
            batch = dm.probe_batch(cfg.probe_size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        # photos: the dataset index (a bad file can leave the probe short); synthetic: the probe position
        ids = batch["index"].tolist() if "index" in batch else list(range(len(batch["image"])))
        samples = ({k: v[j] for k, v in batch.items()} for j in range(len(ids)))
        items = (_item(cfg.split, i, s) for i, s in zip(ids, samples, strict=True))
        return _peek(Inputs(items, len(ids), skipped, f"the {cfg.split} probe set"))
    size = dm.split_size(cfg.split)
    if size == 0:
        raise ConfigError(f"the checkpoint's {cfg.split} split is empty")
    items = (_item(cfg.split, i, s) for i, s in dm.samples(cfg.split))
    return _peek(Inputs(items, size, skipped, f"the {cfg.split} split"))


def _item(split: str, index: int, s: dict) -> Item:
    """An Item named by its index in the split."""
    return Item(
        f"{split}_{index:05d}", s["image"], int(s["label"]), s["mask"], s["box"], s.get("boxes"), s.get("ignore")
    )


def _peek(inputs: Inputs) -> Inputs:
    """Draw the first good item now (so that a run knows one before it writes anything) and put it back."""
    it = iter(inputs.items)
    first = next(it, None)
    inputs.first = first
    inputs.items = it if first is None else itertools.chain([first], it)
    return inputs


def first_images(cfg: DictConfig, loaded: Resolved) -> tuple[list[Item], list[tuple[str, str]]]:
    """The first `cfg.images` good images of `input=`, or of the checkpoint's probe set of that
    size (`split=`), and the files skipped on the way; ConfigError when none can be read."""
    if cfg.input:
        inputs = from_files(Path(cfg.input), loaded)
    else:
        probe = cfg.images if cfg.split == "val" else None  # the probe set is drawn from validation data
        inputs = from_split(OmegaConf.create({"split": cfg.split, "probe_size": probe}), loaded)
    items = list(itertools.islice(inputs.items, cfg.images))
    if not items:
        raise ConfigError(f"no image of {inputs.source} could be read (see the skipped files); nothing to do")
    return items, inputs.skipped()
