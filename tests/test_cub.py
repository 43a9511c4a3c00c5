"""CUB-200-2011 on a tiny fixture in the exact on-disk layout of CUB_200_2011.tgz (and of the
separately distributed segmentations.tgz): names, splits, labels, boxes and masks through the
evaluation transform, bad files, the missing-download message, the config path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from camlight.config import load_config
from camlight.datamodules import CUB, DataError, from_config
from camlight.datamodules.cub import class_name
from camlight.datamodules.transforms import mask_box
from tests import test_datamodules as shared
from tests.photo_fixtures import truncate

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
FOLDERS = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
COLOURS = ((220, 40, 40), (40, 60, 220), (40, 180, 60))
TRAIN, TEST = 4, 2  # per class: is_training 1, is_training 0
# Image 1: a 64×48 photo with a box given by hand: x=21, y=13, width 24.5, height 20.
BOX_1 = (21.0, 13.0, 24.5, 20.0)


def make_cub(root: Path, segmented_classes=(1,), seed: int = 0) -> dict:
    """root/CUB_200_2011/ (the five list files and images/<NNN.Name>/*.jpg) and root/segmentations/
    for the classes given. A bird is a coloured ellipse inscribed in its box; its segmentation is
    200 (a majority of annotators) inside that ellipse and 100 (a minority) in a 2-pixel band around
    it. Returns {image id: (class id, is_training, (x, y, w, h), relative path)}."""
    base = root / "CUB_200_2011"
    rng = np.random.default_rng(seed)
    truth, image_id = {}, 0
    for class_id, folder in enumerate(FOLDERS, start=1):
        (base / "images" / folder).mkdir(parents=True, exist_ok=True)
        for n in range(TRAIN + TEST):
            image_id += 1
            w, h = (64, 48) if n % 2 == 0 else (48, 64)
            if image_id == 1:
                box = BOX_1
            else:
                bw, bh = float(rng.integers(12, 24)), float(rng.integers(12, 24))
                box = (float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh)), bw, bh)
            x, y, bw, bh = box
            img = Image.fromarray(rng.normal(128, 10, (h, w, 3)).clip(0, 255).astype(np.uint8))
            ImageDraw.Draw(img).ellipse((x, y, x + bw - 1, y + bh - 1), fill=COLOURS[class_id - 1])
            relative = f"{folder}/{folder.split('.')[1]}_{n:04d}_{image_id}.jpg"
            img.save(base / "images" / relative, quality=95)
            if class_id in segmented_classes:
                seg = Image.new("L", (w, h), 0)
                draw = ImageDraw.Draw(seg)
                draw.ellipse((x - 2, y - 2, x + bw + 1, y + bh + 1), fill=100)
                draw.ellipse((x, y, x + bw - 1, y + bh - 1), fill=200)
                (root / "segmentations" / folder).mkdir(parents=True, exist_ok=True)
                seg.save(root / "segmentations" / Path(relative).with_suffix(".png"))
            truth[image_id] = (class_id, int(n < TRAIN), box, relative)
    lines = {
        "images.txt": [f"{i} {t[3]}" for i, t in truth.items()],
        "image_class_labels.txt": [f"{i} {t[0]}" for i, t in truth.items()],
        "train_test_split.txt": [f"{i} {t[1]}" for i, t in truth.items()],
        "bounding_boxes.txt": [f"{i} {' '.join(f'{v:.1f}' for v in t[2])}" for i, t in truth.items()],
        "classes.txt": [f"{c} {f}" for c, f in enumerate(FOLDERS, start=1)],
    }
    for name, rows in lines.items():
        (base / name).write_text("\n".join(rows) + "\n")
    return truth


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    return root, make_cub(root)


def _ids(dm: CUB, split: str) -> list[int]:
    return [r.meta["id"] for r in dm.records[split]]


def test_names_labels_and_the_official_test_split(cub_root):
    root, truth = cub_root
    dm = CUB(root, image_size=32, val_fraction=0.25)
    dm.setup()
    assert dm.class_names == ("Black footed Albatross", "Laysan Albatross", "Sooty Albatross")
    assert class_name("200.Common_Yellowthroat") == "Common Yellowthroat"
    # test is exactly is_training 0: ids 5, 6 of each class of six
    assert _ids(dm, "test") == [5, 6, 11, 12, 17, 18]
    assert dm.split_size("train") == 9 and dm.split_size("val") == 3  # round(0.25 · 4) = 1 per class
    assert sorted(_ids(dm, "train") + _ids(dm, "val")) == [1, 2, 3, 4, 7, 8, 9, 10, 13, 14, 15, 16]
    assert sorted(truth[i][0] for i in _ids(dm, "val")) == [1, 2, 3]  # stratified: one of each class
    for split in ("train", "val", "test"):
        for r in dm.records[split]:
            assert r.label == truth[r.meta["id"]][0] - 1
            assert r.path == root / "CUB_200_2011" / "images" / truth[r.meta["id"]][3]
    # the CUB_200_2011 folder itself as root: the same records, and segmentations/ beside it is found
    inner = CUB(root / "CUB_200_2011", image_size=32, val_fraction=0.25)
    inner.setup()
    assert all(_ids(inner, s) == _ids(dm, s) for s in ("train", "val", "test"))
    assert inner.segmentations == root / "segmentations" and "segmentations" in inner.describe()


def test_the_held_out_validation_split_is_fixed_by_the_seed(cub_root):
    root, _ = cub_root
    splits = []
    for seed in (0, 0, 1, 2, 3):
        dm = CUB(root, image_size=32, seed=seed)
        dm.setup()
        splits.append(_ids(dm, "val"))
    assert splits[0] == splits[1]
    assert any(s != splits[0] for s in splits[2:])
    assert all(len(s) == 3 for s in splits)  # val_fraction 0.1 of 4 still holds out one per class


def test_the_box_through_resize_and_centre_crop(cub_root):
    root, _ = cub_root
    # 64×48 photo, resize 36: scale 0.75 → 48×36; centre crop 24: left (48 - 24)/2 = 12, top (36 - 24)/2 = 6
    dm = CUB(root, image_size=24, resize=36, val_fraction=0.25, **PLAIN)
    dm.setup()
    split = next(s for s in ("train", "val") if 1 in _ids(dm, s))
    s = dm.dataset(split)[_ids(dm, split).index(1)]
    # (21, 13, 21 + 24.5, 13 + 20) · 0.75 - (12, 6, 12, 6)
    expected = torch.tensor([21 * 0.75 - 12, 13 * 0.75 - 6, 45.5 * 0.75 - 12, 33 * 0.75 - 6])
    assert torch.allclose(expected, torch.tensor([3.75, 3.75, 22.125, 18.75]))
    assert torch.allclose(s["boxes"], expected[None]) and torch.allclose(s["box"], expected)
    # Class 2 has no segmentations: its mask is the filled box.
    dm2 = CUB(root, image_size=48, resize=48, val_fraction=0.25, **PLAIN)
    dm2.setup()
    split, index = next((sp, k) for sp in ("train", "val") for k, i in enumerate(_ids(dm2, sp)) if i == 7)
    s = dm2.dataset(split)[index]
    x, y, w, h = map(float, (root / "CUB_200_2011" / "bounding_boxes.txt").read_text().splitlines()[6].split()[1:])
    left = (64 - 48) // 2  # image 7 is 64×48: no resize, crop columns 8..55
    filled = torch.zeros(48, 48, dtype=torch.bool)
    filled[int(np.ceil(y)) : int(np.ceil(y + h)), max(int(np.ceil(x)) - left, 0) : int(np.ceil(x + w)) - left] = True
    assert torch.equal(s["mask"], filled) and not s["ignore"].any()
    assert torch.allclose(s["box"], torch.tensor([max(x - left, 0), y, x + w - left, y + h]))


def test_the_mask_is_the_segmentation_above_127_and_the_box_stays_the_annotated_one(cub_root):
    root, truth = cub_root
    dm = CUB(root, image_size=48, resize=48, val_fraction=0.25, **PLAIN)  # 64×48: no resize, crop columns 8..55
    dm.setup()
    split = next(s for s in ("train", "val") if 1 in _ids(dm, s))
    s = dm.dataset(split)[_ids(dm, split).index(1)]
    seg = np.array(Image.open(root / "segmentations" / Path(truth[1][3]).with_suffix(".png")))
    assert set(np.unique(seg)) == {0, 100, 200}
    expected = torch.from_numpy(seg[:, 8:56] > 127)
    assert torch.equal(s["mask"], expected)  # the minority band (100) is not bird
    # the bird is the ellipse inscribed in the box: smaller than the filled box, inside it
    filled = torch.zeros(48, 48, dtype=torch.bool)
    filled[13:33, 13:38] = True  # (21 - 8, 13, 45.5 - 8, 33), rounded up as the metrics count pixels
    assert (s["mask"] & ~filled).sum() == 0 and s["mask"].sum() < 0.85 * filled.sum()
    assert torch.equal(s["box"], torch.tensor([13.0, 13.0, 37.5, 33.0]))  # bounding_boxes.txt, not the mask's
    assert not torch.equal(s["box"], mask_box(s["mask"]))
    probe = dm.probe_batch(3)
    assert probe["image"].shape == (3, 3, 48, 48) and probe["boxes"].shape == (3, 1, 4)
    assert probe["mask"].flatten(1).any(1).all()


def test_a_corrupt_jpeg_and_a_box_outside_the_photo_are_skipped_and_counted(tmp_path):
    truth = make_cub(tmp_path)
    base = tmp_path / "CUB_200_2011"
    truncate(base / "images" / truth[5][3])  # a test image
    rows = (base / "bounding_boxes.txt").read_text().splitlines()
    rows[5] = "6 10.0 10.0 200.0 20.0"  # a test image: the box runs far past the photo's right edge
    (base / "bounding_boxes.txt").write_text("\n".join(rows) + "\n")
    dm = CUB(tmp_path, image_size=32, batch_size=8)
    dm.setup()
    assert dm.split_size("test") == 6
    indices = [i for i, _ in dm.samples("test")]
    assert indices == [2, 3, 4, 5]
    bad = dm.bad_files()
    assert set(bad) == {str(base / "images" / truth[5][3]), str(base / "images" / truth[6][3])}
    assert "not a readable image" in bad[str(base / "images" / truth[5][3])]
    assert (
        "outside" in bad[str(base / "images" / truth[6][3])]
        and "bounding_boxes.txt" in bad[str(base / "images" / truth[6][3])]
    )
    batch = next(iter(dm.test_dataloader()))
    assert len(batch["skipped"]) == 2 and batch["image"].shape[0] == 4


def test_missing_files_say_what_and_where_to_get_them(tmp_path):
    make_cub(tmp_path, segmented_classes=())
    (tmp_path / "CUB_200_2011" / "images.txt").unlink()
    with pytest.raises(
        DataError, match=r"images\.txt not found.*CUB_200_2011\.tgz.*data\.caltech\.edu/records/65de6-vp158"
    ):
        CUB(tmp_path).setup()
    with pytest.raises(DataError, match="65de6-vp158"):
        CUB(tmp_path / "nowhere").setup()


def test_without_segmentations_every_mask_is_the_filled_box(tmp_path):
    make_cub(tmp_path, segmented_classes=())
    dm = CUB(tmp_path, image_size=32)
    dm.setup()
    assert dm.segmentations is None and "filled boxes" in dm.describe()
    for _, s in dm.samples("test"):
        x0, y0, x1, y1 = mask_box(s["mask"]).tolist()
        assert s["mask"].sum() == (x1 - x0) * (y1 - y0)  # a filled rectangle


def test_from_config_builds_cub(cub_root, tmp_path):
    root, _ = cub_root
    cfg = load_config([f"out_dir={tmp_path / 'out'}", "data.name=cub", f"data.root={root}", "data.image_size=32"])
    dm = from_config(cfg.data)
    assert isinstance(dm, CUB) and dm.image_size == 32 and dm.val_fraction == cfg.data.val_fraction
    dm.setup()
    assert dm.split_size("test") == 6 and dm.paths() == {"root": str(root)}


def test_cub_offers_the_shared_interface(tmp_path):
    def build(root):
        make_cub(root)
        return CUB(root, image_size=32, batch_size=4)

    shared.test_the_shared_interface(tmp_path, build)


def test_listed_images_without_a_file_are_named_in_bad_files_and_the_log(tmp_path, caplog):
    truth = make_cub(tmp_path, segmented_classes=())
    images = tmp_path / "CUB_200_2011" / "images"
    for i in (2, 12):
        (images / truth[i][3]).unlink()
    dm = CUB(tmp_path, image_size=32)
    with caplog.at_level("WARNING"):
        dm.setup()
    reason = "listed in images.txt but missing"
    assert dm.bad_files() == {str(images / truth[2][3]): reason, str(images / truth[12][3]): reason}
    assert sum(len(r) for r in dm.records.values()) == len(truth) - 2
    line = next(r.getMessage() for r in caplog.records if "listed images have no file" in r.getMessage())
    assert "2 listed images" in line and truth[2][3] in line and truth[12][3] in line
