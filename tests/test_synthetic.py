import csv
import dataclasses
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from camlight.datamodules import SyntheticPets, SyntheticPetsDataset
from camlight.datamodules.drawing import CAT, DOG, render, sample_scene
from camlight.datamodules.synthetic import scene_rng

from .conftest import REPO

INDICES = range(0, 40)


def _digest(dataset, indices) -> str:
    h = hashlib.sha256()
    for i in indices:
        s = dataset[i]
        for key in sorted(s):
            h.update(key.encode())
            h.update(s[key].numpy().tobytes())
    return h.hexdigest()


def test_same_seed_split_index_gives_the_same_sample_in_another_process():
    code = (
        "from camlight.datamodules import SyntheticPetsDataset\n"
        "from tests.test_synthetic import _digest\n"
        "print(_digest(SyntheticPetsDataset('val', 40, 64, seed=3), range(40)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(SyntheticPetsDataset("val", 40, 64, seed=3), INDICES)


def test_seed_split_and_index_each_change_the_sample():
    base = SyntheticPetsDataset("val", 10, 64, seed=0)[5]["image"]
    assert not torch.equal(base, SyntheticPetsDataset("val", 10, 64, seed=1)[5]["image"])
    assert not torch.equal(base, SyntheticPetsDataset("train", 10, 64, seed=0)[5]["image"])
    assert not torch.equal(base, SyntheticPetsDataset("val", 10, 64, seed=0)[6]["image"])
    assert torch.equal(base, SyntheticPetsDataset("val", 10, 64, seed=0)[5]["image"])


def test_dataloader_workers_give_the_same_batches_as_the_main_process():
    dataset = SyntheticPetsDataset("train", 24, 48, seed=7)
    main = list(DataLoader(dataset, batch_size=8, num_workers=0))
    workers = list(DataLoader(dataset, batch_size=8, num_workers=2))
    for a, b in zip(main, workers, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_cache_returns_the_drawn_samples():
    plain = SyntheticPetsDataset("val", 6, 64, seed=2)
    cached = SyntheticPetsDataset("val", 6, 64, seed=2, cache=True)
    for i in range(6):
        first, again = cached[i], cached[i]
        for key in plain[i]:
            assert torch.equal(plain[i][key], first[key]) and torch.equal(first[key], again[key])


@pytest.mark.parametrize("size", [32, 64, 96])
def test_mask_covers_exactly_the_pixels_the_animal_changes(size):
    for index in range(30):
        scene = sample_scene(scene_rng(0, "train", index), size)
        with_animal = render(scene)
        background = render(dataclasses.replace(scene, animals=())).image
        changed = (with_animal.image != background).any(axis=0)
        np.testing.assert_array_equal(changed, with_animal.masks[0])
        assert with_animal.masks[0].sum() > 0.01 * size * size


def test_cat_and_dog_differ_only_by_their_ears():
    for index in range(30):
        scene = sample_scene(scene_rng(0, "train", index), 64)
        (animal,) = scene.animals
        cat = render(dataclasses.replace(scene, animals=(dataclasses.replace(animal, label=CAT),)))
        dog = render(dataclasses.replace(scene, animals=(dataclasses.replace(animal, label=DOG),)))
        differ = (cat.image != dog.image).any(axis=0)
        ears = cat.parts[0] | dog.parts[0]
        assert differ.any()
        assert not (differ & ~ears).any(), "pixels outside the ears differ between cat and dog"
        # Same face in both: the masks agree everywhere outside the ears.
        np.testing.assert_array_equal(cat.masks[0] & ~ears, dog.masks[0] & ~ears)
        # Cat ears stand above the face, dog ears hang beside it.
        ys = np.arange(64)[:, None].repeat(64, 1)
        assert ys[cat.parts[0]].mean() < animal.face.cy - 0.5 * animal.face.r
        assert ys[dog.parts[0]].mean() > animal.face.cy - 0.2 * animal.face.r


def test_sample_follows_the_batch_format():
    dataset = SyntheticPetsDataset("val", 50, 64, seed=0)
    labels = []
    for i in range(50):
        s = dataset[i]
        assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 64, 64)
        assert s["label"].dtype == torch.int64 and s["label"].shape == ()
        assert s["mask"].dtype == torch.bool and s["mask"].shape == (64, 64)
        assert s["parts"].dtype == torch.bool and not (s["parts"] & ~s["mask"]).any()
        assert s["parts"].sum() >= 4, "the ears must be visible"
        x0, y0, x1, y1 = s["box"].long().tolist()
        rows, cols = s["mask"].any(1).nonzero()[:, 0], s["mask"].any(0).nonzero()[:, 0]
        assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert s["mask"][y0:y1, x0:x1].sum() == s["mask"].sum()
        labels.append(int(s["label"]))
    assert 15 <= sum(labels) <= 35, "both classes appear"


def test_normalisation_is_undone_by_the_datamodule_mean_and_std():
    dm = SyntheticPets(train_size=8, val_size=8, test_size=0)
    scene = dm.datasets["val"].scene(3)
    image = dm.datasets["val"][3]["image"]
    mean, std = torch.tensor(dm.mean)[:, None, None], torch.tensor(dm.std)[:, None, None]
    torch.testing.assert_close(image * std + mean, torch.from_numpy(render(scene).image))


def test_probe_batch_is_the_same_every_call():
    dm = SyntheticPets(train_size=16, val_size=100, test_size=0)
    a, b = dm.probe_batch(8), dm.probe_batch(8)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert a["image"].shape == (8, 3, 64, 64)
    assert not torch.equal(a["image"], dm.probe_batch(8, seed=1)["image"])
    with pytest.raises(ValueError, match="between 1 and the validation size"):
        dm.probe_batch(101)


def test_pair_probe_has_one_cat_and_one_dog_with_a_mask_each():
    dm = SyntheticPets(train_size=16, val_size=16, test_size=0)
    pair = dm.probe_batch(6, mode="pair")
    masks = pair["class_masks"]
    assert masks.shape == (6, 2, 64, 64) and "label" not in pair
    assert (masks.flatten(2).sum(-1) > 20).all()
    assert not (masks[:, 0] & masks[:, 1]).any()
    assert torch.equal(masks[:, 0] | masks[:, 1], pair["mask"])
    for i in range(6):
        scene = SyntheticPetsDataset("pair", 6, 64).scene(i)
        assert sorted(a.label for a in scene.animals) == [CAT, DOG]
        for c in (CAT, DOG):
            x0, y0, x1, y1 = pair["class_boxes"][i, c].long().tolist()
            assert masks[i, c, y0:y1, x0:x1].sum() == masks[i, c].sum()
    for key in pair:
        assert torch.equal(pair[key], dm.probe_batch(6, mode="pair")[key])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="image_size=31 is too small"):
        SyntheticPetsDataset("train", 4, image_size=31)
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticPetsDataset("validation", 4)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        SyntheticPets(batch_size=0)
    with pytest.raises(ValueError, match="unknown probe mode"):
        SyntheticPets().probe_batch(2, mode="pairs")


