"""Perturbation methods: occlusion, Ablation-CAM, Score-CAM, RISE. No autograd; perturbations batched."""

from __future__ import annotations

import torch

from camlight.explain import _incremental
from camlight.explain._eigen import cam_map
from camlight.explain._normalize import min_max, upsample
from camlight.explain.engine import Context, batch_limit, register


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one side, as captum places them: ceil((L − w) / s) + 1 windows, the last
    one cut at the border, so that every pixel is covered."""
    return [i * stride for i in range(-(-(length - window) // stride) + 1)]


@register(
    "occlusion", "signed", all_targets=True, window=None, stride=None, baseline=0.0, batch_size=None, incremental=True
)
def occlusion(ctx: Context, window, stride, baseline, batch_size: int, incremental: bool) -> torch.Tensor:
    """Zeiler & Fergus 2014: drop of y_c when a window × window patch (all channels) is set to `baseline`.

    A pixel's value is the drop averaged over the windows covering it, windows placed as captum
    places them (the last one in a row or column cut at the border, so every pixel is covered).
    Defaults: window = H/8, stride = window/2. `batch_size` bounds the occluded images per pass
    (default: as many as the memory budget allows, each counted at what it really holds).

    With `incremental` (the default), the occluded copies are evaluated by incremental inference
    (Nakandala et al. 2019, `camlight.explain._incremental`): each layer is recomputed only inside
    the patch's projective field, the rest reused from the clean image's activations; the same
    numbers up to float summation order. Models it cannot analyse (torch.fx cannot trace them,
    hooks, a baseline varying over space) get one full forward pass per occluded copy, as with
    `incremental=False`. Every target of the call is scored from the same occluded copies. Raw
    map: (B,H,W), signed.
    """
    x = ctx.x
    b, _, h, w = x.shape
    if batch_size is not None:
        batch_limit("occlusion", batch_size)
    window = max(1, min(h, w) // 8) if window is None else window
    stride = max(1, window // 2) if stride is None else stride
    if not 1 <= window <= min(h, w) or not 1 <= stride <= window:
        raise ValueError(
            f"occlusion needs 1 <= window <= {min(h, w)} and 1 <= stride <= window (so that every pixel is "
            f"covered), got window={window}, stride={stride}"
        )
    logits = ctx.logits()
    ctx.resolve_targets(logits)
    table = ctx.table  # (B,T)
    clean = logits.gather(1, table)
    positions = [(y, x0) for y in _starts(h, window, stride) for x0 in _starts(w, window, stride)]
    with torch.no_grad():
        inc = None
        if incremental:
            boxes = [(y, x0, min(y + window, h), min(x0 + window, w)) for y, x0 in positions]
            inc = _incremental.prepare(ctx.model, x, boxes, (window, window), baseline, logits)
        if inc is None:
            scores = _occluded_scores(ctx, positions, window, baseline, ctx.rows("occlusion", batch_size), table)
        else:
            rows = max(1, ctx.memory // inc.bytes_per_copy)
            rows = rows if batch_size is None else min(batch_size, rows)
            per_pass = max(1, rows // b)
            scores = []
            for start in range(0, len(positions), per_pass):
                chunk = torch.arange(start, min(start + per_pass, len(positions)))
                scores.append(inc.logits(chunk).gather(1, table.repeat(len(chunk), 1)))
            scores = torch.cat(scores)
    drops = clean.repeat(len(positions), 1) - scores  # (P·B,T), position-major
    total = torch.zeros(b, table.shape[1], h, w, dtype=x.dtype, device=x.device)
    count = torch.zeros(h, w, dtype=x.dtype, device=x.device)
    for i, (y, x0) in enumerate(positions):
        total[:, :, y : y + window, x0 : x0 + window] += drops[i * b : (i + 1) * b, :, None, None]
        count[y : y + window, x0 : x0 + window] += 1
    return total / count


def _occluded_scores(ctx: Context, positions, window: int, baseline, rows: int, table: torch.Tensor) -> torch.Tensor:
    """(P·B,T) logits of each image's targets (`table`, (B,T)) with the image occluded at every
    position (position-major), by one full forward pass per occluded copy, `rows` copies per pass."""
    x = ctx.x
    b = x.shape[0]
    per_pass = max(1, rows // b)
    scores = []
    for start in range(0, len(positions), per_pass):
        chunk = positions[start : start + per_pass]
        occluded = x.repeat(len(chunk), 1, 1, 1)
        for i, (y, x0) in enumerate(chunk):
            occluded[i * b : (i + 1) * b, :, y : y + window, x0 : x0 + window] = baseline
        scores.append(ctx.model(occluded).gather(1, table.repeat(len(chunk), 1)))
    return torch.cat(scores)


@register(
    "ablation_cam", "cam", needs=("layer",), all_targets=True, batch_size=None, eigen_smooth=False, aug_smooth=False
)
def ablation_cam(ctx: Context, batch_size: int | None, eigen_smooth: bool) -> torch.Tensor:
    """Desai & Ramaswamy 2020: w_k = (y_c − y_c with channel k of A zeroed) / |y_c|; ReLU(Σ_k w_k A^k).

    The paper (and pytorch-grad-cam) divide by y_c; we divide by |y_c| (at least 1e-12), which is
    the same for the positive scores the paper has in mind and keeps the sign of the evidence (and
    finite maps) when a target's score is negative or zero.

    With a features/head split only the head is re-run: each call ablates one or more channels in
    every image at once. With a hooked layer each call is one forward pass of one image with a
    batch of its ablated activations swapped in at the layer: ⌈K / batch_size⌉ passes per image.
    `batch_size` bounds the ablated activation tensors per evaluation (default: as many as the
    memory budget allows). Every target of the call is scored from the same ablated passes.
    """
    p = ctx.plain()
    a, table = p.a, ctx.table
    clean = p.logits.gather(1, table)  # (B,T)
    n_img, k = a.shape[:2]
    batch_size = ctx.rows("ablation_cam", batch_size, "head" if ctx.access.split else "forward")
    weights = torch.empty(n_img, k, table.shape[1], dtype=a.dtype, device=a.device)
    with torch.no_grad():
        if ctx.access.split:
            per_call = max(1, batch_size // n_img)
            for start in range(0, k, per_call):
                channels = torch.arange(start, min(start + per_call, k), device=a.device)
                ablated = a.repeat(len(channels), 1, 1, 1)
                ablated[torch.arange(len(ablated), device=a.device), channels.repeat_interleave(n_img)] = 0
                scores = ctx.access.head_module()(ablated).gather(1, table.repeat(len(channels), 1))
                drops = clean.repeat(len(channels), 1) - scores  # (channels·B, T), channel-major
                weights[:, channels] = drops.view(len(channels), n_img, -1).transpose(0, 1)
        else:
            for i in range(n_img):
                head = ctx.access.head_fn(ctx.x[i : i + 1])
                for start in range(0, k, batch_size):
                    channels = torch.arange(start, min(start + batch_size, k), device=a.device)
                    ablated = a[i].expand(len(channels), *a.shape[1:]).clone()
                    ablated[torch.arange(len(channels), device=a.device), channels] = 0
                    weights[i, channels] = clean[i] - head(ablated)[:, table[i]]
    weights = weights / clean.abs().clamp(min=1e-12)[:, None]
    return _per_target(weights, a, eigen_smooth)


def _per_target(weights: torch.Tensor, a: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """(B,T,h,w) CAM maps ReLU(Σ_k w_kt A^k) from channel weights (B,K,T), one map per target."""
    maps = [cam_map(weights[:, :, t, None, None] * a, eigen_smooth) for t in range(weights.shape[2])]
    return torch.stack(maps, dim=1).clamp(min=0)


@register(
    "score_cam",
    "cam",
    needs=("layer",),
    all_targets=True,
    batch_size=None,
    score="probability",
    eigen_smooth=False,
    aug_smooth=False,
)
def score_cam(ctx: Context, batch_size: int | None, score: str, eigen_smooth: bool) -> torch.Tensor:
    """Wang et al. 2020: each channel of A, upsampled and min-max normalised, masks the input;
    its weight is the target's softmax probability for the masked input (the authors' code);
    ReLU(Σ_k w_k A^k).

    Channels that are constant carry no mask and get weight 0. `score="logit_softmax"` weighs by
    the softmax over channels of the target's logit instead (pytorch-grad-cam's convention).
    `batch_size` bounds the masked images per forward pass (default: as many as the memory budget allows).
    """
    if score not in ("probability", "logit_softmax"):
        raise ValueError(f"score_cam score must be 'probability' or 'logit_softmax', got {score!r}")
    p = ctx.plain()
    a, x, table = p.a, ctx.x, ctx.table
    n_img, k = a.shape[:2]
    batch_size = ctx.rows("score_cam", batch_size)
    flat = a.flatten(2)
    varying = flat.amax(2) > flat.amin(2)
    if score == "logit_softmax":
        varying = torch.ones_like(varying)
    pairs = varying.nonzero()  # (N,2): image, channel
    scores = torch.zeros(n_img, k, table.shape[1], dtype=a.dtype, device=a.device)
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            img, ch = pairs[start : start + batch_size].unbind(1)
            masks = min_max(upsample(a[img, ch], ctx.size))
            logits = ctx.model(x[img] * masks[:, None].to(x.dtype))
            if score == "probability":
                logits = logits.softmax(dim=1)
            scores[img, ch] = logits.gather(1, table[img])
    weights = scores.softmax(dim=1) if score == "logit_softmax" else scores
    return _per_target(weights, a, eigen_smooth)


def rise_masks(n: int, cells: int, p: float, size: tuple[int, int], generator: torch.Generator, device=None):
    """Petsiuk et al.'s masks (n,H,W) in [0,1]: a cells × cells grid of Bernoulli(p) values,
    upsampled bilinearly to (cells + 1) · ⌈H/cells⌉ pixels a side and cropped at a random shift of
    up to one cell, so the masks are smooth and not aligned to the grid."""
    h, w = size
    ch, cw = -(-h // cells), -(-w // cells)
    grid = (torch.rand(n, cells, cells, generator=generator) < p).float()
    big = torch.nn.functional.interpolate(
        grid[:, None], size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear", align_corners=False
    )[:, 0]
    dy = torch.randint(0, ch, (n,), generator=generator)
    dx = torch.randint(0, cw, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, :].expand(n, h, w)
    masks = big[torch.arange(n)[:, None, None], rows, cols]
    return masks.to(device)


@register("rise", "signed", all_targets=True, n_masks=2000, cells=7, p=0.5, batch_size=None, seed=0)
def rise(ctx: Context, n_masks: int, cells: int, p: float, batch_size: int | None, seed: int) -> torch.Tensor:
    """Petsiuk et al. 2018: Σ_i P(c | x ⊙ M_i) · M_i / (N · p) over N random smooth masks
    (`rise_masks`): the expected target probability given that a pixel is kept. The same masks
    serve every image of the call; they come from a generator seeded with `seed` (the global RNG
    is not used). `batch_size` bounds the masked images per forward pass (default: as many as the
    memory budget allows)."""
    if n_masks < 1 or cells < 1 or not 0 < p < 1:
        raise ValueError(f"rise needs n_masks >= 1, cells >= 1 and 0 < p < 1; got {n_masks}, {cells}, {p}")
    x = ctx.x
    ctx.resolve_targets(ctx.logits())  # given, or the clean image's prediction
    table = ctx.table  # (B,T): every target is scored from the same masked images
    generator = torch.Generator().manual_seed(seed)
    masks = rise_masks(n_masks, cells, p, ctx.size, generator, x.device).to(x.dtype)
    n_img = x.shape[0]
    per_pass = max(1, ctx.rows("rise", batch_size) // n_img)  # masks per forward pass, for every image
    total = torch.zeros(n_img, table.shape[1], *ctx.size, dtype=torch.float32, device=x.device)
    with torch.no_grad():
        for start in range(0, n_masks, per_pass):
            m = masks[start : start + per_pass]  # (n,H,W)
            masked = (x[None] * m[:, None, None]).flatten(0, 1)  # (n·B,3,H,W), mask-major
            probs = ctx.model(masked).softmax(dim=1).view(len(m), n_img, -1)
            score = probs.gather(2, table[None].expand(len(m), *table.shape))  # (n,B,T)
            total += torch.einsum("nbt,nhw->bthw", score.float(), m.float())
    return total / (n_masks * p)
