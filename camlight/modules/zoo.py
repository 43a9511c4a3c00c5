"""Models by name: backbones to train, whole classifiers to explain, their weights and preprocessing.

Names:

- camlight's built-ins: `simple_cnn`, `resnet18`, `vgg16` (see `camlight.modules.backbones`);
- every torchvision classification model: `resnet50`, `efficientnet_b0`, `convnext_tiny`,
  `vit_b_16`, ... (`torchvision.models.list_models`), optionally with its weights,
  `torchvision:resnet50:IMAGENET1K_V2`;
- `timm:<name>` when timm is installed (`pip install camlight[timm]`).

Weights come through torchvision's weights API and timm's own loader, into their caches, with a
progress bar; nothing else in camlight touches the network. A download that fails says in one
line what was fetched, from where, and where to put the file by hand (`WeightsUnavailable`).
`CAMLIGHT_OFFLINE=1` (with `HF_HUB_OFFLINE=1` for timm) forbids downloads altogether.
Their preprocessing (resize, crop, mean, std, interpolation) comes with them: `Preprocessing`.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

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


# -- names ----------------------------------------------------------------------------------


def torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def describe_backbones() -> str:
    """The valid `model.backbone` values, in one line (for --help and error messages)."""
    return (
        f"{', '.join(BACKBONES)}, any torchvision classification model ({len(torchvision_names())} names, "
        "e.g. resnet50, efficientnet_b0, convnext_tiny, swin_t, vit_b_16), or timm:<name> (with timm installed)"
    )


def check_backbone(name: str) -> None:
    """ValueError in one line, with the closest names, for a backbone that does not exist."""
    if name in BACKBONES or name in torchvision_names():
        return
    if name.startswith(TIMM):
        timm = _timm()
        if name[len(TIMM) :] not in timm.list_models() and not timm.is_model(name[len(TIMM) :]):
            close = difflib.get_close_matches(name[len(TIMM) :], timm.list_models(), n=3)
            hint = f"; did you mean {', '.join(TIMM + c for c in close)}?" if close else ""
            raise ValueError(f"unknown timm model {name[len(TIMM) :]!r}{hint}")
        return
    close = difflib.get_close_matches(name, [*BACKBONES, *torchvision_names()], n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown backbone {name!r}; {hint}choose {describe_backbones()}")


def _timm():
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ValueError("timm:<name> needs timm: pip install 'camlight[timm]' (or pip install timm)") from None


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

    def cached(self) -> bool:
        return self.path is not None and self.path.is_file()

    def state_dict(self) -> dict:
        """The weights, downloaded into the cache (with a progress bar) when they are not there.

        Raises:
            WeightsUnavailable: the download failed, or `CAMLIGHT_OFFLINE` is set and they are not
                cached; the message says where to put the file.
        """
        if os.environ.get(OFFLINE) and self.path is not None and not self.cached():
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


def _torchvision_weights(name: str, tag: str | None = None) -> Weights | None:
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


def _timm_weights(name: str) -> Weights:
    timm = _timm()
    cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    size = cfg.get("input_size", (3, 224, 224))[-1]
    crop_pct = cfg.get("crop_pct", 0.875)
    pre = Preprocessing(
        size, round(size / crop_pct), tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bilinear")
    )
    where = cfg.get("hf_hub_id") or cfg.get("url") or name
    url = f"https://huggingface.co/{where}" if cfg.get("hf_hub_id") else where
    try:
        info = timm.data.ImageNetInfo(timm.data.infer_imagenet_subset(cfg) or "imagenet-1k")
        categories = tuple(info.index_to_description(i) for i in range(info.num_classes()))
    except Exception:  # noqa: BLE001 - not an ImageNet model: classes are numbered
        categories = ()

    def load() -> dict:
        return timm.create_model(name, pretrained=True).state_dict()

    return Weights(name, cfg.get("tag") or "default", url, None, pre, categories, load)


def weights_of(backbone: str, tag: str | None = None) -> Weights | None:
    """The pretrained weights of a backbone or model name (None: it has none)."""
    if backbone.startswith(TIMM):
        return _timm_weights(backbone[len(TIMM) :])
    if backbone in BACKBONES:
        spec = BACKBONES[backbone]
        return None if spec.pretrained is None else _torchvision_weights(backbone, spec.pretrained().name)
    return _torchvision_weights(backbone, tag)


def multi_process_launch() -> bool:
    """Whether this process is one of several started together (torchrun, SLURM)."""
    return max(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("SLURM_NTASKS", "1"))) > 1


# -- backbones ------------------------------------------------------------------------------


def build_backbone(name: str, width: int, image_size: int) -> nn.Module:
    """A randomly initialised backbone, image (B,3,S,S) → A (B,K,h,w).

    Built-ins are `nn.Sequential`s; zoo models are trunks (`camlight.modules.trunks`).
    """
    from camlight.modules.trunks import TimmTrunk, TorchvisionTrunk

    if name in BACKBONES:
        return BACKBONES[name].build(width)
    if name.startswith(TIMM):
        return TimmTrunk(_timm().create_model(name[len(TIMM) :], pretrained=False), image_size)
    import torchvision

    kwargs = {"aux_logits": False, "init_weights": False} if name in ("inception_v3", "googlenet") else {}
    if name.startswith("vit_"):
        kwargs["image_size"] = image_size  # random weights may take any size the patch divides
    return TorchvisionTrunk(torchvision.models.get_model(name, weights=None, **kwargs), image_size)


def load_backbone_weights(name: str, backbone: nn.Module, weights: Weights) -> None:
    """Load `weights` into a backbone built by `build_backbone(name, ...)` (downloading them when
    missing); every parameter of the backbone must receive a value."""
    state = weights.state_dict()
    if name in BACKBONES:
        if name == "vgg16":
            state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        else:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        backbone.load_state_dict(state)
        return
    missing, _ = backbone.net.load_state_dict(state, strict=False)  # the classifier's keys are left over
    if missing:
        raise RuntimeError(f"the {name} weights lack {len(missing)} of the trunk's tensors, e.g. {missing[0]}")


def feature_shape(backbone: str, image_size: int, width: int = 32) -> tuple[int, int, int]:
    """(K, h, w) of the feature map A for a square input of side `image_size`, measured by one
    forward pass of the backbone on the meta device (shapes only: no memory, no arithmetic; on the
    CPU for builders that compute with tensors); (0, 0, 0) when the input is too small to pass."""
    for device in ("meta", "cpu"):  # a builder that computes with tensors cannot run on meta (RegNet)
        with torch.device(device), torch.no_grad():
            try:
                net = build_backbone(backbone, width, image_size).eval()
                return tuple(net(torch.empty(1, 3, image_size, image_size)).shape[1:])
            except NotImplementedError:
                continue
            except (RuntimeError, ValueError, AssertionError):  # a layer left with nothing to work on
                return 0, 0, 0
    raise RuntimeError(f"cannot measure {backbone}'s feature map")


def smallest_input(backbone: str, width: int = 32, largest: int = 1024) -> int:
    """The smallest square input side whose feature map is at least 2×2 (measured, by bisection)."""
    low, high = 1, largest
    while low < high:
        mid = (low + high) // 2
        if min(feature_shape(backbone, mid, width)[1:]) >= 2:
            high = mid
        else:
            low = mid + 1
    return low


# -- whole models, to explain -----------------------------------------------------------------


@dataclass
class Resolved:
    """A model to explain, and what goes with it."""

    name: str  # how it was named (a checkpoint's file name, "torchvision:resnet50", ...)
    model: nn.Module  # in eval mode
    preprocessing: Preprocessing
    class_names: tuple[str, ...]
    config: dict | None = None  # a camlight checkpoint's run config (its data, for split=)


def resolve(
    spec: str,
    weights: str | None = None,
    classes: str | Path | None = None,
    image_size: int | None = None,
    mean=None,
    std=None,
) -> Resolved:
    """The model a name stands for: a camlight checkpoint (`path.ckpt`), `torchvision:<name>` (with
    `weights`, default the name's DEFAULT; "none" for random ones), `timm:<name>`, or
    `package.module:function` (any importable callable returning a classifier `nn.Module`).

    Preprocessing comes from the checkpoint or the weights; `image_size`, `mean` and `std` override
    it (and are needed for a function's model, whose mean/std default to none). Class names come
    from the checkpoint or the weights' metadata, else from `classes` (a text file, one name per
    line), else are numbered.

    Raises:
        ValueError: a name or option that does not fit (the message says what to do).
        WeightsUnavailable: weights that could not be downloaded.
        CheckpointError: a checkpoint that is not one, or is refused as unsafe.
    """
    if spec.endswith(".ckpt") or Path(spec).is_file():
        from camlight.modules.checkpoint import load_checkpoint

        ckpt = load_checkpoint(spec)
        pre = ckpt.model.preprocessing
        found = Preprocessing(
            pre["image_size"], pre["eval_resize"], pre["mean"], pre["std"], pre.get("interpolation", "bilinear")
        )
        return Resolved(Path(spec).name, ckpt.model, found, ckpt.model.class_names, ckpt.config)
    if spec.startswith("torchvision:"):
        model, w = _torchvision_model(spec[len("torchvision:") :], weights)
    elif spec.startswith(TIMM):
        model, w = _timm_model(spec[len(TIMM) :], weights)
    elif ":" in spec:
        model, w = _function_model(spec), None
    else:
        raise ValueError(
            f"model={spec!r} is not a .ckpt file, torchvision:<name>, timm:<name> or package.module:function"
        )
    pre = w.preprocessing if w is not None else None
    if image_size is None and pre is None:
        raise ValueError(f"model={spec} brings no preprocessing: give image_size= (and mean=, std= if it normalises)")
    base = pre or Preprocessing(image_size)
    pre = Preprocessing(
        image_size or base.image_size,
        None if pre is None else (base.scaled_to(image_size).resize if image_size else base.resize),
        tuple(mean) if mean is not None else base.mean,
        tuple(std) if std is not None else base.std,
        base.interpolation,
    )
    names = _class_names(model, pre, w, classes)
    return Resolved(spec, model.eval(), pre, names)


def _torchvision_model(name: str, tag: str | None) -> tuple[nn.Module, Weights | None]:
    import torchvision

    if ":" in name:
        name, tag = name.split(":", 1)
    if name not in torchvision_names():
        close = difflib.get_close_matches(name, torchvision_names(), n=3)
        raise ValueError(
            f"unknown torchvision model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    w = None if _none(tag) else _torchvision_weights(name, tag)
    model = torchvision.models.get_model(name, weights=None)
    if w is not None:
        model.load_state_dict(w.state_dict())
    return model, w


def _timm_model(name: str, tag: str | None) -> tuple[nn.Module, Weights | None]:
    timm = _timm()
    if _none(tag):
        return timm.create_model(name, pretrained=False), None
    w = _timm_weights(name)
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(w.state_dict())
    return model, w


def _function_model(spec: str) -> nn.Module:
    module_name, _, attr = spec.rpartition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model={spec}: cannot import {attr} from {module_name} ({e})") from None
    model = fn()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={spec}: {attr}() returned a {type(model).__name__}, not a torch nn.Module")
    return model


def _class_names(model: nn.Module, pre: Preprocessing, w: Weights | None, classes) -> tuple[str, ...]:
    if classes:
        path = Path(classes)
        if not path.is_file():
            raise ValueError(f"classes={path} not found; give a text file with one class name per line")
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    elif w is not None and w.categories:
        return w.categories
    else:
        names = ()
    with torch.no_grad():
        outputs = model.eval()(torch.zeros(1, 3, pre.image_size, pre.image_size)).shape[-1]
    if names and len(names) != outputs:
        raise ValueError(f"classes={classes} names {len(names)} classes, the model has {outputs} outputs")
    return names or tuple(str(i) for i in range(outputs))


def _none(tag: str | None) -> bool:
    """weights=none: random weights, nothing downloaded."""
    return tag is not None and str(tag).lower() == "none"
