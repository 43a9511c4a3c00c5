"""Tiny datasets in the exact on-disk formats of Oxford-IIIT Pet and ImageNet-style class folders.

Every photo is a grey, lightly noisy background with one coloured square (the "animal"): red-ish
for cats / the first class, blue-ish for the others, so a tiny model learns the task in an epoch
and the ground truth is known to the pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# (image id prefix, CLASS-ID, SPECIES) as in Oxford-IIIT Pet's list.txt
BREEDS = (("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("Bengal", 6, 1), ("beagle", 5, 2))
COLOURS = ((220, 40, 40), (40, 60, 220))


def photo(rng: np.random.Generator, width: int, height: int, colour, side: int | None = None):
    """(H,W,3) uint8 photo and the square's end-exclusive box (x0, y0, x1, y1)."""
    img = rng.normal(128, 12, (height, width, 3)).clip(0, 255).astype(np.uint8)
    side = side or int(min(width, height) * rng.uniform(0.35, 0.6))
    x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    img[y0 : y0 + side, x0 : x0 + side] = colour
    return img, (x0, y0, x0 + side, y0 + side)


def voc_xml(path: Path, width: int, height: int, objects) -> None:
    """VOC XML; `objects` are (name, (x0, y0, x1, y1)) 0-based end-exclusive, written 1-based inclusive."""
    body = "".join(
        f"<object><name>{name}</name><pose>Frontal</pose><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, (x0, y0, x1, y1) in objects
    )
    path.write_text(
        f"<annotation><filename>{path.stem}.jpg</filename><size><width>{width}</width>"
        f"<height>{height}</height><depth>3</depth></size>{body}</annotation>"
    )


def truncate(path: Path) -> None:
    """Cut a JPEG in half: Pillow then fails with "image file is truncated"."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_oxford(root: Path, per_breed: int = 12, test_per_breed: int = 3, seed: int = 0, size=(72, 60)) -> dict:
    """root/oxford-iiit-pet/ with images, trimaps (1 pet, 2 background, 3 boundary), head-box XMLs
    for trainval, and trainval.txt / test.txt / list.txt. Returns {image id: (species, box)}."""
    base = root / "oxford-iiit-pet"
    images, trimaps, xmls = base / "images", base / "annotations" / "trimaps", base / "annotations" / "xmls"
    for d in (images, trimaps, xmls):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth, lists = {}, {"trainval": [], "test": []}
    for breed, class_id, species in BREEDS:
        for n in range(1, per_breed + test_per_breed + 1):
            image_id = f"{breed}_{n}"
            w, h = size if n % 2 else size[::-1]
            img, (x0, y0, x1, y1) = photo(rng, w, h, COLOURS[species - 1])
            Image.fromarray(img).save(images / f"{image_id}.jpg", quality=95)
            tri = np.full((h, w), 2, np.uint8)
            tri[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = 3  # a one-pixel boundary band
            tri[y0:y1, x0:x1] = 1
            Image.fromarray(tri).save(trimaps / f"{image_id}.png")
            split = "trainval" if n <= per_breed else "test"
            if split == "trainval" and n % 2:  # head boxes for some trainval images, as in the real set
                voc_xml(xmls / f"{image_id}.xml", w, h, [(breed, (x0, y0, x1, y0 + (y1 - y0) // 2))])
            lists[split].append(f"{image_id} {class_id} {species} {n}")
            truth[image_id] = (species, (x0, y0, x1, y1))
    ann = base / "annotations"
    (ann / "trainval.txt").write_text("\n".join(lists["trainval"]) + "\n")
    (ann / "test.txt").write_text("\n".join(lists["test"]) + "\n")
    header = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
    (ann / "list.txt").write_text(header + "\n".join(lists["trainval"] + lists["test"]) + "\n")
    return truth


def make_image_folder(
    root: Path,
    classes=("n01440764", "n02102040"),
    per_class: int = 12,
    val_per_class: int = 4,
    boxes: str | None = "loc",
    seed: int = 0,
    size=(80, 64),
) -> dict:
    """root/{train,val}/<class>/*.JPEG in ImageNet's naming, with LOC csv files or XML boxes.
    Returns {stem: (class index, box)}."""
    rng = np.random.default_rng(seed)
    truth, rows = {}, {"train": [], "val": []}
    for split, count in (("train", per_class), ("val", val_per_class)):
        if count == 0:
            continue
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                stem = f"{cls}_{n}" if split == "train" else f"ILSVRC2012_val_{label:03d}{n:05d}"
                w, h = size if n % 2 else size[::-1]
                img, box = photo(rng, w, h, COLOURS[min(label, 1)])
                Image.fromarray(img).save(folder / f"{stem}.JPEG", quality=95)
                truth[stem] = (label, box)
                x0, y0, x1, y1 = box
                rows[split].append(f"{stem},{cls} {x0 + 1} {y0 + 1} {x1} {y1} ")
                if boxes == "xml":
                    voc_xml(folder / f"{stem}.xml", w, h, [(cls, box)])
    if boxes == "loc":
        for split, lines in rows.items():
            if lines:
                (root / f"LOC_{split}_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(lines) + "\n")
    return truth
