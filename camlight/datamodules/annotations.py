"""Reading the datasets' annotation files: trimaps and label maps, PASCAL VOC / ImageNet XML boxes,
ImageNet's LOC_*_solution.csv, and the boxes' check against their image. Everything raises
`BadFile` for one unusable file and `DataError` for a dataset that cannot be used."""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from camlight.datamodules.io import BadFile, DataError

WNID = re.compile(r"^n\d{8}$")


def read_label_map(path: Path) -> np.ndarray:
    """A single-channel PNG of small integers (a trimap or label map) as uint8 (H,W)."""
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.array(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise BadFile(f"unreadable annotation {path.name} ({type(e).__name__})") from None
    if arr.ndim == 3:  # saved as RGB(A) by some tools: the value is in every channel
        arr = arr[..., 0]
    return arr.astype(np.uint8)


def read_voc_xml(path: Path) -> tuple[tuple[int, int] | None, list[tuple[str, list[float]]]]:
    """((width, height) or None, [(name, [x0, y0, x1, y1])]) from a PASCAL VOC / ImageNet XML file.

    VOC coordinates are 1-based and inclusive; they are returned 0-based and end-exclusive, the
    camlight convention: `[xmin - 1, ymin - 1, xmax, ymax]`.

    Raises:
        BadFile: not XML, or an object without a complete numeric box.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise BadFile(f"unreadable XML {path.name} ({e})") from None
    size = None
    w, h = root.findtext("size/width"), root.findtext("size/height")
    if w and h and w.strip().isdigit() and h.strip().isdigit() and int(w) > 0 and int(h) > 0:
        size = (int(w), int(h))
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        try:
            xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise BadFile(f"{path.name}: object {name!r} has no complete numeric bndbox") from None
        objects.append((name, [xmin - 1, ymin - 1, xmax, ymax]))
    return size, objects


def read_loc_csv(path: Path, wnids: set[str] | None = None) -> dict[str, list[tuple[str, list[float]]]]:
    """ImageNet's `LOC_{train,val}_solution.csv`: {ImageId: [(wnid, [x0, y0, x1, y1]), ...]}.

    Rows are `ImageId,PredictionString` where the string repeats `wnid xmin ymin xmax ymax`; the
    coordinates are those of the ImageNet XML files, converted like `read_voc_xml`. With `wnids`,
    only rows holding a box of one of those classes are kept (every row is still checked).

    Raises:
        DataError: a header or row in another format, with the line number.
    """
    out: dict[str, list[tuple[str, list[float]]]] = {}
    expected = "expected 'ImageId,PredictionString' rows with 'wnid xmin ymin xmax ymax' repeated"
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not rows or [c.strip() for c in rows[0]] != ["ImageId", "PredictionString"]:
        raise DataError(f"{path} line 1: {expected}; got {','.join(rows[0]) if rows else 'an empty file'!r}")
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        parts = row[1].split() if len(row) == 2 else []
        if len(row) != 2 or not parts or len(parts) % 5:
            raise DataError(f"{path} line {line}: {expected}; got {','.join(row)[:80]!r}")
        boxes = []
        for i in range(0, len(parts), 5):
            wnid, *coords = parts[i : i + 5]
            try:
                xmin, ymin, xmax, ymax = map(float, coords)
            except ValueError:
                raise DataError(f"{path} line {line}: non-numeric box {' '.join(coords)!r}; {expected}") from None
            boxes.append((wnid, [xmin - 1, ymin - 1, xmax, ymax]))
        if wnids is None or any(w in wnids for w, _ in boxes):
            out.setdefault(row[0].strip(), []).extend(boxes)
    return out


def check_boxes(boxes: np.ndarray, width: int, height: int, source: str) -> np.ndarray:
    """Clip boxes that overhang the image by at most one pixel; raise BadFile for any other box
    outside the image or with no area (saying which box, which image size and where it came from)."""
    if len(boxes) == 0:
        return boxes
    x0, y0, x1, y1 = boxes.T
    bad = (x0 < -1) | (y0 < -1) | (x1 > width + 1) | (y1 > height + 1) | (x1 <= x0) | (y1 <= y0)
    if bad.any():
        b = boxes[bad.argmax()]
        raise BadFile(
            f"box [{b[0]:g} {b[1]:g} {b[2]:g} {b[3]:g}] (0-based xyxy) is outside the {width}×{height} image "
            f"or empty ({source})"
        )
    return np.stack([x0.clip(0, width), y0.clip(0, height), x1.clip(0, width), y1.clip(0, height)], 1)
