import os
from pathlib import Path

import pytest
import torch

# No test may reach the W&B servers or wait on a terminal.
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
# Nor download weights: camlight and timm behave as on a machine without network (the tests that
# check the download path patch torchvision's downloader instead).
os.environ["CAMLIGHT_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent


_DETERMINISM = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())


@pytest.fixture(autouse=True)
def _deterministic_algorithms_as_the_process_started():
    """Lightning's `Trainer(deterministic=True)` switches on torch's deterministic algorithms for
    the whole process and leaves them on (a session fixture that trains does it before any test
    that follows): every test starts from the setting the process started with."""
    torch.use_deterministic_algorithms(_DETERMINISM[0], warn_only=_DETERMINISM[1])
    yield


def tiny_args(out_dir: Path, name: str = "tiny") -> list[str]:
    """Overrides that shrink the main job to seconds, writing group `name` under `out_dir`."""
    return [
        f"out_dir={out_dir}",
        f"name={name}",
        "data.train_size=64",
        "data.val_size=32",
        "data.test_size=0",
        "data.batch_size=16",
        "model.width=4",
        "model.fc_hidden=8",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]


@pytest.fixture
def tiny_argv(tmp_path):
    """`tiny_args` writing under tmp_path/outputs."""
    return tiny_args(tmp_path / "outputs")


def tiny_gap_run(root: Path, *overrides: str) -> dict:
    """A seconds-long train.py run of one GAP model (W&B off) under `root`; returns its summary."""
    from camlight import fit
    from camlight.config import load_config

    argv = [
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
    ]
    return fit.run(load_config([*argv, *overrides]))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """The best checkpoint of one seconds-long GAP run at 48 px (explanations off), trained once
    and shared by the tests that only read it."""
    summary = tiny_gap_run(tmp_path_factory.mktemp("tiny_checkpoint"), "data.image_size=48", "explain.enabled=false")
    return summary["runs"][0]["best_checkpoint"]
