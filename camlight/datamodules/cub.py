"""CUB-200-2011 (Wah et al. 2011), the main benchmark of weakly-supervised localization (Choe et al.
2020, wsolevaluation), on the on-disk layout of CUB_200_2011.tgz.

    root/CUB_200_2011/images.txt                 <image_id> <relative path>
    root/CUB_200_2011/image_class_labels.txt     <image_id> <class_id 1..200>
    root/CUB_200_2011/train_test_split.txt       <image_id> <is_training 1|0>
    root/CUB_200_2011/bounding_boxes.txt         <image_id> <x> <y> <width> <height>   (pixels of the photo)
    root/CUB_200_2011/classes.txt                <class_id> <NNN.Name_With_Underscores>
    root/CUB_200_2011/images/<NNN.Name>/<file>.jpg
    root/segmentations/<NNN.Name>/<file>.png     optional (segmentations.tgz), also looked for in
                                                 root/CUB_200_2011/segmentations/

`root` may also be the CUB_200_2011/ folder itself. Neither archive has a downloader in
torchvision: get CUB_200_2011.tgz (and, for masks, segmentations.tgz) from
https://data.caltech.edu/records/65de6-vp158 and unpack them in `root`.

Splits:

- test: the official test split (is_training 0, 5,794 images), the split WSOL papers report.
- val: `val_fraction` of each class's official training images (is_training 1), drawn with
  `seed`, with their boxes: the calibration split (the idea of wsolevaluation's train-fullsup,
  which holds 5 images per class; `val_fraction=0.167` gives about as many).
- train: the rest of the official training images.

Ground truth:

- `box` and `boxes`: the one box of bounding_boxes.txt, `(x, y, x + width, y + height)`
  end-exclusive in the photo's pixels, transformed with the image. A box outside the photo makes
  that photo a skipped, counted file.
- `mask`: the segmentation (soft annotator votes 0..255; > 127 is bird) when its PNG exists, else
  the filled box, as ImageFolder's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from camlight.datamodules.annotations import check_boxes, read_label_map
from camlight.datamodules.base import PhotoDataModule, Record
from camlight.datamodules.io import BadFile, DataError
from camlight.datamodules.transforms import OBJECT, OUTSIDE

log = logging.getLogger(__name__)

SOURCE = "https://data.caltech.edu/records/65de6-vp158"
LISTS = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")
THRESHOLD = 127  # segmentation votes above this are bird


def class_name(folder: str) -> str:
    """ "001.Black_footed_Albatross" → "Black footed Albatross"."""
    number, dot, name = folder.partition(".")
    return (name if dot and number.isdigit() else folder).replace("_", " ")


def read_table(path: Path, columns: str, parse) -> dict[int, tuple]:
    """{image or class id: parsed values} of one CUB list file, rows `<id> <value> ...`.

    Args:
        columns: the expected row, for the error message ("<image_id> <is_training 1|0>").
        parse: the row's fields after the id → a tuple; raises ValueError on a bad row.

    Raises:
        DataError: an unreadable file or a row not in the expected format, with its line number.
    """
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    out = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        key, *rest = line.split(None, 1)
        try:
            out[int(key)] = parse(rest[0].strip() if rest else "")
        except ValueError:
            raise DataError(f"{path} line {n}: expected '{columns}'; got {line.strip()[:80]!r}") from None
    return out


def _path(rest: str) -> tuple:
    if not rest:
        raise ValueError
    return (rest,)


def _positive(rest: str) -> tuple:
    value = int(rest)
    if value < 1:
        raise ValueError
    return (value,)


def _flag(rest: str) -> tuple:
    if rest not in ("0", "1"):
        raise ValueError
    return (rest == "1",)


def _box(rest: str) -> tuple:
    x, y, w, h = map(float, rest.split())  # a wrong count raises ValueError too
    return (x, y, x + w, y + h)


class CUB(PhotoDataModule):
    """CUB-200-2011: 11,788 photos of 200 bird species, one box each, optional segmentations.

    Args:
        root: the folder that holds `CUB_200_2011/` (and optionally `segmentations/`), or
            `CUB_200_2011/` itself.
        val_fraction: share of each class's official training images held out for validation
            (with boxes), drawn with `seed`; test is the official test split (see the module docstring).
        image_size, resize, batch_size, num_workers, pin_memory, seed, train_scale, mean, std:
            see `PhotoDataModule` and `camlight.datamodules.transforms`.

    Example::

        dm = CUB("~/data", image_size=224)        # ~/data/CUB_200_2011/images.txt, ...
        dm.setup()
        dm.class_names[0]                         # 'Black footed Albatross'
        probe = dm.probe_batch(8)                 # image, label, mask, ignore, box, boxes, index
    """

    def __init__(self, root: str | Path, val_fraction: float = 0.1, **kwargs):
        super().__init__(root, **kwargs)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        self.val_fraction = val_fraction
        self.segmentations: Path | None = None

    @property
    def base(self) -> Path:
        """The CUB_200_2011/ folder: root itself when it holds images.txt, else root/CUB_200_2011."""
        return self.root if (self.root / "images.txt").is_file() else self.root / "CUB_200_2011"

    def _missing(self, what: Path) -> DataError:
        where = self.base.parent
        return DataError(
            f"{what} not found; CUB-200-2011 has no downloader: get CUB_200_2011.tgz (segmentations.tgz optional) "
            f"from {SOURCE} and unpack it in {where}, giving {where / 'CUB_200_2011' / 'images.txt'} and the rest"
        )

    def index(self) -> None:
        if not self.root.is_dir():
            raise self._missing(self.root)
        for needed in (*(self.base / name for name in LISTS), self.base / "images"):
            if not needed.exists():
                raise self._missing(needed)
        paths = read_table(self.base / "images.txt", "<image_id> <relative path>", _path)
        labels = read_table(self.base / "image_class_labels.txt", "<image_id> <class_id>", _positive)
        training = read_table(self.base / "train_test_split.txt", "<image_id> <is_training 1|0>", _flag)
        boxes = read_table(self.base / "bounding_boxes.txt", "<image_id> <x> <y> <width> <height>", _box)
        classes = read_table(self.base / "classes.txt", "<class_id> <NNN.Name>", _path)
        if not paths:
            raise DataError(f"{self.base / 'images.txt'} lists no images")
        for table, name in ((labels, "image_class_labels.txt"), (training, "train_test_split.txt")):
            absent = [i for i in paths if i not in table]
            if absent:
                raise DataError(
                    f"{self.base / name} has no row for {len(absent)} image(s) of images.txt (first: image {absent[0]}); "
                    f"use the files of one CUB_200_2011.tgz"
                )
        order = sorted(classes)
        unknown = sorted({c for (c,) in labels.values()} - set(order))
        if unknown:
            raise DataError(f"{self.base / 'image_class_labels.txt'} names class {unknown[0]}, which classes.txt lacks")
        self.class_names = tuple(class_name(classes[c][0]) for c in order)
        position = {c: i for i, c in enumerate(order)}
        self.segmentations = next(
            (d for d in (self.base / "segmentations", self.base.parent / "segmentations") if d.is_dir()), None
        )
        if self.segmentations is None:
            log.info("CUB-200-2011: no segmentations/ found; the masks are the filled boxes")
        no_box = sum(i not in boxes for i in paths)
        if no_box:
            log.warning("CUB-200-2011: %d images have no row in bounding_boxes.txt; no ground truth for them", no_box)
        ids = {
            "train": [i for i in sorted(paths) if training[i][0]],
            "test": [i for i in sorted(paths) if not training[i][0]],
        }
        ids["train"], ids["val"] = self._hold_out(ids["train"], labels)
        self.records, missing = {}, []
        for split in ("train", "val", "test"):
            self.records[split], absent = self._records(ids[split], paths, labels, boxes, position)
            missing += [(path, "images.txt") for path in absent]
        self.listed_but_missing(sorted(missing), self.base / "images")
        if not self.records["train"] or not self.records["val"]:
            raise DataError(
                f"no training images of images.txt found in {self.base / 'images'} (with 2 or more in a class, "
                f"for validation); unpack CUB_200_2011.tgz from {SOURCE} there"
            )

    def _hold_out(self, train: list[int], labels: dict) -> tuple[list[int], list[int]]:
        """Stratified: val_fraction of every class's training images (at least one, when the class
        has two or more) goes to validation, drawn with the seed."""
        per_class: dict[int, list[int]] = {}
        for i in train:
            per_class.setdefault(labels[i][0], []).append(i)
        g = torch.Generator().manual_seed(self.seed)
        val: set[int] = set()
        for c in sorted(per_class):
            members = per_class[c]
            order = torch.randperm(len(members), generator=g).tolist()
            n_val = min(max(1, round(self.val_fraction * len(members))), len(members) - 1)
            val.update(members[k] for k in order[:n_val])
        return [i for i in train if i not in val], [i for i in train if i in val]

    def _records(self, ids, paths, labels, boxes, position) -> tuple[list[Record], list[Path]]:
        """The records of the listed images that have a file, and the paths of those that have none."""
        out, missing, images = [], [], self.base / "images"
        for i in ids:
            relative = paths[i][0]
            path = images / relative
            if not path.is_file():
                missing.append(path)
                continue
            seg = self.segmentations / Path(relative).with_suffix(".png") if self.segmentations else None
            out.append(
                Record(
                    path,
                    position[labels[i][0]],
                    region=_SegmentationRegion(seg) if seg is not None and seg.is_file() else None,
                    boxes=_CUBBox(boxes[i], f"image {i} in bounding_boxes.txt") if i in boxes else None,
                    meta={"id": i, "file": relative},
                )
            )
        return out, missing

    def describe(self) -> str:
        masks = f"segmentations from {self.segmentations}" if self.segmentations else "filled boxes"
        return f"{super().describe()}; masks: {masks}"


class _CUBBox:
    """Picklable (for DataLoader workers): the annotated box, checked against the decoded photo."""

    def __init__(self, box: tuple[float, float, float, float], source: str):
        self.box, self.source = box, source

    def __call__(self, height: int, width: int) -> np.ndarray:
        return check_boxes(np.array([self.box], dtype=np.float64), width, height, self.source)


class _SegmentationRegion:
    """Picklable: the segmentation PNG (votes 0..255) as a region map, > 127 is bird."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, height: int, width: int) -> np.ndarray:
        seg = read_label_map(self.path)
        if seg.shape != (height, width):
            raise BadFile(f"segmentation {self.path.name} is {seg.shape[1]}×{seg.shape[0]}, the photo {width}×{height}")
        return np.where(seg > THRESHOLD, OBJECT, OUTSIDE).astype(np.uint8)
