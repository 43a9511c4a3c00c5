"""SyntheticPets: the embedded default dataset, offline, in seconds, with exact ground truth."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from camlight.datamodules.drawing import CLASS_NAMES, LAYOUTS, render, sample_scene
from camlight.datamodules.interface import CamlightDataModule
from camlight.datamodules.transforms import mask_box

SPLITS = ("train", "val", "test", "pair")
# Channel mean and std of the drawn images (measured over 4,000 training images at 64 px).
MEAN = (0.497, 0.494, 0.490)
STD = (0.222, 0.220, 0.218)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one sample: a function of (seed, split, index) only."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


SHORTCUT_COLOR = (1.0, 0.0, 1.0)  # magenta: a colour no animal or background is drawn in
SHORTCUT_CLASS = 1  # the mark goes on dogs in training


def shortcut_square(image_size: int) -> tuple[slice, slice]:
    """(rows, cols) of the shortcut mark: a square of side S/8 (at least 4 px), 2 px from the
    top-left corner."""
    side = max(4, image_size // 8)
    return slice(2, 2 + side), slice(2, 2 + side)


def shortcut_marked(seed: int, split: str, index: int, label: int, correlation: float) -> bool:
    """Whether sample `index` carries the mark: in training, a `correlation` share of the dogs
    (never a cat); elsewhere half of the images, whatever their class."""
    draw = np.random.default_rng([seed, SPLITS.index(split), index, 7]).random()  # apart from the scene's
    if split == "train":
        return label == SHORTCUT_CLASS and draw < correlation
    return draw < 0.5


class SyntheticPetsDataset(Dataset):
    """`size` samples of one split, each drawn on demand from (seed, split, index).

    Samples are dicts in the camlight batch format: `image` (3,S,S) float32 normalised,
    `label` int64, `mask` (S,S) bool (face ∪ ears), `box` (4,) float32 xyxy end-exclusive and
    `parts` (S,S) bool (the ears), and `index` (the sample's number in its split). The `pair` split draws a cat and a dog in every image and gives
    instead of `label` the per-class ground truth `class_masks` (2,S,S) bool and `class_boxes`
    (2,4) float32, indexed by class (0 = cat, 1 = dog); `mask` and `box` cover both animals.

    Args:
        split: one of "train", "val", "test", "pair".
        size: number of samples.
        image_size: side S in pixels, at least 32.
        seed: dataset seed; together with split and index it fixes every pixel.
        mean, std: per-channel normalisation.
        shortcut: the correlation (0–1) of a shortcut mark with the dog class, or None for no
            mark: a magenta square in the top-left corner (`shortcut_square`) on that share of the
            training dogs and on half of the other splits' images whatever their class, with its
            pixels as `shortcut_mask` (S,S) bool in every sample (the canary of a shortcut: a
            network that learns the mark looks at it).
        layout: "default" or "small" (smaller animals off centre, where a map that ignores the
            image scores low; see `sample_scene`).
        cache: keep every drawn sample in memory, so later epochs skip drawing (about 60 KB per
            sample at 64 px; each DataLoader worker keeps its own copy).
    """

    def __init__(
        self,
        split: str,
        size: int,
        image_size: int = 64,
        seed: int = 0,
        mean=MEAN,
        std=STD,
        cache=False,
        shortcut: float | None = None,
        layout: str = "default",
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if image_size < 32:
            raise ValueError(f"image_size={image_size} is too small to draw an animal; use 32 or more")
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        if shortcut is not None and not 0 <= shortcut <= 1:
            raise ValueError(f"shortcut correlation must be between 0 and 1, got {shortcut}")
        self.split, self.size, self.image_size, self.seed = split, size, image_size, seed
        self.shortcut, self.layout = shortcut, layout
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self._cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.size

    def scene(self, index: int):
        """The parameters of sample `index` (see `camlight.datamodules.drawing`)."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        rng = scene_rng(self.seed, self.split, index)
        return sample_scene(rng, self.image_size, pair=self.split == "pair", layout=self.layout)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._cache is not None:
            if index not in self._cache:
                self._cache[index] = self._draw(index)
            return dict(self._cache[index])
        return self._draw(index)

    def _draw(self, index: int) -> dict[str, torch.Tensor]:
        scene = self.scene(index)
        out = render(scene)
        mark = None
        if self.shortcut is not None:
            mark = np.zeros(out.image.shape[1:], dtype=bool)
            if shortcut_marked(self.seed, self.split, index, scene.animals[0].label, self.shortcut):
                rows, cols = shortcut_square(self.image_size)
                mark[rows, cols] = True
                out.image[:, mark] = np.array(SHORTCUT_COLOR, dtype=out.image.dtype)[:, None]
        image = (torch.from_numpy(out.image) - self.mean) / self.std
        mask = torch.from_numpy(out.masks.any(axis=0))
        sample = {"image": image, "mask": mask, "box": mask_box(mask), "index": torch.tensor(index)}
        if mark is not None:
            sample["shortcut_mask"] = torch.from_numpy(mark)
        if self.split == "pair":
            order = np.argsort([a.label for a in scene.animals])
            sample["class_masks"] = torch.from_numpy(out.masks[order])
            sample["class_boxes"] = torch.stack([mask_box(m) for m in sample["class_masks"]])
        else:
            sample["label"] = torch.tensor(scene.animals[0].label, dtype=torch.int64)
            sample["parts"] = torch.from_numpy(out.parts[0])
        return sample


class SyntheticPets(CamlightDataModule):
    """Cartoon cats and dogs on cluttered backgrounds; the ears are the only class evidence.

    Args:
        image_size: side in pixels (>= 32).
        train_size, val_size, test_size: samples per split.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (samples are identical for any number).
        seed: dataset seed (independent of the training seed).
        pin_memory: DataLoader pinned memory (for GPU training).
        cache: keep drawn train/val/test samples in memory after their first epoch.
        shortcut: a shortcut mark's correlation with the dog class in training (see
            `SyntheticPetsDataset`), or None.
        layout: "default", or "small" for smaller animals off the image centre (see
            `SyntheticPetsDataset`).
        mean, std: per-channel normalisation (default: the drawn images' own statistics).

    Example::

        dm = SyntheticPets(image_size=64)
        probe = dm.probe_batch(8)            # the same 8 validation samples on every call
        pair = dm.probe_batch(4, mode="pair")  # a cat and a dog in every image
    """

    class_names = CLASS_NAMES
    probe_modes = ("single", "pair")

    def __init__(
        self,
        image_size: int = 64,
        train_size: int = 4000,
        val_size: int = 1000,
        test_size: int = 1000,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        cache: bool = True,
        mean=MEAN,
        std=STD,
        shortcut: float | None = None,
        layout: str = "default",
    ):
        super().__init__(image_size, batch_size, num_workers, pin_memory, mean, std)
        self.seed, self.shortcut, self.layout = seed, shortcut, layout
        self.shortcut_class = None if shortcut is None else SHORTCUT_CLASS  # the class the mark goes with
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.datasets = {
            s: SyntheticPetsDataset(s, n, image_size, seed, self.mean, self.std, cache, shortcut, layout)
            for s, n in self.sizes.items()
        }

    def dataset(self, split: str, train: bool = False) -> SyntheticPetsDataset:
        """The drawn samples of `split` (no augmentation: `train` changes nothing)."""
        return self.datasets[split]

    def split_size(self, split: str) -> int:
        return self.sizes[split]

    def labels(self, split: str) -> list[int]:
        """Each sample's class from its scene's parameters (nothing drawn)."""
        dataset = self.datasets[split]
        return [int(dataset.scene(i).animals[0].label) for i in range(len(dataset))]

    def describe(self) -> str:
        sizes = ", ".join(f"{s} {n}" for s, n in self.sizes.items())
        mark = "" if self.shortcut is None else f"; a shortcut mark on {self.shortcut:.0%} of the training dogs"
        layout = "" if self.layout == "default" else "; small animals off centre"
        return (
            f"SyntheticPets at {self.image_size} px (seed {self.seed}): {sizes} images, drawn with exact ground truth"
            f"{mark}{layout}"
        )

    def probe_batch(self, n: int, mode: str = "single", seed: int = 0) -> dict[str, torch.Tensor]:
        """The same `n` probe samples on every call, as one batch on the CPU.

        Args:
            n: number of samples.
            mode: "single" picks `n` validation samples (chosen by `seed`); "pair" draws `n` images
                holding a cat and a dog each, with `class_masks` and `class_boxes` per class.
            seed: which validation samples "single" picks.
        """
        if mode == "pair":
            dataset = SyntheticPetsDataset("pair", n, self.image_size, self.seed, self.mean, self.std)
            indices = range(n)
        elif mode == "single":
            dataset = self.datasets["val"]
            if not 0 < n <= len(dataset):
                raise ValueError(f"probe size {n} must be between 1 and the validation size {len(dataset)}")
            g = torch.Generator().manual_seed(seed)
            indices = torch.randperm(len(dataset), generator=g)[:n].sort().values.tolist()
        else:
            raise ValueError(f"unknown probe mode {mode!r}; choose 'single' or 'pair'")
        return default_collate([dataset[i] for i in indices])
