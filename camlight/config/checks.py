"""Checks of a merged config beyond its types: choices, bounds, combinations, a writable out_dir."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from camlight.config.commands import EvaluateConfig
from camlight.config.schema import Config, fields

LAYOUTS = ("default", "small")  # SyntheticPets' layouts (camlight.datamodules.drawing.LAYOUTS)


class ConfigError(ValueError):
    """A user's mistake in the configuration; the message is one line saying what to do."""


def validate(cfg: DictConfig, schema: type | None = None) -> None:
    """Check choices, bounds and combinations; raise ConfigError on the first problem."""
    schema = schema or Config
    for key, f, _ in fields(schema):
        value = OmegaConf.select(cfg, key)
        choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
        if choices and value not in choices:
            raise ConfigError(
                f"invalid {key}={value!r}; choose one of {', '.join(str(c) for c in choices if c is not None)}"
            )
        if minimum is not None and value is not None and value < minimum:
            bound = "positive" if minimum == 1 else f">= {minimum}"
            raise ConfigError(f"invalid {key}={value}; it must be {bound}")
    if schema is Config:
        for key in ("trainer.limit_train_batches", "trainer.limit_val_batches"):
            _check_limit(key, OmegaConf.select(cfg, key))
        check_data(cfg.data)
        _check_choice("model.pretrained", cfg.model.pretrained, (True, False, "auto"))
        if not 0.0 <= cfg.model.dropout < 1.0:
            raise ConfigError(f"invalid model.dropout={cfg.model.dropout}; use a probability from 0 up to (not) 1")
        _check_writable(Path(cfg.out_dir))
    if "device" in cfg:
        check_device(cfg.device)
    if cfg.get("out"):
        _check_writable(Path(cfg.out), "out")
    if schema is EvaluateConfig:
        _check_limit("trainer.limit_predict_batches", cfg.trainer.limit_predict_batches)
        _check_evaluate(cfg)


def _check_choice(key: str, value: Any, valid: tuple) -> None:
    if not any(value is v or value == v and type(value) is type(v) for v in valid):
        shown = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in valid)
        raise ConfigError(f"invalid {key}={value!r}; choose one of {shown}")


def check_data(d: DictConfig) -> None:
    """The data section's checks beyond types and choices (num_workers, ...)."""
    w = d.num_workers
    if not (w == "auto" or (isinstance(w, int) and not isinstance(w, bool) and w >= 0)):
        raise ConfigError(f"invalid data.num_workers={w!r}; use a count >= 0 or auto")
    _check_choice("data.pin_memory", d.pin_memory, (True, False, "auto"))
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"invalid data.val_fraction={d.val_fraction}; use a fraction between 0 and 1, e.g. 0.1")
    scale = list(d.train_scale)
    if len(scale) != 2 or not all(isinstance(v, (int, float)) for v in scale) or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(
            f"invalid data.train_scale={scale}; use [low, high] with 0 < low <= high <= 1, e.g. [0.35, 1.0]"
        )
    if d.resize is not None and d.resize < d.image_size:
        raise ConfigError(
            f"invalid data.resize={d.resize}; it must be at least data.image_size={d.image_size} (or null)"
        )
    if d.layout not in LAYOUTS:
        raise ConfigError(f"unknown data.layout={d.layout!r}; choose one of {', '.join(LAYOUTS)}")
    if d.layout != "default" and d.name != "synthetic":
        raise ConfigError(f"data.layout places SyntheticPets' animals; use data.name=synthetic, not {d.name}")
    if not 0.0 <= d.shortcut_correlation <= 1.0:
        raise ConfigError(f"invalid data.shortcut_correlation={d.shortcut_correlation}; use a share between 0 and 1")
    if d.shortcut and d.name != "synthetic":
        raise ConfigError(f"data.shortcut draws its mark on SyntheticPets only; use data.name=synthetic, not {d.name}")
    if d.name != "synthetic" and not d.root:
        raise ConfigError(f"data.root is required with data.name={d.name}: the folder holding the dataset")


def num_workers(value: Any) -> int:
    """data.num_workers as a count: "auto" is the CPU cores this process may use, at most 8."""
    if value != "auto":
        return int(value)
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores)


def _check_limit(key: str, value: Any) -> None:
    ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
        isinstance(value, float) and 0.0 <= value <= 1.0
    )
    if not ok:
        raise ConfigError(f"invalid {key}={value!r}; use a fraction between 0.0 and 1.0 or a whole number of batches")


def heads(cfg: DictConfig) -> list[str]:
    """The heads a config trains, in order."""
    return ["gap", "fc"] if cfg.model.head == "both" else [cfg.model.head]


def _check_writable(out_dir: Path, key: str = "out_dir") -> None:
    probe = out_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{key}={out_dir} is not a directory ({probe} is a file); choose another {key}")
    try:  # a real write: permission bits do not tell root, nor a read-only or virtual file system
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ConfigError(f"{key}={out_dir} is not writable ({probe}: {e.strerror}); choose another {key}") from None


def check_device(name: str) -> None:
    """device= of explain.py's commands: cpu, auto, or a device this machine has (cuda, cuda:1, mps)."""
    import torch

    name = str(name)
    if name in ("cpu", "auto"):
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"invalid device={name!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device={name}: torch sees no CUDA GPU on this machine; use device=cpu (or auto)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device={name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"device={name}: no Apple GPU (MPS) here; use device=cpu (or auto)")
    elif device.type != "cpu":
        raise ConfigError(f"device={name}: camlight runs on cpu, cuda or mps; use one of those, or auto")


def _numbers(key: str, values, low: float, high: float, whole: bool = False) -> None:
    """Every value a number (a whole one with `whole`) in [low, high]; ConfigError otherwise."""
    for v in values:
        kind = int if whole else (int, float)
        if isinstance(v, bool) or not isinstance(v, kind) or not low <= v <= high:
            what = "whole numbers" if whole else "numbers"
            raise ConfigError(f"invalid {key}={v!r}; use {what} from {low:g} to {high:g}")


def _check_evaluate(cfg: DictConfig) -> None:
    """The protocols' options of `explain.py evaluate`."""
    _numbers("cam_threshold", [cfg.cam_threshold], 0.0, 1.0)
    _numbers("threshold_step", [cfg.threshold_step], 1e-6, 0.5)
    if not cfg.wsol_ious:
        raise ConfigError("wsol_ious= is empty; give the IoU thresholds, e.g. [0.3,0.5,0.7]")
    _numbers("wsol_ious", cfg.wsol_ious, 0.01, 1.0)
    _numbers("topk", cfg.topk, 1, 10**6, whole=True)
    if cfg.tolerance is not None:
        _numbers("tolerance", [cfg.tolerance], 0.0, 10**6)
