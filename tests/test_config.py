import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from camlight import fit
from camlight.config import Config, ConfigError, heads, help_text, load_config

from .conftest import REPO


def _leaf_keys(node, prefix=""):
    for key, value in node.items():
        if OmegaConf.is_dict(value):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_defaults_are_the_main_job(monkeypatch):
    from camlight.tracking import wandb_settings

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = load_config([])
    assert (cfg.data.name, cfg.data.image_size, cfg.model.backbone) == ("synthetic", 64, "simple_cnn")
    assert heads(cfg) == ["gap", "fc"]
    assert cfg.wandb.mode is None and wandb_settings(cfg) == {"mode": "offline", "project": "camlight", "entity": None}
    assert cfg.trainer.deterministic is True


def test_overrides_apply_in_order(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "train.yaml").write_text("seed: 1\ndata:\n  batch_size: 8\n")
    (tmp_path / "experiment" / "e.yaml").write_text("seed: 2\nmodel:\n  head: gap\n")
    assert load_config([], config_dir=tmp_path).seed == 1
    cfg = load_config(["experiment=e"], config_dir=tmp_path)
    assert (cfg.seed, cfg.data.batch_size, cfg.model.head, cfg.experiment) == (2, 8, "gap", "e")
    cfg = load_config(["seed=3", "experiment=e"], config_dir=tmp_path)  # the dotlist wins, wherever it stands
    assert cfg.seed == 3
    assert heads(load_config(["model.head=fc"])) == ["fc"]


def test_every_experiment_preset_loads():
    files = sorted((REPO / "configs" / "experiment").glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        cfg = load_config([f"experiment={path.stem}"])
        assert cfg.experiment == path.stem
        fit.check(cfg)  # the architecture and the explain settings of every preset are valid


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model.hed=gap"], "unknown config key 'model.hed'; did you mean model.head?"),
        (["bogus=1"], "unknown config key 'bogus'"),
        (["data.batch_size=abc"], "invalid value 'abc' for data.batch_size: expected int"),
        (["trainer.deterministic=maybe"], "invalid value 'maybe' for trainer.deterministic: expected bool"),
        (["model.head=linear"], "invalid model.head='linear'; choose one of gap, fc, both"),
        (["data.name=cifar"], "invalid data.name='cifar'; choose one of synthetic"),
        (["data.batch_size=0"], "invalid data.batch_size=0; it must be positive"),
        (["data.batch_size=-4"], "invalid data.batch_size=-4; it must be positive"),
        (["trainer.max_epochs=0"], "invalid trainer.max_epochs=0; it must be positive"),
        (["data.image_size=16"], "invalid data.image_size=16; it must be >= 32"),
        (["trainer.limit_train_batches=2.5"], "use a fraction between 0.0 and 1.0 or a whole number"),
        (
            ["experiment=nope"],
            "experiment 'nope' not found in .*; available: imagenette, pets_gap_vs_fc, random_labels, resnet18_synthetic, shortcut, small_animals, smoke",
        ),
        (["model.head"], "cannot parse argument 'model.head'; write key=value"),
        (["data.shortcut_correlation=1.5"], "invalid data.shortcut_correlation=1.5; use a share between 0 and 1"),
        (["data.shortcut=true", "data.name=cub", "data.root=x"], "data.shortcut draws its mark on SyntheticPets only"),
        (["data.layout=tiny"], "unknown data.layout='tiny'; choose one of default, small"),
        (["data.layout=small", "data.name=cub", "data.root=x"], "data.layout places SyntheticPets' animals"),
        (["explain.sanity_every_n_epochs=-1"], "invalid explain.sanity_every_n_epochs=-1; it must be >= 0"),
        (["out_dir=/proc/camlight-out"], "out_dir=/proc/camlight-out is not writable"),
        (["model.dropout=1.5"], "invalid model.dropout=1.5; use a probability from 0 up to"),
        (["model.dropout=-0.1"], "invalid model.dropout=-0.1"),
        (["wandb.init_timeout=0"], "invalid wandb.init_timeout=0"),
    ],
)
def test_config_mistakes_name_the_key_and_the_fix(argv, message):
    with pytest.raises(ConfigError, match=message):
        load_config(argv)


def test_out_dir_below_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        load_config([f"out_dir={tmp_path / 'f' / 'runs'}"])


