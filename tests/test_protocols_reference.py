"""The reference modes reproduce the reference code's own numbers on stored maps.

`tests/data/protocol_reference.npz` holds 40 maps (48×64, non-square on purpose) with boxes, masks,
ignore regions and labels (one class never seen); `protocol_reference.json` holds what
wsolevaluation (commit 96f4b88) and TorchRay (commit 6a198ee) computed on them, once, with their
own code (`tests/data/make_protocol_reference.py` says how). Nothing here re-derives those numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from camlight.metrics._components import contour_boxes
from camlight.metrics.protocol_set import Protocols
from camlight.metrics.protocols import (
    Pointing,
    Pxap,
    WsolBoxes,
    center_points,
    map_points,
    threshold_grid,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def ref():
    arrays = np.load(DATA / "protocol_reference.npz")
    expected = json.loads((DATA / "protocol_reference.json").read_text())
    maps = torch.from_numpy(arrays["maps"].astype(np.float32) / np.float32(65535))
    return {
        "maps": maps,
        "boxes": torch.from_numpy(arrays["boxes"]),
        "masks": torch.from_numpy(arrays["masks"]),
        "ignore": torch.from_numpy(arrays["ignore"]),
        "labels": torch.from_numpy(arrays["labels"]),
        "expected": expected,
    }


@pytest.mark.parametrize("step", ["0.01", "0.001"])
def test_max_box_acc_v2_equals_wsolevaluation(ref, step):
    expected = ref["expected"]["wsolevaluation"]["MaxBoxAccV2"][step]
    metric = WsolBoxes(threshold_grid(float(step)), (0.3, 0.5, 0.7), compat="wsolevaluation")
    for start in range(0, 40, 16):  # in batches, as a split streams
        metric.update(ref["maps"][start : start + 16], ref["boxes"][start : start + 16])
    scores = metric.compute()
    assert int(metric.count) == expected["cnt"]
    for d in ("30", "50", "70"):
        assert 100 * scores[f"max_box_acc@{d}"] == pytest.approx(expected["per_iou"][d], abs=1e-9)
    assert 100 * scores["max_box_acc_v2"] == pytest.approx(expected["mean"], abs=1e-6)
    if "num_correct" in expected:  # the whole accuracy curve, threshold by threshold
        for j, d in enumerate(("30", "50", "70")):
            assert metric.hits[:, j].tolist() == expected["num_correct"][d]


def test_contour_boxes_equal_cv2s(ref):
    """Every box cv2.findContours(RETR_TREE) + boundingRect gave at τ = 0.2 and 0.5, image by image."""
    quantised = (ref["maps"] * 255).to(torch.uint8).numpy()
    for tau, block in ref["expected"]["wsolevaluation"]["compute_bboxes_from_scoremaps_multi_contour"].items():
        for q, boxes in zip(quantised, block["boxes_per_image"], strict=True):
            ours = contour_boxes(q > int(float(block["threshold"]) * int(q.max())))
            assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, boxes)), tau


def test_paper_mode_differs_from_the_reference_here(ref):
    """The quirks are not cosmetic on these maps: the paper's definition gives other numbers."""
    paper = WsolBoxes(threshold_grid(0.01), (0.3, 0.5, 0.7))
    paper.update(ref["maps"], ref["boxes"])
    expected = ref["expected"]["wsolevaluation"]["MaxBoxAccV2"]["0.01"]["num_correct"]
    assert any(paper.hits[:, j].tolist() != expected[d] for j, d in enumerate(("30", "50", "70")))


@pytest.mark.parametrize("step", ["0.01", "0.001"])
def test_pxap_equals_wsolevaluation(ref, step):
    metric = Pxap(threshold_grid(float(step)))
    metric.update(ref["maps"], ref["masks"], ref["ignore"])
    expected = ref["expected"]["wsolevaluation"]["PxAP"][step]
    assert 100 * metric.compute()["pxap"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("tolerance", ["15", "4"])
def test_pointing_equals_torchray(ref, tolerance):
    expected = ref["expected"]["torchray"]
    n, h, w = ref["maps"].shape
    for name, points in (("saliency", map_points(ref["maps"])), ("center", center_points(n, h, w, "torchray"))):
        metric = Pointing(expected["num_classes"], float(tolerance), compat="torchray")
        metric.update(points, ref["masks"], ref["labels"])
        block = expected[name][tolerance]
        assert metric.hits.tolist() == block["hits"]
        assert (metric.counts - metric.hits).tolist() == block["misses"]
        scores = metric.compute()
        assert scores["pointing_class_mean"] == pytest.approx(block["accuracy"], abs=1e-12)  # unseen class = 0
        assert scores["pointing"] == pytest.approx(block["hit_rate"], abs=1e-12)
        paper = Pointing(expected["num_classes"], float(tolerance))
        paper.update(points, ref["masks"], ref["labels"])
        seen = [a for a, c in zip(block["class_accuracies"], metric.counts.tolist(), strict=True) if c > 0]
        assert paper.compute()["pointing_class_mean"] == pytest.approx(sum(seen) / len(seen), abs=1e-6)


def test_torchrays_centre_is_w_half_h_half(ref):
    expected = ref["expected"]["torchray"]["center"]["point"]  # (u, v) = (x, y)
    _, h, w = ref["maps"].shape
    row, col = center_points(1, h, w, "torchray")[0].tolist()
    assert [col, row] == [float(v) for v in np.ravel(expected)]


def test_protocols_in_reference_mode_give_the_reference_numbers(ref):
    """The same numbers through `Protocols`, the way `explain.py evaluate` runs them."""
    from camlight.metrics.protocols import Options

    options = Options(compat={"wsol": "wsolevaluation", "pointing": "torchray"}, tolerance=15.0)
    protocols = Protocols(["wsol", "pointing"], ["m"], 6, options, center=False)
    batch = {"label": ref["labels"], "boxes": ref["boxes"], "mask": ref["masks"], "ignore": ref["ignore"]}
    protocols.update("m", ref["maps"], batch, logits=torch.zeros(40, 6))
    scores = protocols.compute()["m"]
    expected = ref["expected"]
    assert 100 * scores["max_box_acc_v2"] == pytest.approx(expected["wsolevaluation"]["MaxBoxAccV2"]["0.01"]["mean"])
    assert 100 * scores["pxap"] == pytest.approx(expected["wsolevaluation"]["PxAP"]["0.01"], abs=1e-6)
    assert scores["pointing_class_mean"] == pytest.approx(expected["torchray"]["saliency"]["15"]["accuracy"])
