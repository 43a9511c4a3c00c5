"""Box metrics on 224 px maps: camlight's MaxBoxAccV2 and box accuracy beside wsolevaluation's reference.

    python benchmarks/box_metrics.py [--n 32] [--size 224] [--threads 1] [--wsolevaluation PATH]

Maps: Grad-CAM-like (a 7×7 grid of random blobs upsampled bilinearly, plus pixel noise), min-max
normalised, with one ground-truth box around the map's brightest part (half of them) or two
random boxes. camlight's `max_box_acc_v2` (100 thresholds,
IoU 30/50/70, boxes from every 8-connected component) is timed on the batch; with
`--wsolevaluation PATH` (a checkout of https://github.com/clovaai/wsolevaluation) its own
`BoxEvaluator.accumulate` (multi-contour, the same 100 thresholds and IoUs) is timed on the same
maps in the same process, and the ratio printed. The two scores differ by the reference's
documented conventions (uint8 quantisation, inclusive boxes, hole contours: see docs/metrics.md);
the timing is of the same work: every component's box at every threshold, scored against the
ground truth. Each side runs `--repeats` times; the median is reported.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

from camlight import metrics as M


def make_maps(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,S,S) maps in [0,1] and (n,2,4) ground-truth boxes: for even images one box around the
    pixels at 0.6 and above (the second row zero padding), for odd ones two random boxes."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 7, 7, generator=g) ** 2
    maps = F.interpolate(low, size=size, mode="bilinear", align_corners=False)[:, 0]
    maps = maps + 0.05 * torch.rand(n, size, size, generator=g)
    lo, hi = maps.amin((1, 2), keepdim=True), maps.amax((1, 2), keepdim=True)
    maps = (maps - lo) / (hi - lo)
    corners = torch.randint(0, size // 2, (n, 2, 2), generator=g).float()
    sides = torch.randint(size // 8, size // 2, (n, 2, 2), generator=g).float()
    boxes = torch.cat([corners, corners + sides], dim=2)
    for i in range(0, n, 2):  # half the images: one box, around the map's brightest part (hits happen)
        ys, xs = torch.nonzero(maps[i] >= 0.6, as_tuple=True)
        boxes[i, 0] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
        boxes[i, 1] = 0
    return maps, boxes


def time_it(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def reference(path: str):
    """wsolevaluation's `evaluation` module, imported from a checkout (munch stubbed when missing, and
    the numpy aliases it uses, removed in numpy 1.24, restored as the builtins they named)."""
    for alias, builtin in (("float", float), ("int", int), ("bool", bool)):
        if not hasattr(np, alias):
            setattr(np, alias, builtin)
    sys.path.insert(0, path)
    try:
        importlib.import_module("munch")
    except ImportError:
        sys.modules["munch"] = types.SimpleNamespace(Munch=dict, munchify=lambda x: x)
    return importlib.import_module("evaluation")


def reference_max_box_acc(evaluation, maps: np.ndarray, boxes: np.ndarray, thresholds, ious) -> list[float]:
    """The reference's BoxEvaluator.accumulate over every map, then its compute() (in %)."""
    ev = object.__new__(evaluation.BoxEvaluator)  # its __init__ reads dataset metadata files
    ev.cam_threshold_list, ev.iou_threshold_list, ev.multi_contour_eval = list(thresholds), list(ious), True
    ev.cnt, ev.num_correct = 0, {iou: np.zeros(len(thresholds)) for iou in ious}
    # Its boxes are inclusive (x1, y1 the last pixel): camlight's end-exclusive boxes minus one.
    ev.gt_bboxes = {
        str(i): [(b - [0, 0, 1, 1]).astype(int).tolist() for b in bs if b[2] > b[0]] for i, bs in enumerate(boxes)
    }
    for i, m in enumerate(maps):
        ev.accumulate(m, str(i))
    return ev.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wsolevaluation", help="path to a wsolevaluation checkout (times its reference code)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import cv2

        cv2.setNumThreads(args.threads)
    except ImportError:
        cv2 = None
    maps, boxes = make_maps(args.n, args.size)
    thresholds = [i / 100 for i in range(100)]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.n} maps at {args.size} px, 100 thresholds")
    ours, value = time_it(lambda: M.max_box_acc_v2(maps, boxes), args.repeats)
    print(f"camlight max_box_acc_v2:   {ours:8.3f} s  ({1e3 * ours / args.n:7.2f} ms per map)  value {value:.6f}")
    acc, hits = time_it(lambda: M.box_accuracy(maps, boxes), args.repeats)
    print(
        f"camlight box_accuracy:     {acc:8.3f} s  ({1e3 * acc / args.n:7.2f} ms per map)  value {float(hits.float().mean()):.6f}"
    )
    if args.wsolevaluation:
        evaluation = reference(args.wsolevaluation)
        ref, values = time_it(
            lambda: reference_max_box_acc(evaluation, maps.double().numpy(), boxes.numpy(), thresholds, (30, 50, 70)),
            args.repeats,
        )
        print(
            f"wsolevaluation reference: {ref:8.3f} s  ({1e3 * ref / args.n:7.2f} ms per map)  "
            f"value {np.mean(values) / 100:.6f} (its conventions)"
        )
        print(f"camlight / reference: {ours / ref:.3f}")


if __name__ == "__main__":
    main()
