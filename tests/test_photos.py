"""Real-photo datamodules on tiny fixtures in the exact on-disk formats (JPEG, trimap PNG, VOC XML,
LOC csv): labels, ground truth alignment through the v2 transforms, bad input, skipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from camlight.datamodules import DataError, ImageFolder, OxfordPets
from camlight.datamodules.annotations import read_loc_csv, read_voc_xml
from camlight.datamodules.base import Skipped, collate
from camlight.datamodules.io import BadFile
from camlight.datamodules.oxford_pets import breed_name
from camlight.datamodules.transforms import boxes_region, eval_transform, mask_box, sample, train_transform
from camlight.metrics import mask_iou, pxap
from tests.photo_fixtures import make_image_folder, make_oxford, photo, truncate, voc_xml

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # normalisation that leaves [0,1] pixels


@pytest.fixture(scope="module")
def oxford_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets")
    truth = make_oxford(root)
    return root, truth


# -- Oxford-IIIT Pet -----------------------------------------------------------------------------


def test_oxford_labels_come_from_the_species_column(oxford_root):
    root, truth = oxford_root
    dm = OxfordPets(root, target="binary", image_size=48)
    dm.setup()
    assert dm.class_names == ("cat", "dog")
    records = [r for split in ("train", "val", "test") for r in dm.records[split]]
    assert len(records) == len(truth)
    for r in records:
        assert r.label == truth[r.meta["id"]][0] - 1  # SPECIES 1 = cat → 0, 2 = dog → 1
    assert {r.meta["id"] for r in dm.records["test"]} == {i for i in truth if int(i.rsplit("_", 1)[1]) > 12}
    # validation is carved from trainval with the seed: the same split every time, another with another seed
    again = OxfordPets(root, image_size=48)
    again.setup()
    other = OxfordPets(root, image_size=48, seed=1)
    other.setup()
    ids = lambda d: [r.meta["id"] for r in d.records["val"]]  # noqa: E731
    assert ids(dm) == ids(again) and ids(dm) != ids(other)
    assert len(dm.records["val"]) == round(0.1 * 48)
    assert not {r.meta["id"] for r in dm.records["val"]} & {r.meta["id"] for r in dm.records["train"]}


def test_oxford_breed_target_uses_class_ids_and_torchvision_names(oxford_root):
    root, truth = oxford_root
    dm = OxfordPets(root, target="breed", image_size=48)
    dm.setup()
    assert len(dm.class_names) == 37
    assert dm.class_names[0] == "Abyssinian" and dm.class_names[1] == "American Bulldog"
    assert dm.class_names[5] == "Bengal" and dm.class_names[4] == "Beagle"
    assert breed_name("american_pit_bull_terrier_101") == "American Pit Bull Terrier"
    labels = {r.meta["id"]: r.label for r in dm.records["train"]}
    assert labels["Abyssinian_1"] == 0 and labels["Bengal_1"] == 5 and labels["beagle_1"] == 4


def test_oxford_trimap_gives_mask_ignore_and_boxes_at_native_resolution(oxford_root):
    root, _ = oxford_root
    dm = OxfordPets(root, image_size=60, resize=60, **PLAIN)  # 72×60 photos: resize is a no-op, crop 60×60
    dm.setup()
    record = next(r for r in dm.records["train"] if r.meta["id"] == "Abyssinian_1")
    s = dm.dataset("train")[dm.records["train"].index(record)]
    tri = np.array(Image.open(root / "oxford-iiit-pet/annotations/trimaps/Abyssinian_1.png"))
    left = (tri.shape[1] - 60) // 2  # the centre crop of a 72-wide image
    tri = torch.from_numpy(tri[:, left : left + 60])
    assert torch.equal(s["mask"], (tri == 1) | (tri == 3))  # pet ∪ boundary
    assert torch.equal(s["ignore"], tri == 3)  # the boundary band
    assert torch.equal(s["box"], mask_box((tri == 1) | (tri == 3)))
    assert torch.equal(s["boxes"], s["box"][None])


def test_oxford_head_boxes_with_boxes_xml(oxford_root):
    """data.boxes=xml: the box is the head (the XML's), the mask still the trimap; a photo without
    a head box has none (box scores leave it out), not the pet's box."""
    root, truth = oxford_root
    dm = OxfordPets(root, image_size=60, resize=60, boxes="xml", **PLAIN)
    dm.setup()
    by_id = {r.meta["id"]: i for i, r in enumerate(dm.records["train"])}
    ds = dm.dataset("train")
    with_head = next(k for k in ("Abyssinian_1", "Abyssinian_3", "Abyssinian_5") if k in by_id)
    s = ds[by_id[with_head]]
    x0, y0, x1, y1 = truth[with_head][1]
    left = (72 - 60) // 2  # the centre crop of a 72-wide photo
    head = torch.tensor([x0 - left, y0, x1 - left, y0 + (y1 - y0) // 2], dtype=torch.float32)
    assert torch.equal(s["boxes"], head[None]) and torch.equal(s["box"], head)
    assert s["mask"].sum() > (head[2] - head[0]) * (head[3] - head[1])  # the whole pet, not the head
    without = next(k for k in ("Abyssinian_2", "Abyssinian_4", "Abyssinian_6") if k in by_id)
    s = ds[by_id[without]]
    assert s["boxes"].shape == (0, 4) and not s["box"].any() and s["mask"].any()
    with pytest.raises(ValueError, match="data.boxes=loc does not apply to oxford_pets"):
        OxfordPets(root, image_size=60, boxes="loc")


def test_trimap_boundary_is_left_out_of_mask_iou_and_pxap():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True
    ignore = torch.zeros_like(mask)
    ignore[0, 2:6, 2] = True  # one column of the mask is the uncertain band
    maps = mask.float().clone()
    maps[0, 2:6, 2] = 0.0  # the map misses exactly the band
    assert mask_iou(maps, mask).item() == pytest.approx(12 / 16)
    assert mask_iou(maps, mask, ignore=ignore).item() == 1.0
    assert pxap(maps, mask) < 1.0
    assert pxap(maps, mask, ignore=ignore) == pytest.approx(1.0)


def test_masks_and_boxes_stay_aligned_with_the_image_through_crops_and_flips():
    rng = np.random.default_rng(3)
    img, box = photo(rng, 120, 90, (255, 0, 0), side=30)
    img[:] = 0
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = (255, 0, 0)
    region = boxes_region(np.array([box], dtype=float), 90, 120)
    transform = train_transform(64, **PLAIN, scale=(0.3, 1.0))
    torch.manual_seed(0)
    sides = set()
    for _ in range(40):
        s = sample(img, 0, transform, region=region)
        red = s["image"][0] > 0.5
        if not s["mask"].any():
            assert red.sum() <= 4  # the crop missed the square: only resampling fringe, no mask
            continue
        # Masks are resampled nearest-neighbour, the image bilinearly: edges agree within a pixel.
        assert (s["box"] - mask_box(red)).abs().max() <= 1.0
        if s["mask"].sum() >= 100:  # on tiny remnants that one-pixel fringe dominates the IoU
            assert mask_iou(red[None].float(), s["mask"][None]).item() > 0.8
        cx = (s["box"][0] + s["box"][2]) / 2
        sides.add(bool(cx < 32))
    assert sides == {True, False}  # the square sits left of centre: only flips put it on the right


def test_eval_transform_resizes_the_shorter_side_and_centre_crops():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 90:110] = 255  # a white vertical band in the middle
    s = sample(img, 0, eval_transform(50, 50, **PLAIN), region=np.zeros((100, 200), np.uint8))
    assert s["image"].shape == (3, 50, 50)
    white = s["image"][0].mean(0) > 0.5  # 200×100 → 100×50, crop the middle 50 columns
    assert white[20:30].all() and not white[:18].any() and not white[32:].any()
    with pytest.raises(ValueError, match="resize=32 is smaller than image_size=50"):
        eval_transform(50, 32)


def test_a_truncated_jpeg_is_skipped_and_counted(tmp_path):
    make_oxford(tmp_path, per_breed=4, test_per_breed=1)
    truncate(tmp_path / "oxford-iiit-pet/images/beagle_2.jpg")
    (tmp_path / "oxford-iiit-pet/images/Bengal_3.jpg").write_bytes(b"not a jpeg")
    dm = OxfordPets(tmp_path, image_size=32, batch_size=4, val_fraction=0.25)
    dm.setup()
    seen = 0
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for batch in loader:
            batch = dm.on_before_batch_transfer(batch, 0)
            seen += len(batch.get("image", []))
    assert set(dm.skipped) == {
        str(tmp_path / "oxford-iiit-pet/images/beagle_2.jpg"),
        str(tmp_path / "oxford-iiit-pet/images/Bengal_3.jpg"),
    }
    assert "truncated" in dm.skipped[str(tmp_path / "oxford-iiit-pet/images/beagle_2.jpg")]
    assert len(dm.records["train"]) == 12 and len(dm.records["val"]) == 4
    assert seen == 16 - 2  # every good photo once, in train or val


def test_collate_drops_bad_samples_and_reports_them():
    good = {"image": torch.zeros(3, 4, 4), "label": torch.tensor(1)}
    batch = collate([good, Skipped("a.jpg", "truncated"), good])
    assert batch["image"].shape == (2, 3, 4, 4) and batch["skipped"] == [("a.jpg", "truncated")]
    assert collate([Skipped("b.jpg", "x")]) == {"skipped": [("b.jpg", "x")]}


def test_probe_batch_is_fixed_and_passes_over_unreadable_files(tmp_path):
    make_oxford(tmp_path, per_breed=5, test_per_breed=1)
    dm = OxfordPets(tmp_path, image_size=32, val_fraction=0.5)
    dm.setup()
    first = dm.probe_batch(4)
    assert torch.equal(first["image"], dm.probe_batch(4)["image"])
    assert {"image", "label", "mask", "ignore", "box", "boxes", "index"} == set(first)
    # break one of the chosen files: the probe set still holds 4 readable images
    victim = dm.records["val"][int(first["index"][0])].path
    truncate(victim)
    second = dm.probe_batch(4)
    assert len(second["image"]) == 4 and str(victim) in dm.skipped
    with pytest.raises(ValueError, match="no 'pair' probe"):
        dm.probe_batch(2, mode="pair")


def test_oxford_layout_problems_say_what_was_expected_where(tmp_path):
    with pytest.raises(DataError, match="not found; it should hold root/oxford-iiit-pet/images"):
        OxfordPets(tmp_path / "missing").setup()
    (tmp_path / "oxford-iiit-pet" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="trainval.txt not found; an Oxford-IIIT Pet root holds"):
        OxfordPets(tmp_path).setup()
    make_oxford(tmp_path, per_breed=2, test_per_breed=1)
    with open(tmp_path / "oxford-iiit-pet/annotations/trainval.txt", "a") as f:
        f.write("Abyssinian_99 1 cat 1\n")
    with pytest.raises(DataError, match=r"trainval.txt line 9: expected 'Image CLASS-ID SPECIES BREED-ID'"):
        OxfordPets(tmp_path).setup()


def test_oxford_download_without_network_gives_the_layout(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "OxfordIIITPet", offline)
    dm = OxfordPets(tmp_path, download=True)
    with pytest.raises(DataError, match="could not download Oxford-IIIT Pet.*oxford-iiit-pet/annotations/trimaps"):
        dm.prepare_data()
    assert not (tmp_path / "oxford-iiit-pet").exists()  # nothing half-written by us


def test_a_trimap_of_another_size_skips_the_photo(tmp_path):
    make_oxford(tmp_path, per_breed=2, test_per_breed=1)
    Image.fromarray(np.full((10, 10), 2, np.uint8)).save(tmp_path / "oxford-iiit-pet/annotations/trimaps/beagle_1.png")
    dm = OxfordPets(tmp_path, image_size=32)
    dm.setup()
    split, i = next((s, i) for s in dm.records for i, r in enumerate(dm.records[s]) if r.meta["id"] == "beagle_1")
    item = dm.dataset(split)[i]
    assert isinstance(item, Skipped) and "trimap beagle_1.png is 10×10" in item.reason


# -- ImageFolder -----------------------------------------------------------------------------------


def test_image_folder_wnids_get_readable_names_and_loc_boxes(tmp_path):
    truth = make_image_folder(tmp_path, boxes="loc")
    dm = ImageFolder(tmp_path, image_size=64, resize=64, **PLAIN)
    dm.setup()
    assert dm.class_names == ("tench", "English springer") and dm.box_source == "loc"
    assert len(dm.records["train"]) == 24 and len(dm.records["val"]) == 8
    ds = dm.dataset("val")
    for i, r in enumerate(dm.records["val"]):
        label, (x0, y0, x1, y1) = truth[r.path.stem]
        s = ds[i]
        assert int(s["label"]) == label
        # 80×64 (or 64×80) photo, shorter side already 64: the crop removes 8 px on the long side
        dx, dy = (8, 0) if Image.open(r.path).width == 80 else (0, 8)
        expected = torch.tensor([x0 - dx, y0 - dy, x1 - dx, y1 - dy], dtype=torch.float32).clamp(0, 64)
        assert torch.equal(s["box"], expected)
        assert s["mask"].sum() == (expected[2] - expected[0]) * (expected[3] - expected[1])
        red_or_blue = (s["image"][0] - s["image"][2]).abs() > 0.5  # the square, grey elsewhere
        assert mask_iou(red_or_blue[None].float(), s["mask"][None]).item() > 0.9  # JPEG blurs the edges


def test_image_folder_xml_boxes_class_subset_and_held_out_validation(tmp_path):
    make_image_folder(tmp_path, classes=("cats", "dogs", "birds"), val_per_class=0, boxes="xml")
    dm = ImageFolder(tmp_path, classes=["dogs", "cats"], image_size=48, val_fraction=0.25)
    dm.setup()
    assert dm.class_names == ("dogs", "cats") and dm.box_source == "xml"
    assert len(dm.records["val"]) == 6 and len(dm.records["train"]) == 18  # 3 of each class's 12
    assert {r.label for r in dm.records["val"]} == {0, 1}
    assert all(r.boxes is not None for r in dm.records["val"])
    s = dm.dataset("val")[0]
    assert s["mask"].any() and s["box"].any()
    by_wnid = ImageFolder(make_dir := tmp_path / "w", image_size=48)
    make_image_folder(make_dir, boxes=None)
    by_wnid.classes = ["English springer", "n01440764"]
    by_wnid.setup()
    assert by_wnid.class_names == ("English springer", "tench") and by_wnid.box_source == "none"


def test_image_folder_layout_problems_are_clear(tmp_path):
    with pytest.raises(DataError, match=r"not found; it should hold root/train/<class>/\*.jpg"):
        ImageFolder(tmp_path / "nope").setup()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat").mkdir()
    with pytest.raises(DataError, match=r"photos/train not found \(found cat\)"):
        ImageFolder(tmp_path / "photos").setup()
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "cat" / "1.jpg")  # class folders at the top (PetImages)
    with pytest.raises(DataError, match=r"to use the class folders found there, move them into .*photos/train/"):
        ImageFolder(tmp_path / "photos").setup()
    make_image_folder(tmp_path / "d", classes=("cat", "dog"), boxes=None)
    (tmp_path / "d" / "train" / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/empty holds no images"):
        ImageFolder(tmp_path / "d").setup()
    with pytest.raises(DataError, match=r"class 'cow' has no folder in .*; available: cat, dog, empty"):
        ImageFolder(tmp_path / "d", classes=["cat", "cow"]).setup()
    assert ImageFolder(tmp_path / "d", classes=["cat", "dog"]).split_size("val") == 8


def test_loc_csv_in_the_wrong_format_names_the_line(tmp_path):
    make_image_folder(tmp_path, boxes="loc")
    path = tmp_path / "LOC_val_solution.csv"
    path.write_text(path.read_text() + "ILSVRC2012_val_x,n01440764 1 2 3\n")
    with pytest.raises(DataError, match=r"LOC_val_solution.csv line 10: expected 'ImageId,PredictionString'"):
        ImageFolder(tmp_path).setup()
    path.write_text("id,boxes\n")
    with pytest.raises(DataError, match="line 1: expected"):
        read_loc_csv(path)
    path.write_text("ImageId,PredictionString\nx,n01440764 a b c d\n")
    with pytest.raises(DataError, match="line 2: non-numeric box"):
        read_loc_csv(path)


def test_a_box_outside_the_image_skips_that_photo_with_the_reason(tmp_path):
    make_image_folder(tmp_path, boxes="xml", per_class=3, val_per_class=2)
    xml = next((tmp_path / "val" / "n01440764").glob("*.xml"))
    width, height = Image.open(xml.with_suffix(".JPEG")).size  # the photo itself is fine
    voc_xml(xml, width, height, [("n01440764", (10, 10, 300, 40))])
    dm = ImageFolder(tmp_path, image_size=32, batch_size=8)
    dm.setup()
    batch = dm.on_before_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert len(batch["image"]) == 3
    reason = dm.skipped[str(xml.with_suffix(".JPEG"))]
    assert "box [10 10 300 40]" in reason and "outside the" in reason and xml.name in reason


def test_voc_xml_is_converted_to_zero_based_end_exclusive(tmp_path):
    voc_xml(tmp_path / "a.xml", 50, 40, [("dog", (3, 4, 20, 30))])
    size, objects = read_voc_xml(tmp_path / "a.xml")
    assert size == (50, 40) and objects == [("dog", [3.0, 4.0, 20.0, 30.0])]
    (tmp_path / "b.xml").write_text("<annotation><object><name>x</name></object></annotation>")
    with pytest.raises(BadFile, match="no complete numeric bndbox"):
        read_voc_xml(tmp_path / "b.xml")


def test_worker_processes_load_photos_and_report_bad_files_to_the_main_process(tmp_path):
    make_oxford(tmp_path, per_breed=3, test_per_breed=1)
    truncate(tmp_path / "oxford-iiit-pet/images/Bengal_2.jpg")
    dm = OxfordPets(tmp_path, image_size=32, batch_size=16, num_workers=2, val_fraction=0.25)  # no drop_last
    dm.setup()
    n = sum(len(dm.on_before_batch_transfer(b, 0).get("image", [])) for b in dm.val_dataloader())
    n += sum(len(dm.on_before_batch_transfer(b, 0).get("image", [])) for b in dm.test_dataloader())
    n += sum(len(dm.on_before_batch_transfer(b, 0).get("image", [])) for b in dm.train_dataloader())
    assert list(dm.skipped) == [str(tmp_path / "oxford-iiit-pet/images/Bengal_2.jpg")]
    assert n == 16 - 1


def test_explain_py_prepares_a_photo_exactly_as_the_validation_data(tmp_path):
    from camlight.offline import prepare

    make_image_folder(tmp_path, boxes=None, per_class=2, val_per_class=1)
    dm = ImageFolder(tmp_path, image_size=40, resize=48)
    dm.setup()
    path = dm.records["val"][0].path
    pre = {"image_size": 40, "eval_resize": 48, "mean": dm.mean, "std": dm.std}
    assert torch.equal(prepare(path, pre), dm.dataset("val")[0]["image"])
    squashed = prepare(path, {**pre, "eval_resize": None})  # synthetic-data checkpoints: squash to 40×40
    assert squashed.shape == (3, 40, 40) and not torch.equal(squashed, dm.dataset("val")[0]["image"])


def test_several_boxes_of_the_class_are_kept_padded_and_scored_best_match(tmp_path):
    make_image_folder(tmp_path, boxes="loc", per_class=2, val_per_class=1)
    # a LOC row with two tench boxes and one box of another class
    path = tmp_path / "LOC_val_solution.csv"
    rows = path.read_text().splitlines()
    rows[1] = rows[1].split(",")[0] + ",n01440764 1 1 20 20 n01440764 41 31 60 50 n09999999 1 31 10 40"
    path.write_text("\n".join(rows) + "\n")
    dm = ImageFolder(tmp_path, image_size=64, resize=64, **PLAIN)
    dm.setup()
    photo_w = Image.open(dm.records["val"][0].path).width
    dx, dy = ((photo_w - 64) // 2, 0) if photo_w > 64 else (0, 8)
    s = dm.dataset("val")[0]
    expected = torch.tensor([[0, 0, 20, 20], [40, 30, 60, 50]], dtype=torch.float32) - torch.tensor([dx, dy] * 2)
    assert torch.equal(s["boxes"], expected.clamp(0, 64))
    assert s["mask"].sum() == sum(
        int((b[2] - b[0]) * (b[3] - b[1])) for b in s["boxes"]
    )  # the other class's box is out
    batch = collate([s, dm.dataset("val")[1]])
    assert batch["boxes"].shape == (2, 2, 4) and torch.equal(batch["boxes"][1, 1], torch.zeros(4))  # padded
    # a map on the second box: a hit against every box, a miss against the union box
    from camlight.metrics import box_accuracy

    maps = torch.zeros(1, 64, 64)
    b = s["boxes"][1].long()
    maps[0, b[1] : b[3], b[0] : b[2]] = 1.0
    assert box_accuracy(maps, s["boxes"][None]).item() and not box_accuracy(maps, s["box"][None]).item()


def test_voc_coordinates_are_one_based_and_inclusive(tmp_path):
    """Written by hand, not by the fixture helper: the first pixel column is xmin=1."""
    (tmp_path / "a.xml").write_text(
        "<annotation><size><width>10</width><height>8</height></size><object><name>cat</name>"
        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>8</ymax></bndbox></object></annotation>"
    )
    assert read_voc_xml(tmp_path / "a.xml") == ((10, 8), [("cat", [0.0, 1.0, 10.0, 8.0])])  # the whole width
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n01751748 1 1 500 375 n09999999 5 5 6 6 \n"
    )
    table = read_loc_csv(tmp_path / "LOC_val_solution.csv")
    assert table == {
        "ILSVRC2012_val_00000001": [("n01751748", [0.0, 0.0, 500.0, 375.0]), ("n09999999", [4.0, 4.0, 6.0, 6.0])]
    }
    assert read_loc_csv(tmp_path / "LOC_val_solution.csv", {"n01440764"}) == {}  # rows of other classes dropped


def test_loc_boxes_beside_resized_photos_are_refused(tmp_path):
    make_image_folder(tmp_path, boxes="loc", size=(160, 128))
    for path in tmp_path.rglob("*.JPEG"):  # a resized copy (like Imagenette-320) keeps the file names
        img = Image.open(path)
        img.resize((img.width // 4, img.height // 4)).save(path)
    with pytest.raises(DataError, match=r"sampled photos have boxes outside the image .*data.boxes=none"):
        ImageFolder(tmp_path).setup()
    ImageFolder(tmp_path, boxes="none").setup()


def test_a_single_class_folder_is_refused(tmp_path):
    make_image_folder(tmp_path, classes=("cat",), boxes=None)
    with pytest.raises(DataError, match=r"train holds only cat/; a classifier needs two or more"):
        ImageFolder(tmp_path).setup()


def test_head_box_files_are_not_read(tmp_path, monkeypatch):
    """No metric scores Oxford's head boxes, so loading a sample never parses their XML."""
    from camlight.datamodules import annotations

    make_oxford(tmp_path, per_breed=2, test_per_breed=1)
    (tmp_path / "oxford-iiit-pet/annotations/xmls/Abyssinian_1.xml").write_text("<annotation><object>")
    monkeypatch.setattr(annotations.ET, "parse", lambda *a: pytest.fail("an XML file was parsed"))
    dm = OxfordPets(tmp_path, image_size=32)
    dm.setup()
    split, i = next((s, i) for s in dm.records for i, r in enumerate(dm.records[s]) if r.meta["id"] == "Abyssinian_1")
    s = dm.dataset(split)[i]
    assert not isinstance(s, Skipped) and s["mask"].any() and "head_box" not in s


def test_download_is_refused_when_several_processes_start_together(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(DataError, match="runs several processes at once; download it first with one"):
        OxfordPets(tmp_path, download=True).prepare_data()


def test_imagenet_layout_with_a_flat_val_folder_takes_classes_from_the_loc_csv(tmp_path):
    """ILSVRC/Data/CLS-LOC: train/<wnid>/*.JPEG, val/*.JPEG (flat), test/*.JPEG (flat, unlabelled);
    the LOC csv files and the synset mapping beside it."""
    root, top = tmp_path / "ILSVRC/Data/CLS-LOC", tmp_path
    truth = make_image_folder(root, classes=("n01440764", "n02102040", "n03000684"), boxes="loc")
    for csv_file in root.glob("LOC_*.csv"):
        csv_file.rename(top / csv_file.name)
    for photo_path in list((root / "val").rglob("*.JPEG")):  # flatten val/ as ImageNet ships it
        photo_path.rename(root / "val" / photo_path.name)
    for d in (root / "val").iterdir():
        if d.is_dir():
            d.rmdir()
    (root / "test").mkdir()
    Image.new("RGB", (8, 8)).save(root / "test" / "ILSVRC2012_test_00000001.JPEG")
    (top / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn02102040 English springer\n")
    dm = ImageFolder(root, classes=["n02102040", "tench"], box_dir=top, image_size=48)
    dm.setup()
    assert dm.class_names == ("English springer", "tench") and dm.box_source == "loc"
    assert len(dm.records["val"]) == 8 and len(dm.records["test"]) == 0
    for r in dm.records["val"]:
        assert r.path.parent == root / "val"
        assert ("n02102040", "n01440764")[r.label] == ("n01440764", "n02102040", "n03000684")[truth[r.path.stem][0]]
    assert all(dm.dataset("val")[i]["mask"].any() for i in range(8))


def test_listed_images_without_a_file_are_named_in_bad_files_and_the_log(tmp_path, caplog):
    make_oxford(tmp_path, per_breed=4, test_per_breed=1)
    images = tmp_path / "oxford-iiit-pet/images"
    for gone in ("beagle_2", "Bengal_5"):  # one of trainval.txt, one of test.txt
        (images / f"{gone}.jpg").unlink()
    dm = OxfordPets(tmp_path, image_size=32, val_fraction=0.25)
    with caplog.at_level("WARNING"):
        dm.setup()
    assert dm.bad_files() == {
        str(images / "beagle_2.jpg"): "listed in trainval.txt but missing",
        str(images / "Bengal_5.jpg"): "listed in test.txt but missing",
    }
    assert sum(len(r) for r in dm.records.values()) == 20 - 2
    line = next(r.getMessage() for r in caplog.records if "listed images have no file" in r.getMessage())
    assert "2 listed images" in line and "Bengal_5.jpg" in line and "beagle_2.jpg" in line
