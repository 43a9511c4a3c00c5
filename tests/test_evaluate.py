"""`explain.py evaluate`: a split scored through Trainer.predict, the files it writes, its mistakes,
and the same numbers from two gloo processes as from one."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import explain as explain_cli
from camlight import evaluate
from camlight.config import EvaluateConfig, load_config
from camlight.modules import load_classifier

from .conftest import REPO, tiny_gap_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    summary = tiny_gap_run(
        tmp_path_factory.mktemp("run"),
        "explain.probe_size=8",
        "explain.methods=[gradcam]",
        "explain.metrics=[pointing_game]",
        "explain.pair_probe=false",
        "explain.full_val_every_n_epochs=1",
    )
    return summary["runs"][0]


def _cfg(*args):
    return load_config(list(args), schema=EvaluateConfig, defaults="evaluate.yaml")


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluate_writes_every_output_and_the_files_agree(tmp_path, trained):
    out = tmp_path / "ev"
    code = evaluate.run(
        _cfg(f"checkpoint={trained['last_checkpoint']}", f"out={out}", "trainer.enable_progress_bar=false"),
        progress=False,
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["images"] == 32 and results["split"] == "val" and results["world_size"] == 1
    assert len(results["checkpoint_sha256"]) == 64
    scores = results["scores"]
    assert set(scores) == {"cam", "gradcam", "center_baseline"}
    # CAM equals Grad-CAM on a GAP head (Selvaraju et al. §3.1), through the whole pipeline.
    for k, v in scores["cam"].items():
        assert scores["gradcam"][k] == pytest.approx(v, abs=1e-6), k
    rows = _rows(out / "per_image.csv")
    assert len(rows) == 32 * 2 and [r["index"] for r in rows[:4]] == ["0", "0", "1", "1"]
    # The set scores are the per-image ones aggregated.
    for method in ("cam", "gradcam"):
        mine = [r for r in rows if r["method"] == method]
        known = [float(r["gt_known"]) for r in mine]
        assert 1 - sum(known) / len(known) == pytest.approx(scores[method]["gt_known_loc_err"], abs=1e-6)
        top1 = [float(r["top1_loc"]) for r in mine]
        assert 1 - sum(top1) / len(top1) == pytest.approx(scores[method]["top1_loc_err"], abs=1e-6)
        pointing = [float(r["pointing"]) for r in mine]
        assert sum(pointing) / len(pointing) == pytest.approx(scores[method]["pointing"], abs=1e-6)
        wrong = sum(r["label"] != r["predicted"] for r in mine) / len(mine)
        assert wrong == pytest.approx(scores[method]["top1_cls_err"], abs=1e-6)
    classes = _rows(out / "per_class.csv")
    assert [c["class"] for c in classes] == ["cat", "dog"]
    assert sum(int(c["images"]) for c in classes) == 32
    page = (out / "index.html").read_text()
    assert "top-1 loc err" in page and "MaxBoxAccV2" in page and "per class" in page
    assert not list(out.glob("per_image.rank*.csv"))  # the per-rank parts are merged away


def test_the_model_is_left_as_it_was(tmp_path, trained):
    from camlight.evaluate.loop import Evaluation
    from camlight.metrics.protocol_set import Protocols

    model = load_classifier(trained["last_checkpoint"]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluation = Evaluation(model, ["gradcam", "cam"], Protocols(["cam_loc", "pointing"], ["gradcam", "cam"], 2))
    batch = {
        "image": torch.randn(4, 3, 64, 64),
        "label": torch.tensor([0, 1, 0, 1]),
        "index": torch.arange(4),
        "mask": torch.ones(4, 64, 64, dtype=torch.bool),
        "box": torch.tensor([[0.0, 0, 64, 64]] * 4),
    }
    evaluation.predict_step(batch, 0)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_calibrate_on_freezes_thresholds_and_reports_both(tmp_path, trained):
    out = tmp_path / "ev"
    evaluate.run(
        _cfg(
            f"checkpoint={trained['last_checkpoint']}",
            f"out={out}",
            "data.test_size=16",
            "split=test",
            "calibrate_on=val",
            "protocols=[wsol]",
            "methods=[gradcam]",
            "center_baseline=false",
        ),
        progress=False,
    )
    results = json.loads((out / "results.json").read_text())
    frozen = results["calibrated_thresholds"]["gradcam"]
    assert len(frozen) == 3 and results["calibrate_on"] == "val" and results["images"] == 16
    assert "max_box_acc_v2" in results["calibration_scores"]["gradcam"]  # the val split's own
    test = results["scores"]["gradcam"]
    assert test["box_acc_v2_calibrated"] <= test["max_box_acc_v2"] + 1e-12  # the oracle is an upper bound
    assert "calibration split (val)" in (out / "index.html").read_text()
    # The frozen thresholds are those a run on val alone finds best, and its score there.
    alone = tmp_path / "val_alone"
    evaluate.run(
        _cfg(
            f"checkpoint={trained['last_checkpoint']}",
            f"out={alone}",
            "protocols=[wsol]",
            "methods=[gradcam]",
            "center_baseline=false",
        ),
        progress=False,
    )
    val = json.loads((alone / "results.json").read_text())["scores"]["gradcam"]
    assert frozen == [val[f"best_threshold@{d}"] for d in (30, 50, 70)]
    assert results["calibration_scores"]["gradcam"]["max_box_acc_v2"] == val["max_box_acc_v2"]


def test_mistakes_exit_2_with_one_line_and_write_nothing(tmp_path, trained, capsys):
    ckpt = f"checkpoint={trained['last_checkpoint']}"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    cases = {
        "unknown protocol 'boxes'": [ckpt, "protocols=[boxes]"],
        "calibrate_on=val is the split being scored": [ckpt, "calibrate_on=val"],
        "calibrate_on= chooses MaxBoxAccV2's thresholds": [ckpt, "calibrate_on=test", "protocols=[pointing]"],
        "compat.wsol='torchray'; choose from paper, wsolevaluation": [ckpt, "compat.wsol=torchray"],
        "already exists and is not empty": [ckpt, f"out={busy}"],
        "data keys:": [ckpt, "data.colour=red"],
        "give data.name=": ["model=torchvision:resnet18", "weights=none", "image_size=64"],
        "unknown method": [ckpt, "methods=[gradcamm]"],
        "invalid threshold_step=0.0": [ckpt, "threshold_step=0"],
        "wsol_ious= is empty": [ckpt, "wsol_ious=[]"],
        "invalid topk=0": [ckpt, "topk=[0]"],
        "invalid trainer.limit_predict_batches='abc'": [ckpt, "trainer.limit_predict_batches=abc"],
        "data.root is required with data.name=cub": [ckpt, "data.name=cub"],
        "trainer.precision=16-true turns the weights to half precision": [ckpt, "trainer.precision=16-true"],
        "trainer:": [ckpt, "trainer.accelerator=tpu"],
        "protocols= is empty": [ckpt, "protocols=[]"],
    }
    for message, args in cases.items():
        out = tmp_path / "never"
        if not any(a.startswith("out=") for a in args):
            args.append(f"out={out}")
        assert explain_cli.main(["evaluate", *args]) == 2, message
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, (message, err)
        assert not out.exists()


def test_help_lists_the_evaluate_keys(capsys):
    assert explain_cli.main(["evaluate", "--help"]) == 0
    text = capsys.readouterr().out
    for key in ("protocols", "calibrate_on", "compat", "cam_threshold", "trainer.devices", "data"):
        assert key in text


def _cli(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "explain.py"), "evaluate", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_two_gloo_processes_give_the_numbers_of_one(tmp_path, trained):
    common = [
        f"checkpoint={trained['last_checkpoint']}",
        "protocols=[cam_loc,wsol,pointing,causal]",
        "causal_steps=4",
        "data.val_size=31",  # ranks of unequal share (16 and 15 images)
        "batch_size=6",  # and uneven batches
        "trainer.enable_progress_bar=false",
    ]
    one = _cli(tmp_path, *common, f"out={tmp_path / 'one'}")
    two = _cli(tmp_path, *common, f"out={tmp_path / 'two'}", "trainer.devices=2", "trainer.strategy=ddp")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r2["world_size"] == 2 and r1["images"] == r2["images"] == 31
    for method, scores in r1["scores"].items():
        for k, v in scores.items():
            assert r2["scores"][method][k] == pytest.approx(v, abs=1e-6), (method, k)
    # Same rows in the same order; a model's outputs depend on the batch it ran in by float rounding.
    rows1, rows2 = _rows(tmp_path / "one" / "per_image.csv"), _rows(tmp_path / "two" / "per_image.csv")
    assert [(r["index"], r["method"], r["gt_known"], r["pointing"]) for r in rows1] == [
        (r["index"], r["method"], r["gt_known"], r["pointing"]) for r in rows2
    ]
    for a, b in zip(rows1, rows2, strict=True):
        assert float(a["deletion_auc"]) == pytest.approx(float(b["deletion_auc"]), abs=1e-5)
    assert (tmp_path / "one" / "per_class.csv").read_text() == (tmp_path / "two" / "per_class.csv").read_text()


def test_wandb_gets_the_summary_and_the_table(tmp_path, trained):
    out = tmp_path / "ev"
    evaluate.run(
        _cfg(f"checkpoint={trained['last_checkpoint']}", f"out={out}", "wandb.mode=offline", "protocols=[pointing]"),
        progress=False,
    )
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    wandb = Path(sys.executable).with_name("wandb")
    read = subprocess.run(
        [str(wandb), "leet", "inspect", str(runs[0]), "--summary", "--json"], capture_output=True, text=True, check=True
    )
    summary = json.loads(read.stdout)
    text = json.dumps(summary)
    results = json.loads((out / "results.json").read_text())
    assert "evaluate/scores" in text
    pointing = results["scores"]["gradcam"]["pointing"]
    found = [v for k, v in _flat(summary) if k.endswith("evaluate/gradcam/pointing")]
    assert found and math.isclose(float(found[0]), pointing, abs_tol=1e-9)


def _flat(d, prefix=""):
    """(dotted key, value) of every leaf of nested dicts."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flat(v, key + "/")
        else:
            yield key, v


