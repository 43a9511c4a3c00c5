"""The protocols' paper definitions on hand-made maps whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camlight.metrics import aopc
from camlight.metrics._components import contour_boxes
from camlight.metrics.faithfulness import _uniform_noise
from camlight.metrics.protocol_set import Protocols
from camlight.metrics.protocols import (
    CENTER,
    CamLocalization,
    Options,
    Pointing,
    Pxap,
    WsolBoxes,
    center_map,
    center_points,
    check_protocols,
    label_ranks,
    threshold_grid,
)


def blob(h, w, y0, x0, y1, x1, value=1.0):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = value
    return m


# -- CAM: localization error ------------------------------------------------------------------


def test_cam_box_is_the_largest_component_and_any_gt_box_counts():
    # A 6×6 blob (36 px) and a 3×3 one (9 px): the box is the big blob's; it matches the second of
    # two ground-truth boxes exactly, the first not at all.
    m = blob(32, 32, 2, 2, 8, 8) + blob(32, 32, 20, 20, 23, 23)
    boxes = torch.tensor([[[20.0, 20, 23, 23], [2, 2, 8, 8], [0, 0, 0, 0]]])
    scores = CamLocalization.per_image(m[None], boxes, ranks=torch.tensor([0]))
    assert scores["iou"].item() == pytest.approx(1.0)
    assert scores["gt_known"].item() and scores["top1_loc"].item()


def test_top1_needs_the_class_top5_needs_it_in_the_top5():
    m = blob(16, 16, 4, 4, 12, 12)[None].expand(3, 16, 16)
    boxes = torch.tensor([[4.0, 4, 12, 12]]).expand(3, 4)
    logits = torch.tensor(
        [[9.0, 1, 2, 3, 4, 5, 6, 7, 8, 0], [1, 9, 8, 7, 6, 5, 4, 3, 2, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]
    )
    labels = torch.tensor([0, 5, 3])  # ranks 0, 4 and 6
    assert label_ranks(logits, labels).tolist() == [0, 4, 6]
    metric = CamLocalization(num_classes=10)
    metric.update(m, boxes, labels, label_ranks(logits, labels))
    scores = metric.compute()
    assert scores["gt_known_loc_err"] == pytest.approx(0.0)  # every box is right
    assert scores["top1_loc_err"] == pytest.approx(2 / 3)
    assert scores["top5_loc_err"] == pytest.approx(1 / 3)
    assert scores["top1_cls_err"] == pytest.approx(2 / 3) and scores["top5_cls_err"] == pytest.approx(1 / 3)


def test_threshold_020_vs_015():
    # Core 4×4 at 1.0 inside a 12×12 shelf at 0.17: τ = 0.2 boxes the core, τ = 0.15 the shelf.
    m = blob(32, 32, 4, 4, 16, 16, 0.17)
    m[8:12, 8:12] = 1.0
    shelf = torch.tensor([[4.0, 4, 16, 16]])
    at_020 = CamLocalization.per_image(m[None], shelf, torch.tensor([0]), threshold=0.2)
    at_015 = CamLocalization.per_image(m[None], shelf, torch.tensor([0]), threshold=0.15)
    assert at_020["iou"].item() == pytest.approx(16 / 144)
    assert at_015["iou"].item() == pytest.approx(1.0)


def test_images_without_a_box_are_left_out_and_per_class_counts():
    m = blob(16, 16, 0, 0, 8, 8)[None].expand(3, 16, 16)
    boxes = torch.tensor([[0.0, 0, 8, 8], [0, 0, 0, 0], [8, 8, 16, 16]])
    metric = CamLocalization(num_classes=2)
    metric.update(m, boxes, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]))  # the 2nd image misclassified
    assert metric.compute()["gt_known_loc_err"] == pytest.approx(0.5)  # over the two images with a box
    assert metric.compute()["top1_cls_err"] == pytest.approx(1 / 3)  # over all three
    per_class = metric.per_class()
    assert per_class[0]["images"] == 2 and per_class[0]["gt_known_loc_err"] == 0.0
    assert per_class[1]["images"] == 1 and per_class[1]["gt_known_loc_err"] == 1.0
    assert "top5_loc_err" not in metric.compute()  # k = 5 ≥ 2 classes: the same as GT-known


# -- WSOL -------------------------------------------------------------------------------------


def test_max_box_acc_v2_takes_the_best_threshold_per_iou():
    # Two images. Image A: a 4×4 core at 1.0 inside an 8×8 square at 0.5; GT is the 8×8 square →
    # right at τ ≤ 0.5 only. Image B: the same map, GT is the core → right at τ > 0.5 only.
    m = blob(16, 16, 4, 4, 12, 12, 0.5)
    m[6:10, 6:10] = 1.0
    maps = torch.stack([m, m])
    boxes = torch.tensor([[4.0, 4, 12, 12], [6, 6, 10, 10]])
    metric = WsolBoxes(threshold_grid(0.01), ious=(0.5,))
    metric.update(maps, boxes)
    curve = metric.curves()[:, 0]
    assert curve[:51].tolist() == [0.5] * 51  # τ ≤ 0.50: A right (B's box is 4× too big: IoU 0.25)
    assert curve[51:].tolist() == [0.5] * 49  # τ > 0.50: B right, A's IoU 16/64
    assert metric.compute()["max_box_acc_v2"] == pytest.approx(0.5)
    assert metric.best_thresholds() == [0.0]  # the first of equals


def test_calibrated_thresholds_are_frozen_on_the_reported_split():
    m = blob(16, 16, 4, 4, 12, 12, 0.5)
    m[6:10, 6:10] = 1.0
    calib = WsolBoxes(threshold_grid(0.01), ious=(0.5,))
    calib.update(m[None], torch.tensor([[6.0, 6, 10, 10]]))  # only τ > 0.5 is right here
    frozen = calib.best_thresholds()
    assert frozen == [pytest.approx(0.51)]
    reported = WsolBoxes(threshold_grid(0.01), ious=(0.5,))
    reported.update(torch.stack([m, m]), torch.tensor([[4.0, 4, 12, 12], [4, 4, 12, 12]]))  # wants τ ≤ 0.5
    scores = reported.values(calibrated=frozen)
    assert scores["max_box_acc_v2"] == 1.0  # the oracle threshold on this split
    assert scores["box_acc_v2_calibrated"] == 0.0  # the frozen one misses both


def test_wsolevaluation_quirks_by_hand():
    def ref(m, box):
        metric = WsolBoxes((0.5,), ious=(0.5,), compat="wsolevaluation")
        metric.update(m[None], torch.tensor([box]))
        return metric.hits.item()

    # Interior square: boundingRect gives x + w, scored inclusive; the GT's x1 is inclusive too, so
    # both are one pixel wider and still match.
    assert ref(blob(16, 16, 4, 4, 8, 8), [4.0, 4, 8, 8]) == 1
    # On the right edge the box is clipped to W − 1 but the GT is not: IoU (4·5)/(5·5) = 0.8.
    inter = contour_boxes(blob(16, 16, 4, 12, 8, 16).bool().numpy())
    assert inter.tolist() == [[12, 4, 15, 8]]
    # Quantisation and the strict threshold: a value of exactly 0.5 · max is foreground in the paper's
    # definition (≥) but not in the reference's (q > int(0.5 · 255) with q = int(0.5 · 255)).
    m = blob(16, 16, 0, 0, 16, 16, 0.5)
    m[4:8, 4:8] = 1.0
    paper = WsolBoxes((0.5,), ious=(0.5,))
    paper.update(m[None], torch.tensor([[0.0, 0, 16, 16]]))
    assert paper.hits.item() == 1 and ref(m, [0.0, 0, 16, 16]) == 0


def test_hole_contours_are_boxes_too():
    ring = np.zeros((16, 16), dtype=bool)
    ring[2:12, 2:12] = True
    ring[5:8, 5:9] = False  # a 3×4 hole: rows 5–7, cols 5–8
    boxes = sorted(contour_boxes(ring).tolist())
    assert boxes == [[2, 2, 12, 12], [4, 4, 10, 9]]  # outer x+w; hole grown by one pixel, x+w


def test_pxap_bins_compare_in_float64():
    # float32(0.57) = 0.56999999284… lies below the edge 0.57 (float64 0.56999999999…); 100 · it in
    # float32 rounds to 57.0, so a floor(100 · v) bin would be one too high.
    v = torch.tensor(0.57, dtype=torch.float32)
    assert torch.floor(v * 100).item() == 57
    metric = Pxap(threshold_grid(0.01))
    metric.update(v.expand(1, 1, 1), torch.ones(1, 1, 1, dtype=torch.bool))
    assert int(metric.pos.argmax()) == 56


def test_pxap_perfect_and_ignored():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4] = True
    perfect = masks.float()
    metric = Pxap()
    metric.update(perfect, masks)
    assert metric.compute()["pxap"] == pytest.approx(1.0)
    wrong = 1 - perfect  # every object pixel 0, every background pixel 1 …
    ignore = ~masks  # … but the background is ignored: only positives remain, AP 1
    metric = Pxap()
    metric.update(wrong, masks, ignore)
    assert metric.compute()["pxap"] == pytest.approx(1.0)


# -- pointing game and the centre baseline ----------------------------------------------------


def test_pointing_paper_vs_torchray_class_mean():
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[:, 0:4, 0:4] = True
    points = torch.tensor([[1, 1], [15, 15], [2, 2]])
    labels = torch.tensor([0, 0, 1])  # class 2 never seen
    paper, torchray = Pointing(3, tolerance=1.0), Pointing(3, tolerance=1.0, compat="torchray")
    for m in (paper, torchray):
        m.update(points, masks, labels)
    assert paper.compute() == {"pointing": pytest.approx(2 / 3), "pointing_class_mean": pytest.approx(0.75)}
    assert torchray.compute()["pointing_class_mean"] == pytest.approx(0.5)  # (0.5 + 1 + 0) / 3


def test_center_baseline_points():
    assert center_points(1, 224, 224).tolist() == [[111, 111]]  # the Gaussian's first maximum
    assert center_points(1, 48, 64, "torchray").tolist() == [[24.0, 32.0]]  # TorchRay's (W/2, H/2)
    c = center_map(48, 64)
    assert c.max().item() == pytest.approx(np.exp(-0.5 * ((0.5 / 12) ** 2 + (0.5 / 16) ** 2)), rel=1e-6)


def test_protocols_score_the_center_baseline_without_the_model():
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, 12:20, 12:20] = True  # an object in the middle: the centre baseline points at it
    batch = {
        "image": torch.zeros(2, 3, 32, 32),
        "label": torch.tensor([0, 1]),
        "mask": masks,
        "box": torch.tensor([[12.0, 12, 20, 20]] * 2),
    }
    protocols = Protocols(["pointing", "cam_loc"], ["m"], 2)
    protocols.update_center(batch, torch.zeros(2, 2))
    assert protocols.compute()[CENTER]["pointing"] == 1.0


def test_unknown_protocol_and_compat_modes():
    with pytest.raises(ValueError, match="unknown protocol 'box'.*cam_loc"):
        check_protocols(["box"])
    with pytest.raises(ValueError, match="compat.wsol='torchray'; choose from paper, wsolevaluation"):
        check_protocols(["wsol"], {"wsol": "torchray"})
    with pytest.raises(ValueError, match="compat.cam_loc"):
        check_protocols(["cam_loc"], {"cam_loc": "x"})


def test_threshold_grid_is_numpys_arange():
    for step in (0.01, 0.001, 0.05):
        assert np.array_equal(np.array(threshold_grid(step)), np.arange(0, 1, step))


# -- AOPC -------------------------------------------------------------------------------------


class _CellModel(torch.nn.Module):
    """p = the mean of channel 0 over the 4×4 cell at rows 0–3, cols 4–7; logits (log p, log(1 − p))."""

    def forward(self, x):
        p = x[:, 0, 0:4, 4:8].mean((1, 2)).clamp(1e-6, 1 - 1e-6)
        return torch.stack([p.log(), (1 - p).log()], 1)


def test_aopc_by_hand():
    x = torch.zeros(1, 3, 8, 8)
    x[:, :, 0:4, 4:8] = 1.0  # the cell the model reads: p = 1 (clamped)
    model = _CellModel()
    first = torch.zeros(1, 8, 8)
    first[0, 0:4, 4:8] = 1.0  # ranks the model's cell first (of the four 4×4 cells)
    noise_mean = _uniform_noise(x, [7])[0, 0, 0:4, 4:8].mean().item()  # what replaces it
    p0 = 1 - 1e-6
    # steps L = 3: k = 0 unchanged, k = 1..3 the cell is noise → AOPC = 3/4 · (p0 − noise mean)
    assert aopc(model, x, first, torch.tensor([0]), region=4, steps=3, seeds=[7]).item() == pytest.approx(
        0.75 * (p0 - noise_mean), rel=1e-5
    )
    last = torch.ones(1, 8, 8)
    last[0, 0:4, 4:8] = 0.0  # the model's cell ranked last: with L = 3 it is never perturbed
    assert aopc(model, x, last, torch.tensor([0]), region=4, steps=3, seeds=[7]).item() == pytest.approx(0.0)


def test_aopc_noise_depends_on_the_seed_not_the_batch():
    x = torch.randn(3, 3, 8, 8)
    alone = _uniform_noise(x[1:2], [11])
    together = _uniform_noise(x, [5, 11, 9])
    assert torch.equal(alone[0], together[1])


def test_options_defaults_are_the_papers():
    o = Options()
    assert (o.cam_threshold, o.iou, o.wsol_ious, o.threshold_step) == (0.2, 0.5, (0.3, 0.5, 0.7), 0.01)
    assert (o.aopc_region, o.aopc_steps) == (9, 100)


def test_float32_edges_decide_as_float64_does():
    from camlight.metrics.protocols import float32_edges

    edges64 = torch.tensor((*threshold_grid(0.001), 1.0), dtype=torch.float64)
    edges32 = float32_edges(edges64.tolist())
    values = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    values = torch.cat([values, edges64.float(), torch.nextafter(edges64.float(), torch.tensor(0.0))])
    bins64 = torch.bucketize(values.double(), edges64, right=True)
    bins32 = torch.bucketize(values, edges32, right=True)
    assert edges32.dtype == torch.float32 and torch.equal(bins32, bins64)


@pytest.mark.parametrize("compiled", [True, False])  # the Numba max-tree, or the profiles and SciPy
@pytest.mark.parametrize("small", [0, 1024])  # 0: every component recursed into, even one pixel
def test_level_boxes_equal_labelling_every_level(monkeypatch, small, compiled):
    """Every level's boxes in one pass (the compiled max-tree; without it, rows' and columns'
    profiles, labelling only where a component splits or bends) equal labelling every level,
    components and holes, on maps of every kind."""
    from camlight.metrics import _components
    from camlight.metrics._components import _contours, component_boxes, level_boxes

    monkeypatch.setattr(_components, "SMALL", small)
    if compiled:
        assert _components._compiled is not None  # numba is a dependency
    else:
        monkeypatch.setattr(_components, "_compiled", None)
    rng = np.random.default_rng(7)
    for trial in range(400):
        h, w = (int(v) for v in rng.integers(1, 48, size=2))
        kind = trial % 4
        if kind == 0:  # noise
            levels = rng.integers(0, 7, size=(h, w))
        elif kind == 1:  # monotone: one blob per level
            levels = np.minimum.accumulate(np.minimum.accumulate(rng.integers(0, 7, size=(h, w)), 0), 1)
        elif kind == 2:  # blocky plateaus, rings and splits
            levels = np.kron(rng.integers(0, 7, size=(8, 8)), np.ones((6, 6), dtype=int))[:h, :w]
        else:  # a smooth map with several bumps
            ys, xs = np.mgrid[:h, :w]
            bumps = sum(
                np.exp(-((ys - rng.uniform(0, h)) ** 2 + (xs - rng.uniform(0, w)) ** 2) / rng.uniform(4, 40))
                for _ in range(3)
            )
            levels = np.floor(6 * bumps / bumps.max()).astype(int)
        for holes, labelled in ((False, component_boxes), (True, _contours)):
            found = level_boxes(levels, 6, holes)
            for k in range(6):
                expected = sorted(map(tuple, labelled(levels > k).tolist()))
                assert sorted(map(tuple, found[k].tolist())) == expected, (trial, holes, k)


def test_a_map_shared_by_the_batch_scores_as_its_copies():
    """The centre baseline's one map, expanded over a batch (boxed and binned once), scores as
    the same map repeated; images without a box are still left out."""
    shared = center_map(16, 16).expand(3, 16, 16)
    boxes = torch.tensor([[2.0, 2, 14, 14], [0, 0, 0, 0], [4, 4, 12, 12]])
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[:, 4:10, 4:10] = True
    for compat in ("paper", "wsolevaluation"):
        a, b = WsolBoxes(compat=compat), WsolBoxes(compat=compat)
        a.update(shared, boxes)
        b.update(shared.contiguous(), boxes)
        assert torch.equal(a.hits, b.hits) and int(a.count) == 2
    x, y = Pxap(), Pxap()
    x.update(shared, masks)
    y.update(shared.contiguous(), masks)
    assert torch.equal(x.pos, y.pos) and torch.equal(x.neg, y.neg)


def _random_maps(rng: np.random.Generator, count: int, dtype=torch.float32) -> list[torch.Tensor]:
    """Maps of every kind (noise, sparse noise with zeros, smooth bumps, plateaus with ties), some
    with values exactly on a threshold's cut τ · max."""
    maps = []
    for trial in range(count):
        h, w = (int(v) for v in rng.integers(1, 40, size=2))
        kind = trial % 4
        if kind == 0:
            m = rng.random((h, w))
        elif kind == 1:
            m = np.maximum(rng.normal(size=(h, w)), 0)
        elif kind == 2:
            ys, xs = np.mgrid[:h, :w]
            m = sum(
                np.exp(-((ys - rng.uniform(0, h)) ** 2 + (xs - rng.uniform(0, w)) ** 2) / rng.uniform(4, 40))
                for _ in range(3)
            )
        else:
            m = np.kron(rng.integers(0, 4, size=(8, 8)), np.ones((5, 5)))[:h, :w] / 3
        m = torch.from_numpy(m).to(dtype)
        if m.max() > 0 and trial % 3 == 0:  # some pixels exactly at cuts, as the levels compute them
            cuts = torch.tensor(threshold_grid(0.01), dtype=torch.float64).to(dtype) * m.max()
            pick = torch.from_numpy(rng.integers(0, m.numel(), size=max(1, m.numel() // 5)))
            m.view(-1)[pick] = cuts[torch.from_numpy(rng.integers(1, 100, size=len(pick)))]
        maps.append(m)
    return maps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("compiled", [True, False])
def test_component_scores_equal_labelling_every_threshold(monkeypatch, compiled, dtype):
    """MaxBoxAccV2's best IoU per threshold and CAM's largest-component box, from one pass over the
    components (the compiled max-tree, images split over threads; without it, the labelling
    fallback), equal labelling each threshold's foreground with SciPy and boxing its components."""
    from camlight.metrics import _components
    from camlight.metrics import localization as L
    from camlight.metrics._components import component_boxes, largest_component_box

    if not compiled:
        monkeypatch.setattr(_components, "score_maps", None)
        monkeypatch.setattr(_components, "_compiled", None)
    grid = threshold_grid(0.01)
    rng = np.random.default_rng(3)
    for m in _random_maps(rng, 60, dtype):
        h, w = m.shape
        corners = np.sort(rng.uniform(0, [w, h], size=(3, 2, 2)), axis=1)  # up to 3 boxes, zero rows pad
        boxes = torch.from_numpy(corners.reshape(3, 4)).float()
        boxes[int(rng.integers(1, 4)) :] = 0
        batch = m.expand(3, h, w) if rng.random() < 0.3 else torch.stack([m, m.flip(0), m.flip(1)])
        sets = boxes.expand(3, 3, 4)
        fg = L._thresholded(batch, torch.tensor(grid, dtype=torch.float64)).numpy()
        best = torch.zeros(3, len(grid), dtype=torch.float64)
        for i in range(3):
            for k in range(len(grid)):
                found = torch.from_numpy(component_boxes(fg[i, k])).double()
                if len(found):
                    ious = L.box_iou(found.repeat_interleave(3, 0), sets[i].double().repeat(len(found), 1))
                    best[i, k] = ious.max()
        expected = (best[:, :, None] >= torch.tensor((0.3, 0.5, 0.7), dtype=torch.float64)).sum(0).float()
        assert torch.equal(L._max_box_acc_update(batch, sets, grid, (0.3, 0.5, 0.7)), expected)
        at = L._thresholded(batch, torch.tensor([0.2], dtype=torch.float64))[:, 0].numpy()
        cams = torch.from_numpy(np.stack([largest_component_box(f) for f in at])).float()
        if compiled:
            scored, cam = L.component_scores(batch, sets, grid, cam_level=20)
            assert torch.equal(scored, best) and torch.equal(cam, cams)


def test_the_max_tree_levels_and_threads_agree_with_torch():
    """The compiled levels are `_levels`' (float32 and float64, values on the cuts), and splitting a
    batch over threads changes nothing."""
    from camlight.metrics import localization as L
    from camlight.metrics._maxtree import map_levels, score_maps

    rng = np.random.default_rng(5)
    uneven = (0.0, 0.013, 0.2, 0.21, 0.5, 0.77, 0.99)
    for grid in (threshold_grid(0.01), uneven, (0.0,)):
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            for m in _random_maps(rng, 12, dtype):
                values, cuts = L._compiled_inputs(m[None], grid)
                assert np.array_equal(map_levels(values[0], cuts[0]), L._levels(m[None], grid)[0].numpy())
    maps = torch.rand(7, 30, 20, generator=torch.Generator().manual_seed(0))
    values, cuts = L._compiled_inputs(maps, threshold_grid(0.01))
    gt = np.tile(np.array([[[2.0, 3, 15, 25]]]), (7, 1, 1))
    one = score_maps(values, cuts, gt, 20, threads=1)
    three = score_maps(values, cuts, gt, 20, threads=3)
    assert all(np.array_equal(a, b) for a, b in zip(one, three, strict=True))


def test_pxap_compiled_counts_equal_torch_bucketize(monkeypatch):
    """PxAP's compiled histograms equal `torch.bucketize`'s on the CPU — values on and just below
    every edge, below 0 and above 1, NaN, ignored pixels, a map shared by the batch."""
    from camlight.metrics import protocols

    edges = Pxap().edges
    rng = torch.Generator().manual_seed(1)
    values = torch.cat([edges, torch.nextafter(edges, torch.tensor(0.0)), torch.tensor([-0.5, 1.5, float("nan")])])
    maps = torch.rand(4, 20, 30, generator=rng)
    maps.view(-1)[: len(values)] = values
    masks = torch.rand(4, 20, 30, generator=rng) > 0.5
    ignore = torch.rand(4, 20, 30, generator=rng) > 0.8
    shared = maps[0].expand(4, 20, 30)
    for args in ((maps, masks), (maps, masks, ignore), (shared, masks, ignore)):
        compiled, bucketized = Pxap(), Pxap()
        compiled.update(*args)
        with monkeypatch.context() as patch:
            patch.setattr(protocols, "pixel_counts", None)
            bucketized.update(*args)
        assert torch.equal(compiled.pos, bucketized.pos) and torch.equal(compiled.neg, bucketized.neg)
        kept = int((~args[2]).sum()) if len(args) == 3 else masks.numel()
        assert int(compiled.pos.sum() + compiled.neg.sum()) == kept


def test_cam_box_from_the_wsol_pass_scores_as_alone():
    """With cam_loc and wsol together, CAM's box comes from MaxBoxAccV2's pass over the
    components; the scores equal each protocol run alone (and on another threshold grid, where
    τ = 0.2 is off the grid and CAM boxes on its own)."""
    g = torch.Generator().manual_seed(2)
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    centres = torch.rand(6, 3, 2, generator=g) * 40
    widths = 8 + 40 * torch.rand(6, 3, generator=g)
    blobs = torch.exp(
        -((ys - centres[..., :1, None]) ** 2 + (xs - centres[..., 1:, None]) ** 2) / widths[..., None, None]
    )
    maps = blobs.sum(1) + 0.05 * torch.rand(6, 40, 40, generator=g)  # bumps on noise: boxes change with τ
    from camlight.metrics.localization import component_scores
    from camlight.metrics.protocols import cam_boxes

    for level, tau in ((20, 0.2), (21, 0.21), (35, 0.35)):
        assert torch.equal(component_scores(maps, None, threshold_grid(0.01), level)[1], cam_boxes(maps, tau))
    assert len({tuple(b) for b in cam_boxes(maps, 0.2).tolist()}) > 1 and not torch.equal(
        cam_boxes(maps, 0.2), cam_boxes(maps, 0.35)
    )
    batch = {
        "label": torch.tensor([0, 1, 2, 0, 1, 2]),
        "box": torch.tensor([[5.0, 5, 30, 30], [0, 0, 20, 40], [10, 0, 40, 25]] * 2),
        "image": torch.zeros(6, 3, 40, 40),
    }
    logits = torch.randn(6, 3, generator=g)
    for step in (0.01, 0.03):
        o = Options(threshold_step=step)
        alone, per_image = {}, {}
        for p in ("cam_loc", "wsol"):
            one = Protocols([p], ["m"], 3, o)
            per_image.update(one.update("m", maps, batch, logits))
            one.update_center(batch, logits)
            for method, scores in one.compute().items():
                alone.setdefault(method, {}).update(scores)
        both = Protocols(["cam_loc", "wsol"], ["m"], 3, o)
        found = both.update("m", maps, batch, logits)
        both.update_center(batch, logits)
        together = both.compute()
        assert together == alone and "top1_loc_err" in together["m"] and "max_box_acc_v2" in together["m"]
        assert found.keys() == per_image.keys() and all(torch.equal(found[k], per_image[k]) for k in found)


def test_a_forked_child_scores_over_threads_of_its_own():
    """After the parent has split work over its thread pool, a forked child (a DataLoader worker,
    `ddp_fork`) starts its own pool instead of waiting forever on threads it does not have."""
    import multiprocessing as mp

    from camlight.metrics._maxtree import score_maps
    from camlight.metrics.localization import _compiled_inputs

    maps, cuts = _compiled_inputs(
        torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(0)), threshold_grid(0.01)
    )
    gt = np.tile(np.array([[[2.0, 2, 12, 12]]]), (4, 1, 1))
    expected = score_maps(maps, cuts, gt, 20, threads=2)[0]
    ctx = mp.get_context("fork")
    queue = ctx.Queue()

    def child():
        queue.put(score_maps(maps, cuts, gt, 20, threads=2)[0])

    process = ctx.Process(target=child)
    process.start()
    try:
        found = queue.get(timeout=60)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    assert np.array_equal(found, expected)


def test_cam_boxes_of_a_shared_map_are_its_copies():
    from camlight.metrics.protocols import cam_boxes

    shared = center_map(20, 30).expand(3, 20, 30)
    assert torch.equal(cam_boxes(shared), cam_boxes(shared.contiguous()))
    assert cam_boxes(shared).shape == (3, 4) and (cam_boxes(shared)[:, 2] > 0).all()


def test_maps_without_foreground_and_mismatched_shapes():
    """A map whose max is not finite and positive (zeros, NaN somewhere, an infinite peak) has no
    box at any threshold, compiled or not; maps and ground truth of different shapes are refused
    (the compiled passes would read past them)."""
    from camlight.metrics import localization as L

    maps = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    maps[0] = 0
    maps[1, 3, 3] = float("nan")
    maps[2, 5, 5] = float("inf")
    boxes = torch.tensor([[0.0, 0, 12, 12]] * 3)
    grid = threshold_grid(0.01)
    assert (L._levels(maps, grid) == 0).all() and not L._thresholded(maps, torch.tensor([0.0, 0.5])).any()
    assert torch.equal(L.component_scores(maps, boxes, grid, 20)[0], torch.zeros(3, 100, dtype=torch.float64))
    assert (L.component_scores(maps, boxes, grid, 20)[1] == 0).all()
    with pytest.raises(ValueError, match="boxes for 4 images"):
        L.component_scores(maps, torch.zeros(4, 4), grid)
    p = Pxap()
    with pytest.raises(ValueError, match="one shape"):
        p.update(maps, torch.zeros(3, 24, 24, dtype=torch.bool))
    with pytest.raises(ValueError, match="one shape"):
        p.update(maps, torch.zeros(1, 12, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match="from 0"):
        Pxap((0.1, 0.5))
    masks = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1)) > 0.5
    a, b = Pxap(), Pxap()
    a.update(maps.nan_to_num(0, 0, 0), masks, torch.zeros(1, 12, 12, dtype=torch.bool))  # an ignore mask broadcast
    b.update(maps.nan_to_num(0, 0, 0), masks)
    assert torch.equal(a.pos, b.pos) and torch.equal(a.neg, b.neg)


def test_pxap_compiled_counts_on_an_uneven_grid(monkeypatch):
    """The compiled bins' first guess assumes an even grid; on an uneven one its corrections do
    the work, and the counts still equal torch.bucketize's."""
    from camlight.metrics import protocols

    grid = (0.0, 0.013, 0.2, 0.21, 0.5, 0.77, 0.99)
    maps = torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(4))
    edges = Pxap(grid).edges
    maps.view(-1)[: 3 * len(edges)] = torch.cat([edges, torch.nextafter(edges, torch.tensor(0.0)), edges + 1e-6])
    masks = torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(5)) > 0.5
    compiled, bucketized = Pxap(grid), Pxap(grid)
    compiled.update(maps, masks)
    with monkeypatch.context() as patch:
        patch.setattr(protocols, "pixel_counts", None)
        bucketized.update(maps, masks)
    assert torch.equal(compiled.pos, bucketized.pos) and torch.equal(compiled.neg, bucketized.neg)
