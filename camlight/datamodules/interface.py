"""The interface every camlight datamodule offers, so that the code gluing them never asks which kind it holds.

`SyntheticPets` (drawn) and the photo datamodules (`OxfordPets`, `ImageFolder`) differ in where
samples come from; to training, the callback and `explain.py` they look the same:

- `class_names`, `mean`/`std` (to undo normalisation for display), `image_size`;
- `eval_resize`, `interpolation`: how evaluation images are prepared (None: squashed to
  `image_size`²; a number: shorter side to it, then a centre crop), recorded in checkpoints so new
  images are prepared alike;
- `root`: the folder the data lives in (None for drawn data), and `paths()`: every config key that
  names a folder, made absolute;
- `prepare_data()` / `setup()` (Lightning's: download on one process, index on every one);
- `split_size(split)`, `dataset(split)` (evaluation transform) and `samples(split)` (the good
  samples with their index; unusable files are counted, not yielded);
- `probe_batch(n, mode)`, with the modes listed in `probe_modes` ("pair": a cat and a dog in
  one image, where the data can draw one);
- `bad_files()` ({path: reason} of every unusable file seen) and `add_bad_files(...)`;
- `describe()`: one line saying what was found where.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class Skipped:
    """What a dataset yields for a file it cannot use, instead of a sample."""

    path: str
    reason: str


class CamlightDataModule(pl.LightningDataModule):
    """Base of every camlight datamodule: loaders, bad-file counting and the shared interface.

    Subclasses set `class_names`, `mean`, `std` and implement `dataset(split, train=False)`,
    `split_size(split)`, `probe_batch(n, mode, seed)` and `describe()`.

    Args:
        image_size: side of the square samples in pixels.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes.
        pin_memory: DataLoader pinned memory (for GPU training).
        mean, std: per-channel normalisation of the images.

    `random_labels = True` (set after construction; `data.random_labels`) trains on the training
    labels permuted once (seeded by `random_labels_seed`): the network of Adebayo et al.'s data
    randomization test, which can only memorise. Validation, test and the probe keep the true labels.
    """

    class_names: tuple[str, ...] = ()
    root: Path | None = None
    eval_resize: int | None = None
    interpolation: str = "bilinear"
    probe_modes: tuple[str, ...] = ("single",)

    def __init__(self, image_size: int, batch_size: int, num_workers: int, pin_memory: bool, mean, std):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.pin_memory = pin_memory
        self.mean, self.std = tuple(mean), tuple(std)
        self.skipped: dict[str, str] = {}  # path → reason, every bad file seen in this process
        self.random_labels, self.random_labels_seed = False, 0

    # -- what subclasses provide --------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Index the data (and check its layout); drawn data has nothing to index."""

    def dataset(self, split: str, train: bool = False) -> Dataset:  # pragma: no cover - abstract
        """The samples of `split` (training augmentation with `train=True`, else the evaluation transform)."""
        raise NotImplementedError

    def split_size(self, split: str) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def probe_batch(self, n: int, mode: str = "single", seed: int = 0) -> dict[str, torch.Tensor]:  # pragma: no cover
        """The same `n` validation samples on every call (chosen by `seed`), as one CPU batch."""
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        """One line: what was found where."""
        raise NotImplementedError

    # Collation of a list of samples into a batch: a plain function (workers may pickle it).
    collate_fn = staticmethod(default_collate)

    def drop_last(self, split: str) -> bool:
        """Whether the training loader drops its last, incomplete batch."""
        return False

    def paths(self) -> dict[str, str]:
        """The data config's keys that name folders, absolute (so a run config works from anywhere)."""
        return {} if self.root is None else {"root": str(self.root)}

    # -- shared -------------------------------------------------------------------------------

    def samples(self, split: str) -> Iterator[tuple[int, dict]]:
        """(index, sample) for every usable sample of `split`, one at a time (evaluation transform);
        unusable files are counted in `bad_files()`."""
        dataset = self.dataset(split)
        for i in range(len(dataset)):
            item = dataset[i]
            if isinstance(item, Skipped):
                self.add_bad_files([(item.path, item.reason)])
            else:
                yield i, item

    def bad_files(self) -> dict[str, str]:
        """{path: reason} of every unusable file this process has seen."""
        return dict(self.skipped)

    def add_bad_files(self, files: Iterable[tuple[str, str]]) -> None:
        """Count unusable files; each is logged the first time it is seen."""
        for path, reason in files:
            if path not in self.skipped:
                self.skipped[path] = reason
                log.warning("skipped %s: %s (%d bad files so far)", path, reason, len(self.skipped))

    def labels(self, split: str) -> list[int]:  # pragma: no cover - abstract
        """The label of every sample of `split`, without loading the images."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its labels")

    def permuted_labels(self, split: str = "train") -> torch.Tensor:
        """(N,) int64: the labels of `split` permuted once by `random_labels_seed` (the class counts stay)."""
        labels = torch.tensor(self.labels(split), dtype=torch.int64)
        return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.random_labels_seed))]

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.dataset(split, train)
        if self.random_labels and split == "train":
            dataset = RelabelledDataset(dataset, self.permuted_labels(split))
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and self.drop_last(split),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            # Training workers start afresh every epoch, seeded from the main generator: a run
            # resumed from a checkpoint then augments as the uninterrupted run did (persistent
            # workers would carry their generators' history from epoch to epoch).
            persistent_workers=self.num_workers > 0 and not train,
            collate_fn=self.collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


class RelabelledDataset(Dataset):
    """A dataset whose samples carry other labels (`labels[i]` for sample i); a `Skipped` stays one."""

    def __init__(self, dataset: Dataset, labels: torch.Tensor):
        if len(labels) != len(dataset):
            raise ValueError(f"{len(labels)} labels for {len(dataset)} samples")
        self.dataset, self.labels = dataset, labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        if isinstance(item, Skipped):
            return item
        return {**item, "label": self.labels[index].clone()}
