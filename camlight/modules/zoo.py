"""Models by name: backbones to train, whole classifiers to explain, their weights and preprocessing.

Names:

- camlight's built-ins: `simple_cnn`, `resnet18`, `vgg16` (see `camlight.modules.backbones`);
- every torchvision classification model: `resnet50`, `efficientnet_b0`, `convnext_tiny`,
  `vit_b_16`, ... (`torchvision.models.list_models`), optionally with its weights,
  `torchvision:resnet50:IMAGENET1K_V2`;
- `timm:<name>` when timm is installed (`pip install camlight[timm]`).

Their weights and preprocessing: `camlight.modules.weights`.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from camlight.modules.backbones import BACKBONES
from camlight.modules.weights import (
    TIMM,
    Preprocessing,
    Weights,
    random_weights_asked,
    timm_module,
    timm_weights,
    torchvision_weights,
)

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
        timm = timm_module()
        if name[len(TIMM) :] not in timm.list_models() and not timm.is_model(name[len(TIMM) :]):
            close = difflib.get_close_matches(name[len(TIMM) :], timm.list_models(), n=3)
            hint = f"; did you mean {', '.join(TIMM + c for c in close)}?" if close else ""
            raise ValueError(f"unknown timm model {name[len(TIMM) :]!r}{hint}")
        return
    close = difflib.get_close_matches(name, [*BACKBONES, *torchvision_names()], n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown backbone {name!r}; {hint}choose {describe_backbones()}")


# -- backbones ------------------------------------------------------------------------------


def build_backbone(name: str, width: int, image_size: int) -> nn.Module:
    """A randomly initialised backbone, image (B,3,S,S) → A (B,K,h,w).

    Built-ins are `nn.Sequential`s; zoo models are trunks (`camlight.modules.trunks`).
    """
    from camlight.modules.trunks import TimmTrunk, TorchvisionTrunk

    if name in BACKBONES:
        return BACKBONES[name].build(width)
    if name.startswith(TIMM):
        return TimmTrunk(timm_module().create_model(name[len(TIMM) :], pretrained=False), image_size)
    import torchvision

    # inception_v3 and googlenet: no auxiliary heads, and the input transform their weights expect.
    two_heads = name in ("inception_v3", "googlenet")
    kwargs = {"aux_logits": False, "init_weights": False, "transform_input": True} if two_heads else {}
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
            except NotImplementedError:
                continue
            except (RuntimeError, ValueError, AssertionError) as e:
                raise SizeError(f"backbone {backbone} does not take image_size={image_size}: {e}") from None
            try:
                return tuple(net(torch.empty(1, 3, image_size, image_size)).shape[1:])
            except NotImplementedError:
                continue
            except (RuntimeError, ValueError, AssertionError):  # a layer left with nothing to work on
                return 0, 0, 0
    raise RuntimeError(f"cannot measure {backbone}'s feature map")


class SizeError(ValueError):
    """A backbone that cannot be built for an input size at all (a ViT's patch size must divide it)."""


def smallest_input(backbone: str, width: int = 32, largest: int = 1024) -> int:
    """The smallest square input side whose feature map is at least 2×2 (measured, by bisection)."""
    low, high = 1, largest
    while low < high:
        mid = (low + high) // 2
        try:
            fits = min(feature_shape(backbone, mid, width)[1:]) >= 2
        except SizeError:
            fits = False
        if fits:
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

        given = [k for k, v in (("weights", weights), ("image_size", image_size), ("mean", mean), ("std", std)) if v]
        if given:
            raise ValueError(f"a checkpoint brings its own weights and preprocessing; drop {', '.join(given)}=")

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
    w = None if random_weights_asked(tag) else torchvision_weights(name, tag)
    if w is None:
        return torchvision.models.get_model(name, weights=None), None
    w.state_dict()  # into the cache (or one line saying why not); the builder then reads it from there
    return torchvision.models.get_model(name, weights=w.tag), w  # its overrides: image size, input transform


def _timm_model(name: str, tag: str | None) -> tuple[nn.Module, Weights | None]:
    timm = timm_module()
    if random_weights_asked(tag):
        return timm.create_model(name, pretrained=False), None
    if tag is not None:
        raise ValueError(f"timm picks weights by name (timm:{name}.<tag>); weights= takes only none here")
    w = timm_weights(name)
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
