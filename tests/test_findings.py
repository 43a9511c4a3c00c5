"""The findings report: bootstrap and Wilson intervals, and sentences that follow the numbers —
fed numbers that reverse a claim, the sentence reverses; fed numbers that do not separate, it says
so."""

from __future__ import annotations

import numpy as np
import pytest

from camlight.viz.findings import bootstrap, findings, paired, wilson


def items(values) -> dict[int, float]:
    return dict(enumerate(float(v) for v in values))


def noise(seed, n=32, scale=0.05):
    return np.random.default_rng(seed).normal(0, scale, n)


def run(head, val_acc, scores, val_images=1000):
    return {"head": head, "backbone": "simple_cnn", "val_acc": val_acc, "val_images": val_images, "scores": scores}


def test_intervals():
    assert wilson(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    mean, lo, hi, n = bootstrap([1.0, 2.0, 3.0, float("nan"), 4.0])
    assert (mean, n) == (2.5, 4) and 1.0 <= lo < mean < hi <= 4.0
    same = bootstrap([0.7] * 10)
    assert same[1] == same[2] == pytest.approx(0.7)
    d = paired({0: 1.0, 1: 2.0, 2: 5.0}, {1: 1.5, 2: 4.0, 3: 9.0})  # items 1 and 2 only
    assert d[0] == pytest.approx((0.5 + 1.0) / 2) and d[3] == 2
    assert bootstrap([])[3] == 0


def _runs(gap_iou, fc_iou, centre, gap_acc=0.998, fc_acc=0.969, sanity=0.2):
    def scores(iou):
        return {
            "mask_iou": {"gradcam": items(iou), "center_baseline": items(centre)},
            "sanity_spearman": {"gradcam": items(sanity + noise(9))},
            "class_energy": {"gradcam": items(np.clip(iou + 0.2, 0, 1))},
        }

    return [run("gap", gap_acc, scores(gap_iou)), run("fc", fc_acc, scores(fc_iou))]


def test_the_sentences_follow_the_numbers():
    high, low = 0.6 + noise(1), 0.3 + noise(2)
    text = findings(_runs(high, low, centre=0.45 + noise(3)))
    assert "The GAP head is more accurate than the FC head" in text
    assert "mask IoU, gradcam: GAP 0.598, FC 0.298: the GAP head scores higher" in text
    gap_section = text.split("## Localization, GAP head")[1].split("##")[0]
    fc_section = text.split("## Localization, FC head")[1].split("##")[0]
    assert "beats the centre baseline" in gap_section and "is below the centre baseline" in fc_section
    assert "its maps depend on the learned weights" in text

    reversed_ = findings(_runs(low, high, centre=0.45 + noise(3), gap_acc=0.969, fc_acc=0.998, sanity=0.9))
    assert "The FC head is more accurate than the GAP head" in reversed_
    assert "the FC head scores higher" in reversed_ and "the GAP head scores higher" not in reversed_
    assert "is below the centre baseline" in reversed_.split("## Localization, GAP head")[1].split("##")[0]
    assert "its maps barely depend on the learned weights" in reversed_

    alike = findings(_runs(0.5 + noise(4), 0.5 + noise(5), centre=0.5 + noise(6), gap_acc=0.97, fc_acc=0.968))
    assert "Accuracy: no clear difference between the heads" in alike
    assert "mask IoU, gradcam: GAP" in alike and "no clear difference (" in alike
    assert "beats the centre baseline" not in alike and "scores higher" not in alike


def test_best_method_and_canary():
    scores = {
        "pointing_game": {
            "gradcam": items(np.ones(32)),
            "saliency": items(np.r_[np.ones(16), np.zeros(16)]),
            "center_baseline": items(np.r_[np.ones(20), np.zeros(12)]),
        },
        "shortcut_energy": {"gradcam": items(0.2 + noise(7)), "saliency": items(0.016 + noise(8, scale=0.002))},
    }
    text = findings([run("gap", 0.99, scores)], shortcut_share=1 / 64)
    assert "Best on pointing game: gradcam, ahead of saliency" in text
    assert "gradcam: energy share on the shortcut mark" in text
    canary = text.split("## Shortcut canary")[1]
    assert canary.count("looks at the mark") == 1 and "does not look at the mark" in canary
