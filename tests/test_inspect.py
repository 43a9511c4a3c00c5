"""camlight.inspect: the first layer's filters and a layer's activation maps, as functions and as
`explain.py filters` / `explain.py activations`."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import explain as explain_cli
from camlight.inspect import filter_images, first_conv, layer_output, sorted_channels
from camlight.modules import Classifier


def test_filter_images_put_zero_at_grey_and_share_one_scale():
    w = torch.zeros(2, 3, 1, 2)
    w[0, 0, 0, 0], w[0, 1, 0, 1] = 2.0, -1.0
    w[1, 2, 0, 0] = 0.5
    img = filter_images(w)  # one scale: the set's largest |w| is 2
    assert img.shape == (2, 3, 1, 2)
    assert img[0, 0, 0, 0] == 1.0 and img[0, 1, 0, 1] == 0.25 and img[1, 2, 0, 0] == 0.625
    assert img[1, 0, 0, 1] == 0.5  # a zero weight is mid-grey
    each = filter_images(w, scale="each")  # each filter to its own largest |w|
    assert each[0, 1, 0, 1] == 0.25 and each[1, 2, 0, 0] == 1.0
    grey = filter_images(torch.tensor([[[[1.0]], [[3.0]]]]))  # 2 input channels: their mean, as grey
    assert torch.equal(grey, torch.ones(1, 3, 1, 1))
    with pytest.raises(ValueError, match="scale"):
        filter_images(w, scale="log")


def test_first_conv_is_the_layer_that_sees_the_image():
    torchvision = pytest.importorskip("torchvision")
    name, conv = first_conv(torchvision.models.resnet18())
    assert name == "conv1" and conv.in_channels == 3
    model = Classifier(backbone="simple_cnn", head="gap", image_size=32, width=8)
    name, conv = first_conv(model)
    assert conv is model.get_submodule(name) and conv.in_channels == 3
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        first_conv(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))


def test_layer_output_is_the_feature_map_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = Classifier(backbone="simple_cnn", head="gap", image_size=32, width=8).train()
    x = torch.randn(2, 3, 32, 32)
    acts = layer_output(model, x, model.target_layer)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(acts, model.features(x))
    model.train()
    _ = layer_output(model, x, model.target_layer)
    assert model.training and all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="not a module of this model; some that are: backbone"):
        layer_output(model, x, "layer4")

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom")

    broken = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        layer_output(broken, x, "conv")
    assert broken.training and not broken.conv._forward_hooks


def test_sorted_channels_order_by_mean_and_share_one_scale():
    a = torch.zeros(3, 2, 2)
    a[0] = 1.0  # mean 1
    a[1, 0, 0] = 8.0  # mean 2, the peak
    a[2] = -1.0  # mean −1, clipped to 0 when drawn
    order, maps = sorted_channels(a)
    assert order.tolist() == [1, 0, 2]
    assert maps[0, 0, 0] == 1.0 and maps[1, 0, 0] == 0.125 and maps[2].abs().sum() == 0


@pytest.fixture(scope="module")
def trained(tiny_checkpoint):
    return tiny_checkpoint


def test_filters_command_draws_every_filter_strongest_first(trained, tmp_path):
    out = tmp_path / "f"
    assert explain_cli.main(["filters", f"checkpoint={trained}", f"out={out}", "cell=10"]) == 0
    assert {p.name for p in out.iterdir()} == {"filters.png", "filters.csv"}
    with open(out / "filters.csv") as f:
        norms = [float(r["norm"]) for r in csv.DictReader(f)]
    model = Classifier.load_from_checkpoint(trained, map_location="cpu")
    _, conv = first_conv(model)
    assert len(norms) == conv.out_channels and norms == sorted(norms, reverse=True)
    np.testing.assert_allclose(norms[0], conv.weight.detach().flatten(1).norm(dim=1).max().item(), rtol=1e-6)
    cols = int(np.ceil(np.sqrt(conv.out_channels)))
    assert Image.open(out / "filters.png").width == cols * 12 + 2  # cells of 10 px, 2 px apart


def test_activations_command_draws_the_input_and_the_channels(trained, tmp_path):
    out = tmp_path / "a"
    assert explain_cli.main(["activations", f"checkpoint={trained}", f"out={out}", "images=3", "max_channels=5"]) == 0
    assert len(list(out.glob("activations_val_*.png"))) == 3
    with open(out / "activations.csv") as f:
        rows = list(csv.DictReader(f))
    model = Classifier.load_from_checkpoint(trained, map_location="cpu")
    channels = model.features(torch.zeros(1, 3, 48, 48)).shape[1]
    assert len(rows) == 3 * channels
    first = [float(r["mean"]) for r in rows[:channels]]
    assert first == sorted(first, reverse=True)


def test_inspect_usage_mistakes_exit_2_with_one_line_and_write_nothing(trained, tmp_path, capsys):
    out = tmp_path / "never"
    for command, args, says in (
        ("activations", [f"checkpoint={trained}", "layer=layer4"], "not a module of this model"),
        ("activations", [f"checkpoint={trained}", f"input={tmp_path / 'none.jpg'}"], "not found"),
        ("filters", [f"checkpoint={tmp_path / 'missing.ckpt'}"], "not found"),
        ("filters", [f"checkpoint={trained}", "scale=log"], "scale"),
        ("filters", [f"checkpoint={trained}", "max_filters=0"], "max_filters"),
        ("activations", [f"checkpoint={trained}", "cmap=rainbowz"], "unknown cmap='rainbowz'"),
        ("patches", [f"checkpoint={trained}", "channels=[999]"], "not channels of backbone.block4"),
        ("patches", [f"checkpoint={trained}", "layer=head.fc"], "not (B,C,h,w) maps"),
        ("patches", [f"checkpoint={trained}", "layer=nope"], "not a module of this model"),
        ("units", [f"checkpoint={trained}"], "class= is required"),
        ("units", [f"checkpoint={trained}", "class=horse"], "unknown class 'horse'"),
        ("units", [f"checkpoint={trained}", "class=dog", "rank_by=size"], "rank_by"),
    ):
        assert explain_cli.main([command, *args, f"out={out}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not out.exists() and not list(tmp_path.glob(".never*"))


def _support_box(model: nn.Module, layer: str, size: int, unit: tuple[int, int]) -> tuple[int, int, int, int]:
    """Brute force: the box of input pixels with a non-zero gradient of one unit of `layer`, on a
    copy whose every path passes signal (positive weights, max pooling as average pooling of the
    same window, BatchNorm as identity), so no cancellation or routing hides a pixel."""
    import copy

    net = copy.deepcopy(model).eval()
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            pool = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode)
            setattr(parent, name.rpartition(".")[2], pool)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            if isinstance(module, nn.BatchNorm2d):
                (
                    module.weight.fill_(1.0),
                    module.bias.zero_(),
                    module.running_mean.zero_(),
                    module.running_var.fill_(1.0),
                )
    x = torch.ones(1, 3, size, size, requires_grad=True)
    out = layer_output_with_grad(net, x, layer)
    (grad,) = torch.autograd.grad(out[0, 0, unit[0], unit[1]], x)
    support = grad[0].abs().sum(0) > 0
    rows, cols = support.any(1).nonzero()[:, 0], support.any(0).nonzero()[:, 0]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def layer_output_with_grad(model, x, layer):
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[-1]


@pytest.mark.parametrize(
    ("network", "layers", "size"),
    [
        ("simple_cnn", ["backbone.block1", "backbone.block2", "backbone.block3", "backbone.block4"], 64),
        ("resnet18", ["conv1", "maxpool", "layer1", "layer2", "layer3.0.conv1", "layer3"], 160),
    ],
)
def test_receptive_fields_match_the_gradient_support(network, layers, size):
    """The computed field of corner, edge and inner units equals the brute-force gradient support
    (clipped to the image); ResNet-18's fields are also the published sizes (layer1 43, layer2 99,
    layer3 211 pixels)."""
    from camlight.inspect.receptive import receptive_field

    if network == "resnet18":
        torchvision = pytest.importorskip("torchvision")
        model = torchvision.models.resnet18()
    else:
        model = Classifier(backbone="simple_cnn", head="gap", image_size=size, width=4)
    for layer in layers:
        rf = receptive_field(model, layer)
        h = layer_output(model, torch.zeros(1, 3, size, size), layer).shape[-1]
        for unit in {(0, 0), (0, h - 1), (h // 2, h // 3), (h - 1, h - 1), (1, 2)}:
            unit = (min(unit[0], h - 1), min(unit[1], h - 1))
            assert rf.box(*unit, size, size) == _support_box(model, layer, size, unit), (layer, unit, rf)
    if network == "resnet18":
        assert [receptive_field(model, n).size[0] for n in ("layer1", "layer2", "layer3", "layer4")] == [
            43,
            99,
            211,
            435,
        ]


def test_receptive_field_refuses_what_it_cannot_compute():
    from camlight.inspect.receptive import receptive_field

    class Upsampling(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.up = nn.Upsample(scale_factor=2)

        def forward(self, x):
            return self.up(self.conv(x))

    with pytest.raises(ValueError, match="cannot compute the receptive field through call_module up"):
        receptive_field(Upsampling(), "up")
    with pytest.raises(ValueError, match="'fc' is not called"):
        receptive_field(Upsampling(), "fc")
    squeeze = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))
    assert receptive_field(squeeze, "1").whole


# -- top-activating patches and class units -------------------------------------------------------


def test_top_activations_keep_each_units_k_strongest_images_whatever_the_batches():
    from camlight.inspect.patches import TopActivations

    g = torch.Generator().manual_seed(0)
    acts = torch.randn(20, 5, 4, 6, generator=g)
    acts[7, 2, 1, 3] = 50.0  # image 7 holds unit 2's strongest activation, at (1, 3)
    acts[12, 2] = 50.0  # a tie at every position of image 12: the lower image (7) ranks first
    index = torch.arange(100, 120)
    whole = TopActivations([2, 4], k=3)
    whole.update(acts, index)
    got = whole.compute()
    # Brute force: each image's maximum per unit, the 3 largest.
    best = acts[:, [2, 4]].flatten(2).amax(2)
    for u, c in enumerate((2, 4)):
        order = sorted(range(20), key=lambda b, c=c, u=u: (-float(best[b, u]), b))[:3]
        assert got["images"][:, u].tolist() == [100 + b for b in order]
        assert torch.equal(got["values"][:, u], best[order, u])
        for r, b in enumerate(order):
            i, j = int(got["rows"][r, u]), int(got["cols"][r, u])
            assert acts[b, c, i, j] == best[b, u]
    assert got["images"][:2, 0].tolist() == [107, 112] and (got["rows"][0, 0], got["cols"][0, 0]) == (1, 3)
    # In batches, and split over two "processes" whose states are concatenated (what DDP's gather
    # does): the same result.
    parts = [TopActivations([2, 4], k=3), TopActivations([2, 4], k=3)]
    for b in range(0, 20, 3):
        parts[b % 2].update(acts[b : b + 3], index[b : b + 3])
    merged = TopActivations([2, 4], k=3)
    merged.update(acts[:0], index[:0])  # nothing: an update that adds no image
    for name in ("values", "images", "rows", "cols"):
        setattr(merged, name, torch.cat([getattr(p, name) for p in parts]))
    for key, value in merged.compute().items():
        assert torch.equal(value, got[key]), key


def test_crop_cuts_the_field_and_pads_where_it_leaves_the_image():
    from camlight.inspect.patches import crop
    from camlight.inspect.receptive import ReceptiveField

    image = torch.arange(3 * 10 * 10, dtype=torch.float32).reshape(3, 10, 10)
    field = ReceptiveField((5.0, 5.0), (2.0, 2.0), (0.0, 0.0))  # unit (i, j) centred on pixel (2i, 2j)
    inner = crop(image, field, 2, 3)
    assert torch.equal(inner, image[:, 2:7, 4:9])
    corner = crop(image, field, 0, 0, fill=-1.0)
    assert corner.shape == (3, 5, 5)
    assert torch.equal(corner[:, 2:, 2:], image[:, :3, :3]) and (corner[:, :2] == -1).all()


def test_class_units_by_gradcam_alpha_rank_like_the_gap_weights():
    """On a GAP head Grad-CAM's α_k^c is w_k^c / (h·w) for every image (the CAM = Grad-CAM
    identity), so both rankings pick the same units in the same order."""
    from camlight.inspect.patches import class_units, gradcam_alpha, head_weights

    torch.manual_seed(0)
    model = Classifier(backbone="simple_cnn", head="gap", image_size=32, width=8).train()
    x = torch.randn(4, 3, 32, 32)
    alpha = gradcam_alpha(model, x, model.target_layer, 1)
    channels = alpha.shape[1]
    h = layer_output(model, x, model.target_layer).shape[-1]
    weights = head_weights(model, channels)
    torch.testing.assert_close(alpha, weights[1].expand(4, -1) / (h * h))
    assert torch.equal(class_units(alpha.mean(0), 5)[0], class_units(weights[1], 5)[0])
    assert model.training and all(p.grad is None for p in model.parameters())
    for p in model.parameters():  # a frozen network: α still reaches the activations
        p.requires_grad_(False)
    torch.testing.assert_close(gradcam_alpha(model, x, model.target_layer, 1), alpha)
    assert not any(p.requires_grad for p in model.parameters())
    fc = Classifier(backbone="simple_cnn", head="fc", image_size=32, width=8)
    with pytest.raises(ValueError, match="rank by gradcam"):
        head_weights(fc, channels)


def test_patches_command_finds_the_splits_strongest_activations(trained, tmp_path):
    """patches.csv against brute force over the whole split: each unit's first patch is the
    split's largest activation of it, at the position and value the layer gives."""
    from camlight.datamodules import SyntheticPets
    from camlight.inspect.receptive import receptive_field

    out = tmp_path / "p"
    args = ["patches", f"checkpoint={trained}", f"out={out}", "layer=backbone.block2", "channels=[0,3]", "k=4"]
    assert explain_cli.main([*args, "batch_size=7", "trainer.enable_progress_bar=false"]) == 0
    assert {p.name for p in out.iterdir()} == {"patches.png", "patches.csv"}
    with open(out / "patches.csv") as f:
        rows = list(csv.DictReader(f))
    units = [int(r["unit"]) for r in rows[::4]]  # strongest unit first
    assert sorted(units) == [0, 3] and [int(r["rank"]) for r in rows] == [1, 2, 3, 4] * 2
    model = Classifier.load_from_checkpoint(trained, map_location="cpu")
    dm = SyntheticPets(
        image_size=48, train_size=64, val_size=32, test_size=0, mean=model.hparams.mean, std=model.hparams.std
    )
    images = torch.stack([dm.dataset("val")[i]["image"] for i in range(32)])
    acts = layer_output(model, images, "backbone.block2")
    field = receptive_field(model, "backbone.block2")
    for r in rows:
        b, c, i, j = int(r["image"][4:]), int(r["unit"]), int(r["row"]), int(r["col"])
        assert float(r["activation"]) == pytest.approx(float(acts[b, c, i, j]), abs=1e-5)
        assert [int(r[k]) for k in ("y0", "y1", "x0", "x1")] == list(field.box(i, j, 48, 48))
        if r["rank"] == "1":
            assert float(r["activation"]) == pytest.approx(float(acts[:, c].max()), abs=1e-5)


