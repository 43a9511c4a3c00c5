"""Every component of every level of a map in one pass: a union-find over the pixels sorted once by
level (the max-tree of Salembier et al.), compiled by Numba.

MaxBoxAccV2 needs the boxes of the 8-connected components of `levels > k` for each of its 100
threshold levels k. Labelling each level touches every pixel 100 times; here each pixel is added
once, at its own level, and merged with its neighbours already present, each set keeping its
box, size and last pixel, so the components of a level are the sets alive after its pixels are
added. Exactly the boxes that labelling every level gives (tested).

`score_maps` does a batch's whole box work in one compiled call per image: the map's levels, the
best IoU of any component of each level with the image's ground-truth boxes (MaxBoxAccV2), and the
largest component's box at one level (CAM's box), with the GIL released so that images go to
threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _root(parent, p):
    root = p
    while parent[root] != root:
        root = parent[root]
    while parent[p] != root:  # path compression
        parent[p], p = root, parent[p]
    return root


@numba.njit(cache=True, nogil=True)
def map_levels(m, cuts):
    """(H,W) int32: how many of the ascending `cuts` (T,) each pixel reaches (m ≥ cut, and m > 0),
    as `torch.searchsorted(cuts, m, right=True)` counts them (`localization._levels`); none where a
    cut is not finite (a map without foreground)."""
    h, w = m.shape
    out = np.zeros((h, w), np.int32)
    t = len(cuts)
    for k in range(t):
        if not np.isfinite(cuts[k]):
            return out
    step = cuts[t - 1] / (t - 1) if t > 1 and cuts[t - 1] > 0 else 0.0  # an even grid's spacing: a guess
    for r in range(h):
        for c in range(w):
            v = m[r, c]
            if not v > 0:
                continue
            g = t if step == 0 else min(int(v / step) + 1, t)  # corrected below for any grid
            while g < t and cuts[g] <= v:
                g += 1
            while g > 0 and cuts[g - 1] > v:
                g -= 1
            out[r, c] = g
    return out


@numba.njit(cache=True, nogil=True)
def _sweep(levels, count, gt, best, cam_level, cam_box, collect):
    """The max-tree of `levels` (H,W) int, 0 ≤ levels ≤ count: level k's foreground is `levels > k`.

    For every level k and every component of it: best[g, k] = the component's highest IoU with a
    box of gt[g] (G,K,4) float xyxy end-exclusive (its largest over components); at k = cam_level,
    cam_box (4,) = the box of the largest component (of equal ones, the one whose last pixel comes
    first in row-major order). With `collect`, returns (n,5) int64 rows (k, x0, y0, x1, y1) of
    every component, levels descending."""
    h, w = levels.shape
    wide = w + 2  # a border of never-added pixels: no bounds checks on the neighbours
    sizes = np.zeros(count + 1, np.int64)
    for r in range(h):
        for c in range(w):
            sizes[levels[r, c]] += 1
    first = np.zeros(count + 2, np.int64)  # pixels of level ≥ 1 sorted by level, highest first
    for v in range(count - 1, -1, -1):
        first[v] = first[v + 1] + sizes[v + 1]
    order = np.empty(first[0], np.int32)
    fill = first.copy()
    for r in range(h):
        for c in range(w):
            v = levels[r, c]
            if v > 0:
                order[fill[v]] = (r + 1) * wide + c + 1
                fill[v] += 1
    n = (h + 2) * wide
    parent = np.full(n, -1, np.int32)  # -1: not added yet
    x0 = np.empty(n, np.int32)
    y0 = np.empty(n, np.int32)
    x1 = np.empty(n, np.int32)
    y1 = np.empty(n, np.int32)
    size = np.empty(n, np.int32)
    last = np.empty(n, np.int32)
    roots = np.empty(max(first[0], 1), np.int32)
    step = np.array([-wide - 1, -wide, -wide + 1, -1, 1, wide - 1, wide, wide + 1], np.int32)
    alive = 0
    rows = np.empty((1024 if collect else 0, 5), np.int64)  # grown when needed
    m = 0
    groups, k_boxes = gt.shape[0], gt.shape[1]
    for v in range(count, 0, -1):  # add the pixels of level v: then the sets are level v − 1's components
        for t in range(first[v], first[v] + sizes[v]):
            p = order[t]
            r = p // wide - 1
            c = p - (r + 1) * wide - 1
            parent[p] = p
            size[p] = 1
            last[p] = r * w + c
            x0[p], y0[p], x1[p], y1[p] = c, r, c + 1, r + 1
            roots[alive] = p
            alive += 1
            a = p  # the root of p's set as it joins its neighbours' sets
            for d in range(8):
                q = p + step[d]
                if parent[q] < 0:
                    continue
                b = _root(parent, q)
                if b != a:
                    if size[a] > size[b]:  # union by size: the smaller set joins the larger
                        a, b = b, a
                    parent[a] = b
                    size[b] += size[a]
                    x0[b] = min(x0[a], x0[b])
                    y0[b] = min(y0[a], y0[b])
                    x1[b] = max(x1[a], x1[b])
                    y1[b] = max(y1[a], y1[b])
                    last[b] = max(last[a], last[b])
                    a = b
        k = v - 1
        kept = 0
        top = -1
        for j in range(alive):  # the sets still alive are this level's components
            p = roots[j]
            if parent[p] != p:
                continue
            roots[kept] = p
            kept += 1
            area = (x1[p] - x0[p]) * (y1[p] - y0[p])
            for g in range(groups):
                for i in range(k_boxes):
                    gx0, gy0, gx1, gy1 = gt[g, i, 0], gt[g, i, 1], gt[g, i, 2], gt[g, i, 3]
                    iw = max(min(x1[p], gx1) - max(x0[p], gx0), 0.0)
                    ih = max(min(y1[p], gy1) - max(y0[p], gy0), 0.0)
                    inter = iw * ih
                    union = area + max(gx1 - gx0, 0.0) * max(gy1 - gy0, 0.0) - inter
                    if union > 0 and inter / union > best[g, k]:
                        best[g, k] = inter / union
            if k == cam_level and (top < 0 or size[p] > size[top] or (size[p] == size[top] and last[p] < last[top])):
                top = p
            if collect:
                if m == rows.shape[0]:
                    grown = np.empty((2 * m, 5), np.int64)
                    grown[:m] = rows[:m]
                    rows = grown
                rows[m, 0] = k
                rows[m, 1], rows[m, 2], rows[m, 3], rows[m, 4] = x0[p], y0[p], x1[p], y1[p]
                m += 1
        alive = kept
        if top >= 0:
            cam_box[0], cam_box[1], cam_box[2], cam_box[3] = x0[top], y0[top], x1[top], y1[top]
    return rows[:m]


@numba.njit(cache=True)
def component_boxes_by_level(levels, count):
    """(n,5) int64 rows (k, x0, y0, x1, y1): the end-exclusive box of every 8-connected component
    of `levels > k` (H,W), for k = count−1 down to 0."""
    best = np.zeros((0, count), np.float64)
    return _sweep(levels, count, np.zeros((0, 0, 4), np.float64), best, -1, np.zeros(4, np.int64), True)


@numba.njit(cache=True, nogil=True)
def _score_range(maps, cuts, gt, cam_level, best, cam, start, stop):  # images start..stop−1
    for i in range(start, stop):
        _sweep(map_levels(maps[i], cuts[i]), cuts.shape[1], gt[i : i + 1], best[i : i + 1], cam_level, cam[i], False)


@numba.njit(cache=True, nogil=True)
def _score_shared(m, cuts, gt, cam_level, best, cam):
    _sweep(map_levels(m, cuts), len(cuts), gt, best, cam_level, cam[0], False)
    for i in range(1, len(cam)):
        cam[i] = cam[0]


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:  # a forked child has none of the parent's threads: start its own pool
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pool)


def in_threads(fn, count: int, threads: int, *args) -> None:
    """fn(*args, start, stop) over 0..count split into up to `threads` ranges run at once (fn
    compiled with nogil, writing disjoint parts of its outputs)."""
    global _pool
    parts = min(threads, count)
    if parts <= 1:
        fn(*args, 0, count)
        return
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="camlight-metrics")
    cuts = np.linspace(0, count, parts + 1).astype(int)
    jobs = [_pool.submit(fn, *args, int(s), int(e)) for s, e in zip(cuts[:-1], cuts[1:], strict=True)]
    for job in jobs:
        job.result()


def score_maps(
    maps: np.ndarray, cuts: np.ndarray, gt: np.ndarray, cam_level: int = -1, threads: int = 1, shared: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(best (B,T) float64, cam (B,4) int64) of maps (B,H,W) float at each map's ascending cuts
    (B,T) (τ · max, in the maps' dtype; not finite: no foreground) against ground-truth boxes gt
    (B,K,4): the best IoU of any component of each level, and the largest component's box at level
    `cam_level` (zeros where it has none, or for −1). `shared`: maps[0] and cuts[0] stand for every
    image (labelled once). `threads` > 1 splits the images over that many threads."""
    b = len(gt)
    best = np.zeros((b, cuts.shape[1]), np.float64)
    cam = np.zeros((b, 4), np.int64)
    if b == 0:
        return best, cam
    if len(maps) != (1 if shared else b) or len(cuts) != len(maps):
        raise ValueError(f"{len(maps)} maps and {len(cuts)} rows of cuts for {b} images")
    gt = np.ascontiguousarray(gt, dtype=np.float64)
    maps, cuts = np.ascontiguousarray(maps), np.ascontiguousarray(cuts, dtype=maps.dtype)
    if shared:
        _score_shared(maps[0], cuts[0], gt, cam_level, best, cam)
    else:
        in_threads(_score_range, b, threads, maps, cuts, gt, cam_level, best, cam)
    return best, cam
