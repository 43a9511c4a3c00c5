"""A split's final-layer features in 2-D: PCA and t-SNE (scikit-learn's, not written here), drawn
as a scatter coloured by class and as the lecture's thumbnail map (each image at its 2-D place).

Final-layer features are the input of the model's last `nn.Linear`: for a GAP head the pooled
channels, for an FC head its hidden layer, for torchvision and timm classifiers the pre-logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from camlight.inspect._state import evaluating

REDUCERS = ("pca", "tsne")


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """(name, module) of the model's last `nn.Linear` in registration order (the classifier);
    ValueError when there is none."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError("the model has no nn.Linear classifier whose input could serve as its features")
    return found[-1]


def features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (B,D), logits) of `images`: the last linear layer's input, flattened. Eval mode,
    no gradients; the model's mode and hooks are restored."""
    _, linear = last_linear(model)
    seen: list[torch.Tensor] = []
    handle = linear.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    try:
        with evaluating(model), torch.no_grad():
            logits = model(images)
    finally:
        handle.remove()
    return seen[-1].detach().flatten(1), logits.detach()


def reduce(feats: np.ndarray, method: str, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(N,2) coordinates of (N,D) features by scikit-learn's PCA or t-SNE (PCA initialisation,
    learning rate "auto", the seed fixed: the same features give the same map)."""
    if method not in REDUCERS:
        raise ValueError(f"unknown reduction {method!r}; choose pca or tsne")
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError:
        raise ImportError("embeddings need scikit-learn: pip install 'camlight[inspect]'") from None
    x = np.asarray(feats, dtype=np.float32)
    if len(x) < 3:
        raise ValueError(f"{len(x)} images are too few to embed; give at least 3")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, (len(x) - 1) / 3)  # t-SNE needs perplexity < N
    tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(x)


def thumbnail_map(images: torch.Tensor, coords: np.ndarray, side: int = 1024, spread: float = 3.0) -> torch.Tensor:
    """A canvas (3,S,S) in [0,1], white, S = cells · thumb ≤ `side` (a whole number of thumbnails),
    with each image (N,3,h,w) placed on a grid at its 2-D
    position (the lecture's t-SNE grid): √(spread·N) cells a side, so about a third are filled
    and the map keeps its shape; an image goes to its own cell if free, else to the nearest free
    one, so none hides another."""
    cells = max(1, math.ceil(math.sqrt(spread * len(images))))
    thumb = max(1, side // cells)
    small = torch.nn.functional.interpolate(images.float(), size=(thumb, thumb), mode="bilinear", antialias=True)
    xy = np.asarray(coords, dtype=np.float64)
    lo, hi = xy.min(0), xy.max(0)
    unit = (xy - lo) / np.where(hi > lo, hi - lo, 1.0)
    want = np.minimum((unit * cells).astype(int), cells - 1)  # (N,2) col, and row counted from the bottom
    want[:, 1] = cells - 1 - want[:, 1]  # y up, as in the scatter plot
    canvas = torch.ones(3, cells * thumb, cells * thumb)
    free = np.ones((cells, cells), dtype=bool)
    grid_r, grid_c = np.mgrid[:cells, :cells]
    for k in range(len(xy)):
        if not free.any():
            break
        c, r = want[k]
        if not free[r, c]:
            d = np.where(free, (grid_r - r) ** 2 + (grid_c - c) ** 2, np.iinfo(np.int64).max)
            r, c = np.unravel_index(int(d.argmin()), d.shape)
        free[r, c] = False
        canvas[:, r * thumb : (r + 1) * thumb, c * thumb : (c + 1) * thumb] = small[k].clamp(0, 1)
    return canvas