def test_units_command_shows_the_gap_heads_strongest_units_for_the_class(trained, tmp_path):
    from camlight.inspect.patches import head_weights

    out = tmp_path / "u"
    args = ["units", f"checkpoint={trained}", f"out={out}", "class=dog", "units=3", "k=2"]
    assert explain_cli.main([*args, "trainer.enable_progress_bar=false"]) == 0
    with open(out / "patches.csv") as f:
        rows = list(csv.DictReader(f))
    model = Classifier.load_from_checkpoint(trained, map_location="cpu")
    w = head_weights(model, model.head.fc.in_features)[1]
    expected = w.topk(3).indices.tolist()
    assert [int(r["unit"]) for r in rows[::2]] == expected
    assert [float(r["score"]) for r in rows[::2]] == pytest.approx(w.topk(3).values.tolist(), abs=1e-6)


@pytest.mark.slow
def test_patches_embeddings_and_robustness_give_one_processs_results_from_two(trained, tmp_path):
    """The three whole-split commands under DDP (two gloo processes, shares of 16 and 15 images,
    uneven batches) give what one process gives."""
    import json
    import subprocess
    import sys

    from .conftest import REPO

    def cli(command, out, *extra):
        args = [command, f"checkpoint={trained}", "data.val_size=31", "batch_size=6", f"out={out}", *extra]
        args.append("trainer.enable_progress_bar=false")
        done = subprocess.run(
            [sys.executable, str(REPO / "explain.py"), *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr[-2000:]

    ddp = ["trainer.devices=2", "trainer.strategy=ddp"]
    for command, extra in (
        ("patches", ["channels=[0,2,5]", "k=4"]),
        ("embeddings", ["methods=[pca]"]),
        ("robustness", []),
    ):
        cli(command, tmp_path / f"{command}1", *extra)
        cli(command, tmp_path / f"{command}2", *extra, *ddp)
    for name in ("patches/patches.csv", "embeddings/embeddings.csv", "robustness/robustness.csv"):
        one, two = (tmp_path / name.replace("/", f"{k}/", 1) for k in (1, 2))
        rows1, rows2 = (list(csv.DictReader(open(p))) for p in (one, two))
        assert len(rows1) == len(rows2) > 0, name
        for a, b in zip(rows1, rows2, strict=True):
            for key, value in a.items():
                try:
                    assert float(b[key]) == pytest.approx(float(value), abs=1e-4), (name, key)
                except ValueError:
                    assert b[key] == value, (name, key)
    assert json.loads((tmp_path / "robustness2" / "run.json").read_text())["images"] == 31
