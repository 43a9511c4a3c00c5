import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from camlight.datamodules import SyntheticPets
from camlight.modules import Classifier, WeightsUnavailable, load_classifier, weights_of

# The smallest input each backbone accepts keeps these tests fast.
CASES = [("simple_cnn", 32), ("simple_cnn", 64), ("resnet18", 64), ("vgg16", 32)]


@pytest.mark.parametrize("head", ["gap", "fc"])
@pytest.mark.parametrize(("backbone", "size"), CASES)
def test_forward_is_head_of_features(backbone, size, head):
    torch.manual_seed(0)
    model = Classifier(backbone, head, image_size=size, width=8).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        a = model.features(x)
        logits = model(x)
        assert torch.equal(logits, model.head(a))
    assert logits.shape == (2, 2)
    assert a.shape[-1] == size // {"simple_cnn": 8, "resnet18": 32, "vgg16": 16}[backbone]


@pytest.mark.parametrize("head", ["gap", "fc"])
@pytest.mark.parametrize("size", [64, 80, 100, 200, 224])
@pytest.mark.parametrize("backbone", ["simple_cnn", "resnet18", "vgg16"])
def test_every_backbone_and_head_runs_at_sizes_that_are_not_multiples_of_its_stride(backbone, size, head):
    model = Classifier(backbone, head, image_size=size, width=4).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        a = model.features(x)
        logits = model(x)
    assert logits.shape == (1, 2) and torch.equal(logits, model.head(a))
    if head == "fc":
        assert model.head.classifier[1].in_features == a[0].numel()  # K·h·w of the map it really gets


@pytest.mark.parametrize(("backbone", "size"), CASES)
def test_target_layer_outputs_the_feature_map(backbone, size):
    model = Classifier(backbone, "gap", image_size=size, width=8).eval()
    seen = []
    layer = model.get_submodule(model.target_layer)
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        a = model.features(x)
    handle.remove()
    assert torch.equal(seen[0], a)


def test_simple_cnn_gives_an_8x8_map_at_64px():
    model = Classifier("simple_cnn", "gap", image_size=64, width=32)
    assert model.features(torch.zeros(1, 3, 64, 64)).shape == (1, 128, 8, 8)
    assert model.target_layer == "backbone.block4"


def test_gap_head_is_mean_pool_then_linear():
    model = Classifier("simple_cnn", "gap", width=4).eval()
    a = torch.randn(3, 16, 8, 8)
    w, b = model.head.fc.weight, model.head.fc.bias
    expected = torch.stack(
        [torch.stack([(a[i] * w[c][:, None, None]).sum() / 64 + b[c] for c in range(2)]) for i in range(3)]
    )
    torch.testing.assert_close(model.head(a), expected)


def test_bad_architectures_are_refused():
    with pytest.raises(
        ValueError,
        match="unknown backbone 'resnet5O'; did you mean resnet50.*choose simple_cnn, resnet18, vgg16, any torchvision",
    ):
        Classifier("resnet5O")
    with pytest.raises(ValueError, match="unknown head 'linear'"):
        Classifier(head="linear")
    with pytest.raises(
        ValueError,
        match="image_size=32 is too small for backbone resnet18: its feature map would be 1×1; use image_size >= 33",
    ):
        Classifier("resnet18", image_size=32)
    Classifier("resnet18", image_size=33)  # the smallest that gives 2×2, measured


def _fit_briefly(model, tmp_path):
    dm = SyntheticPets(image_size=64, train_size=32, val_size=16, test_size=0, batch_size=16)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    return trainer


@pytest.mark.parametrize("head", ["gap", "fc"])
def test_checkpoint_alone_rebuilds_the_model(tmp_path, head):
    model = Classifier(
        "simple_cnn",
        head,
        class_names=("cat", "dog"),
        image_size=64,
        width=4,
        mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
    )
    trainer = _fit_briefly(model, tmp_path)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_classifier(path)
    assert not loaded.training
    assert loaded.class_names == ("cat", "dog")
    assert loaded.preprocessing == {
        "image_size": 64,
        "eval_resize": None,
        "mean": (0.1, 0.2, 0.3),
        "std": (0.4, 0.5, 0.6),
        "interpolation": "bilinear",
    }
    assert loaded.hparams.head == head
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_training_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    model = Classifier("simple_cnn", "gap", width=8, lr=3e-3, schedule="constant")
    batch = SyntheticPets(train_size=8, val_size=64, test_size=0).probe_batch(64)
    before = F.cross_entropy(model.eval()(batch["image"]), batch["label"]).item()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(batch["image"]), batch["label"]).backward()
        opt.step()
    after = F.cross_entropy(model.eval()(batch["image"]), batch["label"]).item()
    assert after < 0.5 * before


def test_missing_weights_are_downloaded_through_torchvision_and_a_failure_says_where_to_put_them(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("CAMLIGHT_OFFLINE")  # the real download path, its network call stubbed
    asked = []

    def offline(url, dst, *args, **kwargs):
        asked.append((url, dst))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable) as info:
        Classifier("resnet18", image_size=64, pretrained=True)
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert asked == [(url, str(path))]  # torchvision's own downloader, into torch's hub cache
    assert str(info.value) == (
        f"cannot download the resnet18 weights (IMAGENET1K_V1) from {url} "
        f"(URLError: <urlopen error [Errno -2] Name or service not known>); put the file at {path}"
    )


@pytest.mark.parametrize("backbone", ["resnet18", "vgg16"])
def test_pretrained_weights_load_from_the_local_hub_cache(tmp_path, monkeypatch, backbone):
    from torchvision import models

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    torch.manual_seed(1)
    reference = getattr(models, backbone)(weights=None)  # stands in for the ImageNet file
    path = weights_of(backbone).path
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = Classifier(backbone, image_size=64, pretrained=True)
    conv = model.backbone.conv1 if backbone == "resnet18" else model.backbone[0]
    source = reference.conv1 if backbone == "resnet18" else reference.features[0]
    assert torch.equal(conv.weight, source.weight)
    # A checkpoint of it rebuilds without looking for the file again.
    path.unlink()
    trainer = pl.Trainer(logger=False, max_epochs=0, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    assert torch.equal(load_classifier(tmp_path / "m.ckpt").get_submodule(conv_name(backbone)).weight, conv.weight)


def conv_name(backbone):
    return "backbone.conv1" if backbone == "resnet18" else "backbone.0"


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "swin_t", "vit_b_16", "timm:resnet18"])
def test_zoo_backbones_train_in_training_mode_and_give_a_map_each_head_takes(backbone):
    pytest.importorskip("timm") if backbone.startswith("timm:") else None
    for head in ("gap", "fc"):
        model = Classifier(backbone, head, image_size=64, width=4)
        assert all(m.training for m in model.modules())  # tracing the trunk left no module in eval mode
        x = torch.randn(2, 3, 64, 64)
        a = model.features(x)
        assert a.dim() == 4 and a.shape[0] == 2 and min(a.shape[-2:]) >= 2
        logits = model(x)
        assert logits.shape == (2, 2) and torch.equal(model.eval()(x), model.head(model.features(x)))
        assert model.target_layer == "backbone"
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not unused, unused[:3]  # DDP would stop on parameters no loss reaches
