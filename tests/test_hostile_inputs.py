"""Hostile and odd image files: each one is read, or refused with its reason; never a traceback, a
hang or gigabytes. `camlight.datamodules.io` (every image camlight reads), explain.py's discovery
and preparation, and a seeded fuzz of 200 files through explain.py end to end."""

from __future__ import annotations

import csv
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision import tv_tensors

from camlight import offline
from camlight.config import OfflineConfig, load_config
from camlight.datamodules import OxfordPets
from camlight.datamodules import io as image_io
from camlight.datamodules.io import BadFile, find_images, read_photo, read_rgb, turn_boxes_upright, turn_upright
from camlight.datamodules.transforms import eval_transform, mask_box
from tests.photo_fixtures import make_oxford

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # normalisation that leaves [0,1] pixels


def _reason(path: Path, least: int | None = None) -> str:
    """The BadFile reason for `path` (the test fails when the file is read)."""
    with pytest.raises(BadFile) as e:
        read_rgb(path, least)
    return str(e.value)


def _png_header(width: int, height: int) -> bytes:
    """A PNG with a header and no pixel data: decoding it could only fail."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def _with_orientation(img: Image.Image, path: Path, orientation: int, **save) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, **save)


# -- size --------------------------------------------------------------------------------------------


def test_a_decompression_bomb_is_refused_from_its_header_naming_the_limit(tmp_path, monkeypatch):
    limit = Image.MAX_IMAGE_PIXELS
    (tmp_path / "bomb.png").write_bytes(_png_header(10000, 10000))  # 100 MP, over 89.5 MP: only a warning to Pillow
    (tmp_path / "huge.png").write_bytes(_png_header(20000, 20000))  # over twice the limit: Pillow's own error
    for name, size in (("bomb.png", "10000×10000"), ("huge.png", "20000×20000")):
        assert _reason(tmp_path / name) == (
            f"{size} px is over Pillow's decompression-bomb limit of {limit} px (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    # the limit is read at each call: lifted, the same header is decoded, and fails for want of pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert _reason(tmp_path / "bomb.png").startswith("not a readable image")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30)  # and lowered, it refuses a 6×6 image
    Image.new("RGB", (6, 6)).save(tmp_path / "small.png")
    assert _reason(tmp_path / "small.png").startswith("6×6 px is over Pillow's decompression-bomb limit of 30 px")


def test_one_pixel_and_thin_images(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    assert read_rgb(tmp_path / "dot.png").tolist() == [[[10, 20, 30]]]
    Image.new("L", (1, 50), 7).save(tmp_path / "line.png")  # 1:50 is still read
    assert read_rgb(tmp_path / "line.png").shape == (50, 1, 3)
    for w, h in ((1, 5000), (5000, 1)):
        Image.new("L", (w, h)).save(tmp_path / f"{w}x{h}.png")
        assert _reason(tmp_path / f"{w}x{h}.png") == f"{w}×{h} px: one side is more than 50 times the other"
        with pytest.raises(BadFile):
            offline.prepare(tmp_path / f"{w}x{h}.png", {"image_size": 32, "eval_resize": 36, **PLAIN})


# -- reduced on load ---------------------------------------------------------------------------------


def _sines(width: int, height: int) -> np.ndarray:
    """Six periods of a sine along x in red and along y in green: a misplaced resample shows at once."""
    x, y = (np.arange(width) + 0.5) / width, (np.arange(height) + 0.5) / height
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = np.round(127.5 + 127.5 * np.sin(2 * np.pi * 6 * x))[None, :]
    img[..., 1] = np.round(127.5 + 127.5 * np.sin(2 * np.pi * 6 * y))[:, None]
    return img


@pytest.mark.parametrize("fmt", ["png", "jpg"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_a_reduced_decode_keeps_the_photos_geometry(tmp_path, fmt, orientation):
    # 1001 px is no multiple of the reduction: its last row and column of blocks are partial
    path = tmp_path / f"sines.{fmt}"
    _with_orientation(Image.fromarray(_sines(1001, 1001)), path, orientation, quality=95)
    full, reduced = read_photo(path), read_photo(path, least=100)
    assert not full.reduced and reduced.reduced and reduced.size == full.size == (1001, 1001)
    assert min(reduced.rgb.shape[:2]) >= 100 and max(reduced.rgb.shape[:2]) < 200  # PNG ÷10, JPEG ÷8
    expected, got = full.resized(50, 50).astype(int), reduced.resized(50, 50).astype(int)
    assert np.abs(got - expected).max() <= 8 and np.abs(got - expected).mean() <= 1
    # the box is what keeps it there: resampling the reduced pixels as if they were the whole photo
    # shifts the sines by most of a block at the far edge
    careless = np.array(Image.fromarray(reduced.rgb).resize((50, 50), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(careless - expected).max() > 20


def test_prepare_reduces_only_photos_much_larger_than_needed(tmp_path):
    pre = {"image_size": 56, "eval_resize": 64, **PLAIN}

    def datamodule_way(path):  # full-size decode, torchvision's resize, as the datamodules do
        rgb = tv_tensors.Image(torch.from_numpy(read_rgb(path)).permute(2, 0, 1))
        return eval_transform(56, 64, **PLAIN)(rgb).as_subclass(torch.Tensor)

    Image.fromarray(_sines(500, 400)).save(tmp_path / "photo.png")  # shorter side < 4 × 4 × 64: full size
    assert torch.equal(offline.prepare(tmp_path / "photo.png", pre), datamodule_way(tmp_path / "photo.png"))
    Image.fromarray(_sines(1100, 1050)).save(tmp_path / "large.png")  # reduced ÷4 on load
    assert read_photo(tmp_path / "large.png", offline.inputs.REDUCE_GAP * 64).reduced
    d = (offline.prepare(tmp_path / "large.png", pre) - datamodule_way(tmp_path / "large.png")).abs()
    assert d.max() <= 6 / 255 and d.mean() <= 1 / 255


# -- EXIF orientation --------------------------------------------------------------------------------


def test_an_exif_rotated_photo_comes_back_upright(tmp_path):
    # stored 3 wide, 2 high; orientation 6: turn 90° clockwise to view, so the stored bottom-left
    # pixel lands in the top-left corner of a 2-wide, 3-high image
    stored = np.array([[[10, 0, 0], [20, 0, 0], [30, 0, 0]], [[40, 0, 0], [50, 0, 0], [60, 0, 0]]], np.uint8)
    _with_orientation(Image.fromarray(stored), tmp_path / "phone.png", 6)
    upright = read_rgb(tmp_path / "phone.png")
    assert upright.shape == (3, 2, 3) and upright[0, 0, 0] == 40 and upright[0, 1, 0] == 10
    assert upright[:, :, 0].tolist() == [[40, 10], [50, 20], [60, 30]]
    photo = read_photo(tmp_path / "phone.png", upright=False)
    assert photo.orientation == 6 and np.array_equal(photo.rgb, stored)
    for orientation in range(1, 9):  # every orientation as Pillow's own exif_transpose turns it
        _with_orientation(Image.fromarray(stored), tmp_path / f"{orientation}.png", orientation)
        expected = np.array(ImageOps.exif_transpose(Image.open(tmp_path / f"{orientation}.png")).convert("RGB"))
        assert np.array_equal(read_rgb(tmp_path / f"{orientation}.png"), expected), orientation
    # a JPEG, as phones write them: orientation 8 turns 90° counter-clockwise
    blocks = np.zeros((32, 48, 3), np.uint8)
    blocks[:16, :16] = 255  # white in the stored top-left corner → bottom-left once upright
    _with_orientation(Image.fromarray(blocks), tmp_path / "phone.jpg", 8, quality=95)
    upright = read_rgb(tmp_path / "phone.jpg")
    assert upright.shape == (48, 32, 3) and upright[-8, 8].min() > 200 and upright[8, 8].max() < 50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_turn_with_the_pixels(orientation):
    width, height = 13, 7
    box = np.array([[2.0, 1.0, 9.0, 5.0]])
    mask = np.zeros((height, width), bool)
    mask[1:5, 2:9] = True
    turned = turn_upright(mask, orientation)
    assert (
        turn_boxes_upright(box, width, height, orientation)[0].tolist() == mask_box(torch.from_numpy(turned)).tolist()
    )


def test_a_datasets_annotations_turn_with_an_exif_rotated_photo(tmp_path):
    """The trimap was drawn on the stored pixels: the mask must still cover the pet once the photo
    is upright, and explain.py must prepare the photo as the validation data holds it."""
    make_oxford(tmp_path, per_breed=4, test_per_breed=1, size=(72, 40))
    dm = OxfordPets(tmp_path, image_size=36, resize=36, val_fraction=0.5, **PLAIN)
    dm.setup()
    index, record = next((i, r) for i, r in enumerate(dm.records["val"]) if r.meta["id"].endswith("_1"))
    stored = Image.open(record.path).convert("RGB")  # 72 wide, 40 high: the crop shows the middle
    _with_orientation(stored, record.path, 6, quality=95)
    s = dm.dataset("val")[index]
    red = (s["image"][0] > 0.6) & (s["image"][1] < 0.4)  # the cat's square (220, 40, 40)
    assert red.sum() > 20
    iou = (red & s["mask"]).sum() / (red | s["mask"]).sum()
    assert iou > 0.8
    assert s["image"].shape == (3, 36, 36) and stored.size == (72, 40)
    pre = {"image_size": 36, "eval_resize": 36, **PLAIN}
    assert torch.equal(offline.prepare(record.path, pre), s["image"])


# -- frames, modes -----------------------------------------------------------------------------------


def test_animated_files_give_their_first_frame_and_one_warning_a_process(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(image_io, "_warned_frames", False)
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    kinds = {"a.gif": "GIF", "a.png": "PNG", "a.webp": "WEBP", "a.tif": "TIFF", "a.jpg": "MPO"}  # MPO: a camera's
    for name, fmt in kinds.items():
        extra = {"lossless": True} if fmt == "WEBP" else {}
        frames[0].save(tmp_path / name, fmt, save_all=True, append_images=frames[1:], duration=100, **extra)
    with caplog.at_level(logging.WARNING, logger="camlight.datamodules.io"):
        for name in kinds:
            assert Image.open(tmp_path / name).n_frames == 2
            first = read_rgb(tmp_path / name)[0, 0].astype(int)
            assert np.abs(first - [255, 0, 0]).max() <= 2, name  # the JPEG is lossy
    warnings = [r for r in caplog.records if "several frames" in r.getMessage()]
    assert len(warnings) == 1 and "a.gif" in warnings[0].getMessage()
    assert ".gif" in image_io.EXTENSIONS


def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (2, 1))
    img.putpalette([200, 10, 10, 0, 200, 0])
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1
    return img


MODES = {  # file name → (image, the first row of read_rgb, as known by hand)
    "cmyk.jpg": (Image.new("CMYK", (8, 8), (255, 0, 0, 0)), [0, 255, 255]),  # pure cyan
    "cmyk.tif": (Image.new("CMYK", (2, 1), (255, 0, 0, 0)), [[0, 255, 255]] * 2),
    "ycbcr.tif": (Image.new("YCbCr", (2, 1), (255, 128, 128)), [[255, 255, 255]] * 2),  # Y full, no chroma
    "i16.png": (Image.fromarray(np.array([[0, 32768, 65535]], "<u2")), [[0] * 3, [127] * 3, [255] * 3]),
    "i16b.tif": (Image.fromarray(np.array([[0, 32768, 65535]], ">u2")), [[0] * 3, [127] * 3, [255] * 3]),
    "i32.tif": (Image.fromarray(np.array([[-100, 0, 100]], np.int32)), [[0] * 3, [127] * 3, [255] * 3]),
    "float.tif": (
        Image.fromarray(np.array([[np.nan, 0, 1, np.inf]], np.float32)),
        [[0] * 3, [0] * 3, [255] * 3, [0] * 3],
    ),
    "bits.png": (Image.fromarray(np.array([[False, True]])), [[0] * 3, [255] * 3]),
    "palette.png": (_palette_with_transparency(), [[200, 10, 10], [255, 255, 255]]),  # the transparent one on white
    "la.png": (Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA"), [[255] * 3, [0] * 3]),
    "rgba.png": (Image.new("RGBA", (1, 1), (0, 0, 0, 0)), [[255, 255, 255]]),
    "rgba.webp": (Image.new("RGBA", (1, 1), (200, 0, 0, 255)), [[200, 0, 0]]),
}


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_mode_becomes_rgb(tmp_path, name):
    img, first_row = MODES[name]
    img.save(
        tmp_path / name,
        **({"quality": 100} if name.endswith(".jpg") else {"lossless": True} if name.endswith(".webp") else {}),
    )
    rgb = read_rgb(tmp_path / name)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.writeable
    if name == "cmyk.jpg":  # lossy: one pixel, within a level or two
        assert np.abs(rgb[0, 0].astype(int) - first_row).max() <= 2
    else:
        assert rgb[0].tolist() == first_row


def test_half_transparent_black_on_white_is_mid_grey_and_lab_white_is_white(tmp_path):
    Image.new("RGBA", (1, 1), (0, 0, 0, 128)).save(tmp_path / "half.png")
    assert read_rgb(tmp_path / "half.png")[0, 0].tolist() in ([127] * 3, [128] * 3)
    Image.new("LAB", (2, 2), (255, 128, 128)).save(tmp_path / "lab.tif")  # L* 100, a* = b* = 0
    assert read_rgb(tmp_path / "lab.tif").min() >= 250


# -- files -------------------------------------------------------------------------------------------


def test_files_that_cannot_be_images_say_why(tmp_path):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "photo.jpg")
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "folder.jpg").mkdir()
    os.symlink("loop2.jpg", tmp_path / "loop1.jpg")
    os.symlink("loop1.jpg", tmp_path / "loop2.jpg")
    os.symlink("missing.png", tmp_path / "gone.png")
    Image.new("L", (4, 4)).save(tmp_path / "picture.psd.png", format="PPM")  # content Pillow reads, not accepted
    assert "truncated" in _reason(tmp_path / "truncated.jpg").lower()
    assert _reason(tmp_path / "empty.png") == "not a readable image: the file is empty (0 bytes)"
    assert _reason(tmp_path / "notes.png") == "not a readable image: not a JPEG, PNG, BMP, GIF, WebP or TIFF file"
    assert _reason(tmp_path / "picture.psd.png") == "not a readable image: not a JPEG, PNG, BMP, GIF, WebP or TIFF file"
    assert _reason(tmp_path / "folder.jpg") == "a folder, not an image file"
    assert _reason(tmp_path / "loop1.jpg") == "symbolic link loop"
    assert _reason(tmp_path / "gone.png") == "broken symbolic link (to missing.png, which does not exist)"


def test_a_named_pipe_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    reasons = []
    reader = threading.Thread(target=lambda: reasons.append(_reason(tmp_path / "pipe.jpg")), daemon=True)
    reader.start()
    reader.join(60)  # opening a pipe for reading would block for ever: the thread would never end
    assert reasons == ["not a regular file (a named pipe)"]


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod 000 does not stop root from reading")
def test_an_unreadable_file_and_folder_are_skipped_with_the_reason(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    (tmp_path / "secret.png").chmod(0)
    (tmp_path / "closed").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "closed" / "a.png")
    (tmp_path / "closed").chmod(0)
    try:
        assert _reason(tmp_path / "secret.png") == "permission denied"
        files, skipped = find_images(tmp_path)
        assert files == [tmp_path / "secret.png"]
        assert skipped == [(str(tmp_path / "closed"), "cannot list the folder: permission denied")]
    finally:
        (tmp_path / "closed").chmod(0o755)


def test_a_name_that_is_not_utf8_is_read(tmp_path):
    path = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    Image.new("RGB", (5, 4), (0, 200, 0)).save(path)
    files, skipped = find_images(tmp_path)
    assert [f.name for f in files] == ["caf\udce9.jpg"] and skipped == []
    assert read_rgb(files[0]).shape == (4, 5, 3)


def test_find_images_follows_folder_links_once_and_lists_what_it_passes_over(tmp_path):
    root = tmp_path / "in"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "photo.jpg").mkdir()  # a folder named like an image: searched as a folder
    for name in ("a.jpg", "sub/b.png", "sub/deep/c.webp", "photo.jpg/d.gif", ".hidden.jpg"):
        Image.new("RGB", (4, 4)).save(root / name, format="PNG")
    (root / "notes.txt").write_text("not an image name")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "e.png")
    os.symlink("..", root / "sub" / "up")  # a loop through the parent
    os.symlink("sub", root / "again")  # a second name for a folder: searched once, under its own name
    os.symlink(outside, root / "linked")  # a folder outside: followed
    os.symlink(outside, root / "linked-twice")
    os.symlink("loop2.jpg", root / "loop1.jpg")
    os.symlink("loop1.jpg", root / "loop2.jpg")
    os.symlink("missing.png", root / "gone.png")
    os.symlink("nowhere", root / "gone-folder")  # no extension: it could have been a folder of images
    os.symlink("nowhere", root / "gone.txt")  # not an image's name: not listed
    os.mkfifo(root / "pipe.png")
    files, skipped = find_images(root)
    found = [f.relative_to(root).as_posix() for f in files]
    assert found == ["a.jpg", "linked/e.png", "photo.jpg/d.gif", "sub/b.png", "sub/deep/c.webp"]
    assert dict(skipped) == {
        str(root / "again"): f"link to {root / 'sub'}, a folder already searched",
        str(root / "sub" / "up"): f"link to {root}, a folder already searched",
        str(root / "linked-twice"): f"link to {root / 'linked'}, a folder already searched",
        str(root / "loop1.jpg"): "symbolic link loop",
        str(root / "loop2.jpg"): "symbolic link loop",
        str(root / "gone.png"): "broken symbolic link (to missing.png, which does not exist)",
        str(root / "gone-folder"): "broken symbolic link (to nowhere, which does not exist)",
        str(root / "pipe.png"): "not a regular file (a named pipe)",
    }
    assert find_images(root / "a.jpg") == ([root / "a.jpg"], [])  # a file is tried whatever its name


# -- explain.py end to end: every file accounted for -------------------------------------------------


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One seeded corruption of a valid file: flipped bytes, a cut, junk inserted, a broken header,
    a block repeated or zeroed."""
    b = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:
        for i in rng.integers(0, len(b), rng.integers(1, 20)):
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        b = b[: int(rng.integers(1, len(b)))]
    elif kind == 2:
        at = int(rng.integers(len(b)))
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    elif kind == 3:
        n = min(len(b), 32)
        b[:n] = bytes(b[i] if rng.random() < 0.7 else int(rng.integers(256)) for i in range(n))
    elif kind == 4:
        at, n = int(rng.integers(len(b))), int(rng.integers(1, 400))
        b[at:at] = b[at : at + n]
    else:
        at = int(rng.integers(len(b)))
        b[at : at + int(rng.integers(1, 300))] = bytes(min(300, len(b) - at))
    return bytes(b)


