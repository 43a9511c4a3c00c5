"""Whole models to explain, by name: `resolve("torchvision:resnet50")` → the model, its
preprocessing and its class names (`explain.py model=` and `checkpoint=`)."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from camlight.modules.checkpoint import load_checkpoint
from camlight.modules.weights import (
    TIMM,
    Preprocessing,
    Weights,
    random_weights_asked,
    timm_module,
    timm_weights,
    torchvision_weights,
)
from camlight.modules.zoo import torchvision_names


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
