"""`explain.py sanity` on a checkpoint: its files and numbers, the data-randomization reference,
usage mistakes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import explain as explain_cli
from camlight.config import ConfigError, SanityConfig, load_config
from camlight.offline import sanity

from .conftest import tiny_gap_run

MEASURES = {"spearman", "spearman_signed", "ssim", "hog"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    summary = tiny_gap_run(
        tmp_path_factory.mktemp("run"),
        "data.image_size=48",
        "explain.probe_size=8",
        "explain.methods=[gradcam]",
        "explain.metrics=[pointing_game]",
        "explain.pair_probe=false",
    )
    return summary["runs"][0]


def _cfg(*args):
    return load_config(list(args), schema=SanityConfig, defaults="sanity.yaml")


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sanity_writes_the_figure_the_numbers_and_the_grids(trained, tmp_path):
    ckpt = trained["best_checkpoint"]
    args = [f"checkpoint={ckpt}", "images=6", "methods=[saliency,gradcam,cam]", "max_images=2"]
    assert sanity.run(_cfg(*args, "batch_size=4", f"out={tmp_path / 'a'}")) == 0
    out = tmp_path / "a"
    assert {p.name for p in out.iterdir()} >= {"sanity.csv", "sanity_per_image.csv", "sanity.png"}
    assert len(list(out.glob("maps_cascading_*.png"))) == 2 and len(list(out.glob("maps_independent_*.png"))) == 2
    summary = _rows(out / "sanity.csv")
    modes = {r["mode"] for r in summary}
    assert modes == {"cascading", "independent"}
    blocks = [
        r["block"] for r in summary if r["mode"] == "cascading" and r["method"] == "cam" and r["measure"] == "ssim"
    ]
    assert blocks[0] == "head" and len(blocks) == len(set(blocks)) >= 5  # from the logits down, each block once
    assert {r["measure"] for r in summary} == MEASURES
    assert len(summary) == 2 * len(blocks) * 3 * len(MEASURES)
    for r in summary:
        assert int(r["n"]) + int(r["undefined"]) == 6
        if int(r["n"]):
            assert -1 - 1e-9 <= float(r["mean"]) <= 1 + 1e-9
    per_image = _rows(out / "sanity_per_image.csv")
    assert len(per_image) == 6 * len(summary)
    # batches of 4 + 2 give the numbers one batch of 6 gives
    assert sanity.run(_cfg(*args, "batch_size=6", "mode=cascading", f"out={tmp_path / 'b'}")) == 0
    one = {
        (r["step"], r["method"], r["measure"], r["image"]): r["value"]
        for r in _rows(tmp_path / "b" / "sanity_per_image.csv")
    }
    cascading = [r for r in per_image if r["mode"] == "cascading"]
    assert len(one) == len(cascading)
    for r in cascading:
        a, b = r["value"], one[(r["step"], r["method"], r["measure"], r["image"])]
        assert (a == b == "nan") or abs(float(a) - float(b)) < 1e-6


def test_the_model_as_its_own_reference_is_identical_and_another_network_is_refused(trained, tmp_path):
    ckpt = trained["best_checkpoint"]
    args = [f"checkpoint={ckpt}", f"reference={ckpt}", "images=4", "methods=[gradcam]", "mode=cascading"]
    assert sanity.run(_cfg(*args, f"out={tmp_path / 'same'}")) == 0
    data = [r for r in _rows(tmp_path / "same" / "sanity.csv") if r["mode"] == "data"]
    assert {r["measure"] for r in data} == MEASURES and all(abs(float(r["mean"]) - 1) < 1e-9 for r in data)
    other = tiny_gap_run(tmp_path / "other", "data.image_size=48", "model.width=8", "explain.enabled=false")
    bad = [f"checkpoint={ckpt}", f"reference={other['runs'][0]['best_checkpoint']}", f"out={tmp_path / 'x'}"]
    with pytest.raises(ConfigError, match="not the same network"):
        sanity.run(_cfg(*bad))
    assert not (tmp_path / "x").exists()


def test_usage_mistakes_exit_2_with_one_line_and_write_nothing(trained, tmp_path, capsys):
    ckpt = trained["best_checkpoint"]
    out = tmp_path / "never"
    for args, says in (
        ([f"checkpoint={ckpt}", "methods=[gradcamm]"], "gradcam"),
        ([f"checkpoint={ckpt}", "mode=shuffled"], "cascading"),
        ([f"checkpoint={tmp_path / 'missing.ckpt'}"], "not found"),
        ([f"checkpoint={ckpt}", f"input={tmp_path}", "target=label"], "label"),
    ):
        assert explain_cli.main(["sanity", *args, f"out={out}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not out.exists()
