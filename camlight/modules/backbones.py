"""Backbones: image (B,3,H,W) → feature map A (B,K,h,w), unpooled.

Each builder returns the backbone as an `nn.Sequential` whose last child is the last conv block,
so `"backbone.<last child>"` is the target layer (its output is A), together with K and the
downsampling factor.
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
    channels: Callable[[int], int]  # width → K
    stride: int  # H / h
    min_size: int  # smallest input giving a feature map of at least 2×2
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
    "simple_cnn": BackboneSpec(simple_cnn, lambda w: 4 * w, stride=8, min_size=32),
    "resnet18": BackboneSpec(resnet18, lambda w: 512, stride=32, min_size=64, pretrained=_resnet18_weights),
    "vgg16": BackboneSpec(vgg16, lambda w: 512, stride=16, min_size=32, pretrained=_vgg16_weights),
}


def feature_size(backbone: str, image_size: int) -> int:
    """Side h of the feature map for a square input of side `image_size`."""
    return image_size // BACKBONES[backbone].stride


def pretrained_path(backbone: str) -> Path:
    """Where torchvision keeps (and we look for) the backbone's ImageNet weights."""
    spec = BACKBONES[backbone]
    if spec.pretrained is None:
        raise ValueError(f"backbone {backbone!r} has no pretrained weights; set model.pretrained=false")
    url = spec.pretrained().url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_pretrained(backbone: str, module: nn.Sequential) -> None:
    """Load torchvision's ImageNet weights into `module` from the local hub cache, never the network.

    Raises:
        PretrainedWeightsMissing: the file is not in the cache; the message says where to put it.
    """
    path = pretrained_path(backbone)
    if not path.is_file():
        url = BACKBONES[backbone].pretrained().url
        raise PretrainedWeightsMissing(
            f"pretrained weights for {backbone} not found at {path}; download {url} to that path "
            f"(or set TORCH_HOME), or set model.pretrained=false"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if backbone == "vgg16":
        prefix = "features."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    module.load_state_dict(state)