def test_random_labels_permute_the_training_labels_once_and_leave_the_rest():
    """data.random_labels: the training loader's labels are the true ones permuted by the seed (the
    class counts stay), the same on every epoch and for every worker count; images, validation
    and the probe are untouched."""
    from camlight.datamodules import from_config
    from camlight.datamodules.interface import RelabelledDataset, Skipped

    data = {
        "name": "synthetic",
        "image_size": 32,
        "train_size": 60,
        "val_size": 8,
        "test_size": 0,
        "batch_size": 20,
        "num_workers": 0,
        "seed": 3,
        "cache": False,
    }
    plain, randomized = from_config(data), from_config({**data, "random_labels": True})
    true = torch.tensor(plain.labels("train"))
    assert torch.equal(true, torch.stack([plain.dataset("train")[i]["label"] for i in range(60)]))
    loader = lambda dm: DataLoader(  # noqa: E731 - in index order, to compare sample by sample
        dm.train_dataloader().dataset, batch_size=20, collate_fn=dm.collate_fn
    )
    batches = list(loader(randomized))
    labels = torch.cat([b["label"] for b in batches])
    assert torch.equal(labels, randomized.permuted_labels()) and torch.equal(
        labels, from_config({**data, "random_labels": True}).permuted_labels()
    )
    assert torch.equal(labels.bincount(minlength=2), true.bincount(minlength=2)) and (labels != true).sum() >= 10
    images = torch.cat([b["image"] for b in batches])
    assert torch.equal(images, torch.cat([b["image"] for b in loader(plain)]))
    assert torch.equal(randomized.probe_batch(4)["label"], plain.probe_batch(4)["label"])
    assert not isinstance(randomized.val_dataloader().dataset, RelabelledDataset)
    skipped = Skipped("bad.png", "truncated")
    assert RelabelledDataset([skipped], torch.tensor([1]))[0] is skipped
    with pytest.raises(ValueError, match="2 labels for 1 samples"):
        RelabelledDataset([skipped], torch.tensor([1, 0]))


