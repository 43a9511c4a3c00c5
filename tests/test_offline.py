"""explain.py / camlight.offline: images in every awkward format, usage errors, and the val split."""

import csv
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

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


def _links(page: Path) -> list[str]:
    """Every src= and href= of an HTML page, as paths relative to it; each must exist."""
    text = page.read_text()
    links = [unquote(html.unescape(v)) for v in re.findall(r'(?:src|href)="([^"]+)"', text)]
    missing = [link for link in links if not (page.parent / link).is_file()]
    assert not missing, missing[:5]
    return links


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
    good = ["rgb.png", "photo.jpg", "grey.png", "palette.png", "alpha.png", "sixteen.png", "sub/large.bmp"]
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
    stems = [g.replace("/", "__") for g in good]  # plain names keep their form
    assert overlays == sorted(f"{g}__{m}.png" for g in stems for m in ("gradcam", "saliency", "cam", "input"))
    assert Image.open(out / "grid.png").size[0] > 4 * 128
    page = (out / "index.html").read_text()
    assert page.count('<tr class="image">') == len(good)
    assert "data:" not in page and len(_links(out / "index.html")) == len(good) * 4  # input + three maps, linked
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for line in skipped:  # the skipped files and their reasons are on the page too
        path, why = line.split("\t")
        assert f"<li><code>{html.escape(path)}</code>: {html.escape(why)}</li>" in page
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["overlays", "maps.npz", "results.csv", "scores.csv", "grid.png", "index.html", "run.json", "skipped.txt"]
    )  # no partial or temporary file is left


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
    assert sorted(np.load(out / "maps.npz").files) == ["a.png/gradcam_top1", "a.png/gradcam_top2"]
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
        image, method = key.rsplit("/", 1)
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


def test_the_run_report_holds_every_epoch_behind_a_slider_linked_or_inline(tmp_path, tiny_argv):
    cfg = load_config(
        [*tiny_argv, "model.head=gap", "wandb.mode=disabled", "trainer.max_epochs=3", "explain.probe_size=4"]
        + ["report.inline=true"]
    )
    group = Path(fit.run(cfg)["group_dir"])
    inline = (group / "report.html").read_text()  # written by train.py's fit.run, report.inline=true
    assert inline.count('class="epoch"') == 3 and 'type="range"' in inline and 'max="2"' in inline
    assert inline.count("data:image/png;base64,") == 4  # three grids and the localization plot
    assert re.findall(r'src="(?!data:)', inline) == [] and "href=" not in inline  # nothing outside the file
    assert "http://" not in inline and "https://" not in inline and "simple_cnn-gap" in inline

    def report(*args):
        return subprocess.run(
            [sys.executable, str(REPO / "explain.py"), "report", *args], capture_output=True, text=True
        )

    from camlight.offline.report import report as report_command

    assert report_command([str(group)]) == 0  # the default: images linked
    linked = (group / "report.html").read_text()
    assert "data:" not in linked and linked.count('class="epoch"') == 3
    links = _links(group / "report.html")  # relative to report.html, and every one there
    assert len(links) == 4 and all(not link.startswith("/") for link in links)
    assert sorted(links)[:3] == [f"simple_cnn-gap/explanations/epoch_00{e}.png" for e in range(3)]
    assert len(linked.encode()) < 20_000 < len(inline.encode())  # a few kB against every PNG inside
    assert report(str(group), "--inline").returncode == 0  # explain.py's own command line
    assert (group / "report.html").read_text() == inline
    bad = report(str(tmp_path))
    assert bad.returncode == 2 and "is not a training group or run" in bad.stderr
    assert report_command([]) == 2 and report_command(["--help"]) == 0


def test_images_beyond_the_pixel_limit_are_skipped_and_others_resized(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "in" / "big.png")
    assert offline.decode(tmp_path / "in" / "big.png", 64).shape == (64, 64, 3)  # resized
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # a limit the user lowered is honoured
    with pytest.raises(ValueError, match=r"400×300 px is over Pillow's decompression-bomb limit of 10000 px"):
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
    from camlight.offline.inputs import Item
    from camlight.offline.outputs import Writer
    from camlight.offline.results import Result

    writer = Writer(tmp_path, ("cat", "dog"), (0.0,) * 3, (1.0,) * 3, {})
    item = Item("a.png", torch.zeros(3, 8, 8), label=1, relative="a.png")
    for rank, target, p, hit in ((1, 1, 0.7, 1), (2, 0, 0.3, 0)):
        result = Result("a.png", 1, 0.7, target, p, 1, rank, ["gradcam"], {"gradcam": {"pointing_game": hit}})
        writer.add([item], torch.zeros(1, 3, 8, 8), [result], {"gradcam": torch.rand(1, 8, 8)})
    row = writer.pending["a.png"]["report"]
    assert row.cells["gradcam_top1"].notes == [("dog (0.70)", None), ("hit", True)]
    assert row.cells["gradcam_top2"].notes == [("cat (0.30)", None), ("miss", False)]
    assert [r["target"] for r in writer.pending["a.png"]["rows"]] == ["dog top1", "cat top2"]


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
    assert sorted(np.load(tmp_path / "out" / "maps.npz").files) == ["a.png/gradcam"]


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
    assert sorted(np.load(out / "maps.npz").files) == sorted(f"a.png/{m}" for m in METHODS)
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
    assert code == 0 and np.load(out / "maps.npz").files == ["a.png/gradcam"]


