"""Time every explanation method beside captum and pytorch-grad-cam, in one process, on the CPU.

    python benchmarks/explainers.py [--models resnet18 simple_cnn] [--repeats 3] [--heavy-images 2] [--methods lrp ...]

Models: ResNet-18 at 224 px, batch 16 (1,000 classes, random weights), and simple_cnn at 64 px,
batch 64. Both are camlight Classifiers; the peers get the same module with its target layer
(`backbone.layer4` / `backbone.block4`) and hook it. Each row: median seconds over `--repeats`,
the ratio to one plain forward pass of the same batch, and our time divided by each peer's for
the same work (< 1 means faster; where captum is the only peer, ours returns raw maps, as captum
does, rather than normalised ones). Per-image methods (occlusion, Ablation-CAM, Score-CAM, RISE) run on
`--heavy-images` images and are reported per image; the peers get their fastest batch setting.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time
import warnings

import torch
from timing import interleaved, median_seconds

from camlight.explain import attribution, explain
from camlight.modules import Classifier

warnings.filterwarnings("ignore")


def build(name: str):
    torch.manual_seed(0)
    if name == "resnet18":
        classes = tuple(str(i) for i in range(1000))
        model = Classifier("resnet18", "gap", class_names=classes, image_size=224).eval()
        return model, torch.randn(16, 3, 224, 224), "backbone.layer4"
    model = Classifier("simple_cnn", "gap", image_size=64).eval()
    return model, torch.randn(64, 3, 64, 64), "backbone.block4"


def _second_relu_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return self.relu2(out + identity)


def one_relu_per_call(model):
    """A copy for captum's DeepLift, which raises on a module called twice (torchvision's BasicBlock
    calls its ReLU twice): the same function and work, with a second ReLU module for the second call."""
    import types

    from torchvision.models.resnet import BasicBlock

    model = copy.deepcopy(model)
    for block in model.modules():
        if isinstance(block, BasicBlock):
            block.relu2 = torch.nn.ReLU(inplace=True)
            block.forward = types.MethodType(_second_relu_forward, block)
    return model


def peers(model, layer_name: str, x: torch.Tensor, targets: torch.Tensor):
    """{method: {peer: fn}} for the same work as ours."""
    from captum import attr
    from pytorch_grad_cam import (
        AblationCAM,
        EigenCAM,
        EigenGradCAM,
        FullGrad,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        ScoreCAM,
        XGradCAM,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.get_submodule(layer_name)
    side = x.shape[-1]
    deeplift_model = one_relu_per_call(model)
    shap_refs = attribution._references(None, x, torch.Generator().manual_seed(0))  # our default baselines
    lib_targets = [ClassifierOutputTarget(int(t)) for t in targets]

    def lib(cls, images, n, **kw):
        def run():
            cam = cls(model=model, target_layers=[layer], **kw)
            cam.batch_size = 64  # ScoreCAM's (default 16): the fastest setting here
            cam(images, targets=lib_targets[:n])
            cam.activations_and_grads.release()

        return run

    def full_grad():
        with contextlib.redirect_stdout(io.StringIO()):  # its note that target layers are ignored
            cam = FullGrad(model=model, target_layers=[])
        cam(x, targets=lib_targets)
        cam.activations_and_grads.release()

    return {
        "saliency": {"captum": lambda: attr.Saliency(model).attribute(x, target=targets)},
        "deconvnet": {"captum": lambda: attr.Deconvolution(model).attribute(x, target=targets)},
        "guided_backprop": {"captum": lambda: attr.GuidedBackprop(model).attribute(x, target=targets)},
        "gradcam": {
            "captum": lambda: attr.LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True),
            "grad-cam": lib(GradCAM, x, len(x)),
        },
        "gradcam_pp": {"grad-cam": lib(GradCAMPlusPlus, x, len(x))},
        "hirescam": {"grad-cam": lib(HiResCAM, x, len(x))},
        "xgradcam": {"grad-cam": lib(XGradCAM, x, len(x))},
        "layercam": {"grad-cam": lib(LayerCAM, x, len(x))},
        "eigencam": {"grad-cam": lib(EigenCAM, x, len(x))},
        "eigengradcam": {"grad-cam": lib(EigenGradCAM, x, len(x))},
        "input_x_gradient": {"captum": lambda: attr.InputXGradient(model).attribute(x, target=targets)},
        # captum's LRP refuses the Classifier's metric modules (leaves without a rule): it gets the
        # same backbone and head. On ResNet's residual additions its relevance is not conserved.
        "lrp": {
            "captum": lambda: attr.LRP(torch.nn.Sequential(model.backbone, model.head)).attribute(x, target=targets)
        },
        "guided_gradcam": {"captum": lambda: attr.GuidedGradCam(model, layer).attribute(x, target=targets)},
        "smoothgrad": {
            "captum": lambda: attr.NoiseTunnel(attr.Saliency(model)).attribute(
                x, target=targets, nt_type="smoothgrad", nt_samples=8, nt_samples_batch_size=1, stdevs=0.15
            )
        },
        "integrated_gradients": {
            "captum": lambda: attr.IntegratedGradients(model).attribute(
                x, target=targets, n_steps=16, method="riemann_trapezoid", internal_batch_size=max(len(x), 64)
            )
        },
        "deeplift": {"captum": lambda: attr.DeepLift(deeplift_model).attribute(x, target=targets)},
        "gradient_shap": {
            "captum": lambda: attr.GradientShap(model).attribute(
                x, baselines=shap_refs, target=targets, n_samples=8, stdevs=0.0
            )
        },
        "occlusion": {
            "captum": lambda xs, t: attr.Occlusion(model).attribute(
                xs,
                target=t,
                sliding_window_shapes=(3, side // 8, side // 8),
                strides=side // 16,
                perturbations_per_eval=max(1, 64 // len(xs)),
            )
        },
        "ablation_cam": {"grad-cam": lambda xs, t: lib(AblationCAM, xs, len(xs), batch_size=64)()},
        "score_cam": {"grad-cam": lambda xs, t: lib(ScoreCAM, xs, len(xs))()},
        "fullgrad": {"grad-cam": full_grad},
    }


OPTIONS = {
    "smoothgrad": dict(n_samples=8, noise=0.15),
    "integrated_gradients": dict(steps=16, batch_size=64),
    "gradient_shap": dict(n_samples=8, stdevs=0.0),
    "score_cam": dict(batch_size=64),
    "fullgrad": dict(convention="grad-cam"),
    "rise": dict(n_masks=500, batch_size=64),
}
HEAVY = ("occlusion", "ablation_cam", "score_cam", "rise")
ORDER = (
    "saliency",
    "deconvnet",
    "guided_backprop",
    "input_x_gradient",
    "lrp",
    "cam",
    "gradcam",
    "gradcam_pp",
    "hirescam",
    "xgradcam",
    "layercam",
    "eigencam",
    "eigengradcam",
    "fullgrad",
    "guided_gradcam",
    "smoothgrad",
    "integrated_gradients",
    "deeplift",
    "gradient_shap",
    "occlusion",
    "ablation_cam",
    "score_cam",
    "rise",
)


def time_method(model, x, targets, method, opts, peer_fns, forward, repeats, heavy_images, heavy_repeats=1):
    """(ours, forward or None, {peer: seconds}, unit) for one method, all timed in turns. Against
    captum alone ours returns raw maps, as captum does (pytorch-grad-cam normalises, as ours does
    by default)."""
    opts = dict(opts, raw=set(peer_fns) == {"captum"})
    if method in HEAVY:
        xs, ts = x[:heavy_images], targets[:heavy_images]
        fns = {"ours": lambda: explain(model, xs, [method], targets=ts, **opts)}
        fns.update({p: (lambda f=f: f(xs, ts)) for p, f in peer_fns.items()})
        times = {k: v / len(xs) for k, v in interleaved(fns, heavy_repeats).items()}
        return times.pop("ours"), None, times, "per image"
    fns = {"ours": lambda: explain(model, x, [method], targets=targets, **opts), "forward": forward, **peer_fns}
    start = time.perf_counter()
    fns["ours"]()  # warm up
    long = time.perf_counter() - start > 2.0
    times = interleaved(fns, min(repeats, 3) if long else repeats)  # fewer turns for the multi-second methods
    return times.pop("ours"), times.pop("forward"), times, ""


def bench(name: str, repeats: int, heavy_images: int, heavy_repeats: int = 1, methods=ORDER) -> None:
    model, x, layer = build(name)
    side = x.shape[-1]
    with torch.no_grad():
        targets = model(x).argmax(1)
    options = dict(OPTIONS, occlusion=dict(window=side // 8, stride=side // 16, batch_size=64))
    peer = peers(model, layer, x, targets)

    def forward():
        with torch.inference_mode():
            model(x)

    forward()
    t_fwd = median_seconds(forward, max(repeats, 5))
    print(f"\n## {name}, {side} px, batch {len(x)}: plain forward {t_fwd:.3f} s (median of {max(repeats, 5)})\n")
    print("(× forward: against a plain forward pass timed in turn with the method)\n")
    print("| method | ours (s) | × forward | captum (s) | ours / captum | grad-cam (s) | ours / grad-cam |")
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        opts = {method: options[method]} if method in options else {}
        ours, t_fwd, theirs, unit = time_method(
            model, x, targets, method, opts, peer.get(method, {}), forward, repeats, heavy_images, heavy_repeats
        )
        cells = [
            f"{method}{' (' + unit + ')' if unit else ''}",
            f"{ours:.3f}",
            f"{ours / t_fwd:.2f}" if not unit else "-",
        ]
        for p in ("captum", "grad-cam"):
            cells += [f"{theirs[p]:.3f}", f"{ours / theirs[p]:.3f}"] if p in theirs else ["-", "-"]
        print("| " + " | ".join(cells) + " |")
    combo = interleaved(
        {
            "alone": lambda: explain(model, x, ["saliency"], targets=targets),
            "together": lambda: explain(model, x, ["saliency", "cam", "gradcam"], targets=targets),
        },
        repeats,
    )
    alone, together = combo["alone"], combo["together"]
    print(
        f"\nsaliency + cam + gradcam together: {together:.3f} s = {together / alone:.2f} × saliency alone ({alone:.3f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "simple_cnn"], choices=["resnet18", "simple_cnn"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--heavy-images", type=int, default=2)
    parser.add_argument("--heavy-repeats", type=int, default=1, help="turns for the per-image methods")
    parser.add_argument("--methods", nargs="+", default=list(ORDER), choices=ORDER, help="a subset of the rows")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for name in args.models:
        bench(name, args.repeats, args.heavy_images, args.heavy_repeats, args.methods)


if __name__ == "__main__":
    main()
