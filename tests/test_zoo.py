"""Models by name: torchvision, timm and callables, their weights (cached or downloaded) and preprocessing.

No test reaches the network: CAMLIGHT_OFFLINE and HF_HUB_OFFLINE are set (conftest), weights
files are placed where torchvision looks, and the download path is checked with torchvision's
downloader stubbed.
"""

import subprocess
import sys

import pytest
import torch
import torchvision

from camlight.modules import Classifier, WeightsUnavailable, weights_of
from camlight.modules.resolve import resolve
from camlight.modules.weights import Preprocessing

from .conftest import REPO


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path / "hub" / "checkpoints"


def _place(name: str, seed: int = 0) -> dict:
    """Random weights of torchvision's `name`, saved where torchvision keeps its ImageNet file."""
    torch.manual_seed(seed)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    path = weights_of(name).path
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_a_torchvision_model_with_cached_weights_brings_their_classes_and_preprocessing(hub):
    state = _place("mobilenet_v3_small")
    found = resolve("torchvision:mobilenet_v3_small")
    assert all(torch.equal(v, found.model.state_dict()[k]) for k, v in state.items())
    assert not found.model.training and len(found.class_names) == 1000 and found.class_names[281] == "tabby"
    assert found.preprocessing == Preprocessing(224, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
    scaled = resolve("torchvision:mobilenet_v3_small", image_size=112).preprocessing
    assert (scaled.image_size, scaled.resize) == (112, 128)  # the resize keeps its ratio to the crop


def test_weights_that_cannot_be_had_are_named_with_their_url_and_cache_path(hub):
    with pytest.raises(WeightsUnavailable) as info:
        resolve("torchvision:resnet50:IMAGENET1K_V2")
    assert str(info.value) == (
        "cannot download the resnet50 weights (IMAGENET1K_V2) from "
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth (CAMLIGHT_OFFLINE is set); "
        f"put the file at {hub / 'resnet50-11ad3fa6.pth'}"
    )
    with pytest.raises(ValueError, match="resnet50 has no weights 'V9'; choose one of IMAGENET1K_V1, IMAGENET1K_V2"):
        resolve("torchvision:resnet50:V9")
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet5O'; did you mean resnet50"):
        resolve("torchvision:resnet5O")
    with pytest.raises(ValueError, match="a checkpoint brings its own weights and preprocessing; drop image_size="):
        resolve(str(REPO / "tests" / "conftest.py").replace("conftest.py", "x.ckpt"), image_size=64)
    random = resolve("torchvision:resnet18", weights="none", image_size=64)  # no download asked for
    assert random.class_names == tuple(str(i) for i in range(1000)) and random.preprocessing.resize is None


def test_a_callable_needs_an_image_size_and_takes_class_names_from_a_file(tmp_path):
    with pytest.raises(ValueError, match="brings no preprocessing: give image_size="):
        resolve("tests.real_models:efficientnet_lite0")
    with pytest.raises(ValueError, match="cannot import nope from tests.real_models"):
        resolve("tests.real_models:nope", image_size=32)
    (tmp_path / "names.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="names 2 classes, the model has 1000 outputs"):
        resolve("torchvision:resnet18", weights="none", image_size=32, classes=tmp_path / "names.txt")
    with pytest.raises(ValueError, match="model='resnet18' is not a .ckpt file, torchvision:<name>, timm:<name>"):
        resolve("resnet18")


def test_timm_without_network_says_so(monkeypatch):
    pytest.importorskip("timm")
    with pytest.raises(
        WeightsUnavailable, match=r"cannot download the resnet18 weights .* from https://huggingface.co/timm/"
    ):
        resolve("timm:resnet18")
    found = resolve("timm:resnet18", weights="none", image_size=64)
    assert found.model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_explain_py_without_network_gives_one_line_and_writes_nothing(tmp_path, hub):
    out = subprocess.run(
        [sys.executable, str(REPO / "explain.py"), "model=torchvision:resnet18", f"input={tmp_path}", "out=x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "TORCH_HOME": str(tmp_path)},
    )
    assert out.returncode == 2 and not (tmp_path / "x").exists()
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download the resnet18 weights (IMAGENET1K_V1)")
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in lines[0]


def test_train_py_with_pretrained_true_and_no_network_stops_before_writing(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "model.backbone=efficientnet_b0", "model.pretrained=true"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "TORCH_HOME": str(tmp_path / "torch")},
    )
    assert out.returncode == 2 and not (tmp_path / "outputs").exists()
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot download the efficientnet_b0 weights (IMAGENET1K_V1)" in lines[0]
    assert "efficientnet_b0_rwightman-7f5810bc.pth; or set model.pretrained=auto or false" in lines[0]


def test_a_zoo_backbone_starts_from_cached_weights_and_their_preprocessing(hub):
    from omegaconf import OmegaConf

    from camlight import fit
    from camlight.config import load_config

    state = _place("mobilenet_v3_small")
    model = Classifier("mobilenet_v3_small", "gap", image_size=64, pretrained=True)
    trunk = model.backbone.net.state_dict()
    assert all(torch.equal(trunk[k], v) for k, v in state.items() if not k.startswith("classifier."))
    cfg = load_config(["model.backbone=mobilenet_v3_small", "model.pretrained=true", "data.image_size=64"])
    assert fit.resolve_pretrained(cfg)[0] is True
    pre = fit.data_preprocessing(cfg, True)
    assert pre == {
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "resize": 73,
        "interpolation": "bilinear",
    }
    assert OmegaConf.select(cfg, "model.pretrained") is True


def test_under_a_multi_process_launch_weights_wait_for_prepare_data_and_setup(hub, monkeypatch):
    import shutil

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("CAMLIGHT_OFFLINE")
    source = hub.parent / "elsewhere.pth"
    source.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, source)
    fetched = []

    def download(url, dst, *args, **kwargs):  # stands in for the network: one process fetches
        fetched.append(url)
        shutil.copy(source, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    model = Classifier("resnet18", image_size=64, pretrained=True)
    assert fetched == []  # not in __init__: every process would download at once
    with pytest.raises(RuntimeError, match="not loaded yet: call prepare_data\\(\\) and setup\\(\\) first"):
        model(torch.zeros(1, 3, 64, 64))
    model.prepare_data()  # Lightning: once per machine
    model.setup("fit")  # Lightning: every process
    assert len(fetched) == 1 and torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
