"""camlight's built-in backbones: image (B,3,H,W) → feature map A (B,K,h,w), unpooled.

Each builder returns the backbone as an `nn.Sequential` whose last child is the last conv block,
so `"backbone.<last child>"` is the target layer (its output is A). Every other model comes from
the zoo (`camlight.modules.zoo`), which also measures A's shape and loads pretrained weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


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
