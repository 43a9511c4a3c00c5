"""ImageFolder: photos sorted into class folders (Imagenette, Imagewoof, an ImageNet subset, the
Kaggle cats-vs-dogs images, your own), with optional ImageNet LOC or VOC XML boxes.

    root/train/<class>/*.jpg        required
    root/val/<class>/*.jpg          optional: without it, val_fraction of train is held out
    root/test/<class>/*.jpg         optional

ImageNet's own layout works as it is (`root=.../ILSVRC/Data/CLS-LOC`, `box_dir=` the folder with
the LOC csv files): a val/ (or test/) without class folders takes each photo's class from
`LOC_val_solution.csv`, and one without labels (ImageNet's test/) is left out.

Class folders named by ImageNet wnid (`n01440764`) get readable names (`tench`) from
`LOC_synset_mapping.txt` when it lies in root or its parent, and for the Imagenette and Imagewoof
classes without it.

Boxes (`boxes=`):

- "loc": ImageNet's `LOC_train_solution.csv` / `LOC_val_solution.csv` in `box_dir` (default root),
  rows `ImageId,PredictionString` with `wnid xmin ymin xmax ymax` repeated; ImageId is the file's
  stem.
- "xml": one PASCAL VOC / ImageNet XML per image, found by the image's stem anywhere under
  `box_dir` (next to the photos, or ImageNet's `Annotations/CLS-LOC/{train/<wnid>,val}/`).
- "auto": "loc" when those CSV files exist, else "xml" when XML files exist, else none.
- "none": no boxes; the callback then logs explanations without localization scores.

Only the boxes of the labelled class are ground truth: objects named by the class folder (or its
readable name); when no object carries such a name, all of them. The `mask` is the union of the
filled boxes, so the pointing game is the box version of Zhang et al., and mask IoU and PxAP score
against boxes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from camlight.datamodules.annotations import WNID, check_boxes, read_loc_csv, read_voc_xml
from camlight.datamodules.base import PhotoDataModule, Record
from camlight.datamodules.io import BadFile, DataError, find_images, is_image, stored_size

log = logging.getLogger(__name__)

# Readable names of the Imagenette and Imagewoof classes (ImageNet's first synonym).
KNOWN_WNIDS = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888605": "parachute",
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "dingo",
}
LAYOUT = "root/train/<class>/*.jpg (and optionally root/val/<class>/*.jpg, root/test/<class>/*.jpg)"


def synset_names(*folders: Path) -> dict[str, str]:
    """wnid → first synonym, from the first `LOC_synset_mapping.txt` found in `folders`."""
    for folder in folders:
        path = folder / "LOC_synset_mapping.txt"
        if path.is_file():
            names = {}
            for line in path.read_text().splitlines():
                wnid, _, words = line.partition(" ")
                if WNID.match(wnid):
                    names[wnid] = words.split(",")[0].strip()
            return names
    return {}


class ImageFolder(PhotoDataModule):
    """Photos in class folders, optionally with boxes; the camlight batch format.

    Args:
        root: the folder holding `train/` (and optionally `val/`, `test/`).
        classes: a subset of class folders, by folder name, wnid or readable name, in the order
            given (default: every folder of train/, sorted).
        boxes: "auto", "loc", "xml" or "none" (see the module docstring).
        box_dir: where LOC CSV files or XML files are looked for (default: root).
        val_fraction: share of train/ held out for validation when there is no val/ folder.
        image_size, resize, batch_size, num_workers, pin_memory, seed, train_scale, mean, std:
            see `PhotoDataModule`.

    Example::

        dm = ImageFolder("~/data/imagenette2-320", image_size=160)
        dm.setup()
        dm.class_names   # ('tench', 'English springer', ...)
    """

    def __init__(
        self,
        root: str | Path,
        classes: list[str] | tuple[str, ...] | None = None,
        boxes: str = "auto",
        box_dir: str | Path | None = None,
        val_fraction: float = 0.1,
        **kwargs,
    ):
        super().__init__(root, **kwargs)
        if boxes not in ("auto", "loc", "xml", "none"):
            raise ValueError(f"unknown boxes={boxes!r}; choose auto, loc, xml or none")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        self.classes = list(classes) if classes else None
        self.boxes, self.val_fraction = boxes, val_fraction
        self.box_dir = Path(box_dir).expanduser().absolute() if box_dir else self.root
        self.box_source = "none"
        self._loc: dict | None = None  # the LOC csv rows, read once
        self._wnids: set[str] | None = None  # the chosen classes when they are all wnids

    def index(self) -> None:
        if not self.root.is_dir():
            raise DataError(f"data.root={self.root} not found; it should hold {LAYOUT}")
        train = self.root / "train"
        if not train.is_dir():
            found = ", ".join(sorted(p.name for p in self.root.iterdir())[:8]) or "nothing"
            hint = ""
            if any(p.is_dir() and any(is_image(f) for f in p.iterdir()) for p in self.root.iterdir()):
                hint = f"; to use the class folders found there, move them into {train}/"
            raise DataError(f"{train} not found (found {found}); an ImageFolder root holds {LAYOUT}{hint}")
        folders = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(folders) < 2:
            found = f"only {folders[0]}/" if folders else "no class folders"
            raise DataError(f"{train} holds {found}; a classifier needs two or more, as {LAYOUT}")
        readable = {**KNOWN_WNIDS, **synset_names(self.root, self.root.parent, self.box_dir)}
        chosen = self._choose(folders, readable)
        self.folders = chosen
        names = [readable.get(f, f) if WNID.match(f) else f for f in chosen]
        dupes = {n for n in names if names.count(n) > 1}
        self.class_names = tuple(f"{n} ({f})" if n in dupes else n for n, f in zip(names, chosen, strict=True))
        self._wnids = set(chosen) if all(WNID.match(f) for f in chosen) else None
        files = {split: self._files(self.root / split, chosen, split != "train") for split in ("train", "val", "test")}
        if not any(files["train"].values()):
            raise DataError(f"no images in the class folders of {train}")
        if not (self.root / "val").is_dir():
            files["train"], files["val"] = self._hold_out(files["train"])
        elif not any(files["val"].values()):
            raise DataError(f"{self.root / 'val'} holds no images of the chosen classes; add them or remove val/")
        lookup = self._box_lookup()
        self.records = {
            split: [
                Record(path, label, boxes=lookup(split, path, chosen[label], self.class_names[label]))
                for label, folder in enumerate(chosen)
                for path in per_class.get(folder, [])
            ]
            for split, per_class in files.items()
        }
        self._check_box_scale()

    def _check_box_scale(self, n: int = 32) -> None:
        """Boxes drawn on other photos (LOC boxes of full-size ImageNet beside a resized copy such as
        Imagenette-320, which keeps ImageNet's file names) land outside the images: refuse them
        here, rather than skip most photos or misplace their boxes."""
        with_boxes = [r for split in ("val", "train") for r in self.records[split] if r.boxes is not None][:n]
        outside, example = 0, ""
        for r in with_boxes:
            try:
                width, height = stored_size(r.path)  # the header only
            except BadFile:  # an unreadable photo is skipped later, with its reason
                continue
            try:
                r.boxes(height, width)
            except BadFile as e:
                outside, example = outside + 1, example or f"{r.path.name}: {e}"
        if with_boxes and outside > len(with_boxes) // 2:
            raise DataError(
                f"{outside} of {len(with_boxes)} sampled photos have boxes outside the image ({example}); the boxes "
                f"({self.box_source}) were drawn on other copies of these photos (full-size ImageNet beside a resized "
                "set such as Imagenette-320?). Use the photos the boxes belong to, or data.boxes=none"
            )

    def _choose(self, folders: list[str], readable: dict[str, str]) -> list[str]:
        if not self.classes:
            return folders
        by_name = {f: f for f in folders} | {readable[f].lower(): f for f in folders if f in readable}
        chosen = []
        for c in self.classes:
            f = by_name.get(str(c)) or by_name.get(str(c).lower())
            if f is None:
                shown = ", ".join(f"{x} ({readable[x]})" if x in readable else x for x in folders[:12])
                more = f" and {len(folders) - 12} more" if len(folders) > 12 else ""
                raise DataError(f"class {c!r} has no folder in {self.root / 'train'}; available: {shown}{more}")
            chosen.append(f)
        if len(set(chosen)) < 2:
            raise DataError(f"data.classes needs at least two different classes, got {list(self.classes)}")
        return list(dict.fromkeys(chosen))

    def _files(self, split_dir: Path, folders: list[str], optional: bool) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        if not split_dir.is_dir():
            return out
        if optional and not any((split_dir / f).is_dir() for f in folders):
            return self._flat_files(split_dir, folders)
        for folder in folders:
            d = split_dir / folder
            if not d.is_dir():
                if not optional:
                    raise DataError(f"class folder {d} not found")
                log.warning("ImageFolder: %s has no folder for class %s", split_dir, folder)
                continue
            paths, passed_over = find_images(d)  # follows links to folders once; lists broken links
            self.add_bad_files(passed_over)
            if not paths:
                raise DataError(
                    f"class folder {d} holds no images ({', '.join(('.jpg', '.png', '...'))}); "
                    "add images or leave the class out with data.classes"
                )
            out[folder] = paths
        return out

    def _flat_files(self, split_dir: Path, folders: list[str]) -> dict[str, list[Path]]:
        """A split without class folders, as ImageNet's val/ (ILSVRC/Data/CLS-LOC/val/*.JPEG): each
        photo's class is the wnid of its boxes in LOC_<split>_solution.csv; without one, the split is
        left out (ImageNet's test/ has no labels)."""
        photos = sorted(p for p in split_dir.iterdir() if p.is_file() and is_image(p))
        labels = {stem: objects[0][0] for stem, (objects, _) in self._loc_table().items() if objects}
        if not photos or not any(p.stem in labels for p in photos):
            log.warning(
                "ImageFolder: %s has no folder for the chosen classes%s; left out",
                split_dir,
                " and no LOC csv names its photos' classes" if photos else "",
            )
            return {}
        out: dict[str, list[Path]] = {}
        for p in photos:
            if labels.get(p.stem) in folders:
                out.setdefault(labels[p.stem], []).append(p)
        return out

    def _loc_table(self) -> dict[str, tuple[list, str]]:
        """{ImageId: (objects, file name)} from the LOC csv files in box_dir (read once; empty without)."""
        if self._loc is None:
            self._loc = {}  # ImageNet ids are unique across splits; a held-out val is in train's file
            for split in ("train", "val"):
                path = self.box_dir / f"LOC_{split}_solution.csv"
                if path.is_file():
                    self._loc.update({k: (v, path.name) for k, v in read_loc_csv(path, self._wnids).items()})
        return self._loc

    def _hold_out(self, files: dict[str, list[Path]]) -> tuple[dict, dict]:
        """Stratified: val_fraction of every class (at least one image) goes to validation."""
        train, val = {}, {}
        g = torch.Generator().manual_seed(self.seed)
        for folder, paths in files.items():
            if len(paths) < 2:
                raise DataError(f"class folder {folder} has {len(paths)} image; hold-out validation needs 2 or more")
            order = torch.randperm(len(paths), generator=g).tolist()
            n_val = min(max(1, round(self.val_fraction * len(paths))), len(paths) - 1)
            val[folder] = sorted(paths[i] for i in order[:n_val])
            train[folder] = sorted(paths[i] for i in order[n_val:])
        return train, val

    def _box_lookup(self):
        """(split, path, folder, class name) → region function or None, for the chosen box source."""
        mode = self.boxes
        loc = {s: self.box_dir / f"LOC_{s}_solution.csv" for s in ("train", "val")}
        if mode == "auto":
            if any(p.is_file() for p in loc.values()):
                mode = "loc"
            elif self.box_dir.is_dir() and next(self.box_dir.rglob("*.xml"), None) is not None:
                mode = "xml"
            else:
                mode = "none"
        self.box_source = mode
        if mode == "none":
            return lambda split, path, folder, name: None
        if mode == "loc":
            if not any(p.is_file() for p in loc.values()):
                raise DataError(f"data.boxes=loc but neither {loc['train']} nor {loc['val']} exists")
            table = self._loc_table()

            def from_loc(split, path, folder, name):
                objects, file = table.get(path.stem, (None, None))
                return _BoxRegion(objects, folder, name, f"{path.stem} in {file}") if objects else None

            return from_loc
        if not self.box_dir.is_dir():
            raise DataError(f"data.boxes=xml but box_dir {self.box_dir} is not a folder")
        xmls = {p.stem: p for p in sorted(self.box_dir.rglob("*.xml"))}
        if not xmls:
            raise DataError(f"data.boxes=xml but there is no .xml file under {self.box_dir}")

        def from_xml(split, path, folder, name):
            xml = xmls.get(path.stem)
            return _XmlRegion(xml, folder, name) if xml else None

        return from_xml

    def describe(self) -> str:
        return f"{super().describe()}; boxes: {self.box_source}"

    def paths(self) -> dict[str, str]:
        return {**super().paths(), "box_dir": str(self.box_dir)}


def _of_class(objects: list[tuple[str, list[float]]], folder: str, name: str) -> np.ndarray:
    keys = {folder.lower(), name.lower()}
    own = [box for obj, box in objects if obj.lower() in keys]
    return np.array(own or [box for _, box in objects], dtype=np.float64)


class _BoxRegion:
    """Picklable: the boxes of the labelled class, checked against the decoded image."""

    def __init__(self, objects, folder: str, name: str, source: str):
        self.objects, self.folder, self.name, self.source = objects, folder, name, source

    def __call__(self, height: int, width: int) -> np.ndarray:
        return check_boxes(_of_class(self.objects, self.folder, self.name), width, height, self.source)


class _XmlRegion:
    def __init__(self, path: Path, folder: str, name: str):
        self.path, self.folder, self.name = path, folder, name

    def __call__(self, height: int, width: int) -> np.ndarray | None:
        size, objects = read_voc_xml(self.path)
        if not objects:
            return None
        boxes = _of_class(objects, self.folder, self.name)
        if size and size != (width, height):  # the photo was resized after annotation (e.g. Imagenette-320)
            boxes = boxes * np.array([width / size[0], height / size[1]] * 2)
        return check_boxes(boxes, width, height, self.path.name)
