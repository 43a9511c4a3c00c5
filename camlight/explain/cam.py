"""The CAM family from gradients or weights: CAM, Grad-CAM, Grad-CAM++, Guided Grad-CAM.

Raw maps are (B,h,w) at the target layer's resolution; normalised maps are ReLU → bilinear
upsample → per-image min-max, for every member (positive evidence for the class, as
pytorch-grad-cam shows them).
"""

from __future__ import annotations

import torch
from torch import nn

from camlight.explain._eigen import cam_map, first_component
from camlight.explain._normalize import upsample
from camlight.explain.engine import Context, register
from camlight.explain.gradient import guided_backprop


def gap_linear(ctx: Context) -> nn.Linear | None:
    """The linear layer of a global-average-pooling head on A, or None when there is none.

    Candidates are the `nn.Linear` layers taking K inputs, in the head (with the split) or anywhere
    in the model (with a hook); one counts only if the logits of this very batch equal
    linear(mean_ij A), so the check holds for any model, whatever its head is called.
    """
    p = ctx.plain()
    k = p.a.shape[1]
    head = ctx.access.head_module()
    scope = ctx.model if head is None else head
    tol = 1e-4 * float(p.logits.abs().max().clamp(min=1))
    with torch.no_grad():
        pooled = p.a.mean(dim=(2, 3))
        for fc in (m for m in scope.modules() if isinstance(m, nn.Linear) and m.in_features == k):
            expected = nn.functional.linear(pooled, fc.weight, fc.bias)
            if expected.shape == p.logits.shape and torch.allclose(expected, p.logits, rtol=1e-4, atol=tol):
                return fc
    return None


NO_GAP_HEAD = (
    "cam needs the target layer to feed a global-average-pooling head (mean → linear), such as a "
    "camlight Classifier with head='gap'; use gradcam for this model or layer"
)


def _has_gap_head(ctx: Context) -> str | None:
    return None if gap_linear(ctx) is not None else NO_GAP_HEAD


@register("cam", "cam", needs=("layer",), requires=_has_gap_head, eigen_smooth=False, aug_smooth=False)
def cam(ctx: Context, eigen_smooth: bool) -> torch.Tensor:
    """Zhou et al. 2016: Σ_k w^c_k A^k with w the GAP head's linear weights (bias ignored); signed."""
    fc = gap_linear(ctx)
    if fc is None:
        raise ValueError(NO_GAP_HEAD)
    p = ctx.plain()
    return cam_map(fc.weight[ctx.targets].to(p.a.dtype)[:, :, None, None] * p.a, eigen_smooth)


@register("gradcam", "cam", needs=("layer", "layer_grad"), eigen_smooth=False, aug_smooth=False)
def gradcam(ctx: Context, eigen_smooth: bool) -> torch.Tensor:
    """Selvaraju et al. 2017: ReLU(Σ_k α_k A^k), α_k = mean_ij ∂y_c/∂A^k_ij."""
    p = ctx.plain()
    return cam_map(p.grad_a.mean(dim=(2, 3), keepdim=True) * p.a, eigen_smooth).clamp(min=0)


@register("gradcam_pp", "cam", needs=("layer", "layer_grad"), eigen_smooth=False, aug_smooth=False)
def gradcam_pp(ctx: Context, eigen_smooth: bool) -> torch.Tensor:
    """Chattopadhyay et al. 2018, closed form for an exponential score, from first-order gradients.

    α^kc_ij = g² / (2g² + Σ_ab A^k_ab · g³) (0 where g = 0), w_k = Σ_ij α^kc_ij ReLU(g_ij),
    map = ReLU(Σ_k w_k A^k) — as pytorch-grad-cam computes it (with its ε = 1e-6).
    """
    p = ctx.plain()
    g, a = p.grad_a, p.a
    g2 = g * g
    alpha = g2 / (2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * g.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    return cam_map(weights * a, eigen_smooth).clamp(min=0)


@register("guided_gradcam", "pixel", needs=("layer", "layer_grad"))
def guided_gradcam(ctx: Context) -> torch.Tensor:
    """Selvaraju et al. 2017: guided backprop (B,3,H,W) ⊙ Grad-CAM bilinearly upsampled to the input."""
    return guided_backprop(ctx) * upsample(gradcam(ctx, eigen_smooth=False), ctx.size)[:, None]


@register("hirescam", "cam", needs=("layer", "layer_grad"), eigen_smooth=False, aug_smooth=False)
def hirescam(ctx: Context, eigen_smooth: bool) -> torch.Tensor:
    """Draelos & Carin 2020: ReLU(Σ_k ∂y_c/∂A^k ⊙ A^k), the gradient kept per position rather than
    averaged (so the map is the layer's exact contribution to y_c through A, before the ReLU)."""
    p = ctx.plain()
    return cam_map(p.grad_a * p.a, eigen_smooth).clamp(min=0)


@register("xgradcam", "cam", needs=("layer", "layer_grad"), eigen_smooth=False, aug_smooth=False)
def xgradcam(ctx: Context, eigen_smooth: bool) -> torch.Tensor:
    """Fu et al. 2020: ReLU(Σ_k w_k A^k), w_k = Σ_ij (A^k_ij / (Σ_ab A^k_ab + ε)) ∂y_c/∂A^k_ij, as
    pytorch-grad-cam computes it (ε = 1e-7)."""
    p = ctx.plain()
    weights = (p.grad_a * p.a / (p.a.sum(dim=(2, 3), keepdim=True) + 1e-7)).sum(dim=(2, 3), keepdim=True)
    return cam_map(weights * p.a, eigen_smooth).clamp(min=0)


@register("layercam", "cam", needs=("layer", "layer_grad"), eigen_smooth=False, aug_smooth=False, gamma=2.0)
def layercam(ctx: Context, eigen_smooth: bool, gamma: float) -> torch.Tensor:
    """Jiang et al. 2021: ReLU(Σ_k ReLU(∂y_c/∂A^k) ⊙ A^k), positive gradients weighting each position.

    With `layer=[...]` the maps of several layers are fused as the paper does: each scaled by
    tanh(`gamma` · M / max M), then the element-wise maximum (see `_combine.fuse_layers`)."""
    p = ctx.plain()
    return cam_map(p.grad_a.clamp(min=0) * p.a, eigen_smooth).clamp(min=0)


@register("eigencam", "cam", needs=("layer",), aug_smooth=False)
def eigencam(ctx: Context) -> torch.Tensor:
    """Muhammad & Yeasin 2020: the activations' first principal component, ReLU'd (class-agnostic:
    the same map whatever the target). Sign: see `first_component`."""
    return first_component(ctx.plain().a).clamp(min=0)


@register("eigengradcam", "cam", needs=("layer", "layer_grad"), aug_smooth=False)
def eigengradcam(ctx: Context) -> torch.Tensor:
    """EigenCAM on ∂y_c/∂A ⊙ A (pytorch-grad-cam's EigenGradCAM): the first principal component of
    the gradient-weighted activations, ReLU'd, so it depends on the class. Sign: see
    `first_component`."""
    p = ctx.plain()
    return first_component(p.grad_a * p.a).clamp(min=0)
