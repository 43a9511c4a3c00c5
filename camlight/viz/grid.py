"""The probe grid: a row per image — the input with its ground-truth outline, then one overlay per
method — each cell titled. Drawn with Pillow (fast enough to run every epoch)."""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw

from camlight.viz.files import to_uint8

TITLE_H = 14
PAD = 2
HIT, MISS = (0, 150, 0), (200, 0, 0)


def to_pil(image: torch.Tensor, size: int) -> Image.Image:
    """(3,H,W) in [0,1] → PIL image of side `size` (nearest-neighbour, so pixels stay sharp)."""
    return Image.fromarray(to_uint8(image)).resize((size, size), Image.NEAREST)


def probe_grid(
    inputs: torch.Tensor,
    overlays: dict[str, torch.Tensor],
    row_titles: list[str],
    cell_titles: dict[str, list[tuple[str, bool | None]]],
    cell: int = 128,
) -> Image.Image:
    """Compose the grid.

    Args:
        inputs: (N,3,H,W) in [0,1], ground-truth outline already drawn.
        overlays: method → (N,3,H,W) in [0,1].
        row_titles: N titles for the input column (class, prediction).
        cell_titles: method → N (text, hit) pairs; hit True/False colours the text, None leaves it black.
        cell: side of each image cell in pixels.
    """
    methods = list(overlays)
    n = inputs.shape[0]
    cols = 1 + len(methods)
    width = cols * (cell + PAD) + PAD
    height = TITLE_H + n * (cell + TITLE_H + PAD) + PAD
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for c, name in enumerate(["input", *methods]):
        draw.text((PAD + c * (cell + PAD) + 2, 1), name, fill=(0, 0, 0))
    for r in range(n):
        top = TITLE_H + r * (cell + TITLE_H + PAD)
        cells = [(inputs[r], row_titles[r], None)]
        cells += [(overlays[m][r], *cell_titles[m][r]) for m in methods]
        for c, (image, text, hit) in enumerate(cells):
            left = PAD + c * (cell + PAD)
            color = (0, 0, 0) if hit is None else (HIT if hit else MISS)
            draw.text((left + 2, top + 1), text, fill=color)
            grid.paste(to_pil(image, cell), (left, top + TITLE_H))
    return grid


def tile_grid(
    images: torch.Tensor, titles: list[str] | None = None, cols: int | None = None, cell: int = 48, title: str = ""
) -> Image.Image:
    """Small images in rows: filters, activation maps, patches.

    Args:
        images: (N,3,h,w) in [0,1]; each is scaled up to `cell` pixels (nearest neighbour, so a
            3×3 filter stays nine squares).
        titles: N captions drawn above the cells, or None.
        cols: cells per row (default: about √N, at most 16).
        title: a line above the grid.
    """
    n = len(images)
    cols = cols or min(16, math.ceil(math.sqrt(n)))
    cols = max(1, min(cols, n))
    rows = -(-n // cols) if n else 0
    caption = TITLE_H if titles else 0
    top = TITLE_H if title else 0
    grid = Image.new("RGB", (cols * (cell + PAD) + PAD, top + rows * (cell + caption + PAD) + PAD), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((PAD + 2, 1), title, fill=(0, 0, 0))
    for i in range(n):
        r, c = divmod(i, cols)
        left, y = PAD + c * (cell + PAD), top + r * (cell + caption + PAD)
        if titles:
            draw.text((left + 1, y + 1), titles[i], fill=(0, 0, 0))
        grid.paste(to_pil(images[i], cell), (left, y + caption))
    return grid
