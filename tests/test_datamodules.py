"""Every datamodule offers the same interface, so the glue code never asks which kind it holds."""

from pathlib import Path

import pytest
import torch

from camlight.datamodules import CamlightDataModule, ImageFolder, OxfordPets, SyntheticPets

from .photo_fixtures import make_image_folder, make_oxford, truncate


def _synthetic(tmp_path):
    return SyntheticPets(image_size=32, train_size=8, val_size=6, test_size=4, batch_size=4)


def _oxford(tmp_path):
    make_oxford(tmp_path, per_breed=4, test_per_breed=1)
    return OxfordPets(tmp_path, image_size=32, val_fraction=0.5, batch_size=4)


def _folder(tmp_path):
    make_image_folder(tmp_path)
    return ImageFolder(tmp_path, image_size=32, batch_size=4)


@pytest.mark.parametrize("build", [_synthetic, _oxford, _folder])
def test_the_shared_interface(tmp_path, build):
    dm = build(tmp_path)
    assert isinstance(dm, CamlightDataModule)
    dm.prepare_data()
    dm.setup()
    assert len(dm.class_names) >= 2 and len(dm.mean) == len(dm.std) == 3
    assert dm.describe() and "\n" not in dm.describe()
    paths = dm.paths()
    assert (dm.root is None) == (paths == {})
    assert all(Path(p).is_absolute() for p in paths.values())
    for split in ("train", "val", "test"):
        assert dm.split_size(split) == len(dm.dataset(split))
    val = list(dm.samples("val"))
    assert [i for i, _ in val] == list(range(dm.split_size("val")))
    assert {"image", "label", "mask", "box"} <= set(val[0][1])
    probe = dm.probe_batch(2)
    assert probe["image"].shape == (2, 3, 32, 32) and torch.equal(probe["image"], dm.probe_batch(2)["image"])
    assert "single" in dm.probe_modes
    if "pair" in dm.probe_modes:
        assert "class_masks" in dm.probe_batch(2, mode="pair")
    assert dm.bad_files() == {}
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32)
    assert dm.eval_resize is None or dm.eval_resize >= 32


def test_bad_files_met_while_streaming_a_split_are_counted(tmp_path):
    dm = _oxford(tmp_path)
    dm.setup()
    victim = dm.records["val"][1].path
    truncate(victim)
    indices = [i for i, _ in dm.samples("val")]
    assert 1 not in indices and len(indices) == dm.split_size("val") - 1
    assert list(dm.bad_files()) == [str(victim)]
    dm.add_bad_files([("elsewhere.jpg", "seen on another rank")])
    assert set(dm.bad_files()) == {str(victim), "elsewhere.jpg"}
