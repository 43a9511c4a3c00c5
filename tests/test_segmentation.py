"""Segmentation from saliency by GrabCut (Simonyan et al. §3.1): a hand-made scene, the seeds, and
the metric in the callback and explain.py."""

from __future__ import annotations

import csv

import pytest
import torch

import explain as explain_cli
from camlight.metrics import METRICS
from camlight.metrics.segmentation import grabcut_iou, grabcut_masks

pytest.importorskip("cv2", reason="grabcut_iou needs the 'segment' extra")


def _scene(size=64):
    """A red disc of radius 12 on a blue-grey background, and a map: a narrow Gaussian bump at the
    disc's centre (its 0.5 level covers a fraction of the disc)."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    disc = (ys - 30) ** 2 + (xs - 36) ** 2 <= 12**2
    image = torch.empty(3, size, size)
    image[0], image[1], image[2] = 0.3, 0.35, 0.6
    image[:, disc] = torch.tensor([0.85, 0.15, 0.1])[:, None]
    image += 0.02 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    bump = torch.exp(-((ys - 30) ** 2 + (xs - 36) ** 2) / (2 * 4.0**2))
    return image.clamp(0, 1)[None], bump[None], disc[None]


def test_grabcut_grows_the_seed_to_the_object_the_threshold_misses():
    image, saliency, disc = _scene()
    seg = grabcut_masks(saliency, image)
    iou = grabcut_iou(saliency, image, disc)
    assert iou > 0.9, float(iou)
    assert METRICS["mask_iou"].per_image(saliency, {"mask": disc}, None, None) < 0.3  # 0.5 · max: the bump only
    assert seg[0, 30, 36] and not seg[0, 2, 2]
    flat = grabcut_masks(torch.zeros(1, 64, 64), image)
    assert not flat.any()  # no seeds, no segment
    # A ReLU'd map, zero on 60 % of the image: its 30 % quantile is 0, and the zeros seed the background.
    relu = torch.where(saliency > saliency.flatten().quantile(0.6), saliency, torch.zeros(()))
    assert grabcut_iou(relu, image, disc) > 0.9
    # An Oxford-style trimap: a mask 3 px wider than the disc whose outer ring is the uncertain
    # border; its pixels count neither way.
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    wide = ((ys - 30) ** 2 + (xs - 36) ** 2 <= 15**2)[None]
    ring = wide & ~disc
    plain, trimap = grabcut_iou(saliency, image, wide), grabcut_iou(saliency, image, wide, ignore=ring)
    assert plain < 0.8 and trimap > 0.95 and trimap == iou, (float(plain), float(trimap))
    with pytest.raises(ValueError, match="'rgb'"):
        METRICS["grabcut_iou"].per_image(saliency, {"mask": disc, "image": image}, None, None)


def test_explain_py_scores_grabcut_beside_the_thresholded_map(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint
    out = tmp_path / "e"
    args = [f"checkpoint={ckpt}", "split=val", "probe_size=6", "methods=[gradcam]", "metrics=[mask_iou,grabcut_iou]"]
    assert explain_cli.main([*args, f"out={out}"]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(0 <= float(r["gradcam/grabcut_iou"]) <= 1 for r in rows) and len(rows) == 6


def test_the_callback_logs_grabcut_iou(tmp_path):
    import pytorch_lightning as pl

    from camlight.callbacks import ExplanationCallback
    from camlight.datamodules import SyntheticPets
    from camlight.modules import Classifier

    callback = ExplanationCallback(["gradcam"], probe_size=4, metrics=["grabcut_iou"], pair_probe=False)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=1,
        default_root_dir=tmp_path,
    )
    dm = SyntheticPets(train_size=16, val_size=8, test_size=0, batch_size=8)
    trainer.fit(Classifier("simple_cnn", "gap", width=4), datamodule=dm)
    assert 0 <= callback.last["gradcam"]["grabcut_iou"] <= 1


def test_segment_command_draws_and_scores_each_method(tiny_checkpoint, tmp_path, capsys):
    ckpt = tiny_checkpoint
    out = tmp_path / "s"
    args = ["segment", f"checkpoint={ckpt}", "images=3", "max_images=1", "methods=[saliency,gradcam]"]
    assert explain_cli.main([*args, f"out={out}"]) == 0
    with open(out / "segment.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["saliency", "gradcam"] * 3
    assert all(0 <= float(r["grabcut_iou"]) <= 1 and 0 <= float(r["mask_iou"]) <= 1 for r in rows)
    assert len(list(out.glob("segment_*.png"))) == 1
    never = tmp_path / "never"
    capsys.readouterr()
    assert explain_cli.main(["segment", f"checkpoint={ckpt}", "methods=[gradcamm]", f"out={never}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gradcam" in err[0] and not never.exists()


def test_evaluate_scores_grabcut_over_the_split_and_for_the_centre_baseline(tiny_checkpoint, tmp_path):
    import json
    import subprocess
    import sys

    from .conftest import REPO

    ckpt = tiny_checkpoint
    out = tmp_path / "ev"
    args = ["evaluate", f"checkpoint={ckpt}", "protocols=[grabcut]", "methods=[gradcam]", "batch_size=7"]
    done = subprocess.run(
        [sys.executable, str(REPO / "explain.py"), *args, f"out={out}", "trainer.enable_progress_bar=false"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    scores = json.loads((out / "results.json").read_text())["scores"]
    with open(out / "per_image.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "gradcam"]
    assert len(rows) == 32
    mean = sum(float(r["grabcut_iou"]) for r in rows) / len(rows)
    assert scores["gradcam"]["grabcut_iou"] == pytest.approx(mean, abs=1e-5)
    assert 0 <= scores["center_baseline"]["grabcut_iou"] <= 1