def test_the_callbacks_whole_split_scores_equal_evaluate_on_the_final_checkpoint(tmp_path, trained):
    """explain.full_val_every_n_epochs scores the validation split in the validation loop; its last
    epoch's numbers are what explain.py evaluate finds on the checkpoint of that epoch."""
    run_dir = Path(trained["last_checkpoint"]).parent.parent
    logged = _rows(run_dir / "explanations" / "metrics.csv")[-1]
    out = tmp_path / "ev"
    evaluate.run(_cfg(f"checkpoint={trained['last_checkpoint']}", f"out={out}", "methods=[gradcam]"), progress=False)
    results = json.loads((out / "results.json").read_text())["scores"]
    keys = ("top1_loc_err", "gt_known_loc_err", "max_box_acc_v2", "pxap", "pointing", "pointing_class_mean")
    for method in ("gradcam", "center_baseline"):
        for k in keys:
            assert float(logged[f"explain/full/{method}/{k}"]) == pytest.approx(results[method][k], abs=1e-6), (
                method,
                k,
            )


def test_data_classes_map_to_the_models_by_name():
    from camlight.config import ConfigError
    from camlight.evaluate.command import Indexed, label_map

    assert label_map(["cat", "dog"], ["cat", "dog"]) is None
    imagenette = ["tench", "English springer"]
    model = ["goldfish", "tench", "great white shark", "English Springer"]
    assert label_map(imagenette, model) == [1, 3]  # a subset, case aside
    with pytest.raises(ConfigError, match="'n01440764' are not among the model's 4 classes"):
        label_map(["n01440764"], model)
    data = [{"image": torch.zeros(3, 2, 2), "label": torch.tensor(1)}]
    assert int(Indexed(data, [1, 3])[0]["label"]) == 3 and int(Indexed(data)[0]["index"]) == 0


