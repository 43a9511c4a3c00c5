"""explain.py / camlight.offline: images in every awkward format, usage errors, and the val split."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camlight import fit, offline
from camlight.config import ConfigError, OfflineConfig, load_config

from .conftest import REPO


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint from train.py's own code path (so it holds its run config)."""
    root = tmp_path_factory.mktemp("run")
    cfg = load_config(
        [
            f"out_dir={root}",
            "name=t",
            "model.head=gap",
            "wandb.mode=disabled",
            "data.train_size=64",
            "data.val_size=32",
            "data.test_size=0",
            "data.batch_size=16",
            "model.width=4",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "explain.probe_size=8",
            "explain.methods=[gradcam]",
            "explain.metrics=[pointing_game]",
            "explain.pair_probe=false",
        ]
    )
    summary = fit.run(cfg)
    return summary["runs"][0]


def _cfg(*args):
    return load_config(list(args), schema=OfflineConfig, defaults="explain.yaml")


def _folder(root: Path) -> dict[str, str]:
    """Good images in several modes and formats, and bad files; name → 'good' or 'bad'."""
    root.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(rgb).save(root / "photo.jpg", quality=90)
    Image.fromarray(rgb[:, :, 0]).save(root / "grey.png")  # L
    Image.fromarray(rgb).convert("P").save(root / "palette.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 50), 128, np.uint8)])).save(root / "alpha.png")  # RGBA
    Image.fromarray((rng.integers(0, 65535, (30, 30))).astype(np.uint16)).save(root / "sixteen.png")  # I;16
    (root / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(root / "sub" / "large.bmp")
    data = (root / "photo.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "notes.png").write_text("this is not an image")
    (root / "empty.webp").write_bytes(b"")
    (root / "readme.txt").write_text("ignored: not an image extension")
    good = ["rgb", "photo", "grey", "palette", "alpha", "sixteen", "sub__large"]
    return {**{g: "good" for g in good}, **{b: "bad" for b in ["truncated.jpg", "notes.png", "empty.webp"]}}


def test_a_folder_with_bad_files_is_explained_and_the_bad_ones_listed(tmp_path, trained):
    expected = _folder(tmp_path / "photos")
    out = tmp_path / "out"
    code = offline.run(
        _cfg(
            f"checkpoint={trained['best_checkpoint']}",
            f"input={tmp_path / 'photos'}",
            f"out={out}",
            "methods=[gradcam,saliency,cam]",
            "batch_size=3",
        ),
        progress=False,
    )
    assert code == 3
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in skipped) == sorted(
        k for k, v in expected.items() if v == "bad"
    )
    assert all("not a readable image" in line for line in skipped)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    good = sorted(k for k, v in expected.items() if v == "good")
    assert sorted(r["file"] for r in rows) == good
    assert all(r["predicted"] in ("cat", "dog") and 0 <= float(r["probability"]) <= 1 for r in rows)
    maps = np.load(out / "maps.npz")
    assert sorted(maps.files) == sorted(f"{g}/{m}" for g in good for m in ("gradcam", "saliency", "cam"))
    assert all(maps[k].shape == (64, 64) and 0 <= maps[k].min() and maps[k].max() <= 1 for k in maps.files)
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == sorted(f"{g}__{m}.png" for g in good for m in ("gradcam", "saliency", "cam", "input"))
    assert Image.open(out / "grid.png").size[0] > 4 * 128
    page = (out / "index.html").read_text()
    assert page.count('<tr class="image">') == len(good)
    assert page.count("data:image/png;base64,") == len(good) * 4  # input + three methods, all inlined
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_every_image_explained_exits_0_and_topk_explains_each_class(tmp_path, trained):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    code = offline.run(
        _cfg(
            f"checkpoint={trained['best_checkpoint']}",
            f"input={tmp_path / 'in' / 'a.png'}",
            f"out={out}",
            "target=topk",
            "k=2",
            "methods=[gradcam]",
        ),
        progress=False,
    )
    assert code == 0 and (out / "skipped.txt").read_text() == ""
    assert sorted(np.load(out / "maps.npz").files) == ["a/gradcam_top1", "a/gradcam_top2"]
    with open(out / "results.csv") as f:
        targets = sorted(r["target"] for r in csv.DictReader(f))
    assert targets == ["cat top1", "dog top2"] or targets == ["cat top2", "dog top1"]


def test_the_val_probe_reproduces_the_callbacks_last_pointing_game(tmp_path, trained):
    out = tmp_path / "out"
    code = offline.run(
        _cfg(
            f"checkpoint={trained['last_checkpoint']}",
            "split=val",
            "probe_size=8",
            f"out={out}",
            "target=label",
            "methods=[gradcam]",
        ),
        progress=False,
    )
    assert code == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    offline_pg = np.mean([int(r["gradcam/pointing_game"]) for r in rows])
    assert offline_pg == pytest.approx(trained["localization"]["gradcam"]["pointing_game"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "checkpoint= is required"),
        (["checkpoint=/nope.ckpt", "input=x"], "checkpoint /nope.ckpt not found"),
        (["checkpoint=BAD", "input=x"], "is not a camlight checkpoint"),
        (["checkpoint=CKPT"], "give exactly one of input="),
        (["checkpoint=CKPT", "input=EMPTY"], "no images"),
        (["checkpoint=CKPT", "input=/nope"], "input /nope not found"),
        (["checkpoint=CKPT", "input=EMPTY", "methods=[gradcm]"], "unknown method 'gradcm'"),
        (["checkpoint=CKPT", "input=EMPTY", "target=horse"], "unknown target 'horse'.*cat, dog"),
        (["checkpoint=CKPT", "input=EMPTY", "target=label"], "target=label needs ground truth"),
    ],
)
def test_usage_mistakes_write_nothing(tmp_path, trained, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    subst = {"CKPT": trained["best_checkpoint"], "BAD": str(tmp_path / "bad.ckpt"), "EMPTY": str(tmp_path / "empty")}
    args = [a.split("=")[0] + "=" + subst.get(a.split("=", 1)[1], a.split("=", 1)[1]) for a in args]
    with pytest.raises(ConfigError, match=message):
        offline.run(_cfg(*args, f"out={tmp_path / 'out'}"), progress=False)
    assert not (tmp_path / "out").exists()


def test_explain_py_exit_codes(tmp_path, trained):
    def run(*args):
        return subprocess.run(
            [sys.executable, str(REPO / "explain.py"), *args], cwd=tmp_path, capture_output=True, text=True
        )

    bad = run(f"checkpoint={tmp_path / 'missing.ckpt'}", "input=.")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: checkpoint") and "Traceback" not in bad.stderr
    assert not (tmp_path / "explained").exists()
    assert run("--help").returncode == 0
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_text("nope")
    mixed = run(f"checkpoint={trained['best_checkpoint']}", f"input={tmp_path / 'in'}")
    assert mixed.returncode == 3, mixed.stderr[-1000:]
    assert "b.png" in (tmp_path / "explained" / "skipped.txt").read_text()


def test_class_model_visualization_raises_the_class_above_every_other():
    from camlight.datamodules import SyntheticPets
    from camlight.explain.class_model import class_model
    from camlight.modules import Classifier

    torch.manual_seed(0)
    model = Classifier("simple_cnn", "gap", width=8)
    batch = SyntheticPets(train_size=8, val_size=128, test_size=0).probe_batch(128)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):  # a model that has learnt something: an untrained one has no class to find
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"]).backward()
        opt.step()
    model.eval()
    for target in (0, 1):
        image, shots, scores = class_model(model, target, 64, steps=200)
        with torch.no_grad():
            logits = model(image[None])[0]
            start = model(torch.zeros(1, 3, 64, 64))[0, target]
        assert logits[target] > start, (target, float(logits[target]), float(start))
        others = torch.cat([logits[:target], logits[target + 1 :]])
        assert (logits[target] > others).all(), (target, logits.tolist())
        assert len(shots) == 8 and len(scores) == 200


def test_visualize_class_cli_writes_the_image_and_the_strip(tmp_path, trained):
    def run(*args):
        return subprocess.run(
            [sys.executable, str(REPO / "explain.py"), "visualize-class", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )

    ok = run(f"checkpoint={trained['best_checkpoint']}", "class=dog", "steps=20", "out=vis")
    assert ok.returncode == 0, ok.stderr[-1000:]
    assert Image.open(tmp_path / "vis" / "dog.png").size == (64, 64)
    assert Image.open(tmp_path / "vis" / "dog_steps.png").size == (8 * 64, 64)
    bad = run(f"checkpoint={trained['best_checkpoint']}", "class=horse", "out=vis2")
    assert bad.returncode == 2 and "unknown class 'horse'; choose one of cat, dog" in bad.stderr
    assert not (tmp_path / "vis2").exists()


def test_the_run_report_holds_every_epoch_behind_a_slider(tmp_path, tiny_argv):
    cfg = load_config(
        [*tiny_argv, "model.head=gap", "wandb.mode=disabled", "trainer.max_epochs=3", "explain.probe_size=4"]
    )
    group = Path(fit.run(cfg)["group_dir"])
    page = (group / "report.html").read_text()  # written by train.py's fit.run
    assert page.count('class="epoch"') == 3 and 'type="range"' in page and 'max="2"' in page
    assert page.count("data:image/png;base64,") == 4  # three grids and the localization plot
    assert "http://" not in page and "https://" not in page and "simple_cnn-gap" in page
    (group / "report.html").unlink()
    out = subprocess.run(
        [sys.executable, str(REPO / "explain.py"), "report", str(group)], capture_output=True, text=True
    )
    assert out.returncode == 0 and (group / "report.html").read_text() == page
    bad = subprocess.run(
        [sys.executable, str(REPO / "explain.py"), "report", str(tmp_path)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "is not a training group or run" in bad.stderr


def test_images_beyond_the_pixel_limit_are_skipped_and_others_resized(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "in" / "big.png")
    assert offline.decode(tmp_path / "in" / "big.png", 64).shape == (64, 64, 3)  # resized
    from camlight.datamodules import io

    monkeypatch.setattr(io, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ValueError, match=r"too large \(400×300\)"):
        offline.decode(tmp_path / "in" / "big.png", 64)
