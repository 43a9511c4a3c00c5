"""ExplanationCallback: what it logs and writes, that it never changes training, and DDP."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from camlight import fit
from camlight.callbacks import ExplanationCallback, FiltersCallback
from camlight.config import ConfigError, load_config
from camlight.datamodules import SyntheticPets
from camlight.modules import Classifier, load_classifier
from camlight.summary import format_summary
from camlight.viz import colorize, draw_contour, overlay


def _dm(**kw):
    return SyntheticPets(**{"train_size": 64, "val_size": 32, "test_size": 0, "batch_size": 16, **kw})


def _trainer(tmp_path, callbacks, epochs=2, logger=False, **kw):
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        deterministic=True,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


# -- overlays ---------------------------------------------------------------------------------


def test_overlay_colours_and_contour_pixels():
    images = torch.zeros(1, 3, 6, 6)
    maps = torch.zeros(1, 6, 6)
    maps[0, 2, 3] = 1.0
    out = overlay(images, maps, alpha=0.5)
    jet_top, jet_bottom = colorize(torch.ones(1, 1, 1))[0, :, 0, 0], colorize(torch.zeros(1, 1, 1))[0, :, 0, 0]
    torch.testing.assert_close(jet_top, torch.tensor([0.5, 0.0, 0.0]), atol=0.01, rtol=0)  # jet: dark red at 1
    torch.testing.assert_close(jet_bottom, torch.tensor([0.0, 0.0, 0.5]), atol=0.01, rtol=0)  # dark blue at 0
    torch.testing.assert_close(out[0, :, 2, 3], 0.5 * jet_top)
    torch.testing.assert_close(out[0, :, 0, 0], 0.5 * jet_bottom)
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 1:5, 1:5] = True
    grey = torch.full((1, 3, 6, 6), 0.5)
    drawn = draw_contour(grey, mask)
    green = torch.tensor([0.0, 1.0, 0.0])
    border = mask.clone()
    border[0, 2:4, 2:4] = False  # the 4×4 square's outline: its 12 edge pixels
    for y in range(6):
        for x in range(6):
            expected = green if border[0, y, x] else torch.tensor([0.5, 0.5, 0.5])
            torch.testing.assert_close(drawn[0, :, y, x], expected, msg=f"{y},{x}")


# -- setup and warnings -------------------------------------------------------------------------


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="unknown method 'gradcm'; did you mean 'gradcam'\\? choose from saliency"):
        ExplanationCallback(["gradcm"])
    with pytest.raises(ValueError, match="unknown metric 'iou'; choose from pointing_game"):
        ExplanationCallback(metrics=["iou"])
    with pytest.raises(ValueError, match="every_n_epochs must be an integer >= 1"):
        ExplanationCallback(every_n_epochs=0)


def test_cam_on_an_fc_head_is_skipped_with_one_warning(tmp_path):
    model = Classifier("simple_cnn", "fc", width=4)
    callback = ExplanationCallback(["cam", "gradcam"], probe_size=8, pair_probe=False, log_images=False)
    with pytest.warns(
        UserWarning, match="skipping cam: cam needs the target layer to feed a global-average-pooling head"
    ) as record:
        _trainer(tmp_path, [callback], epochs=1, limit_train_batches=1).fit(model, datamodule=_dm())
    assert len([w for w in record if "skipping" in str(w.message)]) == 1
    assert callback.active == ["gradcam"] and set(callback.last) == {"gradcam", "center_baseline"}


def test_the_callback_takes_every_method_by_name(tmp_path):
    """Every registered method, at its defaults, scored and logged for one epoch of a tiny model."""
    from camlight.explain import METHODS

    model = Classifier("simple_cnn", "gap", width=4)
    callback = ExplanationCallback(list(METHODS), probe_size=4, pair_probe=False, log_images=False)
    _trainer(tmp_path, [callback], epochs=1, limit_train_batches=1).fit(model, datamodule=_dm())
    assert callback.active == list(METHODS)
    assert set(callback.last) == {*METHODS, "center_baseline"}


# -- training is untouched -----------------------------------------------------------------------


def _train(tmp_path, with_callback):
    pl.seed_everything(0, workers=True, verbose=False)
    model = Classifier("simple_cnn", "gap", width=4)
    callbacks = (
        [ExplanationCallback(probe_size=8, max_images=4, full_val_every_n_epochs=2), FiltersCallback(2)]
        if with_callback
        else []
    )
    _trainer(tmp_path, callbacks, epochs=3).fit(model, datamodule=_dm())
    return model.state_dict(), torch.get_rng_state()


def test_training_with_the_callback_gives_the_same_weights_bit_for_bit(tmp_path):
    without, rng_without = _train(tmp_path / "a", False)
    with_cb, rng_with = _train(tmp_path / "b", True)
    for key in without:
        assert torch.equal(without[key], with_cb[key]), key
    assert torch.equal(rng_without, rng_with)
    assert len(list((tmp_path / "b" / "explanations").glob("epoch_*.png"))) == 3
    # The filters before training, after every 2nd epoch and after the last.
    filters = sorted(p.name for p in (tmp_path / "b" / "explanations").glob("filters_*.png"))
    assert filters == ["filters_epoch_001.png", "filters_epoch_002.png", "filters_start.png"]


def test_the_filter_grids_show_the_weights_as_they_change(tmp_path):
    """Each grid is the first convolution's weights at that moment: the start grid differs from
    the last, and the last equals a grid drawn from the final weights."""
    from camlight.inspect import filter_images, first_conv
    from camlight.viz import tile_grid

    pl.seed_everything(0, workers=True, verbose=False)
    model = Classifier("simple_cnn", "gap", width=4)
    callback = FiltersCallback(1, cell=8)
    _trainer(tmp_path, [callback], epochs=2).fit(model, datamodule=_dm())
    assert [p.name for p in callback.written] == ["filters_start.png", "filters_epoch_000.png", "filters_epoch_001.png"]
    start, last = (np.asarray(Image.open(p)) for p in (callback.written[0], callback.written[-1]))
    name, conv = first_conv(model)
    expected = np.asarray(tile_grid(filter_images(conv.weight), cell=8, title=f"{name} epoch 001"))
    assert np.array_equal(last, expected) and not np.array_equal(start[20:], last[20:])
    with pytest.raises(ValueError, match=">= 1"):
        FiltersCallback(0)
    # Training stopped by max_steps (max_epochs unset): the start, every 5th epoch (none), the last.
    late = FiltersCallback(5, cell=8)
    _trainer(tmp_path / "steps", [late], epochs=-1, max_steps=12).fit(model, datamodule=_dm())
    assert [p.name for p in late.written] == ["filters_start.png", "filters_epoch_002.png"]


# -- what reaches the loggers and the disk ---------------------------------------------------------


def test_scores_reach_the_csv_logger_and_the_run_directory(tmp_path):
    model = Classifier("simple_cnn", "gap", width=4)
    callback = ExplanationCallback(
        ["saliency", "gradcam"], probe_size=8, metrics=["pointing_game", "mask_iou"], every_n_epochs=2
    )
    logger = CSVLogger(tmp_path, name="csv", version="")
    _trainer(tmp_path, [callback], epochs=3, logger=logger).fit(model, datamodule=_dm())
    with open(tmp_path / "csv" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("explain/gradcam/pointing_game")]
    assert [int(r["epoch"]) for r in logged] == [1, 2]  # every 2nd epoch, and the last
    with open(tmp_path / "explanations" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r, row_logged in zip(rows, logged, strict=True):
        for key in (
            "explain/gradcam/pointing_game",
            "explain/saliency/mask_iou",
            "explain/gradcam/class_discrimination",
        ):
            assert float(r[key]) == pytest.approx(float(row_logged[key]))
    assert sorted(p.name for p in (tmp_path / "explanations").iterdir()) == [
        "agreement.csv",
        "agreement.png",
        "epoch_001.png",
        "epoch_002.png",
        "localization.png",
        "metrics.csv",
        "probe_scores.csv",
    ]
    # the per-item values of the last epoch average to the logged scores
    with open(tmp_path / "explanations" / "probe_scores.csv") as f:
        items = list(csv.DictReader(f))
    for score in ("pointing_game", "mask_iou", "class_discrimination", "class_energy", "drift"):
        for method in ("gradcam", "saliency", "center_baseline"):
            values = [float(r["value"]) for r in items if r["score"] == score and r["method"] == method]
            if method == "center_baseline" and score not in ("pointing_game", "mask_iou"):
                assert not values
                continue
            values = [v for v in values if v == v]
            assert len(values) >= 4 and sum(values) / len(values) == pytest.approx(
                callback.last[method][score], abs=1e-5
            )
    assert callback.last["center_baseline"]["pointing_game"] is not None
    assert set(callback.last["gradcam"]) == {
        "pointing_game",
        "pointing_game_class_mean",
        "mask_iou",
        "class_discrimination",
        "class_energy",
        "drift",  # against the epoch explained before
    }
    assert set(callback.last["center_baseline"]) == {"pointing_game", "pointing_game_class_mean", "mask_iou"}


def test_scores_match_a_fresh_evaluation_of_the_final_model(tmp_path):
    from camlight import metrics as M
    from camlight.explain import explain

    model = Classifier("simple_cnn", "gap", width=4)
    dm = _dm()
    callback = ExplanationCallback(
        ["gradcam"], probe_size=8, metrics=["pointing_game", "energy_pointing_game"], log_images=False
    )
    _trainer(tmp_path, [callback], epochs=1).fit(model, datamodule=dm)
    probe = dm.probe_batch(8)
    maps = explain(model, probe["image"], ["gradcam"], targets=probe["label"])["gradcam"]
    assert callback.last["gradcam"]["pointing_game"] == pytest.approx(
        M.pointing_game(maps, probe["mask"]).float().mean().item()
    )
    assert callback.last["gradcam"]["energy_pointing_game"] == pytest.approx(
        M.energy_pointing_game(maps, probe["box"]).mean().item()
    )
    # the centre baseline beside it: a centred Gaussian scored the same way
    from camlight.metrics.protocols import center_map

    center = center_map(*probe["image"].shape[-2:]).expand(8, *probe["image"].shape[-2:])
    baseline = callback.last["center_baseline"]
    assert set(baseline) == {"pointing_game", "pointing_game_class_mean", "energy_pointing_game"}
    assert baseline["pointing_game"] == pytest.approx(M.pointing_game(center, probe["mask"]).float().mean().item())
    assert baseline["energy_pointing_game"] == pytest.approx(M.energy_pointing_game(center, probe["box"]).mean().item())


@pytest.mark.slow
def test_fit_run_logs_maps_table_and_scores_to_wandb_and_the_summary(tmp_path, tiny_argv):
    cfg = load_config(
        [*tiny_argv, "model.head=gap", "trainer.max_epochs=2", "explain.probe_size=8", "explain.max_images=4"]
    )
    summary = fit.run(cfg)
    run = summary["runs"][0]
    assert set(run["localization"]) == {"saliency", "guided_backprop", "cam", "gradcam", "center_baseline"}
    assert 0 <= run["localization"]["gradcam"]["pointing_game"] <= 1
    on_disk = json.loads((tmp_path / "outputs" / "tiny" / "summary.json").read_text())
    assert on_disk["runs"][0]["localization"] == run["localization"]
    wandb_dir = Path(run["wandb_run_dir"])
    media = wandb_dir / "files" / "media"
    assert len(list((media / "images" / "explain").glob("maps_*.png"))) == 2  # one grid per epoch
    assert len(list((media / "table" / "explain").glob("probe_*.table.json"))) == 2
    assert not list((tmp_path / "outputs" / "tiny" / "simple_cnn-gap" / "explanations").glob("tmp*"))
    out = subprocess.run(
        [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", str(wandb_dir), "--summary", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    logged = json.loads(out.stdout)["summary"]
    assert logged["explain/gradcam/pointing_game"] == pytest.approx(run["localization"]["gradcam"]["pointing_game"])
    assert "localization on the probe set" in format_summary(summary)


class SquareNet(nn.Module):
    """A camlight-style split whose maps are known by hand: A = ReLU(channel 0), logits = w · mean(A).

    Channel 0 of each image is 1 on a 4×4 square and 0 elsewhere, so Grad-CAM (A weighted by a
    positive α) and saliency (w/hw where channel 0 is positive) are both exactly the square: 1 on
    it, 0 elsewhere, after normalisation."""

    target_layer = "features_layer"

    def __init__(self):
        super().__init__()
        self.features_layer = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(2), Mean(), nn.Linear(1, 2))
        with torch.no_grad():
            self.head[2].weight.copy_(torch.tensor([[0.5], [1.0]]))
            self.head[2].bias.zero_()

    @property
    def device(self):  # what the callback reads of a LightningModule
        return torch.device("cpu")

    def features(self, x):
        return self.features_layer(x[:, :1])

    def forward(self, x):
        return self.head(self.features(x))


class Mean(nn.Module):
    def forward(self, a):
        return a.mean(dim=2)


class HandProbe:
    """Four 16×16 probe images with hand-placed squares, masks and boxes (see the test)."""

    class_names = ("cat", "dog")
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    probe_modes = ("single",)

    def probe_batch(self, n, mode="single", seed=0):
        image = torch.zeros(4, 3, 16, 16)
        mask = torch.zeros(4, 16, 16, dtype=torch.bool)
        for i, (y, x) in enumerate([(2, 2), (10, 10), (2, 10), (6, 6)]):
            image[i, 0, y : y + 4, x : x + 4] = 1.0
        mask[0, 2:6, 2:6] = True  # exactly the square
        mask[1, 0:4, 0:4] = True  # far from it
        mask[2, 2:6, 12:16] = True  # half of it (columns 12, 13)
        box = torch.tensor([[2.0, 2, 6, 6], [0, 0, 4, 4], [12, 2, 16, 6], [0, 0, 0, 0]])  # image 3: no ground truth
        return {"image": image, "label": torch.tensor([1, 0, 1, 0]), "mask": mask, "box": box}


def test_the_callbacks_scores_equal_hand_computed_values():
    from camlight.metrics import METRICS, deletion_auc, increase_in_confidence, insertion_auc
    from camlight.metrics import average_drop as drop

    model = SquareNet().eval()
    callback = ExplanationCallback(["gradcam", "saliency"], probe_size=4, metrics=list(METRICS))
    callback.prepare(HandProbe(), model)
    scores, batch, maps = callback.evaluate(model)
    square = torch.zeros(4, 16, 16)
    for i, (y, x) in enumerate([(2, 2), (10, 10), (2, 10), (6, 6)]):
        square[i, y : y + 4, x : x + 4] = 1.0
    for method in ("gradcam", "saliency"):
        torch.testing.assert_close(maps[method], square)  # the premise of the hand values below
    # Images 0-2 have ground truth (image 3 none, so it is left out): the map's peak is the
    # square's top-left pixel; the tolerance is 15 · 16/224 ≈ 1.07 px. Image 0 hits; image 1 is
    # far off; image 2's peak (2,10) is 2 px from the mask's nearest pixel (2,12): a miss.
    # Energy in the box: 16/16, 0, 8/16. The square's box against the ground-truth box: IoU 1, 0,
    # 8/24. Mask IoU (map >= 0.5 is the square): 1, 0, 8/24. MaxBoxAccV2: the square is the one
    # component at every threshold, so IoU >= 0.3 holds for images 0 and 2, IoU >= 0.5 and 0.7
    # for image 0 only. PxAP over every pixel of the 4 images: 48 mask pixels, 24 of them at 1;
    # 40 background pixels at 1 (image 1's, half of image 2's, image 3's square): at every
    # threshold above 0, precision 24/64 at recall 1/2; at 0, precision 48/1024 at recall 1.
    expected = {
        "pointing_game": 1 / 3,
        "pointing_game_class_mean": (0 / 1 + 1 / 2) / 2,  # cat: image 1 misses; dog: image 0 hits, 2 misses
        "energy_pointing_game": (1 + 0 + 0.5) / 3,
        "box_accuracy": 1 / 3,
        "max_box_acc_v2": (2 / 3 + 1 / 3 + 1 / 3) / 3,
        "mask_iou": (1 + 0 + 1 / 3) / 3,
        "pxap": 0.5 * 48 / 1024 + 0.5 * 24 / 64,
    }
    labels = batch["label"]
    for method in ("gradcam", "saliency"):
        for name, value in expected.items():
            assert scores[method][name] == pytest.approx(value, abs=1e-6), (method, name)
        # The faithfulness scores are the means of their functional forms over all four images.
        m = maps[method]
        for name, fn in (("deletion_auc", deletion_auc), ("insertion_auc", insertion_auc), ("average_drop", drop)):
            assert scores[method][name] == pytest.approx(float(fn(model, batch["image"], m, labels).mean()), abs=1e-6)
        rises = increase_in_confidence(model, batch["image"], m, labels).float().mean()
        assert scores[method]["increase_in_confidence"] == pytest.approx(float(rises))


def test_explain_config_mistakes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="explain: unknown method 'gradcm'"):
        fit.check(load_config([f"out_dir={tmp_path}", "explain.methods=[gradcm]"]))
    cfg = load_config([f"out_dir={tmp_path / 'out'}", "explain.probe_size=64", "data.val_size=32"])
    with pytest.raises(ConfigError, match="explain.probe_size=64 is larger than the 32 validation images; lower"):
        fit.run(cfg)
    assert not (tmp_path / "out").exists()


# -- DDP ------------------------------------------------------------------------------------------


class RecordingCallback(ExplanationCallback):
    """Leaves a marker file for every grid a rank renders (each rank runs its own copy)."""

    def _log_images(self, trainer, pl_module, batch, maps):
        (self.out_dir.parent / f"grid_rank{trainer.global_rank}_epoch{trainer.current_epoch}").touch()
        super()._log_images(trainer, pl_module, batch, maps)

    def teardown(self, trainer, pl_module, stage):
        """Leave the process group together, as `camlight.fit` does after its last fit: Lightning's
        spawned ranks exit with gloo connected, and a rank whose peer has already gone can abort in
        gloo's shutdown (SIGABRT, seen once in CI on this test)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_logs_each_image_once_and_reduces_metrics(tmp_path):
    model = Classifier("simple_cnn", "gap", width=4)
    callback = RecordingCallback(
        ["gradcam", "saliency"], probe_size=7, metrics=["pointing_game", "mask_iou"], pair_probe=True, max_images=8
    )
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        deterministic=True,
        logger=False,
        callbacks=[callback, ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=_dm())
    pngs = sorted(p.name for p in (tmp_path / "explanations").glob("epoch_*.png"))
    assert pngs == ["epoch_000.png", "epoch_001.png"]
    assert sorted(p.name for p in tmp_path.glob("grid_rank*")) == ["grid_rank0_epoch0", "grid_rank0_epoch1"]
    with open(tmp_path / "explanations" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # one row per epoch: written once
    # The reduced scores equal one process scoring the whole probe set with the final weights.
    final = load_classifier(tmp_path / "ckpt" / "last.ckpt")
    single = ExplanationCallback(
        ["gradcam", "saliency"], probe_size=7, metrics=["pointing_game", "mask_iou"], pair_probe=True
    )
    single.prepare(_dm(), final)
    scores, _, _ = single.evaluate(final)
    for method, metric in (("gradcam", "pointing_game"), ("saliency", "mask_iou"), ("gradcam", "class_discrimination")):
        key = f"explain/{method}/{metric}"
        assert float(rows[-1][key]) == pytest.approx(scores[method][metric], abs=1e-6), key


def _empty_share_rank(rank, port, queue):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = Classifier("simple_cnn", "gap", width=4).eval()
        callback = ExplanationCallback(["gradcam", "cam"], probe_size=1, metrics=["pointing_game", "pxap"])
        callback.prepare(_dm(), model, rank=rank, world_size=2)
        assert len(callback.probe["image"]) == (1 if rank == 0 else 0)  # rank 1 has nothing to explain
        scores, _, _ = callback.evaluate(model)
        queue.put((rank, scores))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_with_a_rank_whose_share_of_the_probe_is_empty(tmp_path):
    import socket

    import torch.multiprocessing as mp

    torch.manual_seed(0)
    model = Classifier("simple_cnn", "gap", width=4).eval()
    single = ExplanationCallback(["gradcam", "cam"], probe_size=1, metrics=["pointing_game", "pxap"])
    single.prepare(_dm(), model)
    expected, _, _ = single.evaluate(model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_empty_share_rank, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    from camlight.callbacks import flatten

    for rank in (0, 1):  # every rank holds the reduced scores: the one image's, as one process finds them
        assert flatten(results[rank]) == pytest.approx(flatten(expected)), rank


def test_sanity_spearman_is_logged_and_training_is_untouched(tmp_path):
    """explain.sanity_every_n_epochs logs explain/<method>/sanity_spearman on its epochs, equal to
    the Spearman correlation of the final model's probe maps with a fully re-initialised copy's;
    the weights and the RNG end as without it."""
    from camlight.explain import explain
    from camlight.metrics.sanity import fully_randomized, spearman

    def train(root, **kw):
        pl.seed_everything(0, workers=True, verbose=False)
        model = Classifier("simple_cnn", "gap", width=4)
        callback = ExplanationCallback(["saliency", "gradcam"], probe_size=8, log_images=False, **kw)
        _trainer(root, [callback], epochs=3).fit(model, datamodule=_dm())
        return model, callback, torch.get_rng_state()

    model, callback, rng = train(tmp_path / "a", sanity_every_n_epochs=2)
    plain, _, rng_plain = train(tmp_path / "b")
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())
    assert torch.equal(rng, rng_plain)
    epochs = [epoch for epoch, scores in callback.history if "sanity_spearman" in scores.get("gradcam", {})]
    assert epochs == [1, 2]  # every 2nd epoch, and the last
    probe = _dm().probe_batch(8)
    mine = explain(model, probe["image"], ["saliency", "gradcam"], targets=probe["label"])
    theirs = explain(fully_randomized(model), probe["image"], ["saliency", "gradcam"], targets=probe["label"])
    for method in ("saliency", "gradcam"):
        expected = spearman(mine[method], theirs[method]).nanmean().item()
        assert callback.last[method]["sanity_spearman"] == pytest.approx(expected, abs=1e-5)
    # drift: from the second explained epoch on; agreement between the methods' final maps
    assert [e for e, s in callback.history if "drift" in s.get("gradcam", {})] == [1, 2]
    assert all(-1 <= s["gradcam"]["drift"] <= 1 for e, s in callback.history if e > 0)
    with open(tmp_path / "a" / "explanations" / "agreement.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    expected = spearman(mine["saliency"], mine["gradcam"]).nanmean().item()
    assert float(rows["saliency"]["gradcam"]) == pytest.approx(expected, abs=1e-5)
    assert (
        float(rows["gradcam"]["saliency"]) == float(rows["saliency"]["gradcam"]) and rows["gradcam"]["gradcam"] == "1.0"
    )
    assert (tmp_path / "a" / "explanations" / "agreement.png").is_file()


def test_drift_is_the_mean_spearman_between_consecutive_maps():
    from camlight.callbacks.probe_scores import drift, kept, means
    from camlight.metrics.sanity import spearman

    module = Classifier("simple_cnn", "gap", width=4)
    a, b = torch.rand(4, 16, 16), torch.rand(4, 16, 16)
    assert drift({}, kept({"saliency": a}, ["saliency"]), ["saliency"]) == {}
    found = drift(kept({"saliency": a}, ["saliency"]), kept({"saliency": b}, ["saliency"]), ["saliency"])
    assert torch.allclose(found["saliency"], spearman(a, b))
    assert means(module, found)["saliency"] == pytest.approx(spearman(a, b).mean().item(), abs=1e-6)
    assert torch.allclose(
        drift({"saliency": b}, {"saliency": b}, ["saliency"])["saliency"], torch.ones(4, dtype=torch.float64)
    )


def test_class_discrimination_by_density_and_by_energy_by_hand(monkeypatch):
    """One image: the cat on 16 pixels, the dog on 64. The cat map is 1 on the cat and 0.25 on the
    dog (denser on the cat; energy 16 vs 16: share 0.5); the dog map is 0.5 on the cat and 0.2 on
    the dog (denser on the cat: a miss; energy 12.8 of 20.8 on the dog: share 0.615)."""
    from camlight.callbacks import probe_scores

    masks = torch.zeros(1, 2, 16, 16, dtype=torch.bool)
    masks[0, 0, :4, :4] = True
    masks[0, 1, 8:, 8:] = True
    maps = {0: 1.0 * masks[:, 0] + 0.25 * masks[:, 1], 1: 0.5 * masks[:, 0] + 0.2 * masks[:, 1]}
    monkeypatch.setattr(probe_scores, "explain", lambda model, x, methods, targets: {"gradcam": maps[targets]})
    pair = {"image": torch.zeros(1, 3, 16, 16), "class_masks": masks}
    found = probe_scores.class_discrimination(Classifier("simple_cnn", "gap", width=4), pair, ["gradcam"])
    assert found["class_discrimination"]["gradcam"].tolist() == [1.0, 0.0]  # (image 0, cat), (image 0, dog)
    assert found["class_energy"]["gradcam"].tolist() == pytest.approx([0.5, 12.8 / 20.8])
