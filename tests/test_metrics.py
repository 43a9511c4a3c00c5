"""Each metric against hand-made cases, and the Metric classes reduced over two processes."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from camlight import metrics as M


def _square_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(1, h, w, dtype=torch.bool)
    m[0, y0:y1, x0:x1] = True
    return m


def _peak(h, w, y, x):
    m = torch.zeros(1, h, w)
    m[0, y, x] = 1.0
    return m


# -- pointing game -------------------------------------------------------------------------------


def test_pointing_game_tolerance_is_15px_at_224_and_strict():
    mask = _square_mask(224, 224, 100, 120, 100, 120)  # last mask column: 119
    for dx, hit in [(14, True), (15, False), (16, False)]:
        assert M.pointing_game(_peak(224, 224, 110, 119 + dx), mask).item() is hit, dx
    assert M.pointing_game(_peak(224, 224, 110, 119 + 16), mask, tolerance=17).item()
    # Scaled with the image: 15 · 112 / 224 = 7.5 px at 112 px.
    small = _square_mask(112, 112, 50, 60, 50, 60)
    assert M.pointing_game(_peak(112, 112, 55, 59 + 7), small).item()
    assert not M.pointing_game(_peak(112, 112, 55, 59 + 8), small).item()


def test_pointing_game_metric_reports_overall_and_mean_per_class():
    h = w = 32
    masks = torch.cat([_square_mask(h, w, 0, 4, 0, 4)] * 4 + [torch.zeros(1, h, w, dtype=torch.bool)])
    maps = torch.cat([_peak(h, w, 1, 1), _peak(h, w, 30, 30), _peak(h, w, 2, 2), _peak(h, w, 2, 2), _peak(h, w, 1, 1)])
    labels = torch.tensor([0, 0, 1, 1, 1])  # class 0: 1 of 2 hits; class 1: 2 of 2; the last has no mask
    pg = M.PointingGame(num_classes=2, tolerance=1)
    pg.update(maps, masks, labels)
    assert pg.compute() == {"accuracy": 0.75, "mean_class_accuracy": 0.75}
    pg = M.PointingGame(num_classes=3, tolerance=1)
    pg.update(maps[:3], masks[:3], torch.tensor([0, 0, 2]))
    out = pg.compute()
    assert out["accuracy"] == pytest.approx(2 / 3) and out["mean_class_accuracy"] == pytest.approx((0.5 + 1) / 2)


# -- energy pointing game --------------------------------------------------------------------


def test_energy_pointing_game_uses_x_for_columns():
    maps = torch.zeros(1, 20, 40)
    maps[0, 0:5, 0:30] = 1.0  # 150 inside a box 30 wide and 5 high
    maps[0, 10:20, 0:5] = 1.0  # 50 elsewhere
    maps[0, 15, 15] = -7.0  # clipped at 0
    box = torch.tensor([[0.0, 0.0, 30.0, 5.0]])  # x0, y0, x1, y1
    assert M.energy_pointing_game(maps, box).item() == pytest.approx(0.75)
    transposed = torch.tensor([[0.0, 0.0, 5.0, 30.0]])
    assert M.energy_pointing_game(maps, transposed).item() == pytest.approx((25 + 50) / 200)  # 5 cols × 5 rows + the 50
    assert M.energy_pointing_game(torch.zeros(1, 4, 4), box).item() == 0.0


# -- boxes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "hit"), [(49, False), (51, True)])
def test_box_accuracy_at_iou_049_and_051(width, hit):
    gt = torch.tensor([[0.0, 0.0, 100.0, 10.0]])  # area 1000
    maps = torch.zeros(1, 16, 128)
    maps[0, 0:10, 0:width] = 1.0  # IoU = 10·width / 1000
    assert M.box_iou(M.box_from_map(maps[0])[None], gt).item() == pytest.approx(width / 100)
    assert M.box_accuracy(maps, gt).item() is hit


def test_only_the_largest_component_counts_for_box_accuracy():
    maps = torch.zeros(1, 40, 40)
    maps[0, 2:30, 2:30] = 0.5  # large blob, the ground truth
    maps[0, 35:38, 35:38] = 1.0  # small blob holding the maximum
    assert M.box_from_map(maps[0]).tolist() == [2, 2, 30, 30]
    assert M.box_accuracy(maps, torch.tensor([[2.0, 2.0, 30.0, 30.0]])).item()
    # Above 0.5·max only the small blob remains.
    assert M.box_from_map(maps[0], threshold=0.6).tolist() == [35, 35, 38, 38]


def test_components_are_8_connected():
    maps = torch.zeros(1, 10, 10)
    for i in range(6):  # a diagonal line: one component only with 8-connectivity
        maps[0, i, i] = 1.0
    maps[0, 8, 0] = 1.0
    assert M.box_from_map(maps[0]).tolist() == [0, 0, 6, 6]


def test_max_box_acc_v2_takes_the_best_component_and_threshold():
    maps = torch.zeros(2, 40, 40)
    maps[:, 2:30, 2:30] = 0.5  # large blob
    maps[:, 33:39, 33:39] = 1.0  # small blob, the ground truth of image 0
    boxes = torch.tensor([[33.0, 33.0, 39.0, 39.0], [0.0, 0.0, 40.0, 40.0]])
    assert M.box_accuracy(maps[:1], boxes[:1]).tolist() == [False]  # the largest is the wrong one
    # Image 0: its component exists at every τ → IoU 1. Image 1 (whole-image box, area 1600): the
    # union of both blobs never forms one component, so its best IoU is 784/1600 = 0.49 with the
    # large blob (τ <= 0.5) → it counts for δ = 0.3 only. Zero pixels are never foreground, even
    # at τ = 0 (a whole-image box there would make it a hit for every δ).
    expected = (1.0 + 0.5 + 0.5) / 3
    assert M.max_box_acc_v2(maps, boxes) == pytest.approx(expected)
    metric = M.MaxBoxAccV2()
    metric.update(maps[:1], boxes[:1])
    metric.update(maps[1:], boxes[1:])
    assert metric.compute() == pytest.approx(expected)


def test_a_map_without_positive_pixels_has_no_box():
    zero = torch.zeros(1, 10, 10)
    assert M.box_from_map(zero[0]).tolist() == [0, 0, 0, 0]
    assert M.box_accuracy(zero, torch.tensor([[0.0, 0.0, 10.0, 10.0]])).tolist() == [False]
    assert M.max_box_acc_v2(zero, torch.tensor([[0.0, 0.0, 10.0, 10.0]])) == 0.0


def _bfs_components(fg):
    """Reference 8-connected labelling by breadth-first search: a set of pixel sets."""
    h, w = fg.shape
    seen, comps = set(), []
    for y in range(h):
        for x in range(w):
            if bool(fg[y, x]) and (y, x) not in seen:
                comp, todo = set(), [(y, x)]
                seen.add((y, x))
                while todo:
                    cy, cx = todo.pop()
                    comp.add((cy, cx))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and bool(fg[ny, nx]) and (ny, nx) not in seen:
                                seen.add((ny, nx))
                                todo.append((ny, nx))
                comps.append(frozenset(comp))
    return set(comps)


def _box(component) -> tuple[int, int, int, int]:
    ys, xs = zip(*component, strict=True)
    return (min(xs), min(ys), max(xs) + 1, max(ys) + 1)


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_component_boxes_agree_with_breadth_first_search(density):
    from camlight.metrics._components import component_boxes

    g = torch.Generator().manual_seed(int(density * 100))
    fg = torch.rand(6, 16, 16, generator=g) < density
    for i in range(len(fg)):
        ours = sorted(map(tuple, component_boxes(fg[i].numpy()).tolist()))
        assert ours == sorted(_box(c) for c in _bfs_components(fg[i]))


def test_components_of_a_long_snake():
    from camlight.metrics._components import component_boxes

    fg = torch.zeros(9, 9, dtype=torch.bool)
    fg[::2, :] = True  # rows 0, 2, 4, 6, 8 joined at alternating ends: one long path
    for r in range(1, 9, 2):
        fg[r, 8 if r % 4 == 1 else 0] = True
    assert component_boxes(fg.numpy()).tolist() == [[0, 0, 9, 9]]


def test_of_equal_largest_components_the_one_that_ends_first_wins():
    maps = torch.zeros(1, 6, 10)
    maps[0, 0:3, 8] = 1.0  # a column of 3: starts first (row 0) but ends last, at (2, 8)
    maps[0, 1, 0:3] = 1.0  # a row of 3: starts later (row 1) and ends first, at (1, 2)
    assert M.box_from_map(maps[0]).tolist() == [0, 1, 3, 2]


def _reference_max_box_acc(maps, boxes, thresholds, ious):
    """MaxBoxAccV2 as Choe et al. define it, from breadth-first components (boxes (B,K,4), zero rows padding)."""
    accuracy = torch.zeros(len(thresholds), len(ious))
    for m, gts in zip(maps, boxes, strict=True):
        gts = [g for g in gts.tolist() if g[2] > g[0]]
        for t, tau in enumerate(thresholds):
            fg = (m >= tau * m.max()) & (m > 0)
            best = 0.0
            for c in _bfs_components(fg):
                box = torch.tensor([_box(c)], dtype=torch.float32)
                best = max([best] + [M.box_iou(box, torch.tensor([g])).item() for g in gts])
            accuracy[t] += torch.tensor([best >= d for d in ious], dtype=torch.float32)
    return float((accuracy / len(maps)).amax(0).mean())


@pytest.mark.parametrize("kind", ["noise", "plateaus", "blobs"])
def test_max_box_acc_v2_equals_a_breadth_first_reference(kind):
    g = torch.Generator().manual_seed(7)
    if kind == "noise":
        maps = torch.rand(5, 14, 14, generator=g)
    elif kind == "plateaus":
        maps = (torch.rand(5, 14, 14, generator=g) * 4).floor() / 3  # ties at every threshold
    else:
        low = torch.rand(5, 1, 3, 3, generator=g) ** 2
        maps = torch.nn.functional.interpolate(low, size=14, mode="bilinear", align_corners=False)[:, 0]
    corners = torch.randint(0, 8, (5, 2, 2), generator=g).float()
    boxes = torch.cat([corners, corners + torch.randint(2, 7, (5, 2, 2), generator=g)], dim=2)
    boxes[::2, 1] = 0  # padding rows
    thresholds = tuple(i / 10 for i in range(10))
    ious = (0.3, 0.5, 0.7)
    expected = _reference_max_box_acc(maps, boxes, thresholds, ious)
    assert M.max_box_acc_v2(maps, boxes, thresholds=thresholds, ious=ious) == pytest.approx(expected, abs=1e-7)


def test_box_metrics_at_224_px_by_hand():
    maps = torch.zeros(2, 224, 224)
    maps[:, 20:100, 30:130] = 1.0  # blob A: 80 × 100 = 8000 px at 1.0
    maps[:, 150:200, 150:200] = 0.5  # blob B: 50 × 50 = 2500 px at 0.5
    maps[:, 210, 10:110] = 0.3  # a line: 100 px at 0.3 (energy 30)
    boxes = torch.tensor(
        [[[30.0, 20, 130, 100], [0, 0, 0, 0]], [[150.0, 150, 200, 200], [0, 0, 0, 0]]]
    )  # image 0: A's box; image 1: B's
    masks = torch.zeros(2, 224, 224, dtype=torch.bool)
    masks[0, 20:100, 30:130] = True
    masks[1, 150:200, 150:200] = True
    # The peak is A's first pixel (20, 30): on image 0's mask, 120+ px from image 1's.
    assert M.pointing_game(maps, masks).tolist() == [True, False]
    total = 8000 + 2500 * 0.5 + 30
    assert M.energy_pointing_game(maps, boxes).tolist() == [pytest.approx(8000 / total), pytest.approx(1250 / total)]
    # At τ = 0.2 the components are A, B and the line; A is the largest.
    assert M.box_from_map(maps[0]).tolist() == [30, 20, 130, 100]
    assert M.box_accuracy(maps, boxes).tolist() == [True, False]
    # B exists up to τ = 0.5, so with thresholds up to 0.5 both images find their box at IoU 1;
    # from 0.6 only A remains and image 1 misses at every δ.
    assert M.max_box_acc_v2(maps, boxes) == 1.0
    assert M.max_box_acc_v2(maps, boxes, thresholds=(0.6, 0.7)) == 0.5
    union = 8000 + 2500  # map >= 0.5: A and B, against one of them
    assert M.mask_iou(maps, masks).tolist() == [pytest.approx(8000 / union), pytest.approx(2500 / union)]


# -- masks -----------------------------------------------------------------------------------


def test_mask_iou():
    maps = torch.zeros(1, 10, 10)
    maps[0, 0:4, 0:5] = 0.8  # 20 px above 0.5
    mask = _square_mask(10, 10, 0, 4, 2, 7)  # 20 px, 12 shared
    assert M.mask_iou(maps, mask).item() == pytest.approx(12 / 28)
    assert M.mask_iou(maps, mask, threshold=0.9).item() == 0.0


def test_pxap_hand_computed():
    maps = torch.tensor([[[0.905, 0.805, 0.705, 0.105]]])
    mask = torch.tensor([[[True, False, True, False]]])
    # Thresholds falling: (P=1, R=.5), (P=.5, R=.5), (P=2/3, R=1), (P=.5, R=1): AP = .5·1 + .5·2/3.
    assert M.pxap(maps, mask) == pytest.approx(0.5 + 0.5 * 2 / 3)
    perfect = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]])
    assert M.pxap(perfect, mask) == pytest.approx(1.0)
    metric = M.PxAP()
    metric.update(maps[:, :, :2], mask[:, :, :2])
    metric.update(maps[:, :, 2:], mask[:, :, 2:])
    assert metric.compute() == pytest.approx(M.pxap(maps, mask))


# -- faithfulness ----------------------------------------------------------------------------


class SumModel(nn.Module):
    """logit_1 = Σ of channel 0, logit_0 = 0: p_1 = sigmoid(Σ x_0)."""

    def forward(self, x):
        s = x[:, 0].flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_deletion_and_insertion_auc_by_hand():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[2.0, 1.0], [0.5, -1.0]])
    maps = torch.tensor([[[0.9, 0.1], [0.5, 0.3]]])  # order: (0,0)=2, (1,0)=0.5, (1,1)=-1, (0,1)=1
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # Deletion, 4 steps: sums 2.5, 0.5, 0.0, 1.0, 0.0
    sums = [2.5, 0.5, 0.0, 1.0, 0.0]
    probs = [sig(s) for s in sums]
    expected = sum((probs[i] + probs[i + 1]) / 2 * 0.25 for i in range(4))
    got = M.deletion_auc(SumModel(), x, maps, torch.tensor([1]), steps=4)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Insertion onto a constant image: blurring a constant changes nothing.
    blurred_value = 0.25
    x2 = torch.full((1, 3, 2, 2), blurred_value)
    x2[0, 0] = torch.tensor([[2.0, 1.0], [0.5, -1.0]])
    base = torch.full((1, 3, 2, 2), blurred_value)
    # sums as pixels are restored onto the all-0.25 image, most salient first
    values = {(0, 0): 2.0, (1, 0): 0.5, (1, 1): -1.0, (0, 1): 1.0}
    current = base[0, 0].clone()
    assert M.insertion_auc(SumModel(), base, maps, 1, steps=4).item() == pytest.approx(sig(1.0), rel=1e-6)
    sums = [float(current.sum())]
    for (r, c), v in values.items():
        current[r, c] = v
        sums.append(float(current.sum()))
    probs = [sig(s) for s in sums]
    expected = sum((probs[i] + probs[i + 1]) / 2 * 0.25 for i in range(4))
    blur = M.faithfulness._blur(x2)
    torch.testing.assert_close(blur[:, 1:], x2[:, 1:])  # constant channels stay constant
    got = M.faithfulness._causal_auc(SumModel(), x2, maps, torch.tensor([1]), 4, base, x2, None)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def _blur_by_hand(image, size=11, sigma=5.0):
    """Gaussian blur of one (H,W) channel with replicated borders, written out as the double sum."""
    h, w = image.shape
    r = size // 2
    k = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-r, r + 1)]
    k = [v / sum(k) for v in k]
    out = torch.zeros(h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            out[y, x] = sum(
                k[i] * k[j] * float(image[min(max(y + i - r, 0), h - 1), min(max(x + j - r, 0), w - 1)])
                for i in range(size)
                for j in range(size)
            )
    return out


def test_insertion_auc_restores_pixels_onto_the_blurred_image_by_hand():
    x = torch.zeros(1, 3, 3, 3)
    x[0, 0] = torch.tensor([[3.0, -1.0, 0.5], [0.0, 2.0, -2.0], [1.0, 0.0, -0.5]])
    maps = torch.tensor([[[0.9, 0.1, 0.5], [0.2, 0.8, 0.0], [0.7, 0.3, 0.6]]])
    order = [(0, 0), (1, 1), (2, 0), (2, 2), (0, 2), (2, 1), (1, 0), (0, 1), (1, 2)]  # most salient first
    current = _blur_by_hand(x[0, 0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # 3 steps over 9 pixels: 0, 3, 6, 9 pixels restored.
    probs = [sig(float(current.sum()))]
    for step in range(3):
        for r, c in order[3 * step : 3 * step + 3]:
            current[r, c] = x[0, 0, r, c]
        probs.append(sig(float(current.sum())))
    expected = sum((probs[i] + probs[i + 1]) / 2 / 3 for i in range(3))
    assert M.insertion_auc(SumModel(), x, maps, torch.tensor([1]), steps=3).item() == pytest.approx(expected, rel=1e-5)


def test_average_drop_and_increase_in_confidence_by_hand():
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0] = 1.0  # Σ = 4 → p = sigmoid(4)
    maps = torch.stack([torch.full((2, 2), 0.5), torch.ones(2, 2)])
    maps[1, 0, 0] = 2.0  # clamped to 1
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    drop = M.average_drop(SumModel(), x, maps, torch.tensor([1, 1]))
    assert drop[0].item() == pytest.approx((sig(4) - sig(2)) / sig(4))
    assert drop[1].item() == pytest.approx(0.0, abs=1e-7)
    x[:, 0] = -1.0  # class 1 is unlikely; masking towards 0 raises its probability
    assert M.increase_in_confidence(SumModel(), x, maps, 1).tolist() == [True, False]
    metric = M.AverageDrop()
    metric.update(SumModel(), x, maps, torch.tensor([1, 1]))
    assert metric.compute() == pytest.approx(float(M.average_drop(SumModel(), x, maps, torch.tensor([1, 1])).mean()))


def test_faithfulness_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2)).train()
    x = torch.randn(2, 3, 8, 8)
    model(x)
    stats = [b.clone() for b in model.buffers()]
    maps = torch.rand(2, 8, 8)
    rng = torch.get_rng_state()
    M.deletion_auc(model, x, maps, torch.tensor([0, 1]), steps=3)
    assert model.training and all(torch.equal(a, b) for a, b in zip(stats, model.buffers(), strict=True))
    assert torch.equal(rng, torch.get_rng_state())


# -- reduction across processes ------------------------------------------------------------------


def _data():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(8, 24, 24, generator=g)
    masks = torch.rand(8, 24, 24, generator=g) > 0.7
    boxes = torch.tensor([[2.0, 3.0, 12.0, 20.0]] * 4 + [[0.0, 0.0, 24.0, 10.0]] * 4)
    labels = torch.tensor([0, 1, 1, 0, 1, 1, 0, 0])
    return maps, masks, boxes, labels


def _metrics():
    return {
        "pg": (M.PointingGame(num_classes=2), lambda m, d: m.update(d[0], d[1], d[3])),
        "epg": (M.EnergyPointingGame(), lambda m, d: m.update(d[0], d[2])),
        "box": (M.BoxAccuracy(), lambda m, d: m.update(d[0], d[2])),
        "maxbox": (M.MaxBoxAccV2(thresholds=(0.1, 0.5, 0.9)), lambda m, d: m.update(d[0], d[2])),
        "iou": (M.MaskIoU(), lambda m, d: m.update(d[0], d[1])),
        "pxap": (M.PxAP(), lambda m, d: m.update(d[0], d[1])),
    }


def _rank(rank, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    data = tuple(t[rank::2] for t in _data())
    out = {}
    for name, (metric, update) in _metrics().items():
        update(metric, data)
        out[name] = metric.compute()
    if rank == 0:
        queue.put(out)
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_metrics_reduced_over_two_processes_equal_one_process():
    single = {}
    for name, (metric, update) in _metrics().items():
        update(metric, _data())
        single[name] = metric.compute()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    reduced = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert reduced.keys() == single.keys()
    for name in single:
        assert reduced[name] == pytest.approx(single[name]), name


@pytest.mark.parametrize(("cls", "fn"), [(M.DeletionAUC, M.deletion_auc), (M.InsertionAUC, M.insertion_auc)])
def test_causal_auc_classes_average_the_functional_form(cls, fn):
    g = torch.Generator().manual_seed(5)
    x, maps = torch.randn(4, 3, 8, 8, generator=g), torch.rand(4, 8, 8, generator=g)
    t = torch.tensor([1, 0, 1, 1])
    metric = cls(steps=5)
    metric.update(SumModel(), x[:3], maps[:3], t[:3])
    metric.update(SumModel(), x[3:], maps[3:], t[3:])
    assert metric.compute() == pytest.approx(float(fn(SumModel(), x, maps, t, steps=5).mean()), rel=1e-6)


def test_several_boxes_per_image_count_their_union_and_best_match():
    from camlight.metrics import box_accuracy, energy_pointing_game, max_box_acc_v2
    from camlight.metrics.classes import EnergyPointingGame

    maps = torch.zeros(2, 16, 16)
    maps[:, 2:6, 2:6] = 1.0  # 16 units of energy on the first object
    maps[1, 10:14, 10:14] = 0.5  # and 8 more elsewhere in image 1
    one = torch.tensor([[10.0, 10, 14, 14], [2, 2, 6, 6]])
    several = torch.tensor([[[10.0, 10, 14, 14], [2, 2, 6, 6]], [[2, 2, 6, 6], [0, 0, 0, 0]]])  # zero row = padding
    assert box_accuracy(maps, one).tolist() == [False, True]
    assert box_accuracy(maps, several).tolist() == [True, True]
    assert energy_pointing_game(maps, one).tolist() == [0.0, pytest.approx(16 / 24)]
    assert energy_pointing_game(maps, several).tolist() == [1.0, pytest.approx(16 / 24)]
    assert max_box_acc_v2(maps, one) == 0.5 and max_box_acc_v2(maps, several) == 1.0
    metric = EnergyPointingGame()
    metric.update(maps, torch.zeros(2, 3, 4))  # no box at all: not counted
    metric.update(maps, several)
    assert metric.compute() == pytest.approx((1.0 + 16 / 24) / 2)
