"""Reading real images: one place for every image file camlight accepts (their annotations:
`camlight.datamodules.annotations`).

Everything here raises `BadFile` (a ValueError) with the reason in a few words; datasets turn it
into a skipped, counted sample and `explain.py` into a line of `skipped.txt`.

What an image file gives (`read_photo`, `read_rgb`), in the training datamodules and in explain.py alike:

- Formats: JPEG, PNG, BMP, GIF, WebP and TIFF, recognised by their content, whatever the extension
  says; anything else (a PSD, an EPS that Pillow would hand to Ghostscript, a text file) is refused.
- Size: refused from the header, before decoding, when over Pillow's decompression-bomb limit
  `PIL.Image.MAX_IMAGE_PIXELS` (89.5 megapixels unless changed; read at each call, None lifts it),
  or when one side is more than `MAX_ASPECT` times the other (resized for a model, such a sliver
  becomes a huge image or a few pixels of content).
- Several frames (animated GIF, WebP or PNG; multi-page TIFF; a camera's multi-picture JPEG): the
  first; one warning per process.
- Modes: everything ends as RGB uint8. Transparency (RGBA, LA, palette or greyscale with a
  transparent colour) is composited on white, as a viewer shows a cut-out on a page (Pillow's
  `convert("RGB")` would instead show whatever colour the transparent pixels hold, often black).
  16- and 32-bit greyscale (I;16, I;16B, I, F) is scaled linearly so that [min(0, lowest),
  highest] spans 0–255 (NaN and infinities count as 0). CMYK, YCbCr, LAB and 1-bit go through
  Pillow's own conversions.
- EXIF orientation: applied (a phone photo taken upright comes out upright), as
  `PIL.ImageOps.exif_transpose` does. Datasets' annotations (boxes, trimaps, segmentations) are
  drawn on the pixels as stored: the datamodules check them against the stored size and turn
  them with the image (`read_photo(..., upright=False)`, then `turn_upright` and `turn_boxes_upright`).
- Reduced on load (`least=`): JPEGs decode at 1/2, 1/4 or 1/8 scale (DCT scaling), other formats
  are reduced by an integer factor right after loading (`Image.reduce`, a box filter), while both
  sides stay >= `least`; `Photo.box` keeps the exact geometry for the resize that follows.
- Files: an empty file, a folder, a named pipe or device (reading one could block forever), a
  broken link or a loop of links are refused with that reason before Pillow sees them.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The Pillow formats those files may hold (a .jpg may be a PNG: the content decides). MPO, the
# multi-picture JPEG of some cameras, opens as JPEG.
FORMATS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF")
MAX_ASPECT = 50  # one side at most this many times the other
WHITE = (255, 255, 255, 255)
# What Pillow raises on a corrupt or hostile file (besides its OSError subclasses: truncated,
# unidentified). Only Pillow's calls run under these; camlight's own code outside them.
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
# EXIF orientation → (swap rows and columns, then flip rows, then flip columns): the stored pixels
# turned upright, as ImageOps.exif_transpose turns them (2 mirror, 3 rotate 180°, 4 flip, 5
# transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° counter-clockwise).
_TURNS = {
    1: (False, False, False),
    2: (False, False, True),
    3: (False, True, True),
    4: (False, True, False),
    5: (True, False, False),
    6: (True, False, True),
    7: (True, True, True),
    8: (True, True, False),
}
_warned_frames = False  # the several-frames warning, once per process


class BadFile(ValueError):
    """One file that cannot be used: unreadable, truncated, or with impossible annotations."""


class DataError(ValueError):
    """A dataset that cannot be used as configured (missing root, wrong layout, bad list file)."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


@dataclass
class Photo:
    """A decoded image file.

    Attributes:
        rgb: (h,w,3) uint8, reduced on load when asked (`read_photo`'s `least`).
        size: (width, height) of the whole image before any reduction, in `rgb`'s orientation.
        box: (x0, y0, x1, y1) the whole image in `rgb`'s pixel coordinates, fractional after a
            reduction (the last row and column of `rgb` may hold a partial block); (0, 0, w, h)
            otherwise.
        orientation: the EXIF orientation (1–8) still to apply to `rgb`: 1 when read upright.
    """

    rgb: np.ndarray
    size: tuple[int, int]
    box: tuple[float, float, float, float]
    orientation: int = 1

    @property
    def reduced(self) -> bool:
        return (self.rgb.shape[1], self.rgb.shape[0]) != self.size

    def resized(self, width: int, height: int, interpolation: str = "bilinear") -> np.ndarray:
        """(height,width,3) uint8: the whole image resampled to width×height with Pillow's
        antialiased filters, from `box` (so a reduced decode keeps the image's geometry)."""
        img = Image.fromarray(self.rgb).resize((width, height), _RESAMPLE[interpolation], box=self.box)
        return np.array(img, dtype=np.uint8)


