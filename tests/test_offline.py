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

from .conftest import REPO, tiny_gap_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint from train.py's own code path (so it holds its run config)."""
    summary = tiny_gap_run(
        tmp_path_factory.mktemp("run"),
        "explain.probe_size=8",
        "explain.methods=[gradcam]",
        "explain.metrics=[pointing_game]",
        "explain.pair_probe=false",
    )
    return summary["runs"][0]


def _cfg(*args):
    return load_config(list(args), schema=OfflineConfig, defaults="explain.yaml")


def _explained(out: Path, *args) -> tuple[int, list[dict]]:
    """Run explain.py's code with `args` into `out`; (exit code, rows of results.csv)."""
    code = offline.run(_cfg(*args, f"out={out}"), progress=False)
    with open(out / "results.csv") as f:
        return code, list(csv.DictReader(f))


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


def test_target_top2_explains_the_two_best_classes_in_one_call_as_topk_does(tmp_path, trained):
    """target=top2 is topk with k=2; its maps come from one call with a (B,2) target table and equal
    the maps of one call per class."""
    (tmp_path / "in").mkdir()
    for i, level in enumerate((40, 200)):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8) + level).save(tmp_path / "in" / f"{i}.png")
    maps = {}
    for name, target in (("top2", ["target=top2"]), ("topk", ["target=topk", "k=2"]), ("top1", ["target=top1"])):
        out = tmp_path / name
        args = [f"checkpoint={trained['best_checkpoint']}", f"input={tmp_path / 'in'}", f"out={out}"]
        code = offline.run(_cfg(*args, *target, "methods=[gradcam,saliency]"), progress=False)
        assert code == 0
        maps[name] = dict(np.load(out / "maps.npz"))
    assert sorted(maps["top2"]) == sorted(maps["topk"]) and len(maps["top2"]) == 2 * 2 * 2
    for key, value in maps["top2"].items():
        np.testing.assert_allclose(value, maps["topk"][key], atol=1e-6)
    for key, value in maps["top1"].items():  # the best class's maps, explained alone
        image, method = key.split("/")
        np.testing.assert_allclose(maps["top2"][f"{image}/{method}_top1"], value, atol=1e-6)


def test_the_val_probe_reproduces_the_callbacks_last_pointing_game(tmp_path, trained):
    code, rows = _explained(
        tmp_path / "out", f"checkpoint={trained['last_checkpoint']}", "split=val", "probe_size=8", "target=label"
    )
    assert code == 0 and len(rows) == 8
    offline_pg = np.mean([int(r["gradcam/pointing_game"]) for r in rows])
    assert offline_pg == pytest.approx(trained["localization"]["gradcam"]["pointing_game"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "checkpoint= or model= is required"),
        (["checkpoint=/nope.ckpt", "input=x"], "checkpoint /nope.ckpt not found"),
        (["checkpoint=BAD", "input=x"], "is not a camlight checkpoint"),
        (["checkpoint=CKPT"], "give exactly one of input="),
        (["checkpoint=CKPT", "input=EMPTY"], "no images"),
        (["checkpoint=CKPT", "input=/nope"], "input /nope not found"),
        (["checkpoint=CKPT", "input=EMPTY", "methods=[gradcm]"], "unknown method 'gradcm'"),
        (["checkpoint=CKPT", "input=EMPTY", "target=horse"], "unknown target 'horse'.*cat, dog"),
        (["checkpoint=CKPT", "input=EMPTY", "target=label"], "target=label needs ground truth"),
        (["checkpoint=CKPT", "split=test", "probe_size=4"], "probe_size= works with split=val"),
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


def test_gradient_ascent_on_a_neuron_raises_it_and_stays_in_its_receptive_field():
    """A single neuron's ascent (no decay, jitter or blur) changes only the pixels the neuron sees;
    a channel's ascent raises its summed activation; a start image is where the ascent begins."""
    from camlight.explain.class_model import class_model
    from camlight.inspect import layer_output
    from camlight.inspect.receptive import receptive_field
    from camlight.modules import Classifier

    torch.manual_seed(0)
    model = Classifier("simple_cnn", "gap", image_size=64, width=4).eval()
    plain = dict(jitter=0, blur_every=0, l2=0.0, lr=0.05, steps=30)
    image, _, scores = class_model(model, "backbone.block2:0:5:6", 64, start="noise", seed=1, **plain)
    start = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))[0]
    assert scores[-1] > scores[0] > 0
    y0, y1, x0, x1 = receptive_field(model, "backbone.block2").box(5, 6, 64, 64)
    changed = (image != start).any(0)
    assert changed[y0:y1, x0:x1].any() and not changed[:y0].any() and not changed[y1:].any()
    assert not changed[:, :x0].any() and not changed[:, x1:].any()
    image, _, scores = class_model(model, "backbone.block3:2", 64, start="noise", steps=30)
    value = layer_output(model, image[None], "backbone.block3")[0, 2].sum()
    assert scores[-1] > scores[0] and value > scores[0]
    photo = torch.rand(3, 64, 64)
    same, _, _ = class_model(model, 1, 64, start=photo, **{**plain, "lr": 0.0, "steps": 1})
    assert torch.equal(same, photo)
    with pytest.raises(ValueError, match="unknown start"):
        class_model(model, 1, 64, start="sky", steps=1)