def _folder(root: Path, boxes) -> Path:
    from tests.photo_fixtures import make_image_folder

    make_image_folder(root, classes=("cat", "dog"), per_class=2, val_per_class=3, boxes=boxes, size=(80, 64))
    return root


def test_unreadable_photos_are_skipped_counted_and_exit_3(tmp_path, trained):
    from tests.photo_fixtures import truncate

    root = _folder(tmp_path / "photos", "xml")
    bad = sorted((root / "val" / "cat").glob("*.JPEG"))[:2]  # the first batch of two: nothing readable
    for path in bad:
        truncate(path)
    out = tmp_path / "ev"
    code = evaluate.run(
        _cfg(
            f"checkpoint={trained['last_checkpoint']}",
            f"out={out}",
            "data.name=image_folder",
            f"data.root={root}",
            "batch_size=2",
            "methods=[gradcam]",
        )
    )
    assert code == 3
    results = json.loads((out / "results.json").read_text())
    assert results["images"] == 4 and results["skipped"] == 2
    listed = (out / "skipped.txt").read_text()
    assert all(str(p) in listed for p in bad)
    rows = _rows(out / "per_image.csv")
    assert len(rows) == 4 and all(r["image"].startswith("val/") for r in rows)


def test_a_split_without_ground_truth_is_refused_for_the_box_protocols(tmp_path, trained, capsys):
    root = _folder(tmp_path / "photos", None)
    args = [f"checkpoint={trained['last_checkpoint']}", "data.name=image_folder", f"data.root={root}"]
    assert explain_cli.main(["evaluate", *args, f"out={tmp_path / 'a'}"]) == 2
    assert "has no ground-truth boxes or masks, which cam_loc, wsol, pointing need" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    # The faithfulness protocols need none.
    out = tmp_path / "b"
    assert explain_cli.main(["evaluate", *args, f"out={out}", "protocols=[causal]", "causal_steps=2"]) == 0
    scores = json.loads((out / "results.json").read_text())["scores"]
    assert set(scores) == {"cam", "gradcam"} and "deletion_auc" in scores["gradcam"]


def test_a_failure_midway_leaves_nothing_behind(tmp_path, trained, monkeypatch):
    from camlight.evaluate import loop

    def broken(self, *a, **k):
        raise RuntimeError("a bug in a protocol")

    monkeypatch.setattr(loop.Evaluation, "on_predict_epoch_end", broken)
    out = tmp_path / "ev"
    with pytest.raises(RuntimeError, match="a bug in a protocol"):
        evaluate.run(_cfg(f"checkpoint={trained['last_checkpoint']}", f"out={out}"), progress=False)
    assert not out.exists()