# -- outputs keyed by relative path, streamed, atomic; reruns -------------------------------------


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> str:
    """An untrained GAP checkpoint at 32 px: the tests below check files, not what a model learnt."""
    import pytorch_lightning as pl

    from camlight.modules import Classifier

    path = tmp_path_factory.mktemp("untrained") / "gap.ckpt"
    torch.manual_seed(0)
    trainer = pl.Trainer(logger=False, max_epochs=0, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(Classifier("simple_cnn", "gap", image_size=32, width=4))
    trainer.save_checkpoint(path)
    return str(path)


# Each a different colour, so that an overlay written over another's shows.
AWKWARD = [
    "good_cat.jpg",  # same stem, other extension
    "good_cat.png",
    "sub/good_cat.png",  # same name, other folders
    "other/good_cat.png",
    "sub__good_cat.png",  # what sub/good_cat.png would flatten to
    "a b.png",  # differs from the next only by a character a file name cannot keep
    "a_b.png",
    "<script>x</script>.png",  # a folder "<script>x<" holding "script>.png"
]


def _awkward(root: Path) -> dict[str, int]:
    """AWKWARD's files and one whose name is not UTF-8 (b"caf\\xe9.png"); key → its grey level."""
    levels = {}
    for i, key in enumerate([*AWKWARD, "caf\udce9.png"]):
        levels[key] = 20 + 25 * i
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = "JPEG" if key.endswith(".jpg") else "PNG"
        with open(os.fsencode(path), "wb") as f:  # bytes: the name need not be UTF-8
            Image.new("RGB", (40, 40), (levels[key],) * 3).save(f, format=fmt)
    assert os.path.exists(os.path.join(os.fsencode(root), b"caf\xe9.png"))
    return levels


def test_no_output_overwrites_another_and_names_that_are_not_utf8_are_written_safely(tmp_path, untrained):
    levels = _awkward(tmp_path / "in")
    out = tmp_path / "out"
    args = [f"checkpoint={untrained}", f"input={tmp_path / 'in'}", "methods=[gradcam,saliency]", "batch_size=4"]
    code, rows = _explained(out, *args)
    assert code == 0 and (out / "skipped.txt").read_text() == ""
    shown = {key: key.replace("\udce9", "\\xe9") for key in levels}  # the non-UTF-8 byte as text
    assert sorted(r["file"] for r in rows) == sorted(shown.values())  # a row each, keyed by relative path
    maps = np.load(out / "maps.npz")
    assert sorted(maps.files) == sorted(f"{shown[k]}/{m}" for k in levels for m in ("gradcam", "saliency"))
    overlays = list((out / "overlays").iterdir())
    assert len(overlays) == len(levels) * 3  # input, gradcam, saliency: none written over another
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<script" not in page and "&lt;script&gt;x&lt;/script&gt;.png" in page
    links = _links(out / "index.html")
    assert len(links) == len(levels) * 3 and len(set(links)) == len(links)
    inputs = dict(re.findall(r'<b>(.*?)</b>.*?<img[^>]* alt="input" src="([^"]+)"', page))
    for key, level in levels.items():  # each row shows its own file's input
        src = out / unquote(html.unescape(inputs[html.escape(shown[key])]))
        assert abs(np.asarray(Image.open(src)).astype(float).mean() - level) < 3, key
    assert "<b>caf\\xe9.png</b>" in page


def test_a_bad_file_whose_name_is_not_utf8_is_listed_in_skipped_txt(tmp_path, untrained):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (40, 40), (90, 90, 90)).save(tmp_path / "in" / "good.png")
    with open(os.path.join(os.fsencode(tmp_path / "in"), b"caf\xe9.png"), "wb") as f:
        f.write(b"not an image")
    code, rows = _explained(tmp_path / "out", f"checkpoint={untrained}", f"input={tmp_path / 'in'}")
    assert code == 3 and [r["file"] for r in rows] == ["good.png"]
    (line,) = (tmp_path / "out" / "skipped.txt").read_text(encoding="utf-8").splitlines()
    path, why = line.split("\t")
    assert path == f"{tmp_path / 'in'}/caf\\xe9.png" and why
    assert html.escape(path) in (tmp_path / "out" / "index.html").read_text(encoding="utf-8")