def read_rgb(path: Path, least: int | None = None) -> np.ndarray:
    """RGB uint8 (H,W,3), upright, from any accepted image file (see the module docstring).

    Args:
        least: decode at a reduced scale while both sides stay >= least (see `read_photo`).

    Raises:
        BadFile: unreadable, truncated, too large or not an image, with the reason.
    """
    return read_photo(path, least).rgb


def stored_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as stored, from its header alone.

    Raises:
        BadFile: not an accepted image file, with the reason (its size is not checked).
    """
    img = _open(Path(path))
    with img:
        return img.size


def read_photo(path: Path, least: int | None = None, upright: bool = True) -> Photo:
    """An image file decoded to RGB uint8 (see the module docstring for what is accepted).

    Args:
        least: decode at a reduced scale while both sides stay >= least: JPEGs by DCT scaling
            (1/2, 1/4, 1/8), other formats by `Image.reduce` right after loading, before any
            mode conversion, so that the peak memory is about one decoded copy. None: full size.
        upright: apply the EXIF orientation; False leaves the pixels as stored and the
            orientation in `Photo.orientation` (for annotations drawn on the stored pixels).

    Raises:
        BadFile: unreadable, truncated, too large or not an image, with the reason.
    """
    path = Path(path)
    img = _open(path)
    with img:
        width, height = img.size  # the header's: `draft` shrinks img.size
        _check_size(width, height)
        try:
            decoded, box, orientation = _decode(img, path, least)
        except Image.DecompressionBombError as e:  # a later frame or tile over the limit
            raise BadFile(_bomb_reason(str(e), path)) from None
        except PILLOW_ERRORS as e:
            raise BadFile(_unreadable(e, path)) from None
        rgb = _array(decoded)  # camlight's own code from here: a bug raises
    if rgb.ndim != 3:  # I, F: scale to 8 bits here, outside Pillow's calls
        rgb = np.repeat(_eight_bits(rgb)[..., None], 3, axis=2)
    if not upright:
        return Photo(rgb, (width, height), box, orientation)
    turned = turn_boxes_upright(np.array([box]), rgb.shape[1], rgb.shape[0], orientation)[0]
    size = (width, height) if orientation < 5 else (height, width)
    return Photo(turn_upright(rgb, orientation), size, tuple(float(v) for v in turned))


def _open(path: Path) -> Image.Image:
    """The image file opened (its header read, nothing decoded); BadFile with the reason."""
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # read_photo checks the size
            return Image.open(path, formats=FORMATS)
    except Image.DecompressionBombError as e:  # over twice the limit: Pillow refuses before we can
        raise BadFile(_bomb_reason(str(e), path)) from None
    except UnidentifiedImageError:
        raise BadFile("not a readable image: not a JPEG, PNG, BMP, GIF, WebP or TIFF file") from None
    except PILLOW_ERRORS as e:
        raise BadFile(_unreadable(e, path)) from None


def _decode(img: Image.Image, path: Path, least: int | None) -> tuple[Image.Image, tuple, int]:
    """(the pixels as stored, loaded, in mode RGB, I or F; the whole image's box in them; the EXIF
    orientation). Pillow's calls only: they raise on a corrupt file."""
    with warnings.catch_warnings():  # finding a second frame reads its size: only the first is decoded
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        animated = getattr(img, "is_animated", False)
    if animated:
        _warn_frames(path)
        img.seek(0)
    box = (0.0, 0.0, float(img.width), float(img.height))
    if least:
        drafted = img.draft(None, (least, least))  # JPEG: DCT scaling while both sides stay >= least
        if drafted is not None:
            box = tuple(float(v) for v in drafted[1])
    img.load()  # a truncated file fails here, not later
    orientation = _orientation(img)
    img = _reducible(img)
    factor = min(img.size) // least if least else 1
    if factor >= 2:  # the size rounds up: the last row and column may be partial blocks
        img = img.reduce(factor)
        box = tuple(v / factor for v in box)
    if img.mode in ("I", "F"):
        return img, box, orientation
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        flat = Image.new("RGBA", img.size, WHITE)
        flat.alpha_composite(img.convert("RGBA"))
        img = flat
    return (img if img.mode == "RGB" else img.convert("RGB")), box, orientation


