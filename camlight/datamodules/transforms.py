"""Transforms for real photos with `torchvision.transforms.v2`: masks and boxes move with the image.

Training: random resized crop, then horizontal flip. Evaluation: resize the shorter side to
`resize`, then centre crop `image_size`. Both end in float conversion and normalisation of the
image only. Masks (trimaps, filled boxes) are resampled with nearest neighbour, so their values
stay what the annotation said; boxes are transformed as `tv_tensors.BoundingBoxes` and clipped.

`sample(...)` builds one sample of the camlight batch format from a decoded photo and its
annotations; every real datamodule uses it.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from camlight.datamodules.io import BadFile

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_SCALE = (0.35, 1.0)  # of the image area; torchvision's (0.08, 1) often crops the object away

# Values of the `region` map that travels with the image: outside any annotation, the object
# (pet, or inside a box), the uncertain boundary band of a trimap.
OUTSIDE, OBJECT, BOUNDARY = 0, 1, 2


def default_resize(image_size: int) -> int:
    """The evaluation resize for a crop of `image_size`: 256 for 224, as torchvision's models."""
    return round(image_size * 8 / 7)


def _finish(mean, std) -> list:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(mean, std)]


def _mode(interpolation: str) -> v2.InterpolationMode:
    return v2.InterpolationMode(interpolation)


def train_transform(
    image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=TRAIN_SCALE, interpolation: str = "bilinear"
) -> v2.Compose:
    """Random resized crop (area `scale`, aspect 3/4–4/3) and horizontal flip, then normalise."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=tuple(scale), interpolation=_mode(interpolation), antialias=True),
            v2.RandomHorizontalFlip(),
            *_finish(mean, std),
        ]
    )


def eval_transform(
    image_size: int,
    resize: int | None = None,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    interpolation: str = "bilinear",
    resized: bool = False,
) -> v2.Compose:
    """Resize the shorter side to `resize` (default `default_resize`), centre crop, normalise.

    `resized=True`: the image is already at `resized_size` (explain.py resamples very large photos
    from a reduced decode itself); only crop and normalise."""
    resize = resize or default_resize(image_size)
    if resize < image_size:
        raise ValueError(f"resize={resize} is smaller than image_size={image_size}; use resize >= image_size")
    steps = [] if resized else [v2.Resize(resize, interpolation=_mode(interpolation), antialias=True)]
    return v2.Compose([*steps, v2.CenterCrop(image_size), *_finish(mean, std)])


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after `v2.Resize(resize)`: the shorter side to `resize`, the longer in
    proportion, rounded down as torchvision rounds it."""
    short, long = min(width, height), max(width, height)
    other = int(resize * long / short)
    return (resize, other) if width <= height else (other, resize)


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    """(4,) float32 xyxy end-exclusive box of a (H,W) bool mask; zeros when it is empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        return torch.zeros(4)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def boxes_region(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H,W) uint8 map: OBJECT inside any of the (n,4) end-exclusive boxes, OUTSIDE elsewhere."""
    region = np.zeros((height, width), dtype=np.uint8)
    for x0, y0, x1, y1 in np.ceil(np.asarray(boxes, dtype=np.float64)).astype(int):
        # pixel i is inside when x0 <= i < x1, as the metrics' box masks count it
        region[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = OBJECT
    return region


def sample(
    rgb: np.ndarray,
    label: int,
    transform: v2.Transform,
    region: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """One sample of the camlight batch format from a decoded photo and its annotations.

    Args:
        rgb: (H,W,3) uint8.
        label: class index.
        transform: a v2 transform (`train_transform` or `eval_transform`).
        region: (H,W) uint8 map with OUTSIDE / OBJECT / BOUNDARY values, or None without ground truth.
        boxes: (k,4) xyxy ground-truth boxes (several objects of the labelled class), or None.

    Returns:
        `image` (3,S,S) float32 normalised, `label` int64, `mask` (S,S) bool (OBJECT or BOUNDARY
        pixels: empty without ground truth), `ignore` (S,S) bool (BOUNDARY pixels), `box` (4,) the
        mask's box (zeros when empty), `boxes` (k,4) the transformed `boxes` that are still in the
        image (`boxes` given but empty: none; without `boxes`: the mask's box, or none when the mask
        is empty).
    """
    height, width = rgb.shape[:2]
    inputs: dict = {"image": tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1))}
    if region is not None:
        if region.shape != (height, width):
            raise BadFile(f"annotation is {region.shape[1]}×{region.shape[0]}, the image {width}×{height}")
        inputs["region"] = tv_tensors.Mask(torch.from_numpy(region))
    if boxes is not None and len(boxes):
        inputs["boxes"] = tv_tensors.BoundingBoxes(
            torch.as_tensor(np.asarray(boxes), dtype=torch.float32).view(-1, 4),
            format="XYXY",
            canvas_size=(height, width),
        )
    out = transform(inputs)
    image = out["image"].as_subclass(torch.Tensor)
    size = image.shape[-2:]
    if region is not None:
        r = out["region"].as_subclass(torch.Tensor)
        mask, ignore = (r == OBJECT) | (r == BOUNDARY), r == BOUNDARY
    else:
        mask = ignore = torch.zeros(size, dtype=torch.bool)
    result = {
        "image": image,
        "label": torch.tensor(label, dtype=torch.int64),
        "mask": mask,
        "ignore": ignore,
        "box": mask_box(mask),
    }
    if "boxes" in out:
        result["boxes"] = _kept(out["boxes"])
    elif boxes is not None:  # annotated, and none here (an Oxford photo without a head box)
        result["boxes"] = torch.zeros(0, 4)
    else:
        result["boxes"] = result["box"][None] if mask.any() else torch.zeros(0, 4)
    return result


def _kept(boxes: tv_tensors.BoundingBoxes) -> torch.Tensor:
    """(k,4) float32: the boxes clipped to the image, those left with no area dropped."""
    b = v2.functional.clamp_bounding_boxes(boxes).as_subclass(torch.Tensor).float()
    return b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]
