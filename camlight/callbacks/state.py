"""`RandomState`: the random generators saved in every checkpoint, so that a resumed run draws the
numbers an uninterrupted one would have drawn."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch


def _collect() -> dict:
    """The torch (CPU and every CUDA device), NumPy and Python generators' states, as tensors,
    lists and numbers only (a checkpoint stays loadable with `torch.load(weights_only=True)`)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "python": [version, list(internal), gauss],
    }


def _restore(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class RandomState(pl.Callback):
    """Saves every generator's state in each checkpoint and, when training resumes from one,
    restores it as Lightning restores the callbacks: before the optimizers are configured, which
    (`estimated_stepping_batches`) creates the training data's first iterator and fetches its first
    batch, drawing the shuffling seed. Checkpoints are written at the end of an epoch's validation,
    after which nothing in an uninterrupted run draws a random number before the next epoch's
    iterator; Lightning's sanity validation runs with the generators isolated. So the resumed run
    shuffles, drops out and augments exactly as the uninterrupted run did.

    Under strategies that restore checkpoints only after their setup (`restore_checkpoint_after_setup`,
    e.g. DeepSpeed), the first resumed epoch's shuffling is drawn before the restore.
    """

    def state_dict(self) -> dict:
        return _collect()

    def load_state_dict(self, state_dict: dict) -> None:
        _restore(state_dict)