def test_the_shortcut_mark_goes_on_training_dogs_only_and_on_half_of_validation():
    """data.shortcut: a magenta square on the given share of the training dogs (never a cat);
    in validation on about half of the images of both classes; its pixels in `shortcut_mask`,
    and nothing else of the image changed."""
    from camlight.datamodules.synthetic import SHORTCUT_COLOR, shortcut_square

    marked = SyntheticPets(image_size=64, train_size=200, val_size=200, test_size=0, cache=False, shortcut=0.5)
    plain = SyntheticPets(image_size=64, train_size=200, val_size=200, test_size=0, cache=False)
    rows, cols = shortcut_square(64)
    mean, std = torch.tensor(marked.mean)[:, None, None], torch.tensor(marked.std)[:, None, None]
    counts = {("train", 0): [0, 0], ("train", 1): [0, 0], ("val", 0): [0, 0], ("val", 1): [0, 0]}
    for split in ("train", "val"):
        for i in range(200):
            a, b = marked.dataset(split)[i], plain.dataset(split)[i]
            mark = a["shortcut_mask"]
            has = bool(mark.any())
            counts[(split, int(a["label"]))][has] += 1
            assert torch.equal(a["image"][:, ~mark], b["image"][:, ~mark]) and "shortcut_mask" not in b
            if has:
                assert mark[rows, cols].all() and mark.sum() == 8 * 8
                rgb = a["image"][:, mark] * std[:, :, 0] + mean[:, :, 0]
                assert torch.allclose(rgb, torch.tensor(SHORTCUT_COLOR)[:, None], atol=1e-5)
    assert counts[("train", 0)][1] == 0  # no training cat carries it
    dogs = counts[("train", 1)]
    assert 0.35 < dogs[1] / sum(dogs) < 0.65  # about half of the training dogs
    for c in (0, 1):
        val = counts[("val", c)]
        assert 0.3 < val[1] / sum(val) < 0.7  # validation: about half, whatever the class
    with pytest.raises(ValueError, match="between 0 and 1"):
        SyntheticPets(shortcut=1.5)


def test_default_scenes_are_pinned():
    """The default layout's pixels and ground truth, pinned: options added later (the shortcut,
    the small layout) draw apart from them, so the default job's images never change."""
    digest = _digest(SyntheticPetsDataset("val", 40, 64, seed=0), INDICES)
    assert digest == "ade93480c29ddb12f870528628cde4881cc8906b4d6e5030a49f735d76e9d1d1"


def test_small_layout_puts_smaller_animals_off_centre_with_the_same_draws():
    """data.layout=small: the same random numbers as the default scene (background, label, ears,
    colours), a face radius of 0.08–0.11 S, and no animal pixel within the pointing game's
    tolerance of the centre: the centred map that scores 0.73 on the default layout scores 0."""
    from camlight.metrics.localization import default_tolerance, pointing_game
    from camlight.metrics.protocols import center_map

    n, size = 300, 64
    small = SyntheticPetsDataset("val", n, size, seed=0, layout="small")
    default = SyntheticPetsDataset("val", n, size, seed=0)
    ys, xs = np.mgrid[:size, :size] + 0.5
    tol = default_tolerance(size)
    for i in range(n):
        a, b = small.scene(i), default.scene(i)
        assert a.background == b.background
        animal, original = a.animals[0], b.animals[0]
        assert animal.label == original.label and animal.face.color == original.face.color
        assert animal.cat_ear_height == original.cat_ear_height and animal.face.angle == original.face.angle
        assert 0.08 * size <= animal.face.r <= 0.11 * size
        mask = small[i]["mask"].numpy()
        assert mask.any()
        # Every pixel the animal paints lies farther than the tolerance from the centre.
        assert np.hypot(xs[mask] - size / 2, ys[mask] - size / 2).min() > tol + 0.5
    masks = torch.stack([small[i]["mask"] for i in range(n)])
    centred = center_map(size, size)[None].expand(n, size, size)
    assert pointing_game(centred, masks).sum() == 0
    masks = torch.stack([default[i]["mask"] for i in range(n)])
    assert pointing_game(centred, masks).float().mean() > 0.6
    with pytest.raises(ValueError, match="unknown layout"):
        SyntheticPetsDataset("val", 1, 64, layout="tiny")


@pytest.mark.slow
def test_a_network_trained_with_the_shortcut_looks_at_it(tmp_path):
    """The canary: with the mark on every training dog, the network calls marked cats dogs and
    Grad-CAM's dog maps put their energy on the mark; without it, they do not.

    The mark covers 64 of 4,096 pixels (1.6 %): a map that ignores it puts about that share of its
    energy there. Measured (seed 0, 800 images, 3 epochs): 0.105 with correlation 1.0 and 0.016
    with 0.0; the levels below sit at 3× and 2× the area's share."""
    from camlight import fit
    from camlight.config import load_config

    found = {}
    for corr in ("1.0", "0.0"):
        cfg = load_config(
            [
                "experiment=shortcut",
                f"name=s{corr}",
                f"out_dir={tmp_path}",
                f"data.shortcut_correlation={corr}",
                "data.train_size=800",
                "data.val_size=200",
                "trainer.max_epochs=3",
                "model.head=gap",
                "wandb.mode=disabled",
                "trainer.enable_progress_bar=false",
                "explain.methods=[gradcam]",
                "explain.metrics=[pointing_game]",
                "explain.pair_probe=false",
                "explain.log_images=false",
            ]
        )
        run = fit.run(cfg)["runs"][0]
        found[corr] = run["localization"]["gradcam"]["shortcut_energy"]
        with open(run["csv_metrics"]) as f:
            last = [r for r in csv.DictReader(f) if r.get("val/acc_marked_cat")][-1]
        found[f"{corr} marked cats"] = float(last["val/acc_marked_cat"])
    assert found["1.0"] > 0.05 and found["0.0"] < 0.03, found
    assert found["1.0 marked cats"] < 0.2 < found["0.0 marked cats"], found
