"""Can a map be trusted? The model-parameter randomization test of Adebayo et al. 2018 ("Sanity
checks for saliency maps") and the similarity measures it reports.

A method whose maps stay the same when the network's weights are replaced by random ones shows
the image (its edges), not what the network learned. The test re-initialises the network block by
block on a deep copy — cascading, from the logits downward, each step keeping the blocks above
random; or independent, one block at a time — and compares each map with the trained network's:

- `spearman(a, b)`: rank correlation of the two maps' pixels (ties share their mean rank, as
  `scipy.stats.spearmanr` ranks them); on camlight's maps, which are absolute values for the
  pixel-space methods, and on the signed maps (`signed_maps`), the paper's two variants;
- `ssim(a, b)`: structural similarity, as `skimage.metrics.structural_similarity` computes it by
  default (7×7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03, data range 1);
- `hog_similarity(a, b)`: Pearson correlation of the maps' histograms of oriented gradients (HOG,
  `skimage.feature.hog`'s defaults: 9 orientations, 8×8-pixel cells, 3×3-cell blocks, L2-Hys).

All take maps (B,H,W) and return (B,) float64 on the maps' device; NaN where a map is constant (its
correlation is undefined: a randomized network can give a map of zeros), which the summaries
leave out and count.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from camlight.explain import explain
from camlight.explain.engine import REGISTRY, normalise

MEASURES = ("spearman", "spearman_signed", "ssim", "hog")
MODES = ("cascading", "independent")

# -- similarity measures -----------------------------------------------------------------------


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """(B,N) float64 ranks 1..N of each row of x (B,N), ties given their mean rank — every row at
    once: sorted, each run of equal values gets the mean of its first and last position."""
    values, order = torch.sort(x, dim=1)
    b, n = values.shape
    new = torch.ones_like(values, dtype=torch.bool)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new.long().cumsum(1) - 1  # (B,N) each sorted position's run
    pos = torch.arange(n, dtype=torch.float64, device=x.device).expand(b, n)
    first = torch.full((b, n), float(n), dtype=torch.float64, device=x.device).scatter_reduce(1, group, pos, "amin")
    last = torch.zeros((b, n), dtype=torch.float64, device=x.device).scatter_reduce(1, group, pos, "amax")
    mean = (first.gather(1, group) + last.gather(1, group)) / 2 + 1
    return torch.empty_like(mean).scatter_(1, order, mean)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) Pearson correlation of rows a, b (B,N) in float64; NaN where a row is constant."""
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / den
    return torch.where(den > 0, r.clamp(-1, 1), torch.full_like(r, math.nan))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) Spearman rank correlation between maps a and b (B,H,W), per image."""
    return _pearson(_ranks(a.flatten(1)), _ranks(b.flatten(1)))


SSIM_WINDOW = 7


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B,) mean structural similarity of maps a and b (B,H,W) as scikit-image computes it by
    default: local means, variances and covariance over 7×7 windows (sample covariance), the SSIM
    map averaged over the pixels whose window lies inside the image. Maps need 7×7 pixels."""
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs maps of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, got {tuple(a.shape[-2:])}")
    x, y = a.double()[:, None], b.double()[:, None]
    mean = lambda t: F.avg_pool2d(t, SSIM_WINDOW, stride=1)  # noqa: E731 - the valid windows only
    n = SSIM_WINDOW**2
    ux, uy = mean(x), mean(y)
    cov = n / (n - 1)
    vx, vy = cov * (mean(x * x) - ux * ux), cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def hog(maps: torch.Tensor, orientations: int = 9, cell: int = 8, block: int = 3) -> torch.Tensor:
    """(B,F) float64 HOG features of maps (B,H,W), as `skimage.feature.hog` computes them with
    these parameters (L2-Hys block norm; gradients by central differences, zero on the border
    rows and columns; each pixel's magnitude into one of `orientations` bins of [0°, 180°))."""
    x = maps.double()
    g_row, g_col = torch.zeros_like(x), torch.zeros_like(x)
    g_row[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
    g_col[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    magnitude = torch.hypot(g_col, g_row)
    angle = torch.rad2deg(torch.atan2(g_row, g_col)) % 180
    bins = (angle / (180 / orientations)).floor().long().clamp(0, orientations - 1)
    b, h, w = x.shape
    rows, cols = h // cell, w // cell
    if rows < block or cols < block:
        raise ValueError(f"hog needs maps of at least {block * cell}×{block * cell} pixels, got {(h, w)}")
    magnitude, bins = magnitude[:, : rows * cell, : cols * cell], bins[:, : rows * cell, : cols * cell]
    votes = F.one_hot(bins, orientations).double() * magnitude[..., None]
    cells = votes.view(b, rows, cell, cols, cell, orientations).sum((2, 4))  # (B,rows,cols,O)
    blocks = cells.unfold(1, block, 1).unfold(2, block, 1)  # (B,R,C,O,block,block)
    blocks = blocks.permute(0, 1, 2, 4, 5, 3).flatten(3)  # a block's cells row by row, then orientations
    eps = 1e-5
    blocks = blocks / torch.sqrt((blocks**2).sum(-1, keepdim=True) + eps**2)  # L2-Hys
    blocks = blocks.clamp(max=0.2)
    blocks = blocks / torch.sqrt((blocks**2).sum(-1, keepdim=True) + eps**2)
    return blocks.flatten(1)


def hog_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) Pearson correlation of the HOG features of maps a and b (B,H,W)."""
    return _pearson(hog(a), hog(b))


# -- maps in both variants ---------------------------------------------------------------------


def both_maps(model, images, methods, targets, **options) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{method: (shown, signed)}: camlight's map (B,H,W) in [0,1] — the absolute value for the
    pixel-space methods — and the signed map: the raw attribution summed over colour channels
    (pixel-space methods), upsampled (CAM family, before its ReLU where the raw map has a sign), or
    the raw map itself. One `explain` call."""
    raw = explain(model, images, methods, targets=targets, raw=True, **options)
    size = tuple(images.shape[-2:])
    out = {}
    for m, r in raw.items():
        kind = REGISTRY[m].kind
        shown = normalise(kind, r, size)
        if kind == "pixel":
            signed = r.sum(1)
        elif kind == "cam":
            signed = F.interpolate(r[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        else:
            signed = r
        out[m] = (shown, signed)
    return out


def similarities(reference: tuple, other: tuple) -> dict[str, torch.Tensor]:
    """{measure: (B,)} between (shown, signed) maps of the trained and a randomized network."""
    (a, a_signed), (b, b_signed) = reference, other
    out = {"spearman": spearman(a, b), "spearman_signed": spearman(a_signed, b_signed)}
    if min(a.shape[-2:]) >= SSIM_WINDOW:
        out["ssim"] = ssim(a, b)
    if min(a.shape[-2:]) >= 24:
        out["hog"] = hog_similarity(a, b)
    return out


# -- randomization -----------------------------------------------------------------------------

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's blocks in forward (registration) order: its children with parameters, those
    that are plain containers (Sequential, ModuleList, ModuleDict) opened up, recursively — for a
    ResNet-18 the stem's convolution and norm, the eight residual blocks, and the head."""
    out = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if not any(True for _ in child.parameters()):
                continue
            if isinstance(child, _CONTAINERS) or (prefix == "" and _only_containers(child)):
                walk(child, f"{full}.")
            else:
                out.append((full, child))

    walk(model, "")
    return out


def _only_containers(module: nn.Module) -> bool:
    """A wrapper whose parameters all sit in children (a trunk or backbone module): opened up too."""
    return not any(True for _ in module.parameters(recurse=False)) and type(module).forward is nn.Module.forward


def reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter of `module` as its layer type initialises it (each
    submodule's `reset_parameters`, BatchNorm's running statistics included), drawing from
    `generator`'s seed; parameters of modules without one get N(0, 0.01²)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    cuda = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():  # the global RNGs are left as they were
        torch.manual_seed(seed)
        for sub in module.modules():
            if callable(getattr(sub, "reset_parameters", None)):
                sub.reset_parameters()
            elif hasattr(sub, "reset_running_stats"):
                sub.reset_running_stats()
            elif any(True for _ in sub.parameters(recurse=False)):
                for p in sub.parameters(recurse=False):
                    p.normal_(0, 0.01)


def _detached_copy(model: nn.Module) -> nn.Module:
    """A deep copy of the network alone (a LightningModule's trainer is not copied)."""
    trainer = getattr(model, "_trainer", None)
    memo = {id(trainer): None} if trainer is not None else {}
    return copy.deepcopy(model, memo)


def _block_seeds(model: nn.Module, seed: int) -> list[tuple[str, int]]:
    """(block name, its seed) from the logits down: the one place both randomizations draw from,
    so a block gets the same random weights in every mode."""
    names = [name for name, _ in blocks(model)][::-1]
    if not names:
        raise ValueError(f"{type(model).__name__} has no parameters to randomize")
    return [(name, seed * 100_003 + i) for i, name in enumerate(names)]


def _reinitialise(net: nn.Module, name: str, seed: int) -> None:
    reinitialise(net.get_submodule(name), torch.Generator().manual_seed(seed))


def randomized(model: nn.Module, mode: str = "cascading", seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """(block name, network) for each step of the test, on copies (the model is never changed).

    cascading: the top block re-initialised, then the top two, ..., down to every block;
    independent: each block alone, from the top down. Each block draws the same random weights in
    both modes (a seed per block from `seed`)."""
    if mode not in MODES:
        raise ValueError(f"randomization mode {mode!r}; choose from {', '.join(MODES)}")
    steps = _block_seeds(model, seed)
    current = _detached_copy(model) if mode == "cascading" else None
    for name, block_seed in steps:
        net = current if mode == "cascading" else _detached_copy(model)
        _reinitialise(net, name, block_seed)
        yield name, net


def fully_randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of the network with every block re-initialised: the last step of the cascading
    test (the same weights), without the steps between."""
    steps = _block_seeds(model, seed)
    net = _detached_copy(model)
    for name, block_seed in steps:
        _reinitialise(net, name, block_seed)
    return net


def model_randomization(
    model: nn.Module,
    images: torch.Tensor,
    methods: Sequence[str],
    targets=None,
    mode: str = "cascading",
    seed: int = 0,
    keep_maps: bool = False,
    **options,
) -> dict:
    """Adebayo et al.'s model-parameter randomization test on `images` (B,3,H,W).

    Returns {"blocks": [names, top first], "scores": {method: {measure: (steps, B) float64}},
    and with `keep_maps` "maps": {method: [(B,H,W) trained, then one per step]}}. Targets are
    fixed from the trained network (None: its predictions), so every step explains the same
    class. `options` go to `explain` (e.g. `layer=`)."""
    if targets is None:
        from camlight.explain import untouched

        with untouched(model), torch.no_grad():
            targets = model(images).argmax(1)
    reference = both_maps(model, images, methods, targets, **options)
    names, scores = [], {m: {} for m in reference}
    maps = {m: [reference[m][0]] for m in reference} if keep_maps else None
    for name, net in randomized(model, mode, seed):
        names.append(name)
        found = both_maps(net, images, list(reference), targets, **options)
        for m, pair in found.items():
            for measure, values in similarities(reference[m], pair).items():
                scores[m].setdefault(measure, []).append(values)
            if maps is not None:
                maps[m].append(pair[0])
    out = {
        "blocks": names,
        "scores": {m: {k: torch.stack(v) for k, v in s.items()} for m, s in scores.items()},
    }
    if maps is not None:
        out["maps"] = maps
    return out