def test_visualize_class_takes_a_neuron_and_a_start_photo(tmp_path, trained, capsys):
    import explain as explain_cli

    ckpt = trained["best_checkpoint"]
    Image.new("RGB", (80, 60), (200, 120, 40)).save(tmp_path / "photo.png")
    out = tmp_path / "n"
    args = ["visualize-class", f"checkpoint={ckpt}", "steps=5"]
    assert explain_cli.main([*args, "class=backbone.block3:4", f"start={tmp_path / 'photo.png'}", f"out={out}"]) == 0
    assert Image.open(out / "backbone.block3_4.png").size == (64, 64)
    never = tmp_path / "never"
    capsys.readouterr()
    for extra, says in (
        (["class=backbone.block3:999"], "out of range"),
        (["class=dog", "start=sky"], "not mean, zeros, noise and not an image file"),
    ):
        assert explain_cli.main([*args, *extra, f"out={never}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not never.exists()


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


# -- checkpoints are read once, and safely ----------------------------------------------------------


class Payload:
    """What a malicious checkpoint could hold: unpickling it would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_checkpoint_whose_pickle_would_run_code_is_refused_without_running_it(tmp_path, trained):
    from camlight.modules import CheckpointError, checkpoint_config, load_classifier

    target = tmp_path / "created-by-the-pickle"
    # A real camlight checkpoint with the payload hidden in its run config, and a bare one.
    contents = torch.load(trained["best_checkpoint"], weights_only=True)
    contents["camlight"]["config"]["note"] = Payload(target)
    torch.save(contents, tmp_path / "trojan.ckpt")
    torch.save({"state_dict": {}, "x": Payload(target)}, tmp_path / "bare.ckpt")
    assert not target.exists()  # saving did not run it
    for name in ("trojan.ckpt", "bare.ckpt"):
        for load in (load_classifier, checkpoint_config):
            with pytest.raises(CheckpointError, match=r"was refused: .*\(io\.open\), which could run code"):
                load(tmp_path / name)
        out = subprocess.run(
            [sys.executable, str(REPO / "explain.py"), f"checkpoint={tmp_path / name}", "split=val"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / name} was refused"), out.stderr
        assert not (tmp_path / "explained").exists()
    assert not target.exists()


def test_explain_py_reads_the_checkpoint_once(tmp_path, trained, monkeypatch):
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real(*a, **k))
    code = offline.run(
        _cfg(f"checkpoint={trained['best_checkpoint']}", "split=val", "probe_size=4", f"out={tmp_path / 'o'}"),
        progress=False,
    )
    assert code == 0 and calls == [True]


# -- the report under several targets ---------------------------------------------------------------


def _cells(page: str) -> dict[tuple[str, str], str]:
    """(file, column) → the HTML of that map's cell in index.html."""
    import re

    out = {}
    for row in re.findall(r'<tr class="image">(.*?)</tr>', page):
        name = re.search(r"<b>(.*?)</b>", row).group(1)
        for column, cell in re.findall(r'<td data-column="([^"]+)">(.*?)</td>', row):
            out[(name, column)] = cell
    return out


def test_the_report_shows_each_targets_own_class_and_score_under_topk(tmp_path, trained):
    out = tmp_path / "out"
    args = ["target=topk", "k=2", "methods=[gradcam,saliency]", "metrics=[pointing_game]"]
    code, rows = _explained(out, f"checkpoint={trained['best_checkpoint']}", "split=val", *args)
    assert code == 0
    cells = _cells((out / "index.html").read_text())
    assert len(rows) == 2 * 32 and len(cells) == 2 * 2 * 32
    for r in rows:
        cls, rank = r["target"].split(" ")
        for method in ("gradcam", "saliency"):
            cell = cells[(r["file"], f"{method}_{rank}")]
            assert f"<span>{cls} (" in cell  # the class this column explains
            hit = int(r[f"{method}/pointing_game"])
            assert ('class="hit">hit<' in cell) is bool(hit) and ('class="miss">miss<' in cell) is (not hit)
    by_file = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r["gradcam/pointing_game"])
    differ = sum(len(set(v)) > 1 for v in by_file.values())
    assert differ > 0  # top-1 and top-2 disagree somewhere, so the check above could tell them apart


def test_report_rows_take_each_cell_from_its_own_result(tmp_path):
    from camlight.offline.outputs import Writer
    from camlight.offline.results import Result

    writer = Writer(tmp_path, ("cat", "dog"), (0.0,) * 3, (1.0,) * 3)
    writer.columns = ["gradcam_top1", "gradcam_top2"]
    results = [
        Result("a", 1, 0.7, 1, 0.7, label=1, rank=1, methods=["gradcam"], scores={"gradcam": {"pointing_game": 1}}),
        Result("a", 1, 0.7, 0, 0.3, label=1, rank=2, methods=["gradcam"], scores={"gradcam": {"pointing_game": 0}}),
    ]
    (row,) = writer._report_rows(results)
    assert row.cells["gradcam_top1"].notes == [("dog (0.70)", None), ("hit", True)]
    assert row.cells["gradcam_top2"].notes == [("cat (0.30)", None), ("miss", False)]


def test_asking_only_for_methods_the_model_lacks_writes_nothing(tmp_path):
    import pytorch_lightning as pl

    from camlight.modules import Classifier

    model = Classifier("simple_cnn", "fc", image_size=32, width=4)  # CAM needs a GAP head
    trainer = pl.Trainer(logger=False, max_epochs=0, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "fc.ckpt")
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    args = [f"checkpoint={tmp_path / 'fc.ckpt'}", f"input={tmp_path / 'in'}", f"out={tmp_path / 'out'}"]
    with pytest.raises(ConfigError, match="supports none of the methods asked for: cam needs .* global-average"):
        offline.run(_cfg(*args, "methods=[cam]"), progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="skipping cam"):
        assert offline.run(_cfg(*args, "methods=[cam,gradcam]"), progress=False) == 0
    assert sorted(np.load(tmp_path / "out" / "maps.npz").files) == ["a/gradcam"]


def test_explain_py_takes_every_method_by_name_and_drops_those_a_model_declares_it_cannot_give(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    from camlight.explain import METHODS
    from camlight.modules import Classifier

    model = Classifier("simple_cnn", "gap", image_size=32, width=4)
    trainer = pl.Trainer(logger=False, max_epochs=0, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "gap.ckpt")
    (tmp_path / "in").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    args = [f"input={tmp_path / 'in'}"]
    every = f"methods=[{','.join(METHODS)}]"
    out = tmp_path / "all"
    assert offline.run(_cfg(f"checkpoint={tmp_path / 'gap.ckpt'}", *args, f"out={out}", every), progress=False) == 0
    assert sorted(np.load(out / "maps.npz").files) == sorted(f"a/{m}" for m in METHODS)
    # A model with a layer LRP has no rule for: lrp is dropped by its declaration, with one warning.
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "def gelu_net():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "gelu"
    with pytest.warns(UserWarning, match="skipping lrp: lrp has no rule for GELU"):
        code = offline.run(
            _cfg("model=nets:gelu_net", "image_size=32", *args, f"out={out}", "methods=[lrp,gradcam]"), progress=False
        )
    assert code == 0 and np.load(out / "maps.npz").files == ["a/gradcam"]
