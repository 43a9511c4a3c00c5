"""The HTML reports in a real browser: Debian's Chromium, headless, pages loaded from disk."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camlight.config import load_config

from .conftest import tiny_gap_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium where it can)"
)


def _chromium(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    summary = tiny_gap_run(
        tmp_path_factory.mktemp("browser"), "trainer.max_epochs=3", "explain.probe_size=4", "explain.max_images=4"
    )
    return Path(summary["group_dir"])


def test_run_report_renders_without_errors_and_the_epoch_slider_switches_the_grid(group, tmp_path):
    url = (group / "report.html").resolve().as_uri()
    shots = {}
    for epoch in (0, 2):
        out = _chromium(
            f"{url}#epoch={epoch}", tmp_path, f"--screenshot={tmp_path / f'e{epoch}.png'}", "--window-size=900,2400"
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert _console_errors(out.stderr) == []
        shots[epoch] = np.asarray(Image.open(tmp_path / f"e{epoch}.png").convert("RGB")).astype(int)
        dom = _chromium(f"{url}#epoch={epoch}", tmp_path, "--dump-dom").stdout
        assert f'<span class="epoch-label">epoch {epoch}</span>' in dom
    image_area = shots[0][200:, :, :]
    assert image_area.std() > 20  # images, not a blank page
    assert np.abs(shots[0] - shots[2]).mean() > 1  # the slider showed another epoch's grid


def test_offline_index_renders_without_errors(group, tmp_path):
    from camlight import offline
    from camlight.config import OfflineConfig

    ckpt = next((group / "simple_cnn-gap" / "checkpoints").glob("last.ckpt"))
    cfg = load_config(
        [f"checkpoint={ckpt}", "split=val", "probe_size=4", f"out={tmp_path / 'out'}", "target=label"],
        schema=OfflineConfig,
        defaults="explain.yaml",
    )
    assert offline.run(cfg, progress=False) == 0
    out = _chromium(
        (tmp_path / "out" / "index.html").resolve().as_uri(),
        tmp_path,
        f"--screenshot={tmp_path / 'index.png'}",
        "--window-size=900,900",
    )
    assert out.returncode == 0 and _console_errors(out.stderr) == []
    shot = np.asarray(Image.open(tmp_path / "index.png").convert("RGB")).astype(int)
    assert shot[100:, :600].std() > 20
