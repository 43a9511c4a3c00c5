"""W&B never stops training: no API key, no network, a start that fails, a logging call that raises."""

import json
import warnings

import pytest
import wandb

from camlight import fit
from camlight.config import load_config


def _argv(tmp_path, *extra):
    return [
        f"out_dir={tmp_path / 'outputs'}",
        "name=w",
        "data.train_size=32",
        "data.val_size=16",
        "data.test_size=0",
        "data.batch_size=16",
        "model.width=4",
        "model.head=gap",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "explain.probe_size=4",
        *extra,
    ]


@pytest.fixture
def no_account(tmp_path, monkeypatch):
    """A user with no W&B account on this machine: no API key, no ~/.netrc, no settings."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))


def _run(tmp_path, *extra) -> dict:
    summary = fit.run(load_config(_argv(tmp_path, *extra)))
    assert json.loads((tmp_path / "outputs" / "w" / "summary.json").read_text()) == summary
    return summary["runs"][0]


def test_online_without_an_api_key_trains_and_logs_offline_instead(tmp_path, no_account):
    row = _run(tmp_path, "wandb.mode=online")
    assert row["status"] == "finished" and row["last_checkpoint"]
    assert row["wandb_note"].startswith("W&B online could not start (UsageError")
    assert "logged offline instead" in row["wandb_note"]
    assert row["wandb_run_dir"].split("/")[-1].startswith("offline-run-")
    assert row["wandb_sync"] == f"wandb sync {row['wandb_run_dir']}"


@pytest.mark.slow
def test_online_without_network_trains_and_reports_the_time_lost(tmp_path, no_account, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: no W&B server
    row = _run(tmp_path, "wandb.mode=online", "wandb.init_timeout=2")
    assert row["status"] == "finished" and row["last_checkpoint"]
    assert "W&B online could not start" in row["wandb_note"] and "logged offline instead" in row["wandb_note"]
    assert row["wandb_lost_seconds"] > 0  # reported (its size depends on W&B's retries)
    assert f"after {row['wandb_lost_seconds']:.0f} s" in row["wandb_note"]


def test_when_wandb_cannot_start_at_all_training_goes_on_with_the_csv_log(tmp_path, monkeypatch):
    def unwritable(*args, **kwargs):
        raise OSError(30, "Read-only file system", "wandb")

    monkeypatch.setattr(wandb, "init", unwritable)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        row = _run(tmp_path, "wandb.mode=offline")
    assert row["status"] == "finished" and row["val_acc"] is not None
    assert row["wandb_run_dir"] is None and row["wandb_sync"] is None
    assert row["wandb_note"].startswith("W&B could not start (OSError: [Errno 30] Read-only file system")
    assert sum("W&B could not start" in str(w.message) for w in seen) == 1


def test_a_logging_call_that_raises_mid_run_is_reported_once_and_training_finishes(tmp_path, monkeypatch):
    from wandb.sdk.wandb_run import Run

    calls, log = [], Run.log

    def broken(self, *args, **kwargs):  # the GAP run's third call breaks; the FC run's calls work
        calls.append(self.id)
        if len(calls) == 3:
            raise ConnectionError("the W&B service went away")
        return log(self, *args, **kwargs)

    monkeypatch.setattr(Run, "log", broken)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        summary = fit.run(
            load_config(
                _argv(
                    tmp_path,
                    "wandb.mode=offline",
                    "model.head=both",
                    "trainer.max_epochs=2",
                    "trainer.log_every_n_steps=1",
                )
            )
        )
    gap, fc = summary["runs"]
    assert [r["status"] for r in summary["runs"]] == ["finished", "finished"] and gap["epochs"] == fc["epochs"] == 2
    stopped = [w for w in seen if "W&B stopped logging (ConnectionError: the W&B service went away)" in str(w.message)]
    assert len(stopped) == 1 and calls.count(calls[0]) == 3  # reported once; the broken run never tried again
    assert gap["wandb_note"].startswith("W&B stopped logging (ConnectionError")
    # What reached the broken run is kept, to upload; the FC run is a W&B run of its own, in its folder.
    assert gap["wandb_run_dir"].startswith(str(tmp_path / "outputs/w/simple_cnn-gap/wandb/offline-run-"))
    assert gap["wandb_sync"] == f"wandb sync {gap['wandb_run_dir']}"
    assert fc["wandb_run_dir"].startswith(str(tmp_path / "outputs/w/simple_cnn-fc/wandb/offline-run-"))
    assert fc["wandb_note"] is None and len(set(calls)) == 2


def test_wandb_environment_variables_apply_where_the_config_leaves_the_key_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    row = _run(tmp_path)
    assert row["wandb_run_dir"] is None and not (tmp_path / "outputs" / "w" / "simple_cnn-gap" / "wandb").exists()
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    cfg = load_config(_argv(tmp_path, "name=x", "wandb.mode=offline"))
    from camlight.tracking import wandb_settings

    assert wandb_settings(cfg) == {"mode": "offline", "project": "from-env", "entity": None}  # the key wins
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_settings(load_config(_argv(tmp_path)))["mode"] == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # W&B's old name for offline
    assert wandb_settings(load_config(_argv(tmp_path)))["mode"] == "offline"
