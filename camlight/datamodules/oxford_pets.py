"""Oxford-IIIT Pet (Parkhi et al. 2012) on the on-disk layout of `torchvision.datasets.OxfordIIITPet`.

    root/oxford-iiit-pet/images/<Breed_name>_<n>.jpg
    root/oxford-iiit-pet/annotations/trimaps/<Breed_name>_<n>.png   1 pet, 2 background, 3 boundary
    root/oxford-iiit-pet/annotations/xmls/<Breed_name>_<n>.xml      VOC head box (trainval only)
    root/oxford-iiit-pet/annotations/{trainval,test,list}.txt       Image CLASS-ID SPECIES BREED-ID

Ground truth and the trimap's boundary band (value 3, a few pixels along the outline where the
annotators were unsure):

- `mask` is pet ∪ boundary. The pointing game counts a peak on the outline as a hit, and the
  box (`box`, used by the energy pointing game, box accuracy and MaxBoxAccV2) is the box of that
  mask, so it encloses the whole outline.
- `ignore` is the boundary band. Mask IoU and PxAP leave those pixels out altogether (neither
  object nor background), as segmentation benchmarks treat an uncertain band.
- With `boxes="xml"` the boxes are the pet's *head* (the VOC XML files, Parkhi et al.'s region of
  interest): box protocols then score against the head, mask ones still against the trimap, and
  photos without a head box (all of the test split) have no box, so box scores leave them out.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from camlight.datamodules.annotations import check_boxes, read_label_map, read_voc_xml
from camlight.datamodules.base import PhotoDataModule, Record
from camlight.datamodules.io import BadFile, DataError
from camlight.datamodules.transforms import BOUNDARY, OBJECT, OUTSIDE

log = logging.getLogger(__name__)

LAYOUT = (
    "root/oxford-iiit-pet/images/*.jpg, root/oxford-iiit-pet/annotations/trimaps/*.png "
    "and root/oxford-iiit-pet/annotations/{trainval,test}.txt"
)
SOURCE = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
SPECIES = ("cat", "dog")  # SPECIES column: 1 = cat, 2 = dog
# Trimap value → region value of the camlight transforms.
_TRIMAP = np.array([OUTSIDE, OBJECT, OUTSIDE, BOUNDARY], dtype=np.uint8)


def breed_name(image_id: str) -> str:
    """ "american_pit_bull_terrier_12" → "American Pit Bull Terrier" (torchvision's spelling)."""
    return " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))


def read_list(path: Path) -> list[tuple[str, int, int, int]]:
    """Rows (image id, class id 1..37, species 1..2, breed id) of trainval.txt / test.txt / list.txt.

    Raises:
        DataError: a row that is not `Image CLASS-ID SPECIES BREED-ID`, with its line number.
    """
    rows = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        try:
            if len(parts) != 4:
                raise ValueError
            image_id, class_id, species, breed = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
            if not 1 <= class_id <= 37 or species not in (1, 2):
                raise ValueError
        except ValueError:
            raise DataError(
                f"{path} line {n}: expected 'Image CLASS-ID SPECIES BREED-ID' with CLASS-ID 1-37 and "
                f"SPECIES 1 (cat) or 2 (dog); got {line.strip()[:80]!r}"
            ) from None
        rows.append((image_id, class_id, species, breed))
    return rows


class OxfordPets(PhotoDataModule):
    """Oxford-IIIT Pet: 7,349 photos of 37 breeds with pet trimaps.

    Args:
        root: the folder that holds (or will hold) `oxford-iiit-pet/`.
        target: "binary" (cat vs dog, from the SPECIES column) or "breed" (37 classes).
        val_fraction: share of trainval.txt held out for validation, drawn with `seed`; test is test.txt.
        download: fetch the dataset with torchvision's downloader when it is not there (needs network).
        image_size, resize, batch_size, num_workers, pin_memory, seed, train_scale, mean, std:
            see `PhotoDataModule` and `camlight.datamodules.transforms`.

    Example::

        dm = OxfordPets("~/data", target="binary", image_size=224)
        dm.setup()
        probe = dm.probe_batch(8)   # image, label, mask, ignore, box, boxes, index
    """

    def __init__(
        self,
        root: str | Path,
        target: str = "binary",
        val_fraction: float = 0.1,
        download: bool = False,
        boxes: str = "auto",
        **kwargs,
    ):
        super().__init__(root, **kwargs)
        if boxes not in ("auto", "xml"):
            raise ValueError(
                f"data.boxes={boxes} does not apply to oxford_pets; use auto (the pet's box, from its trimap) "
                "or xml (the head boxes of annotations/xmls)"
            )
        self.boxes = boxes
        if target not in ("binary", "breed"):
            raise ValueError(f"unknown target {target!r}; choose 'binary' (cat vs dog) or 'breed' (37 breeds)")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        self.target, self.val_fraction, self.download = target, val_fraction, download
        self.base = self.root / "oxford-iiit-pet"

    def prepare_data(self) -> None:
        """Download with torchvision when asked and the files are not there (rank zero only)."""
        if not self.download or (self.base / "annotations" / "trainval.txt").is_file():
            return
        if max(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("SLURM_NTASKS", "1"))) > 1:
            # processes started together (torchrun, SLURM) would all download into the same folder
            raise DataError(
                f"Oxford-IIIT Pet is not in {self.root} yet, and this job runs several processes at once; "
                f'download it first with one: python -c "from camlight.datamodules import OxfordPets; '
                f"OxfordPets('{self.root}', download=True).prepare_data()\""
            )
        from torchvision.datasets import OxfordIIITPet

        try:
            OxfordIIITPet(str(self.root), split="trainval", target_types="segmentation", download=True)
        except Exception as e:  # noqa: BLE001 - network failures come in many types
            raise DataError(
                f"could not download Oxford-IIIT Pet into {self.root} ({type(e).__name__}: {str(e)[:100]}); "
                f"without network, get images.tar.gz and annotations.tar.gz from {SOURCE} and unpack them "
                f"so that there are {LAYOUT}"
            ) from None

    def index(self) -> None:
        ann = self.base / "annotations"
        if not self.root.is_dir():
            raise DataError(
                f"data.root={self.root} not found; it should hold {LAYOUT} (or set data.download=true with network)"
            )
        for needed in (self.base / "images", ann / "trainval.txt", ann / "test.txt"):
            if not needed.exists():
                raise DataError(
                    f"{needed} not found; an Oxford-IIIT Pet root holds {LAYOUT} "
                    f"(or set data.download=true with network)"
                )
        if not (ann / "trimaps").is_dir():
            log.warning(
                "Oxford-IIIT Pet: %s not found; training without masks, so nothing can be scored", ann / "trimaps"
            )
        trainval, test = read_list(ann / "trainval.txt"), read_list(ann / "test.txt")
        if not trainval:
            raise DataError(f"{ann / 'trainval.txt'} lists no images")
        if self.target == "binary":
            self.class_names = SPECIES
        else:
            # CLASS-ID fixes the 37 outputs; a breed no list names (a trimmed copy) keeps its place.
            names = {cid: breed_name(image_id) for image_id, cid, _, _ in trainval + test}
            self.class_names = tuple(names.get(c, f"breed {c}") for c in range(1, 38))
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(trainval), generator=g).tolist()
        n_val = max(1, round(self.val_fraction * len(trainval)))
        val_ids = set(order[:n_val])
        splits = {
            "train": [r for i, r in enumerate(trainval) if i not in val_ids],
            "val": [r for i, r in enumerate(trainval) if i in val_ids],
            "test": test,
        }
        self.records, missing = {}, []
        for split, rows in splits.items():
            self.records[split], absent = self._records(rows)
            missing += [(path, "test.txt" if split == "test" else "trainval.txt") for path in absent]
        self.listed_but_missing(sorted(missing), self.base / "images")
        if not self.records["train"] or not self.records["val"]:
            raise DataError(f"no image files of trainval.txt found in {self.base / 'images'}; expected {LAYOUT}")

    def _records(self, rows) -> tuple[list[Record], list[Path]]:
        """The records of the listed images that have a file, and the paths of those that have none."""
        images, ann = self.base / "images", self.base / "annotations"
        out, missing = [], []
        for image_id, class_id, species, _ in rows:
            path = images / f"{image_id}.jpg"
            if not path.is_file():
                missing.append(path)
                continue
            trimap = ann / "trimaps" / f"{image_id}.png"
            label = species - 1 if self.target == "binary" else class_id - 1
            head = _HeadBox(ann / "xmls" / f"{image_id}.xml") if self.boxes == "xml" else None
            out.append(
                Record(
                    path,
                    label,
                    region=_TrimapRegion(trimap) if trimap.is_file() else None,
                    boxes=head,
                    meta={"id": image_id},
                )
            )
        return out, missing


class _HeadBox:
    """Picklable: the head box(es) of the VOC XML file, checked against the photo; none without the file."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, height: int, width: int) -> np.ndarray:
        if not self.path.is_file():
            return np.zeros((0, 4))
        _, objects = read_voc_xml(self.path)
        boxes = np.array([box for _, box in objects], dtype=np.float64).reshape(-1, 4)
        return check_boxes(boxes, width, height, self.path.name)


class _TrimapRegion:
    """Picklable (for DataLoader workers): the trimap as a region map, checked against the photo."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, height: int, width: int) -> np.ndarray:
        trimap = read_label_map(self.path)
        if trimap.shape != (height, width):
            raise BadFile(f"trimap {self.path.name} is {trimap.shape[1]}×{trimap.shape[0]}, the photo {width}×{height}")
        if trimap.max() > 3:
            raise BadFile(
                f"trimap {self.path.name} holds value {trimap.max()}; expected 1 pet, 2 background, 3 boundary"
            )
        return _TRIMAP[trimap]