def test_file_stems_are_distinct_for_distinct_keys():
    from camlight.offline.names import file_stem, shown

    keys = [*AWKWARD, "caf\udce9.png", "caf_.png", "a/b_/c.png", "a/b/_c.png", "a__b.png", ".hidden.png", "x" * 300]
    stems = [file_stem(k) for k in keys]
    assert len(set(stems)) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9._~-]+", s) and len(s) <= 131 and not s.startswith(".") for s in stems)
    assert file_stem("sub/good_cat.png") == "sub__good_cat.png" and file_stem("val_00012") == "val_00012"
    assert file_stem("a b.png").startswith("a_b.png~") and file_stem("a_b.png") == "a_b.png"
    assert shown("caf\udce9\t.png") == "caf\\xe9\\t.png" and shown("café.png") == "café.png"


def test_the_report_pages_stay_small_at_thousands_of_images(tmp_path):
    """index.html, index-2.html ...: 500 rows a page, images linked (about 0.3 kB a row with two
    maps here; the budget is 1 kB), the skipped files on the first page."""
    from camlight.viz.html import ROWS_PER_PAGE, Cell, ReportRow, offline_pages

    n = 4 * ROWS_PER_PAGE + 7
    (tmp_path / "overlays").mkdir()

    def rows():
        for i in range(n):
            stem = f"class_{i % 10}__photo_{i:06d}.jpg"
            cells = {m: Cell(f"overlays/{stem}__{m}.png", [("hit", True)]) for m in ("gradcam", "saliency")}
            yield ReportRow(
                f"class_{i % 10}/photo_{i:06d}.jpg", ["predicted cat (0.93)"], f"overlays/{stem}__input.png", cells
            )

    skipped = [(f"/data/photos/broken_{i}.jpg", "not a readable image") for i in range(1500)]
    scores = [{"map": "gradcam", "metric": "pointing_game", "value": 0.5, "images": n}]
    pages = offline_pages(tmp_path, "t", ["gradcam", "saliency"], rows(), n, scores=scores, skipped=skipped)
    assert [p.name for p in pages] == ["index.html", "index-2.html", "index-3.html", "index-4.html", "index-5.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["overlays", *(p.name for p in pages)])
    counts = [p.read_text().count('<tr class="image">') for p in pages]
    assert counts == [ROWS_PER_PAGE] * 4 + [7]
    first = pages[0].read_text()
    assert first.count("<li><code>/data/photos/broken_") == 1000 and "and 500 more" in first
    assert 'href="index-2.html"' in first and 'href="index-5.html"' in first and "pointing_game" in first
    for page in pages[1:]:
        assert "broken_" not in page.read_text() and 'href="index.html"' in page.read_text()
    per_row = (pages[1].stat().st_size - len(pages[1].read_text().split('<tr class="image">')[0])) / ROWS_PER_PAGE
    assert per_row < 1000  # bytes
    assert sum(p.stat().st_size for p in pages) < n * 1000 + 200_000
    assert "data:" not in first and first.count('loading="lazy"') == 3 * (ROWS_PER_PAGE - 4)


def _kill_after(out: Path, args: list[str], batches: int, inside_a_map: bool = False) -> subprocess.CompletedProcess:
    """explain.py's code in a child process that dies as if killed (os._exit: nothing flushed or
    closed) after `batches` batches were logged, or in the middle of writing a map of the next."""
    script = f"""
import os, sys
import numpy as np
from camlight import offline
from camlight.config import OfflineConfig, load_config
from camlight.offline import outputs

commits, real_commit, real_write = [0], outputs.Writer.commit, np.lib.format.write_array

def commit(self):
    real_commit(self)
    commits[0] += 1
    if commits[0] == {batches} and not {inside_a_map}:
        os._exit(9)

def write_array(f, array, **kwargs):
    if commits[0] == {batches}:
        f.write(b"\\x93NUMPY" + b"x" * 100)  # a member cut short
        os._exit(9)
    real_write(f, array, **kwargs)

outputs.Writer.commit = commit
np.lib.format.write_array = write_array
cfg = load_config(sys.argv[1:], schema=OfflineConfig, defaults="explain.yaml")
offline.run(cfg, progress=False)
"""
    return subprocess.run([sys.executable, "-c", script, *args, f"out={out}"], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("inside_a_map", [False, True])
def test_a_killed_run_leaves_no_finished_file_and_resume_completes_it(tmp_path, untrained, inside_a_map):
    from camlight.offline.outputs import zip_members

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(tmp_path / "in" / f"{i:02d}.png")
    (tmp_path / "in" / "bad.png").write_text("not an image")
    args = [f"checkpoint={untrained}", f"input={tmp_path / 'in'}", "methods=[gradcam,saliency]", "target=top2"]
    out = tmp_path / "out"
    # resume=true on a new out= starts a run, as if it were not given
    killed = _kill_after(out, [*args, "batch_size=3", "resume=true"], batches=2, inside_a_map=inside_a_map)
    assert killed.returncode == 9, killed.stderr[-2000:]
    finished = ("results.csv", "scores.csv", "index.html", "run.json", "skipped.txt", "maps.npz")
    assert not any((out / name).exists() for name in finished)
    assert len((out / ".partial" / "log.jsonl").read_text().splitlines()) == 2  # the batches logged
    with open(out / ".partial" / "maps.npz", "rb") as f:  # and their maps, on disk as they came
        members = [name for name, _ in zip_members(f)]
    assert len(members) == 2 * 3 * 4 and members[0] == "00.png/gradcam_top1.npy"
    with pytest.raises(ConfigError, match=r"choose another out=, or overwrite=true .* or resume=true"):
        offline.run(_cfg(*args, f"out={out}"), progress=False)
    with pytest.raises(ConfigError, match=r"was started with methods=\[\"gradcam\", \"saliency\"\]"):
        offline.run(_cfg(*args, f"out={out}", "resume=true", "methods=[gradcam]"), progress=False)
    code, rows = _explained(out, *args, "resume=true", "batch_size=4")  # the batch size may change
    assert code == 3 and not (out / ".partial").exists()
    fresh_code, fresh = _explained(tmp_path / "fresh", *args)
    assert sorted(rows, key=lambda r: (r["file"], r["target"])) == sorted(fresh, key=lambda r: (r["file"], r["target"]))
    maps, fresh_maps = np.load(out / "maps.npz"), np.load(tmp_path / "fresh" / "maps.npz")
    assert sorted(maps.files) == sorted(fresh_maps.files) and len(maps.files) == 10 * 2 * 2
    for key in maps.files:
        np.testing.assert_allclose(maps[key], fresh_maps[key], atol=1e-6)
    assert (out / "index.html").read_text().count('<tr class="image">') == 10
    assert (out / "skipped.txt").read_text().count("bad.png") == 1
    assert json.loads((out / "run.json").read_text())["images"] == 10
    assert (out / "scores.csv").read_text() == (tmp_path / "fresh" / "scores.csv").read_text()
    with pytest.raises(ConfigError, match="holds a finished run"):
        offline.run(_cfg(*args, f"out={out}", "resume=true"), progress=False)


def test_overwrite_replaces_an_earlier_result_only_after_the_checks_and_only_its_own_files(tmp_path, untrained):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (40, 40), (90, 30, 10)).save(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    base = [f"checkpoint={untrained}", f"input={tmp_path / 'in'}", f"out={out}"]
    assert offline.run(_cfg(*base, "methods=[gradcam,saliency]"), progress=False) == 0
    before = sorted(p.name for p in (out / "overlays").iterdir())
    with pytest.raises(ConfigError, match="unknown method 'gradcm'"):  # a failed check removes nothing
        offline.run(_cfg(*base, "methods=[gradcm]", "overwrite=true"), progress=False)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == before and (out / "run.json").is_file()
    with pytest.raises(ConfigError, match="give one of overwrite=true .* and resume=true"):
        offline.run(_cfg(*base, "overwrite=true", "resume=true"), progress=False)
    assert offline.run(_cfg(*base, "methods=[cam]", "overwrite=true"), progress=False) == 0
    assert np.load(out / "maps.npz").files == ["a.png/cam"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a.png__cam.png", "a.png__input.png"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds notes.txt, not written by explain.py"):
        offline.run(_cfg(*base, "overwrite=true"), progress=False)
    assert (out / "notes.txt").read_text() == "mine" and (out / "run.json").is_file()


def test_a_rerun_into_the_same_out_is_refused_in_one_line_naming_both_options(tmp_path, untrained, capsys):
    import explain as explain_cli

    (tmp_path / "in").mkdir()
    Image.new("RGB", (40, 40), (90, 30, 10)).save(tmp_path / "in" / "a.png")
    args = [f"checkpoint={untrained}", f"input={tmp_path / 'in'}", f"out={tmp_path / 'o'}"]
    assert explain_cli.main(args) == 0
    capsys.readouterr()
    assert explain_cli.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "already exists" in lines[0], lines
    assert "overwrite=true" in lines[0] and "resume=true" in lines[0]
