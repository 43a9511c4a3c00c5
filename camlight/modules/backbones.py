"""Backbones: image (B,3,H,W) → feature map A (B,K,h,w), unpooled.

Each builder returns the backbone as an `nn.Sequential` whose last child is the last conv block,
so `"backbone.<last child>"` is the target layer (its output is A). The shape of A for a given
input size is never worked out by hand: `feature_shape` measures it with one forward pass on the
meta device (shapes only, no memory, no arithmetic).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class PretrainedWeightsMissing(FileNotFoundError):
    """Pretrained weights were asked for but are not in the local torch hub cache."""


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[int], nn.Sequential]  # width → backbone
    pretrained: Callable[[], object] | None = None  # → torchvision Weights enum member


def _conv_block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def simple_cnn(width: int = 32) -> nn.Sequential:
    """VGG-like: 4 blocks of two 3×3 conv+BN+ReLU, max-pool after the first three (H/8)."""
    w = (width, 2 * width, 4 * width, 4 * width)
    return nn.Sequential(
        OrderedDict(
            block1=_conv_block(3, w[0], pool=True),
            block2=_conv_block(w[0], w[1], pool=True),
            block3=_conv_block(w[1], w[2], pool=True),
            block4=_conv_block(w[2], w[3], pool=False),
        )
    )


def resnet18(width: int = 0) -> nn.Sequential:
    """torchvision's ResNet-18 up to `layer4` (H/32, K = 512)."""
    from torchvision.models import resnet18 as build

    m = build(weights=None)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return nn.Sequential(OrderedDict((n, getattr(m, n)) for n in names))


def vgg16(width: int = 0) -> nn.Sequential:
    """torchvision's VGG-16 `features` without the last max-pool (H/16, K = 512), as in CAM."""
    from torchvision.models import vgg16 as build

    return build(weights=None).features[:-1]


def _resnet18_weights():
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1


def _vgg16_weights():
    from torchvision.models import VGG16_Weights

    return VGG16_Weights.IMAGENET1K_V1


BACKBONES: dict[str, BackboneSpec] = {
    "simple_cnn": BackboneSpec(simple_cnn),
    "resnet18": BackboneSpec(resnet18, pretrained=_resnet18_weights),
    "vgg16": BackboneSpec(vgg16, pretrained=_vgg16_weights),
}


def feature_shape(backbone: str, image_size: int, width: int = 32) -> tuple[int, int, int]:
    """(K, h, w) of the feature map A for a square input of side `image_size`, measured by one
    forward pass of the backbone on the meta device; (K, 0, 0) when the input is too small to
    pass through it at all."""
    with torch.device("meta"):
        net = BACKBONES[backbone].build(width).eval()
        try:
            a = net(torch.empty(1, 3, image_size, image_size))
        except RuntimeError:  # a pooling or strided layer left with nothing to work on
            channels = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
            return channels, 0, 0
    return tuple(a.shape[1:])


def smallest_input(backbone: str, width: int = 32, largest: int = 2048) -> int:
    """The smallest square input side whose feature map is at least 2×2 (measured, by bisection)."""
    low, high = 1, largest
    while low < high:
        mid = (low + high) // 2
        if min(feature_shape(backbone, mid, width)[1:]) >= 2:
            high = mid
        else:
            low = mid + 1
    return low


def pretrained_path(backbone: str) -> Path:
    """Where torchvision keeps (and we look for) the backbone's ImageNet weights."""
    spec = BACKBONES[backbone]
    if spec.pretrained is None:
        raise ValueError(f"backbone {backbone!r} has no pretrained weights; set model.pretrained=false")
    url = spec.pretrained().url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def missing_weights_message(backbone: str) -> str:
    """What is missing and where to put it, as the start of a one-line message."""
    url = BACKBONES[backbone].pretrained().url
    return (
        f"pretrained weights for {backbone} not found at {pretrained_path(backbone)}; download {url} "
        "to that path (or point TORCH_HOME at a cache holding it)"
    )


def load_pretrained(backbone: str, module: nn.Sequential) -> None:
    """Load torchvision's ImageNet weights into `module` from the local hub cache, never the network.

    Raises:
        PretrainedWeightsMissing: the file is not in the cache; the message says where to put it.
    """
    path = pretrained_path(backbone)
    if not path.is_file():
        raise PretrainedWeightsMissing(f"{missing_weights_message(backbone)}, or set model.pretrained=false")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if backbone == "vgg16":
        prefix = "features."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    module.load_state_dict(state)
