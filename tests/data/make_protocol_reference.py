"""Build the localization-protocol fixture and the numbers the reference code gives on it.

What it does
------------
1. Builds, deterministically (numpy, fixed seed and hand-placed shapes), N=40 saliency maps of
   H=48 x W=64 (non-square on purpose, so an x/y swap shows) with ground truth, and writes
   ``tests/data/protocol_reference.npz``:

   - ``maps``   uint16 (N, H, W). The float map is *defined* as
                ``maps.astype(np.float32) / np.float32(65535)``; exactly that conversion is used
                before anything is handed to a reference.
   - ``boxes``  float32 (N, 3, 4), integer-valued xyxy, end-exclusive (x1, y1 one past the last
                pixel), padded with all-zero rows; 1-3 boxes per image. The reference receives
                exactly these numbers as its GT boxes (as wsolevaluation does with CUB's
                x, y, x+w, y+h).
   - ``masks``  bool (N, H, W), object pixels (every image non-empty).
   - ``ignore`` bool (N, H, W), pixels that are neither object nor background (empty for most
                images; disjoint from ``masks``).
   - ``labels`` int64 (N,), classes 0..4 of num_classes=6 (class 5 never occurs).

2. Re-reads that file and runs the reference implementations themselves on it, writing
   ``tests/data/protocol_reference.json``:

   - wsolevaluation (Choe et al. 2020), commit 96f4b88679af41f005824661f47e6fe3628af2aa,
     ``evaluation.py``: ``BoxEvaluator`` (MaxBoxAccV2: multi_contour_eval=True, IoU 30/50/70;
     MaxBoxAcc: multi_contour_eval=False, IoU 50), ``MaskEvaluator`` (PxAP) and
     ``compute_bboxes_from_scoremaps``.
   - TorchRay, commit 6a198ee61d229360a3def590410378d2ed6f1f06:
     ``torchray/benchmark/pointing_game.py`` ``PointingGame`` (imported from the real package),
     with the point from ``examples/attribution_benchmark.py``'s ``_saliency_to_point`` (its
     source is cut out of that file with ``ast`` and executed unchanged, because importing the
     example script has side effects: model/dataset imports and ``xmkdir('data/...')``), and the
     script's "center" baseline ``w, h = image_size; point = torch.tensor([[w / 2, h / 2]])``
     where ``image_size`` comes from ``voc_as_image_size``/``coco_as_image_size`` and is
     ``(width, height)``, i.e. the point is (u, v) = (x, y) = (W/2, H/2) = (32.0, 24.0).

   The reference files are read from the bare mirrors with ``git show <commit>:<path>`` into a
   temporary directory and imported from there. Only what stands between their classes and
   files on disk is replaced; all arithmetic is theirs:

   - ``numpy.float`` is set to the builtin ``float`` (the alias numpy removed in 1.24 and that
     wsolevaluation's ``util.check_scoremap_validity`` and ``MaskEvaluator`` still use; it was
     exactly ``float``).
   - ``BoxEvaluator.__init__`` runs unchanged with ``evaluation.get_image_ids`` /
     ``get_bounding_boxes`` / ``get_image_sizes`` monkeypatched to return our ids, our boxes
     (int tuples x0, y0, x1, y1) and an image size of (224, 224), so that its
     ``resize_bbox(box, (224, 224), (224, 224))`` is the identity (asserted afterwards).
   - ``MaskEvaluator.__init__`` runs unchanged with ``evaluation.get_mask_paths`` patched, and
     ``evaluation.load_mask_image`` patched to return our H x W masks as float32 0/255 images
     (instead of reading a PNG and resizing it to 224 x 224). Their ``get_mask`` then builds the
     GT map itself: 1 for ``masks``, 255 for ``ignore & ~masks`` (= ``ignore``), 0 elsewhere.
   - The float32 map is cast to float64 before ``accumulate`` (``check_scoremap_validity``
     requires ``np.float``; their pipeline gets there through ``t2n``'s ``.astype(np.float)``).
     So the references compute ``(scoremap * 255).astype(np.uint8)`` and the PxAP histogram in
     float64 on float32-exact values.

   Also checked on every thresholded map of the fixture (0.01 grid): cv2's outer contours are
   exactly the 8-connected foreground components (same bounding boxes), and its hole contours
   are exactly the 4-connected background components not touching the image border, with
   boundingRect = hole bbox grown by one pixel on each side.

OpenCV used: opencv-python-headless 4.14.0.94 (cv2.__version__ 4.14.0); the script refuses
another version unless --any-opencv is given (5.0.0.93 was also tried: every number identical;
only the two version fields of the JSON differ).
Other versions at generation: numpy 2.4.6, torch 2.14.1, Python 3.11.7.

Re-run (from the repository root; installs the references' own dependencies into a throwaway
target directory, never into the project's environment):

    .venv/bin/pip install --no-deps --target /tmp/refpkgs \
        opencv-python-headless==4.14.0.94 munch==4.0.0
    PYTHONPATH=/tmp/refpkgs .venv/bin/python tests/data/make_protocol_reference.py

(``--wsol-repo`` / ``--torchray-repo`` point at other clones; the pinned commits must be in them.)
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

WSOL_COMMIT = "96f4b88679af41f005824661f47e6fe3628af2aa"
TORCHRAY_COMMIT = "6a198ee61d229360a3def590410378d2ed6f1f06"
OPENCV_PIN = "4.14.0.94"
CV2_VERSION = "4.14.0"

N, H, W, K = 40, 48, 64, 3
NUM_CLASSES = 6
SEED = 20200512
U16 = 65535

HERE = Path(__file__).resolve().parent
NPZ = HERE / "protocol_reference.npz"
JSON = HERE / "protocol_reference.json"

# --------------------------------------------------------------------------- fixture

YY, XX = np.mgrid[0:H, 0:W].astype(np.float64)


def gauss(cx, cy, sx, sy=None, theta_deg=0.0):
    sy = sx if sy is None else sy
    t = math.radians(theta_deg)
    dx, dy = XX - cx, YY - cy
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    return np.exp(-(u**2 / (2 * sx**2) + v**2 / (2 * sy**2)))


def ring(cx, cy, r0, s):
    return np.exp(-((np.hypot(XX - cx, YY - cy) - r0) ** 2) / (2 * s**2))


def ellipse(cx, cy, ax, ay=None):
    ay = ax if ay is None else ay
    return ((XX - cx) / ax) ** 2 + ((YY - cy) / ay) ** 2 <= 1.0


def rect(x0, y0, x1, y1):
    """End-exclusive rectangle as a boolean image."""
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def bbox(m):
    """End-exclusive xyxy box of the True pixels."""
    ys, xs = np.nonzero(m)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def q(f):
    """Float map in [0, 1] -> uint16 code (the stored representation)."""
    return np.round(np.clip(f, 0.0, 1.0) * U16).astype(np.uint16)


def norm(f):
    """Min-max normalised, so the stored map reaches 0 and 65535."""
    f = f - f.min()
    return f / f.max()


def on_255_grid(f):
    """Float map -> uint16 whose every value is exactly k/255 (code k*257)."""
    k = np.round(np.clip(f, 0, 1) * 255).astype(np.int64)
    return (k * 257).astype(np.uint16)


def build_fixture():
    rng = np.random.default_rng(SEED)
    items = []

    def add(kind, u16, objects, boxes=None, ignore_box=None):
        """objects: list of boolean images (one per instance); boxes default to their bboxes."""
        assert u16.dtype == np.uint16 and u16.shape == (H, W)
        mask = np.zeros((H, W), bool)
        for o in objects:
            mask |= o
        assert mask.any(), kind
        if boxes is None:
            boxes = [bbox(o) for o in objects]
        assert 1 <= len(boxes) <= K, kind
        for b in boxes:
            assert 0 <= b[0] < b[2] <= W and 0 <= b[1] < b[3] <= H, (kind, b)
        ignore = np.zeros((H, W), bool) if ignore_box is None else (rect(*ignore_box) & ~mask)
        if ignore_box is not None:
            assert ignore.any(), kind
        items.append((kind, u16, mask, boxes, ignore))

    # --- smooth single blobs (0-7)
    add("blob: round, centred", q(norm(gauss(32, 24, 6))), [ellipse(32, 24, 9)])
    add("blob: elongated along x", q(norm(gauss(40, 20, 12, 4))), [ellipse(41, 21, 16, 6)])
    add("blob: elongated along y", q(norm(gauss(15, 26, 3, 10))), [ellipse(15, 25, 4, 14)])
    add(
        "blob: rotated 30 deg, loose box",
        q(norm(gauss(30, 30, 10, 3.5, 30))),
        [ellipse(30, 30, 9, 5)],
        boxes=[[18, 20, 43, 41]],
    )
    add(
        "blob: peak 7 px left of the object (pointing: tol 15 hit, tol 4 miss)",
        q(norm(gauss(20, 24, 4))),
        [ellipse(30, 24, 3)],
    )
    add("blob: far from the object", q(norm(gauss(10, 10, 4))), [ellipse(50, 38, 6, 5)])
    add(
        "blob: very broad, small object, ignore box",
        q(norm(gauss(34, 22, 15, 12))),
        [ellipse(34, 22, 5, 4)],
        ignore_box=(24, 14, 46, 32),
    )
    add(
        "blob on a 0.1 pedestal (min > 0, not min-max normalised)",
        q(0.1 + 0.9 * gauss(44, 30, 6, 5)),
        [ellipse(44, 30, 8, 7)],
    )

    # --- several separate blobs (8-13)
    add(
        "two blobs, heights 1.0 / 0.8",
        q(gauss(16, 16, 5) + 0.8 * gauss(48, 32, 5)),
        [ellipse(16, 16, 7), ellipse(48, 32, 7)],
    )
    add(
        "three blobs, heights 1.0 / 0.7 / 0.4, ignore box",
        q(gauss(12, 12, 4) + 0.7 * gauss(52, 12, 4) + 0.4 * gauss(32, 36, 5)),
        [ellipse(12, 12, 6), ellipse(52, 12, 6), ellipse(32, 36, 7)],
        ignore_box=(0, 0, 64, 22),
    )
    add(
        "two close blobs merging at low thresholds",
        q(norm(gauss(24, 24, 5) + gauss(38, 24, 5))),
        [ellipse(31, 24, 14, 7)],
    )
    add(
        "two blobs, only one is the object", q(norm(gauss(14, 34, 5) + 0.9 * gauss(48, 14, 5))), [ellipse(48, 14, 7, 6)]
    )
    f = sum(
        a * gauss(cx, cy, 2.5)
        for a, cx, cy in [(1.0, 20, 14), (0.9, 27, 18), (0.8, 22, 24), (0.6, 50, 10), (0.7, 46, 38)]
    )
    add(
        "five small blobs, one GT box over a cluster of three, ignore box",
        q(norm(f)),
        [ellipse(20, 14, 3), ellipse(27, 18, 3), ellipse(22, 24, 3)],
        boxes=[[16, 10, 31, 28]],
        ignore_box=(30, 0, 64, 48),
    )
    u = np.zeros((H, W), np.uint16)
    u[10:20, 10:20] = U16
    u[20:30, 20:30] = 52428  # 0.8; touches the first block only diagonally (8-connected)
    u[32:40, 40:56] = 26214  # 0.4
    add(
        "piecewise-flat blocks touching diagonally (8-connectivity) + third block",
        u,
        [rect(10, 10, 20, 20), rect(20, 20, 30, 30), rect(40, 32, 56, 40)],
    )

    # --- rings / annuli (14-18)
    add("ring (annulus) around a filled-disk object", q(norm(ring(32, 24, 12, 2.5))), [ellipse(32, 24, 14)])
    add(
        "ring with a small blob inside its hole (nested contours), ignore box",
        q(norm(ring(28, 22, 13, 2) + 0.7 * gauss(28, 22, 2))),
        [ellipse(28, 22, 15) & ~ellipse(28, 22, 10), ellipse(28, 22, 3)],
        boxes=[[13, 7, 44, 38]],
        ignore_box=(10, 4, 48, 42),
    )
    add(
        "two rings side by side",
        q(norm(ring(16, 24, 9, 2) + 0.85 * ring(47, 22, 9, 2))),
        [ellipse(16, 24, 11), ellipse(47, 22, 11)],
    )
    u = np.zeros((H, W), np.uint16)
    u[8:40, 12:52] = 45875  # 0.7 frame ...
    u[10:38, 14:50] = U16  # ... with a brighter inner frame ...
    u[14:34, 20:44] = 0  # ... around a hole, which is the object
    add("square frame whose hole is the object (only a hole contour fits)", u, [rect(20, 14, 44, 34)])
    add(
        "ring cut by the top border (its hole opens onto the border), ignore box",
        q(norm(ring(30, 2, 12, 2.5))),
        [ellipse(30, 2, 14, 14)],
        ignore_box=(10, 0, 50, 20),
    )

    # --- blobs touching the border (19-22), and a corner
    add("blob touching the top border", q(norm(gauss(34, 0, 7, 5))), [ellipse(34, 0, 9, 6)])
    add("blob touching the bottom border", q(norm(gauss(20, 47, 6, 5))), [ellipse(20, 47, 8, 6)])
    add("blob touching the left border", q(norm(gauss(0, 20, 5, 7))), [ellipse(0, 20, 6, 9)])
    add(
        "blob touching the right border and bottom-right corner",
        q(norm(gauss(63, 26, 5, 6) + gauss(60, 46, 4))),
        [ellipse(63, 26, 6, 8), ellipse(60, 46, 5)],
    )

    # --- degenerate maxima (23-28)
    add("all-zero map", np.zeros((H, W), np.uint16), [ellipse(40, 20, 6)])
    add(
        "max exactly 0.6 (= 153/255, code 39321), not normalised",
        (np.round(gauss(26, 22, 6) * 39321)).astype(np.uint16),
        [ellipse(26, 22, 8)],
    )
    add(
        "max 0.45 (not on the 1/255 grid), two blobs, ignore box",
        q(0.45 * norm(gauss(18, 30, 5) + 0.6 * gauss(46, 14, 4))),
        [ellipse(18, 30, 7), ellipse(46, 14, 5)],
        ignore_box=(30, 4, 60, 26),
    )
    add("flat plateau at the maximum (clipped blob)", q(np.minimum(gauss(36, 20, 7) / 0.6, 1.0)), [ellipse(36, 20, 9)])
    u = q(norm(gauss(14, 10, 3) * 0.5 + gauss(46, 34, 6)))
    u[6:9, 8:12] = U16  # plateau tie at the maximum, first in raster order, off the object
    u[32:37, 44:49] = U16  # plateau tie on the object
    add("two plateaus tied at the maximum; the raster-first one is off the object", u, [ellipse(46, 34, 7)])
    u = q(0.3 * norm(gauss(40, 24, 10, 6)))
    u[24, 20:50] = U16  # a one-pixel-high bar at the maximum
    add("one-pixel bar tied at the maximum; its left end is 11 px from the object", u, [ellipse(40, 24, 9, 5)])

    # --- small specks (29-31)
    u = q(0.9 * gauss(40, 26, 6))
    u[5, 6] = U16  # isolated 1-pixel speck at the maximum
    add("1-pixel speck at the maximum + blob at 0.9", u, [ellipse(40, 26, 8)])
    u = q(0.85 * gauss(22, 30, 5, 7))
    u[10, 50] = u[10, 51] = u[11, 51] = U16  # L-shaped 3-pixel speck
    u[40, 58] = 58982  # 0.9, 1-pixel
    add("3-pixel L speck at the maximum + 1-pixel speck + blob", u, [ellipse(22, 30, 7, 9)])
    u = np.zeros((H, W), np.uint16)
    for (y, x), v in {
        (4, 4): U16,
        (20, 30): 60000,
        (21, 31): 60000,
        (40, 12): 45000,
        (30, 55): 30000,
        (30, 56): 30000,
        (10, 40): 52000,
    }.items():
        u[y, x] = v
    add(
        "specks only (1-2 pixels, one diagonal pair), ignore box",
        u,
        [ellipse(30, 20, 4), ellipse(56, 30, 3, 2)],
        ignore_box=(20, 12, 40, 28),
    )

    # --- exact quantisation edges k/255 (32-35)
    ks = np.array([0, 1, 2, 25, 26, 51, 76, 77, 102, 127, 128, 153, 178, 204, 229, 254, 255, 255])
    u = np.zeros((H, W), np.uint16)
    for i, k in enumerate(ks):  # vertical bands of width 3 (the last two are 1.0)
        u[6:42, 4 + 3 * i : 7 + 3 * i] = k * 257
    add("vertical bands at exact k/255 values (0.2, 0.4, 0.6, 0.8 among them)", u, [rect(40, 10, 58, 38)])
    u = np.zeros((H, W), np.uint16)
    for i, k in enumerate(ks):  # the same bands one uint16 code below k/255
        u[6:42, 4 + 3 * i : 7 + 3 * i] = max(int(k) * 257 - 1, 0)
    u[0, 63] = U16  # keep the maximum at 1.0
    add(
        "the same bands one code below k/255, max 1.0 in a corner, ignore box",
        u,
        [rect(40, 10, 58, 38)],
        ignore_box=(30, 6, 64, 42),
    )
    add("blob quantised onto the k/255 grid", on_255_grid(norm(gauss(30, 22, 8, 6))), [ellipse(30, 22, 10, 8)])
    u = on_255_grid(norm(gauss(36, 26, 7, 9))).astype(np.int64)
    u = np.where(u > 0, u - 1, 0)
    u[26, 36] = U16  # keep the peak exactly 1.0
    add("blob on the k/255 grid minus one code (peak kept at 1.0)", u.astype(np.uint16), [ellipse(36, 26, 9, 11)])

    # --- random smooth maps (36-39)
    for j in range(4):
        f = np.zeros((H, W))
        objs = []
        for _ in range(3):
            cx, cy = rng.uniform(6, W - 6), rng.uniform(6, H - 6)
            sx, sy = rng.uniform(2.5, 9), rng.uniform(2.5, 9)
            f += rng.uniform(0.3, 1.0) * gauss(cx, cy, sx, sy, rng.uniform(0, 180))
            if len(objs) < 1 + j % 3:
                objs.append(
                    ellipse(
                        cx + rng.uniform(-3, 3),
                        cy + rng.uniform(-3, 3),
                        sx * rng.uniform(1.0, 1.8),
                        sy * rng.uniform(1.0, 1.8),
                    )
                )
        f += 0.05 * rng.random((H, W))
        ign = None
        if j % 2 == 0:
            x0, y0 = int(rng.integers(0, 30)), int(rng.integers(0, 20))
            ign = (x0, y0, x0 + int(rng.integers(12, 34)), y0 + int(rng.integers(10, 28)))
        add(f"random smooth map #{j} ({len(objs)} objects)", q(norm(f)), objs, ignore_box=ign)

    assert len(items) == N, len(items)
    labels = rng.integers(0, NUM_CLASSES - 1, size=N).astype(np.int64)
    assert set(labels.tolist()) == set(range(NUM_CLASSES - 1)), labels

    maps = np.stack([it[1] for it in items])
    masks = np.stack([it[2] for it in items])
    ignore = np.stack([it[4] for it in items])
    boxes = np.zeros((N, K, 4), np.float32)
    for i, it in enumerate(items):
        boxes[i, : len(it[3])] = np.asarray(it[3], np.float32)
    kinds = [it[0] for it in items]
    return dict(maps=maps, boxes=boxes, masks=masks, ignore=ignore, labels=labels), kinds


# --------------------------------------------------------------------------- references


def git_show(repo, commit, path):
    return subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], check=True, capture_output=True).stdout


def load_wsol(repo, tmp):
    d = Path(tmp) / "wsolevaluation"
    d.mkdir()
    for f in ("evaluation.py", "config.py", "data_loaders.py", "util.py"):
        (d / f).write_bytes(git_show(repo, WSOL_COMMIT, f))
    np.float = float  # removed alias (numpy >= 1.24) that util.py / evaluation.py use
    sys.path.insert(0, str(d))
    import evaluation  # noqa: E402  (theirs)

    return evaluation


def load_torchray(repo, tmp):
    d = Path(tmp) / "torchray_src"
    names = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", TORCHRAY_COMMIT, "torchray"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    # the .py files plus the two data files read at import time (the rest is only read lazily)
    for name in names:
        if name.endswith(".py") or name in ("torchray/VERSION", "torchray/benchmark/imagenet_classes.txt"):
            p = d / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(git_show(repo, TORCHRAY_COMMIT, name))
    sys.path.insert(0, str(d))
    from torchray.benchmark.pointing_game import PointingGame  # noqa: E402  (theirs)

    # _saliency_to_point, verbatim from the example script (which cannot be imported cleanly)
    src = git_show(repo, TORCHRAY_COMMIT, "examples/attribution_benchmark.py").decode()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "_saliency_to_point")
    import torch

    ns = {"torch": torch}
    exec(compile(ast.get_source_segment(src, fn), "attribution_benchmark.py", "exec"), ns)
    # the centre baseline, as written in that script (checked verbatim below)
    for line in ("w, h = image_size", "point = torch.tensor([[w / 2, h / 2]])"):
        assert line in src, line
    ds = git_show(repo, TORCHRAY_COMMIT, "torchray/benchmark/datasets.py").decode()
    assert "return width, height" in ds and "return image['width'], image['height']" in ds
    return PointingGame, ns["_saliency_to_point"]


def gt_boxes_of(boxes_i):
    return [tuple(int(v) for v in b) for b in boxes_i if np.any(b != 0)]


def run_box_evaluator(ev_mod, fmaps64, boxes, interval, ious, multi):
    ids = [f"img{i:02d}" for i in range(len(fmaps64))]
    gt = {iid: gt_boxes_of(boxes[i]) for i, iid in enumerate(ids)}
    ev_mod.get_image_ids = lambda metadata, proxy=False: list(ids)
    ev_mod.get_bounding_boxes = lambda metadata: {k: list(v) for k, v in gt.items()}
    ev_mod.get_image_sizes = lambda metadata: {k: (ev_mod._RESIZE_LENGTH,) * 2 for k in ids}
    thresholds = list(np.arange(0, 1, interval))  # as evaluate_wsol builds it
    ev = ev_mod.BoxEvaluator(
        metadata=None,
        dataset_name="CUB",
        split="test",
        cam_threshold_list=thresholds,
        iou_threshold_list=list(ious),
        mask_root=None,
        multi_contour_eval=multi,
    )
    assert {k: [tuple(b) for b in v] for k, v in ev.gt_bboxes.items()} == gt  # resize = identity
    for iid, m in zip(ids, fmaps64, strict=True):
        ev.accumulate(m, iid)
    vals = ev.compute()
    return {
        "num_thresholds": len(thresholds),
        "iou_thresholds": list(ious),
        "per_iou": {str(t): float(v) for t, v in zip(ious, vals, strict=True)},
        "mean": float(np.average(vals)),
        "num_correct": {str(t): [int(x) for x in ev.num_correct[t]] for t in ious},
        "cnt": int(ev.cnt),
    }


def run_mask_evaluator(ev_mod, fmaps64, masks, ignore, interval):
    ids = [f"img{i:02d}" for i in range(len(fmaps64))]
    store = {}
    for i, iid in enumerate(ids):
        store[os.path.join("ROOT", iid + "_mask.png")] = masks[i].astype(np.float32) * 255
        store[os.path.join("ROOT", iid + "_ignore.png")] = ignore[i].astype(np.float32) * 255
    ev_mod.get_mask_paths = lambda metadata: (
        {iid: [iid + "_mask.png"] for iid in ids},
        {iid: iid + "_ignore.png" for iid in ids},
    )
    ev_mod.load_mask_image = lambda file_path, resize_size: store[file_path].copy()
    ev = ev_mod.MaskEvaluator(
        metadata=None,
        dataset_name="OpenImages",
        split="test",
        cam_threshold_list=list(np.arange(0, 1, interval)),
        iou_threshold_list=[30, 50, 70],
        mask_root="ROOT",
        multi_contour_eval=False,
    )
    for i, (iid, m) in enumerate(zip(ids, fmaps64, strict=True)):
        g = ev_mod.get_mask(ev.mask_root, ev.mask_paths[iid], ev.ignore_paths[iid])
        assert np.array_equal(g == 1, masks[i]) and np.array_equal(g == 255, ignore[i])
        ev.accumulate(m, iid)
    return float(ev.compute())


def check_contours(cv2, fmaps64):
    """cv2 outer contours == 8-connected components; holes == enclosed 4-connected background
    components, boundingRect = their bbox grown by 1. On every thresholded map of the fixture."""
    from scipy import ndimage

    n_maps = n_outer = n_holes = n_border = 0
    for m in fmaps64:
        img = (m * 255).astype(np.uint8)  # as compute_bboxes_from_scoremaps
        for t in np.arange(0, 1, 0.01):
            _, b = cv2.threshold(img, int(t * np.max(img)), 255, cv2.THRESH_BINARY)
            cs, hier = cv2.findContours(b, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
            outer, holes = [], []
            for i, c in enumerate(cs):
                depth, j = 0, hier[0][i][3]
                while j != -1:
                    depth, j = depth + 1, hier[0][j][3]
                (holes if depth % 2 else outer).append(tuple(cv2.boundingRect(c)))
            fg = b > 0
            lab, _ = ndimage.label(fg, structure=np.ones((3, 3)))
            exp_outer = [
                (s[1].start, s[0].start, s[1].stop - s[1].start, s[0].stop - s[0].start)
                for s in ndimage.find_objects(lab)
            ]
            blab, _ = ndimage.label(~fg)
            exp_holes = [
                (s[1].start - 1, s[0].start - 1, s[1].stop - s[1].start + 2, s[0].stop - s[0].start + 2)
                for s in ndimage.find_objects(blab)
                if s[0].start > 0 and s[1].start > 0 and s[0].stop < H and s[1].stop < W
            ]
            assert sorted(outer) == sorted(exp_outer), (outer, exp_outer)
            assert sorted(holes) == sorted(exp_holes), (holes, exp_holes)
            n_maps += 1
            n_outer += len(outer)
            n_holes += len(holes)
            n_border += sum(x == 0 or y == 0 or x + w == W or y + h == H for x, y, w, h in outer)
    return {
        "thresholded_maps": n_maps,
        "outer_contours": n_outer,
        "hole_contours": n_holes,
        "outer_contours_touching_the_border": n_border,
        "outer_contours_are_8_connected_components": True,
        "hole_contours_are_enclosed_4_connected_background_components": True,
        "hole_boundingRect_is_hole_bbox_grown_by_1": True,
        "border_pixels_kept_as_is": True,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wsol-repo", default="/work/.mirror/clovaai+wsolevaluation/repo")
    ap.add_argument("--torchray-repo", default="/work/.mirror/facebookresearch+TorchRay/repo")
    ap.add_argument("--any-opencv", action="store_true", help="accept an unpinned cv2 version")
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where to write the two files")
    args = ap.parse_args()
    npz_path = args.out_dir / NPZ.name
    json_path = args.out_dir / JSON.name

    import cv2
    import torch

    if cv2.__version__ != CV2_VERSION and not args.any_opencv:
        sys.exit(f"cv2 {cv2.__version__} found; pin opencv-python-headless=={OPENCV_PIN}")

    arrays, kinds = build_fixture()
    np.savez_compressed(npz_path, **arrays)
    with np.load(npz_path) as z:  # everything below uses only what was stored
        fx = {k: z[k] for k in z.files}
    assert fx["maps"].dtype == np.uint16 and fx["boxes"].dtype == np.float32
    assert fx["masks"].dtype == bool and fx["ignore"].dtype == bool
    assert fx["labels"].dtype == np.int64
    assert not (fx["masks"] & fx["ignore"]).any() and fx["masks"].any(axis=(1, 2)).all()

    fmaps32 = fx["maps"].astype(np.float32) / np.float32(65535)  # THE float map
    fmaps64 = [m.astype(np.float64) for m in fmaps32]  # t2n's .astype(np.float)

    with tempfile.TemporaryDirectory() as tmp:
        ev = load_wsol(args.wsol_repo, tmp)
        assert ev.cv2 is cv2
        PointingGame, saliency_to_point = load_torchray(args.torchray_repo, tmp)

        wsol = {"MaxBoxAccV2": {}, "MaxBoxAcc": {}, "PxAP": {}}
        for interval in (0.01, 0.001):
            r = run_box_evaluator(ev, fmaps64, fx["boxes"], interval, (30, 50, 70), True)
            if interval != 0.01:
                del r["num_correct"]
            wsol["MaxBoxAccV2"][str(interval)] = r
        wsol["MaxBoxAcc"]["0.01"] = run_box_evaluator(ev, fmaps64, fx["boxes"], 0.01, (50,), False)
        for interval in (0.01, 0.001):
            wsol["PxAP"][str(interval)] = run_mask_evaluator(ev, fmaps64, fx["masks"], fx["ignore"], interval)
        grid = list(np.arange(0, 1, 0.01))
        dbg = {}
        for idx in (20, 50):
            per_image = []
            for m in fmaps64:
                bxs, nums = ev.compute_bboxes_from_scoremaps(m, [grid[idx]], multi_contour_eval=True)
                per_image.append(np.asarray(bxs[0]).astype(int).tolist())
            dbg[str(round(grid[idx], 2))] = {
                "grid_index_at_0.01": idx,
                "threshold": float(grid[idx]),
                "boxes_per_image": per_image,
            }
        wsol["compute_bboxes_from_scoremaps_multi_contour"] = dbg
        wsol["cv2_contour_checks"] = check_contours(cv2, fmaps64)

        def pointing(points):
            out = {}
            for tol in (15, 4):
                pg = PointingGame(NUM_CLASSES, tolerance=tol)
                per = []
                for i in range(N):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # torch.meshgrid indexing warning
                        hit = pg.evaluate(torch.from_numpy(fx["masks"][i]), points[i][0])
                    pg.aggregate(hit, int(fx["labels"][i]))
                    per.append(hit)
                hits, misses = pg.hits.tolist(), pg.misses.tolist()
                out[str(tol)] = {
                    "hits": hits,
                    "misses": misses,
                    "class_accuracies": pg.class_accuracies.tolist(),
                    "accuracy": float(pg.accuracy),
                    "hit_rate": sum(hits) / (sum(hits) + sum(misses)),
                    "per_image": per,
                }
            return out

        sal_points = [saliency_to_point(torch.from_numpy(m)[None, None]) for m in fmaps32]
        image_size = (W, H)  # (width, height), as voc_as_image_size / coco_as_image_size
        w, h = image_size
        center = [torch.tensor([[w / 2, h / 2]]) for _ in range(N)]
        torchray = {
            "num_classes": NUM_CLASSES,
            "image_size_order": "(width, height)",
            "point_order": "(u, v) = (x, y)",
            "saliency": {"points": [p[0].tolist() for p in sal_points], **pointing(sal_points)},
            "center": {"point": center[0][0].tolist(), **pointing(center)},
        }

    out = {
        "description": "Reference numbers for tests/data/protocol_reference.npz; "
        "made by tests/data/make_protocol_reference.py.",
        "commits": {"wsolevaluation": WSOL_COMMIT, "TorchRay": TORCHRAY_COMMIT},
        "opencv_python_headless": importlib.metadata.version("opencv-python-headless"),
        "cv2_version": cv2.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__.split("+")[0],
        "N": N,
        "H": H,
        "W": W,
        "K": K,
        "num_classes": NUM_CLASSES,
        "float_map": "maps.astype(np.float32) / np.float32(65535)",
        "box_convention": "xyxy end-exclusive, zero rows are padding; handed to the reference "
        "unchanged as its GT boxes",
        "reference_input": "float map cast to float64 before wsolevaluation (t2n); "
        "float32 torch tensor (1,1,H,W) for _saliency_to_point",
        "image_kinds": kinds,
        "wsolevaluation": wsol,
        "torchray": torchray,
    }
    json_path.write_text(json.dumps(out, indent=1) + "\n")

    # ---------------------------------------------------------------- summary
    print(f"wrote {npz_path} ({npz_path.stat().st_size} bytes) and {json_path} ({json_path.stat().st_size} bytes)")
    for iv, r in wsol["MaxBoxAccV2"].items():
        print(f"MaxBoxAccV2 @{iv}: {r['per_iou']} mean {r['mean']:.4f} (cnt {r['cnt']})")
    print(f"MaxBoxAcc @0.01 IoU50: {wsol['MaxBoxAcc']['0.01']['per_iou']}")
    print(f"PxAP: {wsol['PxAP']}")
    print(f"contour checks: {wsol['cv2_contour_checks']}")
    for k in ("saliency", "center"):
        for tol in ("15", "4"):
            r = torchray[k][tol]
            print(
                f"pointing {k} tol {tol}: acc {r['accuracy']:.4f} hit rate {r['hit_rate']:.4f} "
                f"hits {r['hits']} misses {r['misses']}"
            )


if __name__ == "__main__":
    main()
