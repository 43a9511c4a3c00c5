"""Datamodules: every split yields the camlight batch format (see `SyntheticPets`).

`SyntheticPets` is the embedded default; `OxfordPets`, `ImageFolder` and `CUB` load real photos with
their boxes and masks through `torchvision.transforms.v2`. All of them offer the same interface
(`CamlightDataModule`). `from_config` builds any of them from the `data` section of a run config
(`train.py` and `explain.py split=` both use it).
"""

from __future__ import annotations

from collections.abc import Mapping

from camlight.datamodules.base import PhotoDataModule
from camlight.datamodules.cub import CUB
from camlight.datamodules.image_folder import ImageFolder
from camlight.datamodules.interface import SPLITS, CamlightDataModule, Skipped
from camlight.datamodules.io import BadFile, DataError
from camlight.datamodules.oxford_pets import OxfordPets
from camlight.datamodules.synthetic import SyntheticPets, SyntheticPetsDataset
from camlight.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, TRAIN_SCALE

DATASETS = ("synthetic", "oxford_pets", "image_folder", "cub")


def from_config(
    d: Mapping,
    mean=None,
    std=None,
    pin_memory: bool = False,
    num_workers: int | None = None,
    resize: int | None = None,
    interpolation: str = "bilinear",
):
    """The datamodule of a config's `data` section (a DictConfig or a plain dict).

    Args:
        d: the `data` section.
        mean, std: input normalisation (default: the dataset's own, ImageNet's for photos).
        pin_memory: DataLoader pinned memory.
        num_workers: overrides `d["num_workers"]` (which may be "auto").
        resize, interpolation: photos' evaluation resize (default: `d["resize"]`, else 8/7 of the
            crop) and the interpolation of every resize (pretrained weights bring their own).
    """
    dm = _datamodule(d, mean, std, pin_memory, num_workers, resize, interpolation)
    dm.random_labels, dm.random_labels_seed = bool(d.get("random_labels", False)), int(d.get("seed", 0))
    return dm


def _datamodule(d: Mapping, mean, std, pin_memory, num_workers, resize, interpolation):
    workers = d["num_workers"] if num_workers is None else num_workers
    if d["name"] == "synthetic":
        return SyntheticPets(
            image_size=d["image_size"],
            train_size=d["train_size"],
            val_size=d["val_size"],
            test_size=d["test_size"],
            batch_size=d["batch_size"],
            num_workers=workers,
            seed=d["seed"],
            pin_memory=pin_memory,
            cache=d["cache"],
            shortcut=float(d["shortcut_correlation"]) if d.get("shortcut") else None,
            layout=d.get("layout", "default"),
            **({"mean": tuple(mean), "std": tuple(std)} if mean is not None else {}),
        )
    if d.get("shortcut"):
        raise DataError(f"data.shortcut draws its mark on SyntheticPets only, not data.name={d['name']}")
    if not d.get("root"):
        raise DataError(f"data.root is required with data.name={d['name']}: the folder holding the dataset")
    common = dict(
        image_size=d["image_size"],
        resize=resize or d.get("resize"),
        interpolation=interpolation,
        batch_size=d["batch_size"],
        num_workers=workers,
        pin_memory=pin_memory,
        seed=d["seed"],
        train_scale=tuple(d.get("train_scale") or TRAIN_SCALE),
        mean=tuple(mean or IMAGENET_MEAN),
        std=tuple(std or IMAGENET_STD),
    )
    if d["name"] == "oxford_pets":
        return OxfordPets(
            d["root"],
            target=d["target"],
            val_fraction=d["val_fraction"],
            download=d["download"],
            boxes=d.get("boxes", "auto"),
            **common,
        )
    if d["name"] == "image_folder":
        return ImageFolder(
            d["root"],
            classes=list(d.get("classes") or []) or None,
            boxes=d["boxes"],
            box_dir=d.get("box_dir"),
            val_fraction=d["val_fraction"],
            **common,
        )
    if d["name"] == "cub":
        return CUB(d["root"], val_fraction=d["val_fraction"], **common)
    raise DataError(f"unknown data.name={d['name']!r}; choose one of {', '.join(DATASETS)}")


__all__ = [
    "CUB",
    "DATASETS",
    "SPLITS",
    "BadFile",
    "CamlightDataModule",
    "DataError",
    "ImageFolder",
    "OxfordPets",
    "PhotoDataModule",
    "Skipped",
    "SyntheticPets",
    "SyntheticPetsDataset",
    "from_config",
]
