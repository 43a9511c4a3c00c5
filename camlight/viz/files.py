"""Writing result files: PNG images and CSV tables, each written whole or not at all."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch
from PIL import Image


def _atomic(path: Path) -> Path:
    """A temporary sibling of `path`; `os.replace` it onto `path` once written."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """`open(path, mode)` under a temporary sibling's name (`.NAME.tmp`), renamed onto `path`
    when the body completes and removed when it raises: `path` is whole or absent (or as before).

    Example::

        with atomic_file(out / "index.html", encoding="utf-8") as f:
            f.write(page)
    """
    path = Path(path)
    tmp = _atomic(path)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_csv(path: str | Path, rows: Iterable[dict], columns: list[str] | None = None) -> None:
    """A CSV with a header: `columns`, or every key of `rows` in the order first seen (`rows` then
    a list). Missing values are left empty; rows may be a generator when `columns` is given. The
    file appears complete or not at all."""
    if not columns:
        rows = list(rows)
        columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_file(path, newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def to_uint8(image: torch.Tensor):
    """(3,H,W) float in [0,1] → (H,W,3) uint8 numpy array."""
    return (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """(3,H,W) float in [0,1] → a PNG file."""
    Image.fromarray(to_uint8(image)).save(path)


@contextmanager
def whole_folder(out: str | Path):
    """A hidden folder beside `out` to write into, renamed to `out` when the body completes and
    removed when it raises, so `out` appears whole or not at all. `out` may exist as an empty
    folder (it is replaced)."""
    out = Path(out)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        if out.exists():
            out.rmdir()
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
