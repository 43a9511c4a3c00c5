"""Heads: feature map A (B,K,h,w) → logits (B,C)."""

from __future__ import annotations

import torch
from torch import nn


class GapHead(nn.Module):
    """Global average pooling then one linear layer: the head CAM needs (Zhou et al. 2016).

    The class weights w^c_k are `self.fc.weight[c, k]`.
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        # mean() rather than AdaptiveAvgPool2d: the same numbers, and a deterministic backward on GPU.
        return self.fc(a.mean(dim=(2, 3)))


class FcHead(nn.Module):
    """Flatten, linear, ReLU, dropout, linear: the classic fully connected head (not CAM-compatible)."""

    def __init__(self, feature_shape: tuple[int, int, int], num_classes: int, hidden: int = 256, dropout: float = 0.5):
        """`feature_shape`: (K, h, w) of the feature maps it takes, as measured for the input size."""
        super().__init__()
        channels, height, width = feature_shape
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.classifier(a)


HEADS = ("gap", "fc")
