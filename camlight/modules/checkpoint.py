"""Reading camlight checkpoints safely: one `torch.load(weights_only=True)` per file.

A checkpoint is a pickle, and a pickle can run code when it is loaded. camlight checkpoints hold
only tensors and plain Python values (the hyperparameters are strings, numbers and tuples; the run
config is stored as a plain dict), so every checkpoint is read with `weights_only=True`, which
refuses anything else before it runs. Everything a user may need from the file, the model and the
run config, comes from that one read.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from camlight.modules.classifier import Classifier


class CheckpointError(ValueError):
    """A file that is not a camlight checkpoint, or one refused as unsafe; the message is one line."""


@dataclass(frozen=True)
class Checkpoint:
    """What one read of a checkpoint gives: the model (eval mode) and the run config it was trained with."""

    path: Path
    model: Classifier
    config: dict | None  # the resolved run config (None: not saved by train.py)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents, unpickled with `weights_only=True`.

    Raises:
        CheckpointError: missing file, not a checkpoint, or a pickle that would need more than
            tensors and plain values (it may run code when loaded: it is refused, never run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; give the path of a .ckpt file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+) was not an allowed global", str(e))
        if found is None:  # not a pickle torch can read at all
            raise CheckpointError(f"{path} is not a camlight checkpoint (not a PyTorch checkpoint file)") from None
        raise CheckpointError(
            f"{path} was refused: it holds objects other than tensors and plain values ({found.group(1)}), "
            "which could run code when loaded; camlight reads checkpoints with torch.load(weights_only=True) only"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a camlight checkpoint ({first})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the `Classifier` of a checkpoint (eval mode) and read its run config, from one read.

    The weights come from the checkpoint, so pretrained weights are not looked up again.

    Raises:
        CheckpointError: see `read_checkpoint`; also a checkpoint of another model.
    """
    contents = read_checkpoint(path)
    hparams = contents.get("hyper_parameters") if isinstance(contents, dict) else None
    if not isinstance(hparams, dict) or "state_dict" not in contents:
        raise CheckpointError(f"{path} is not a camlight checkpoint (no hyper_parameters or state_dict)")
    try:
        model = Classifier(**{**hparams, "pretrained": False})
        model.load_state_dict(contents["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a camlight checkpoint ({str(e).splitlines()[0][:120]})") from None
    config = _config(contents)
    model.run_config = config
    return Checkpoint(Path(path), model.to(map_location).eval(), config)


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> Classifier:
    """The `Classifier` of a checkpoint, in eval mode (see `load_checkpoint`)."""
    return load_checkpoint(path, map_location).model


def checkpoint_config(path: str | Path) -> dict | None:
    """The resolved run config stored in a camlight checkpoint (None when it holds none)."""
    return _config(read_checkpoint(path))


def _config(contents) -> dict | None:
    entry = contents.get("camlight") if isinstance(contents, dict) else None
    config = entry.get("config") if isinstance(entry, dict) else None
    return config if isinstance(config, dict) else None