def _array(img: Image.Image, rows: int = 256) -> np.ndarray:
    """A loaded image as a writable array, (h,w,bands) or (h,w), copied a strip of rows at a time:
    `np.array(img)` would hold a second whole copy (the bytes it copies from) at its peak."""
    first = np.asarray(img.crop((0, 0, img.width, 1)))
    out = np.empty((img.height, *first.shape[1:]), first.dtype)
    for top in range(0, img.height, rows):
        out[top : top + rows] = np.asarray(img.crop((0, top, img.width, min(top + rows, img.height))))
    return out


def _reducible(img: Image.Image) -> Image.Image:
    """The image in a mode that `Image.reduce` averages correctly and that ends well in RGB:
    palette → RGB(A) (indices cannot be averaged), 1-bit → L, 16-bit → I, a transparent colour
    key (tRNS of L, RGB) → an alpha channel."""
    transparent = "transparency" in img.info
    if img.mode in ("P", "PA") or (transparent and img.mode in ("L", "RGB")):
        return img.convert("RGBA" if transparent or img.mode == "PA" else "RGB")
    if img.mode == "1":
        return img.convert("L")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    return img


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation 1–8; 1 when there is none or the EXIF block is unreadable (the pixels
    are still good)."""
    try:
        value = img.getexif().get(0x0112, 1)
    except PILLOW_ERRORS:
        return 1
    return value if isinstance(value, int) and value in _TURNS else 1


def _eight_bits(values: np.ndarray, rows: int = 256) -> np.ndarray:
    """(h,w) uint8 from 16/32-bit greyscale or floats: [min(0, lowest), highest] → [0, 255], NaN and
    infinities as 0; in float64, a strip of rows at a time (a whole float64 copy of a large 32-bit
    image would take gigabytes)."""

    def strips():
        for top in range(0, len(values), rows):
            strip = np.asarray(values[top : top + rows], dtype=np.float64)
            yield top, np.where(np.isfinite(strip), strip, 0.0)

    lo, hi = 0.0, 0.0
    for _, strip in strips():
        lo, hi = min(lo, float(strip.min())), max(hi, float(strip.max()))
    out = np.zeros(values.shape, np.uint8)
    if hi > lo:
        for top, strip in strips():
            out[top : top + rows] = ((strip - lo) / (hi - lo) * 255).astype(np.uint8)
    return out


def turn_upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """(H,W,...) pixels as stored → upright for the EXIF `orientation` (a contiguous copy when turned)."""
    swap, flip_rows, flip_cols = _TURNS[orientation]
    if not (swap or flip_rows or flip_cols):
        return array
    a = array.swapaxes(0, 1) if swap else array
    a = a[::-1] if flip_rows else a
    a = a[:, ::-1] if flip_cols else a
    return np.ascontiguousarray(a)


def turn_boxes_upright(boxes: np.ndarray, width: int, height: int, orientation: int) -> np.ndarray:
    """(k,4) xyxy end-exclusive boxes on a width×height image as stored → on the upright image
    (the same turn as `turn_upright`)."""
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    swap, flip_rows, flip_cols = _TURNS[orientation]
    if swap:
        b, width, height = b[:, [1, 0, 3, 2]], height, width
    if flip_rows:
        b[:, [1, 3]] = height - b[:, [3, 1]]
    if flip_cols:
        b[:, [0, 2]] = width - b[:, [2, 0]]
    return b


def _check_file(path: Path) -> None:
    """BadFile unless `path` leads to a regular, non-empty file (never open a pipe: it blocks)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise BadFile(_os_reason(e, path)) from None
    if stat.S_ISDIR(st.st_mode):
        raise BadFile("a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise BadFile(f"not a regular file ({_kind(st.st_mode)})")
    if st.st_size == 0:
        raise BadFile("not a readable image: the file is empty (0 bytes)")


def _check_size(width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS  # read now: a limit the user changed (None: none) is honoured
    if limit and width * height > limit:
        raise BadFile(_too_large(width, height))
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadFile(f"{width}×{height} px: one side is more than {MAX_ASPECT} times the other")


def _bomb_reason(message: str, path: Path) -> str:
    """Pillow's own refusal (over twice its limit) in the words of `_check_size`."""
    size = _header_size(path)
    limit = Image.MAX_IMAGE_PIXELS
    if size is not None and limit and size[0] * size[1] > limit:  # (a GIF's refused frame may be larger)
        return _too_large(*size)
    pixels = re.search(r"\((\d+) pixels\)", message)
    return _too_large(int(pixels.group(1)), 1) if pixels else f"not a readable image ({message[:100]})"


def _too_large(width: int, height: int) -> str:
    what = f"{width}×{height} px" if height > 1 else f"{width} px"
    return (
        f"{what} is over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} px (PIL.Image.MAX_IMAGE_PIXELS)"
    )


def _header_size(path: Path) -> tuple[int, int] | None:
    """The size in the header of a file that `Image.open` refused as a bomb (its size is read by
    the format's own plugin, which does not check it); None when that fails."""
    try:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            for fmt in FORMATS:
                factory, accept = Image.OPEN.get(fmt, (None, None))
                if factory is not None and (accept is None or accept(prefix)):
                    fp.seek(0)
                    with factory(fp, str(path)) as img:
                        return img.size
    except (*PILLOW_ERRORS, Image.DecompressionBombError):  # a GIF checks its first frame as it opens
        return None
    return None


def _warn_frames(path: Path) -> None:
    global _warned_frames
    if not _warned_frames:
        _warned_frames = True
        log.warning(
            "%s has several frames (animated GIF, WebP or PNG, multi-page TIFF, multi-picture JPEG): the first is used, "
            "here and for any other such file (not reported again)",
            path,
        )


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file or folder"


def _os_reason(e: OSError, path: Path) -> str:
    """A few words for an OSError met on `path` (a link loop, a broken link, no permission)."""
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    if e.errno == errno.ENOENT and os.path.islink(path):
        return f"broken symbolic link (to {os.readlink(path)}, which does not exist)"
    if e.errno == errno.EACCES:
        return "permission denied"
    return e.strerror or type(e).__name__


def _unreadable(e: BaseException, path: Path) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return _os_reason(e, path)
    return f"not a readable image ({type(e).__name__}: {str(e)[:100]})"


def find_images(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files under `root` (or `root` itself when it is not a folder: tried whatever its
    name), sorted, and the entries passed over with their reason, as (path, reason).

    A walk that searches every real folder once, then follows each link to a folder that is not
    searched yet (by `os.stat`'s device and inode), so a link to a parent or a cycle of links never
    loops and a real folder is found under its own name. Passed over, with the reason: a link to a
    folder already searched, a folder that cannot be listed; and when the name is an image's or has
    no extension (it could have been a folder): broken links, loops of links, entries that are
    neither file nor folder (a named pipe would block forever). Hidden files are left out.
    """
    root = Path(root)
    try:
        st = os.stat(root)
    except OSError as e:
        return [], [(str(root), _os_reason(e, root))]
    if not stat.S_ISDIR(st.st_mode):
        if stat.S_ISREG(st.st_mode):
            return [root], []
        return [], [(str(root), f"not a regular file ({_kind(st.st_mode)})")]
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    seen = {(st.st_dev, st.st_ino): root}
    folders: list[Path] = [root]
    links: list[tuple[Path, tuple[int, int]]] = []  # links to folders, followed once no real folder is left
    while folders or links:
        if folders:
            folder = folders.pop()
        else:
            folder, key = links.pop(0)
            if key in seen:
                skipped.append((str(folder), f"link to {seen[key]}, a folder already searched"))
                continue
            seen[key] = folder
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append((str(folder), f"cannot list the folder: {_os_reason(e, folder)}"))
            continue
        for entry in entries:
            path = folder / entry.name
            try:
                st = os.stat(path)
            except OSError as e:
                if _worth_listing(path):
                    skipped.append((str(path), _os_reason(e, path)))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if entry.is_symlink():
                    links.append((path, key))
                elif key in seen:  # the same folder mounted twice
                    skipped.append((str(path), f"the folder {seen[key]} again, already searched"))
                else:
                    seen[key] = path
                    folders.append(path)
            elif stat.S_ISREG(st.st_mode):
                if is_image(path):
                    files.append(path)
            elif _worth_listing(path):
                skipped.append((str(path), f"not a regular file ({_kind(st.st_mode)})"))
    return sorted(files), sorted(skipped)


def _worth_listing(path: Path) -> bool:
    """Whether an entry that is neither file nor folder could have been an image (or a folder of them)."""
    return is_image(path) or (path.suffix == "" and not path.name.startswith("."))