def test_architecture_and_weights_are_checked_before_anything_is_written(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    out = tmp_path / "outputs"
    cfg = load_config([f"out_dir={out}", "model.backbone=resnet18", "data.image_size=32"])
    with pytest.raises(
        ConfigError,
        match="^data.image_size=32 is too small for backbone resnet18: its feature map would be 1×1; "
        "use data.image_size >= 33$",
    ):
        fit.run(cfg)
    cfg = load_config([f"out_dir={out}", "model.backbone=vgg16", "model.pretrained=true"])
    with pytest.raises(
        ConfigError,
        match=r"^cannot download the vgg16 weights \(IMAGENET1K_V1\) from https://download.pytorch.org/models/"
        r"vgg16-397923af.pth \(CAMLIGHT_OFFLINE is set\); put the file at .*/hub/checkpoints/vgg16-397923af.pth; "
        "or set model.pretrained=auto or false$",
    ):
        fit.run(cfg)
    cfg = load_config([f"out_dir={out}", "model.pretrained=true"])
    with pytest.raises(ConfigError, match="simple_cnn has no pretrained weights"):
        fit.run(cfg)
    assert not out.exists()


def test_help_lists_every_key_with_its_default():
    text = help_text()
    for key in _leaf_keys(OmegaConf.structured(Config)):
        assert f"  {key}=" in text, key
    assert "model.head=both" in text and "[gap|fc|both]" in text
    assert (
        "experiments: imagenette, pets_gap_vs_fc, random_labels, resnet18_synthetic, shortcut, small_animals, smoke"
        in text
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["device=tpu"], "invalid device='tpu'; use cpu, cuda, cuda:N, mps or auto"),
        (["device=meta"], "device=meta: camlight runs on cpu, cuda or mps"),
        (["device=cuda:x"], "invalid device='cuda:x'; use cpu, cuda, cuda:N, mps or auto"),
        (["out=/proc/camlight-out"], "out=/proc/camlight-out is not writable"),
    ],
)
def test_explain_py_config_mistakes_are_caught_when_the_config_is_read(argv, message):
    from camlight.config import OfflineConfig

    with pytest.raises(ConfigError, match=message):
        load_config(argv, schema=OfflineConfig, defaults="explain.yaml")


def test_a_cuda_device_on_a_machine_without_one_is_a_config_mistake():
    import torch

    from camlight.config import OfflineConfig

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"this machine has {count} CUDA GPU"):
            load_config([f"device=cuda:{count}"], schema=OfflineConfig, defaults="explain.yaml")
    else:
        with pytest.raises(ConfigError, match="device=cuda: torch sees no CUDA GPU on this machine; use device=cpu"):
            load_config(["device=cuda"], schema=OfflineConfig, defaults="explain.yaml")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trainer.precision=bogus"], r"^trainer.precision='bogus' does not work here: Precision 'bogus' is invalid"),
        (["trainer.strategy=bogus"], r"^trainer.strategy='bogus' does not work here: You selected an invalid strategy"),
        (["trainer.accelerator=bogus"], r"^trainer.accelerator='bogus' does not work here: You selected an invalid"),
        (["trainer.devices=0"], r"^trainer.devices=0 does not work here"),
        (["explain.methods=[gradcamm]"], r"^explain: unknown method 'gradcamm'; did you mean 'gradcam'\?"),
        (["explain.methods=[]"], r"^explain: no method asked for; choose from saliency"),
    ],
)
def test_trainer_and_method_mistakes_are_refused_before_any_data_or_model_is_built(
    tmp_path, monkeypatch, argv, message
):
    def no(*args, **kwargs):
        raise AssertionError("built data before the config was checked")

    monkeypatch.setattr(fit, "build_datamodule", no)
    monkeypatch.setattr(fit, "resolve_pretrained", no)
    with pytest.raises(ConfigError, match=message):
        fit.run(load_config([f"out_dir={tmp_path / 'out'}", *argv]))
    assert not (tmp_path / "out").exists()


def test_a_gpu_accelerator_on_a_machine_without_one_is_a_config_mistake(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer.accelerator=gpu is right here")
    with pytest.raises(ConfigError, match=r"^trainer.accelerator='gpu' does not work here: No supported gpu backend"):
        fit.run(load_config([f"out_dir={tmp_path / 'out'}", "trainer.accelerator=gpu"]))
    assert not (tmp_path / "out").exists()


def _train(args, cwd):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize(
    "args",
    [
        ["model.backbone=resnet5O"],
        ["data.image_size=ten"],
        ["experiment=missing"],
        ["trainer.max_epochs=-1"],
        ["model.backbone=resnet18", "data.image_size=32"],
        ["trainer.precision=bogus"],
        ["model.dropout=1.5"],
    ],
)
def test_train_py_answers_a_mistake_with_one_line_and_exit_code_2(tmp_path, args):
    out = _train(args, tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert not (tmp_path / "outputs").exists()


def test_train_py_help_exits_0(tmp_path):
    out = _train(["--help"], tmp_path)
    assert out.returncode == 0 and "trainer.max_epochs=6" in out.stdout
