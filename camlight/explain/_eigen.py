"""The first principal component of weighted activations: EigenCAM's map and the CAM family's
`eigen_smooth` option (pytorch-grad-cam's `get_2d_projection`, with its sign correction)."""

from __future__ import annotations

import torch


def first_component(a: torch.Tensor) -> torch.Tensor:
    """(B,h,w): each image's (K,h,w) positions projected on their first principal component
    (positions as samples, channels centred), as pytorch-grad-cam's `get_2d_projection`.

    The sign of a principal component is arbitrary; it is fixed here so that the map's largest
    value is not smaller in magnitude than its most negative one (flip when |min| > |max|: Chung &
    Ying 2025, eq. 13, pytorch-grad-cam's `get_2d_projection_with_sign_correction`).
    """
    b, k, h, w = a.shape
    x = a.detach().float().nan_to_num(0.0).reshape(b, k, h * w).transpose(1, 2)  # (B, hw, K)
    x = x - x.mean(dim=1, keepdim=True)
    x = x.double()
    # X v₁ (v₁ the first right singular vector) = σ₁u₁, from the eigendecomposition of the smaller
    # of the Gram matrices X Xᵀ (positions) and XᵀX (channels): the SVD's own numbers, at a fraction
    # of a batched SVD's cost.
    if h * w <= k:
        values, vectors = torch.linalg.eigh(x @ x.transpose(1, 2))
        projection = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()
    else:
        _, vectors = torch.linalg.eigh(x.transpose(1, 2) @ x)
        projection = (x @ vectors[..., -1:])[..., 0]
    projection = projection.reshape(b, h, w)
    flip = projection.flatten(1).amin(1).abs() > projection.flatten(1).amax(1).abs()
    projection = torch.where(flip[:, None, None], -projection, projection)
    return projection.to(a.dtype)


def cam_map(weighted: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """(B,h,w) from a CAM method's weighted activations (B,K,h,w): their sum over channels, or with
    `eigen_smooth` their first principal component (`first_component`) — pytorch-grad-cam's
    option, which keeps the dominant pattern and drops the rest as noise."""
    return first_component(weighted) if eigen_smooth else weighted.sum(dim=1)
