"""Faithfulness metrics: does the model's confidence follow the map when the image is changed?

All evaluate the model in eval mode under `camlight.explain`'s guard (mode, buffers, RNG restored)
and score the target's softmax probability. Images are normalised (B,3,H,W); maps (B,H,W) at the
same resolution; targets (B,) class indices.
"""

from __future__ import annotations

import torch
from torch import nn

from camlight.explain import gaussian_blur, untouched


def _probabilities(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) softmax probability of targets[i % B] for each of the N images, `batch_size` per pass."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            t = targets.repeat(-(-len(images) // len(targets)))[start : start + len(chunk)]
            out.append(model(chunk).softmax(dim=1).gather(1, t[:, None])[:, 0])
    return torch.cat(out)


def _order(maps: torch.Tensor) -> torch.Tensor:
    """(B,H·W) pixel indices, most salient first (ties in row-major order)."""
    return torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices


def _blur(images: torch.Tensor) -> torch.Tensor:
    """Petsiuk et al.'s insertion start: a Gaussian blur, kernel 11, σ = 5. Borders repeat the edge
    pixels (their code pads with zeros, which darkens the border towards the dataset mean)."""
    return gaussian_blur(images, 11, 5.0)


def _causal_auc(
    model, images, maps, targets, steps: int, start: torch.Tensor, finish: torch.Tensor, batch_size
) -> torch.Tensor:
    """Probability curve as pixels switch from `start` to `finish`, most salient first; trapezoid AUC.

    Step k (k = 0..steps) has the first round(k·HW/steps) pixels of the order switched.
    """
    b, c, h, w = images.shape
    order = _order(maps)
    n_pix = h * w
    counts = [round(k * n_pix / steps) for k in range(steps + 1)]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_pix, device=order.device).expand(b, n_pix))
    rank = rank.view(b, 1, h, w)
    per_pass = max(1, (batch_size or b) // b)  # frames per forward pass
    probs = []
    for first in range(0, steps + 1, per_pass):
        frames = torch.cat([torch.where(rank < n, finish, start) for n in counts[first : first + per_pass]])
        probs.append(_probabilities(model, frames, targets, len(frames)))
    return torch.trapezoid(torch.cat(probs).view(steps + 1, b), dx=1.0 / steps, dim=0)


def _checked(images, maps, targets):
    if images.dim() != 4 or maps.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(
            f"images (B,3,H,W) and maps (B,H,W) must match, got {tuple(images.shape)} and {tuple(maps.shape)}"
        )
    targets = torch.as_tensor(targets, device=images.device).long().reshape(-1)
    if targets.numel() == 1:
        targets = targets.expand(images.shape[0])
    return targets


def deletion_auc(model, images, maps, targets, steps: int = 32, batch_size: int | None = None) -> torch.Tensor:
    """Petsiuk et al. 2018: (B,) area under the target's probability as pixels are deleted (set to
    0 in normalised space, the dataset mean), most salient first, over `steps` steps. Lower is better.
    """
    targets = _checked(images, maps, targets)
    with untouched(model):
        images = images.detach()
        return _causal_auc(model, images, maps, targets, steps, images, torch.zeros_like(images), batch_size)


def insertion_auc(model, images, maps, targets, steps: int = 32, batch_size: int | None = None) -> torch.Tensor:
    """Petsiuk et al. 2018: (B,) area under the target's probability as pixels are restored onto a
    blurred copy of the image (Gaussian, kernel 11, σ 5), most salient first. Higher is better."""
    targets = _checked(images, maps, targets)
    with untouched(model):
        images = images.detach()
        return _causal_auc(model, images, maps, targets, steps, _blur(images), images, batch_size)


def _drop_update(model, images, maps, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y, O): target probability of the image and of the image masked by its map (B,) each."""
    targets = _checked(images, maps, targets)
    with untouched(model):
        images = images.detach()
        masked = images * maps[:, None].clamp(0, 1).to(images.dtype)
        probs = _probabilities(model, torch.cat([images, masked]), targets, len(images))
    return probs[: len(images)], probs[len(images) :]


def average_drop(model, images, maps, targets) -> torch.Tensor:
    """Chattopadhyay et al. 2018: (B,) relative drop max(0, Y − O) / Y of the target's softmax
    probability when the image is multiplied by its map (O) instead of shown whole (Y); the paper's
    "Average Drop %" is 100 × the mean. Lower is better."""
    y, o = _drop_update(model, images, maps, targets)
    return (y - o).clamp(min=0) / y.clamp(min=1e-12)


def increase_in_confidence(model, images, maps, targets) -> torch.Tensor:
    """Chattopadhyay et al. 2018: (B,) bool, the masked image (O) is more confident than the whole (Y)."""
    y, o = _drop_update(model, images, maps, targets)
    return o > y


def _region_ranks(maps: torch.Tensor, region: int) -> torch.Tensor:
    """(B,1,H,W) rank of each pixel's region (0 = most relevant): the map summed over square
    `region`² cells of a grid from the top left (partial cells at the edges), ties in row-major order."""
    b, h, w = maps.shape
    pad_h, pad_w = -h % region, -w % region
    padded = torch.nn.functional.pad(maps[:, None].float(), (0, pad_w, 0, pad_h))
    relevance = torch.nn.functional.avg_pool2d(padded, region).flatten(1)  # (B, cells), ∝ the sum
    order = torch.sort(relevance, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    gh, gw = (h + pad_h) // region, (w + pad_w) // region
    cells = rank.view(b, 1, gh, gw).repeat_interleave(region, 2).repeat_interleave(region, 3)
    return cells[..., :h, :w]


def _uniform_noise(images: torch.Tensor, seeds) -> torch.Tensor:
    """Per image, values drawn uniformly between each channel's minimum and maximum of that image,
    from a generator seeded by the image's seed (so an image gets the same noise in any batch)."""
    seeds = range(len(images)) if seeds is None else [int(s) for s in seeds]
    noise = []
    for image, seed in zip(images, seeds, strict=True):
        g = torch.Generator().manual_seed(seed)
        u = torch.rand(image.shape, generator=g, dtype=torch.float32).to(images.device, images.dtype)
        low = image.flatten(1).amin(1)[:, None, None]
        high = image.flatten(1).amax(1)[:, None, None]
        noise.append(low + u * (high - low))
    return torch.stack(noise)


def aopc(
    model, images, maps, targets, region: int = 9, steps: int = 100, seeds=None, batch_size: int | None = None
) -> torch.Tensor:
    """Samek et al. 2017: (B,) area over the MoRF perturbation curve, (1/(L+1)) Σ_{k=0..L} (f(x⁰) − f(xᵏ)).

    Step k replaces the k most relevant `region`×`region` cells (relevance: the map summed over the
    cell) with uniform noise (`_uniform_noise`); f is the target's softmax probability; L = `steps`
    (at most the number of cells). Higher means the map ranks the regions the model needs first.

    Args:
        seeds: (B,) one seed per image for its noise (default 0..B−1); give dataset indices to make
            an image's score independent of its batch.
    """
    targets = _checked(images, maps, targets)
    with untouched(model):
        images = images.detach()
        rank = _region_ranks(maps, region)
        cells = int(rank.amax()) + 1
        counts = list(range(min(steps, cells) + 1))
        noise = _uniform_noise(images, seeds)
        b = len(images)
        per_pass = max(1, (batch_size or b) // b)
        probs = []
        for first in range(0, len(counts), per_pass):
            frames = torch.cat([torch.where(rank < n, noise, images) for n in counts[first : first + per_pass]])
            probs.append(_probabilities(model, frames, targets, len(frames)))
        curve = torch.cat(probs).view(len(counts), b)
    return (curve[0:1] - curve).mean(0)
