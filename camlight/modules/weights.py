"""Pretrained weights by model name: where they come from, where they are cached, what they expect.

Weights come through torchvision's weights API and timm's own loader, into their caches, with a
progress bar; nothing else in camlight touches the network. A download that fails says in one
line what was fetched, from where, and where to put the file by hand (`WeightsUnavailable`).
`CAMLIGHT_OFFLINE=1` (with `HF_HUB_OFFLINE=1` for timm) forbids downloads altogether. Their
preprocessing (resize, crop, mean, std, interpolation) comes with them: `Preprocessing`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from camlight.modules.backbones import BACKBONES

TIMM = "timm:"
OFFLINE = "CAMLIGHT_OFFLINE"  # set: never download, as on a machine without network


class WeightsUnavailable(OSError):
    """Pretrained weights that could not be had; the message says from where and where to put them."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes an input: resize the shorter side to `resize` (None: squash the whole
    image to `image_size`²), centre crop `image_size`, scale to [0,1], normalise with `mean`/`std`."""

    image_size: int
    resize: int | None = None
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    interpolation: str = "bilinear"

    def scaled_to(self, image_size: int) -> Preprocessing:
        """The same recipe for another crop size (the resize keeps its ratio to the crop)."""
        resize = None if self.resize is None else round(self.resize * image_size / self.image_size)
        return Preprocessing(image_size, resize, self.mean, self.std, self.interpolation)

    def as_dict(self) -> dict:
        """The `Classifier.preprocessing` form (what checkpoints record)."""
        return {
            "image_size": self.image_size,
            "eval_resize": self.resize,
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "interpolation": self.interpolation,
        }


# -- weights --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """Pretrained weights of a model: where they come from, where they are cached, what they expect."""

    model: str  # the model name
    tag: str  # e.g. "IMAGENET1K_V1", or timm's pretrained tag
    url: str
    path: Path | None  # the cache file (None where the loader keeps its own cache: timm)
    preprocessing: Preprocessing
    categories: tuple[str, ...]
    _load: Callable[[], dict]  # → the state dict (downloads when missing)
    _in_cache: Callable[[], bool] | None = None  # where the loader keeps its own cache (timm's hub)

    def cached(self) -> bool:
        if self._in_cache is not None:
            return self._in_cache()
        return self.path is not None and self.path.is_file()

    def state_dict(self) -> dict:
        """The weights, downloaded into the cache (with a progress bar) when they are not there.

        Raises:
            WeightsUnavailable: the download failed, or `CAMLIGHT_OFFLINE` is set and they are not
                cached; the message says where to put the file.
        """
        if os.environ.get(OFFLINE) and not self.cached():
            raise self._unavailable(f"{OFFLINE} is set")
        try:
            return self._load()
        except (OSError, RuntimeError, ValueError) as e:  # urllib, http and hub errors
            raise self._unavailable(f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}") from None

    def _unavailable(self, why: str) -> WeightsUnavailable:
        where = f"put the file at {self.path}" if self.path else "fill timm's cache (HF_HOME) on a machine with network"
        return WeightsUnavailable(
            f"cannot download the {self.model} weights ({self.tag}) from {self.url} ({why}); {where}"
        )


def torchvision_weights(name: str, tag: str | None = None) -> Weights | None:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (KeyError, ValueError):
        return None
    try:
        member = enum.DEFAULT if tag in (None, "DEFAULT") else enum[tag]
    except KeyError:
        raise ValueError(f"{name} has no weights {tag!r}; choose one of {', '.join(enum.__members__)}") from None
    t = member.transforms()
    crop, resize = t.crop_size[0], t.resize_size[0]
    interpolation = getattr(t.interpolation, "value", str(t.interpolation))
    pre = Preprocessing(crop, resize, tuple(t.mean), tuple(t.std), interpolation)
    path = Path(torch.hub.get_dir()) / "checkpoints" / member.url.rsplit("/", 1)[-1]
    return Weights(
        name,
        member.name,
        member.url,
        path,
        pre,
        tuple(member.meta.get("categories", ())),
        lambda: member.get_state_dict(progress=True, weights_only=True),
    )


def timm_weights(name: str) -> Weights:
    timm = timm_module()
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights for {name!r}")
    cfg = cfg.to_dict()
    size = cfg.get("input_size", (3, 224, 224))[-1]
    crop_pct = cfg.get("crop_pct", 0.875)
    pre = Preprocessing(
        size, round(size / crop_pct), tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bilinear")
    )
    hub = cfg.get("hf_hub_id")
    url = f"https://huggingface.co/{hub}" if hub else (cfg.get("url") or name)
    try:
        info = timm.data.ImageNetInfo(timm.data.infer_imagenet_subset(cfg) or "imagenet-1k")
        categories = tuple(info.index_to_description(i) for i in range(info.num_classes()))
    except Exception:  # noqa: BLE001 - not an ImageNet model: classes are numbered
        categories = ()

    def load() -> dict:
        return timm.create_model(name, pretrained=True).state_dict()

    def in_cache() -> bool:
        if hub:
            from huggingface_hub import try_to_load_from_cache

            return any(
                isinstance(try_to_load_from_cache(hub, f), str) for f in ("model.safetensors", "pytorch_model.bin")
            )
        file = Path(torch.hub.get_dir()) / "checkpoints" / str(cfg.get("url", "")).rsplit("/", 1)[-1]
        return bool(cfg.get("url")) and file.is_file()

    return Weights(name, cfg.get("tag") or "default", url, None, pre, categories, load, in_cache)


def weights_of(backbone: str, tag: str | None = None) -> Weights | None:
    """The pretrained weights of a backbone or model name (None: it has none)."""
    if backbone.startswith(TIMM):
        return timm_weights(backbone[len(TIMM) :])
    if backbone in BACKBONES:
        spec = BACKBONES[backbone]
        return None if spec.pretrained is None else torchvision_weights(backbone, spec.pretrained().name)
    return torchvision_weights(backbone, tag)


def multi_process_launch() -> bool:
    """Whether this process is one of several started together (torchrun, SLURM)."""
    return max(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("SLURM_NTASKS", "1"))) > 1


def timm_module():
    """timm, or a ValueError saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ValueError("timm:<name> needs timm: pip install 'camlight[timm]' (or pip install timm)") from None


def random_weights_asked(tag: str | None) -> bool:
    """weights=none: random weights, nothing downloaded."""
    return tag is not None and str(tag).lower() == "none"
