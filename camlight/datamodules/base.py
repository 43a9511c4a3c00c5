"""What the real-photo datamodules share: records, a skipping dataset, collation, the datamodule.

A dataset yields `sample(...)` dicts; a file that cannot be used (unreadable or truncated image,
annotation outside the image) yields a `Skipped` instead. `collate` drops those and hands their
paths to the batch under `skipped`; the datamodule takes them out in the main process before the
batch moves to the device, logs each file once and counts them (`datamodule.bad_files()`), so one
bad file never stops an epoch. Files a dataset's list names but that are not on disk are counted
there too, from `setup()` on ("listed in trainval.txt but missing").

Photos are turned upright by their EXIF orientation, as explain.py turns them. The datasets'
annotations (boxes, trimaps, segmentations) were drawn on the pixels as stored, as every reference
loader decodes them: they are checked against the stored size and turned with the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from camlight.datamodules.interface import CamlightDataModule, Skipped
from camlight.datamodules.io import BadFile, read_photo, turn_boxes_upright, turn_upright
from camlight.datamodules.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRAIN_SCALE,
    boxes_region,
    default_resize,
    eval_transform,
    sample,
    train_transform,
)

log = logging.getLogger(__name__)


@dataclass
class Record:
    """One labelled photo and where its ground truth comes from."""

    path: Path
    label: int
    # → (H,W) uint8 OUTSIDE/OBJECT/BOUNDARY map, given the decoded image's (height, width); None
    # when the photo has no ground truth.
    region: Callable[[int, int], np.ndarray] | None = None
    # → (k,4) ground-truth boxes of the labelled class, checked against the image; the mask is
    # then their filled union (used when there is no `region`).
    boxes: Callable[[int, int], np.ndarray | None] | None = None
    meta: dict = field(default_factory=dict)


class PhotoDataset(Dataset):
    """Records → samples through a v2 transform; a bad file gives `Skipped` (a bug still raises)."""

    def __init__(self, records: list[Record], transform):
        self.records, self.transform = records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict | Skipped:
        r = self.records[index]
        try:
            # The annotations were drawn on the pixels as stored: checked against the stored size,
            # then turned upright with the image (EXIF orientation), as explain.py shows the photo.
            photo = read_photo(r.path, upright=False)
            h, w = photo.rgb.shape[:2]
            boxes = r.boxes(h, w) if r.boxes else None
            region = r.region(h, w) if r.region else None
            if region is None and boxes is not None and len(boxes):
                region = boxes_region(boxes, h, w)
            turn = photo.orientation
            region = None if region is None else turn_upright(region, turn)
            boxes = None if boxes is None else turn_boxes_upright(boxes, w, h, turn)
            out = sample(turn_upright(photo.rgb, turn), r.label, self.transform, region, boxes)
        except BadFile as e:  # anything else is a bug, and raises
            return Skipped(str(r.path), str(e))
        if r.boxes is not None:  # annotated boxes: `box` is their union, whatever the mask
            b = out["boxes"]
            out["box"] = torch.cat([b[:, :2].min(0).values, b[:, 2:].max(0).values]) if len(b) else torch.zeros(4)
        out["index"] = torch.tensor(index)
        return out


def collate(items: list) -> dict:
    """Default collation of the good samples, `boxes` padded with zero rows to (B,K,4); the bad
    ones go, as (path, reason), to `skipped`."""
    good = [it for it in items if not isinstance(it, Skipped)]
    skipped = [(it.path, it.reason) for it in items if isinstance(it, Skipped)]
    batch = collate_samples(good) if good else {}
    batch["skipped"] = skipped
    return batch


def collate_samples(samples: list[dict]) -> dict:
    """Default collation, with `boxes` (k,4) per sample padded with zero rows to (B,K,4), K >= 1."""
    if "boxes" not in samples[0]:
        return default_collate(samples)
    sets = [s["boxes"] for s in samples]
    k = max(1, *(len(b) for b in sets))
    padded = torch.zeros(len(sets), k, 4)
    for i, b in enumerate(sets):
        padded[i, : len(b)] = b
    batch = default_collate([{key: v for key, v in s.items() if key != "boxes"} for s in samples])
    batch["boxes"] = padded
    return batch


class PhotoDataModule(CamlightDataModule):
    """Base of `OxfordPets` and `ImageFolder`: records, transforms, the probe set and skipped files.

    Subclasses fill `self.records` ({"train", "val", "test"} → list of Record) and
    `self.class_names` in `index()`, which checks the layout and raises `DataError`.
    """

    collate_fn = staticmethod(collate)

    def __init__(
        self,
        root: str | Path,
        image_size: int = 224,
        resize: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        train_scale: tuple[float, float] = TRAIN_SCALE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation: str = "bilinear",
    ):
        super().__init__(image_size, batch_size, num_workers, pin_memory, mean, std)
        self.root = Path(root).expanduser().absolute()
        self.seed, self.train_scale, self.interpolation = seed, tuple(train_scale), interpolation
        self.eval = eval_transform(image_size, resize, self.mean, self.std, interpolation)
        self.eval_resize = resize or default_resize(image_size)  # recorded in checkpoints for explain.py
        self.records: dict[str, list[Record]] | None = None
        self.class_names: tuple[str, ...] = ()

    # -- subclasses ---------------------------------------------------------------------------

    def index(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- Lightning ----------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.records is None:
            self.index()

    def split_size(self, split: str) -> int:
        self.setup()
        return len(self.records[split])

    def labels(self, split: str) -> list[int]:
        self.setup()
        return [r.label for r in self.records[split]]

    def dataset(self, split: str, train: bool = False) -> PhotoDataset:
        self.setup()
        t = (
            train_transform(self.image_size, self.mean, self.std, self.train_scale, self.interpolation)
            if train
            else self.eval
        )
        return PhotoDataset(self.records[split], t)

    def drop_last(self, split: str) -> bool:
        """Drop the last training batch when every rank has more than a batch: a batch of one would
        break BatchNorm, and ranks must run the same number of steps."""
        return len(self.records[split]) // self._world() > self.batch_size

    def _world(self) -> int:
        trainer = getattr(self, "trainer", None)
        return max(1, getattr(trainer, "world_size", 1) or 1)

    def listed_but_missing(self, missing: list[tuple[Path, str]], folder: Path) -> None:
        """Files a dataset's list names but that are not on disk, as (path, list file name): each
        goes to `bad_files()` with the reason "listed in <list file> but missing", and one log
        line names the first few."""
        if not missing:
            return
        for path, listing in missing:
            self.skipped.setdefault(str(path), f"listed in {listing} but missing")
        names = ", ".join(str(p.relative_to(folder)) for p, _ in missing[:5]) + (", ..." if len(missing) > 5 else "")
        log.warning(
            "%s: %d listed images have no file in %s; left out: %s", type(self).__name__, len(missing), folder, names
        )

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        self.add_bad_files(batch.pop("skipped", []))
        return batch

    # -- probe set ----------------------------------------------------------------------------

    def probe_batch(self, n: int, mode: str = "single", seed: int = 0) -> dict[str, torch.Tensor]:
        """The same `n` validation samples on every call (chosen by `seed`), as one CPU batch,
        with the evaluation transform. Unreadable files are passed over (and counted), so the probe
        set still holds `n` images when the split has that many good ones.

        Photos hold one labelled class, so there is no "pair" mode: it raises ValueError."""
        if mode != "single":
            raise ValueError(f"{type(self).__name__} has no {mode!r} probe (one labelled class per photo)")
        dataset = self.dataset("val")
        if not 0 < n <= len(dataset):
            raise ValueError(f"probe size {n} must be between 1 and the validation size {len(dataset)}")
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
        good, bad = [], []
        for i in order:
            item = dataset[i]
            (bad if isinstance(item, Skipped) else good).append(item)
            if len(good) == n:
                break
        self.add_bad_files([(b.path, b.reason) for b in bad])
        if not good:
            raise ValueError(f"no readable validation image under {self.root}")
        good.sort(key=lambda s: int(s["index"]))
        return collate_samples(good)

    def describe(self) -> str:
        """One line: what was found where."""
        self.setup()
        sizes = ", ".join(f"{s} {len(r)}" for s, r in self.records.items())
        gt = sum(r.region is not None or r.boxes is not None for r in self.records["val"])
        return (
            f"{type(self).__name__} at {self.root}: {len(self.class_names)} classes; {sizes} images; "
            f"{gt} of {len(self.records['val'])} validation images with ground truth"
        )
