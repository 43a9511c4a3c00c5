"""Backbones by name, to train: built-ins, torchvision's classification models, timm's.

Names:

- camlight's built-ins: `simple_cnn`, `resnet18`, `vgg16` (see `camlight.modules.backbones`);
- every torchvision classification model: `resnet50`, `efficientnet_b0`, `convnext_tiny`,
  `vit_b_16`, ... (`torchvision.models.list_models`), optionally with its weights,
  `torchvision:resnet50:IMAGENET1K_V2`;
- `timm:<name>` when timm is installed (`pip install camlight[timm]`).

Their weights and preprocessing: `camlight.modules.weights`; whole models to explain:
`camlight.modules.resolve`.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from camlight.modules.backbones import BACKBONES
from camlight.modules.weights import (
    TIMM,
    Weights,
    timm_module,
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