def _hostile_folder(root: Path, total: int = 200, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Every case of this file and seeded mutations of valid JPEG and PNG files under `root`, `total`
    entries in all. Returns (image files, other entries that must be listed as skipped)."""
    rng = np.random.default_rng(seed)
    root.mkdir()
    (root / "sub").mkdir()
    files: list[Path] = []

    def save(img: Image.Image, name: str, **kw) -> None:
        img.save(root / name, **kw)
        files.append(root / name)

    photo = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    save(photo, "photo.jpg", quality=90)
    save(photo, "photo.png")
    save(photo.resize((600, 500)), "sub/large.png")
    _with_orientation(photo, root / "phone.jpg", 6, quality=90)
    files.append(root / "phone.jpg")
    for name, (img, _) in MODES.items():
        save(img, f"mode_{name}")
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    for name in ("anim.gif", "anim.png", "anim.webp"):
        save(frames[0], name, save_all=True, append_images=frames[1:])
    save(Image.new("RGB", (1, 1)), "dot.png")
    save(Image.new("RGB", (1, 5000)), "thin.png")
    save(Image.new("RGB", (5000, 1)), "flat.png")
    for name, data in (("bomb.png", _png_header(10000, 10000)), ("huge.png", _png_header(30000, 30000))):
        (root / name).write_bytes(data)
        files.append(root / name)
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    (root / "photo.jpg.d").mkdir()  # a folder beside them
    (root / "folder.jpg").mkdir()  # a folder named like an image, holding one
    save(photo, "folder.jpg/inside.png")
    files += [root / "empty.jpg", root / "text.png"]
    for odd in (b"caf\xe9.jpg", b"tab\there.png", b"new\nline.jpg", b"space name.png", b"-dash.png"):
        path = Path(os.fsdecode(os.path.join(os.fsencode(root), odd)))
        save(photo, path.name, format="PNG")
    for name, data in (
        ("photo.jpg", (root / "photo.jpg").read_bytes()),
        ("photo.png", (root / "photo.png").read_bytes()),
    ):
        (root / f"cut_{name}").write_bytes(data[: len(data) // 2])
        files.append(root / f"cut_{name}")
    others = [root / "loop_a.jpg", root / "loop_b.jpg", root / "gone.png", root / "sub" / "up", root / "pipe.jpg"]
    os.symlink("loop_b.jpg", others[0])
    os.symlink("loop_a.jpg", others[1])
    os.symlink("nothing.png", others[2])
    os.symlink("..", others[3])
    os.mkfifo(others[4])
    seeds = [(root / "photo.jpg").read_bytes(), (root / "photo.png").read_bytes()]
    for i in range(total - len(files) - len(others)):
        source = int(rng.integers(2))
        ext = (".jpg", ".png")[source] if rng.random() < 0.8 else (".png", ".jpg")[source]  # some misnamed
        (root / f"fuzz_{i:03d}{ext}").write_bytes(_mutate(seeds[source], rng))
        files.append(root / f"fuzz_{i:03d}{ext}")
    return files, others


def _keys(rows: list[dict]) -> set[str]:
    """results.csv's `file` column: the path relative to input= (older versions: without the
    extension, '/' as '__')."""
    return {r["file"] for r in rows}


def _accounted(path: Path, root: Path, explained: set[str], skipped: set[str]) -> bool:
    from camlight.offline.names import shown

    key = path.relative_to(root).as_posix()
    old = str(path.relative_to(root).with_suffix("")).replace("/", "__")
    return bool({shown(key), key, old} & explained) or bool({shown(str(path)), str(path)} & skipped)


def test_fuzzed_and_hostile_files_are_each_explained_or_listed(tmp_path, tiny_checkpoint):
    root = tmp_path / "in"
    files, others = _hostile_folder(root)
    assert len(files) + len(others) == 200
    out = tmp_path / "out"
    cfg = load_config(
        [f"checkpoint={tiny_checkpoint}", f"input={root}", f"out={out}", "methods=[gradcam]", "batch_size=16"],
        schema=OfflineConfig,
        defaults="explain.yaml",
    )
    code = offline.run(cfg, progress=False)
    assert code in (0, 3)
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        explained = _keys(list(csv.DictReader(f)))
    lines = (out / "skipped.txt").read_text(encoding="utf-8").splitlines()
    skipped = {line.split("\t")[0] for line in lines}
    missing = [str(p) for p in files + others if not _accounted(p, root, explained, skipped)]
    assert missing == []
    assert len(explained) + len(lines) == len(files) + len(others)  # nothing counted twice
    expected_reasons = {
        "bomb.png": "decompression-bomb limit",
        "huge.png": "decompression-bomb limit",
        "thin.png": "more than 50 times",
        "empty.jpg": "empty",
        "loop_a.jpg": "symbolic link loop",
        "gone.png": "broken symbolic link",
        "pipe.jpg": "named pipe",
        "up": "a folder already searched",
    }
    by_name = {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in lines}
    assert all(why in by_name[name] for name, why in expected_reasons.items())
    for name in ("photo.jpg", "phone.jpg", "mode_cmyk.jpg", "anim.gif", "dot.png", "folder.jpg/inside.png"):
        assert name in explained


def test_every_fuzzed_file_prepares_or_says_why_for_a_photo_checkpoint(tmp_path):
    """The other way of preparing (shorter side to eval_resize, centre crop) on the same files."""
    files, _ = _hostile_folder(tmp_path / "in")
    pre = {"image_size": 32, "eval_resize": 36, **PLAIN}
    good = 0
    for path in files:
        try:
            x = offline.prepare(path, pre)
        except BadFile as e:
            assert str(e)
            continue
        assert x.shape == (3, 32, 32) and torch.isfinite(x).all() and 0 <= x.min() and x.max() <= 1
        good += 1
    assert good > 30


def test_permission_denied_is_a_reason_also_when_simulated(tmp_path, monkeypatch):
    """The same as the test above where the tests run as root: the errors the OS would raise."""
    import errno

    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    (tmp_path / "closed").mkdir()
    real_open, real_scandir = Image.open, os.scandir

    def denied(path, *args, **kwargs):
        if Path(path).name in ("secret.png", "closed"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return (real_open if Path(path).suffix else real_scandir)(path, *args, **kwargs)

    monkeypatch.setattr(image_io.Image, "open", denied)
    monkeypatch.setattr(image_io.os, "scandir", denied)
    assert _reason(tmp_path / "secret.png") == "permission denied"
    files, skipped = find_images(tmp_path)
    assert files == [tmp_path / "secret.png"]
    assert skipped == [(str(tmp_path / "closed"), "cannot list the folder: permission denied")]


def test_an_input_with_nothing_readable_says_what_was_passed_over(tmp_path):
    from camlight.config import ConfigError
    from camlight.offline.inputs import from_files

    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(
        ConfigError, match=r"found in .*pipe\.jpg; passed over .*pipe\.jpg: not a regular file \(a named pipe\)$"
    ):
        from_files(tmp_path / "pipe.jpg", model=None)  # refused before the model is asked anything
    (tmp_path / "loops").mkdir()
    os.symlink("b.jpg", tmp_path / "loops" / "a.jpg")
    os.symlink("a.jpg", tmp_path / "loops" / "b.jpg")
    with pytest.raises(ConfigError, match=r"passed over .*a\.jpg: symbolic link loop and 1 more$"):
        from_files(tmp_path / "loops", model=None)
