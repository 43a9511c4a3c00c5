"""Every method on the families people train: ok (with its time as a multiple of one forward pass) or why not.

    python benchmarks/zoo.py [--size 224] [--families resnet50,swin_t,...] [--timm vit_small_patch16_224,...]
    python benchmarks/zoo.py --gradcam-only --batch 16 --repeats 5 --families resnet50,convnext_tiny

Random weights (the timings and the layers do not depend on them; no download). Each model is
explained with the target layer `locate` finds (printed per family), on one image of `--size` px
(`--batch` images with `--gradcam-only`). A method's time is the median of `--repeats` runs after
one warm-up run (the perturbation methods: one run), divided by the median time of a plain forward
pass of the same batch, in this one process; the layer is found once, before. The perturbation
methods run with lighter options than their defaults, stated in the header, so that the whole
table takes minutes: their cost is a multiple of these.
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import torch
import torchvision
from timing import median_seconds

from camlight.explain import METHODS, explain, target_layer

FAMILIES = (
    "resnet50,efficientnet_b0,convnext_tiny,mobilenet_v3_large,densenet121,regnet_y_800mf,vgg16_bn,swin_t,vit_b_16"
)
TIMM = "vit_small_patch16_224,convnext_tiny"
LIGHT = {
    "smoothgrad": dict(n_samples=4),
    "integrated_gradients": dict(steps=8),
    "occlusion": dict(window=56, stride=56),
}


def build(name: str) -> torch.nn.Module:
    if name.startswith("timm:"):
        import timm

        model = timm.create_model(name[5:], pretrained=False)
    else:
        model = torchvision.models.get_model(name, weights=None)
    for m in model.modules():  # torchvision's ViT starts its head at zero: no class would depend on anything
        if isinstance(m, torch.nn.Linear) and m.weight.abs().max() == 0:
            torch.nn.init.normal_(m.weight, std=0.01)
    return model.eval()


def forward_time(model, x, repeats: int, warm_up: bool = True) -> float:
    def run():
        with torch.no_grad():
            model(x)

    return median_seconds(run, repeats, warm_up)


def table(families: list[str], size: int, repeats: int) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 1 image of {size} px, random weights")
    print(f"lighter options: {LIGHT}; the rest at their defaults\n")
    print("| family | target layer found | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for name in families:
        torch.manual_seed(0)
        model = build(name)
        x = torch.randn(1, 3, size, size)
        layer = target_layer(model, x)
        cells = []
        for method in METHODS:
            options = {method: LIGHT[method]} if method in LIGHT else {}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run = lambda model=model, x=x, m=method, o=options: explain(model, x, [m], **o)  # noqa: E731
                    heavy = method in HEAVY  # timed once, without a warm-up run
                    t = median_seconds(run, 1 if heavy else repeats, warm_up=not heavy)
                cells.append(f"{t / forward_time(model, x, repeats):.1f}×")
            except ValueError as e:
                cells.append("no: " + str(e).split(";")[0][:60])
        print(f"| {name} | {layer} | " + " | ".join(cells) + " |", flush=True)


HEAVY = {"occlusion", "ablation_cam", "score_cam", "integrated_gradients", "smoothgrad"}


def gradcam_ratio(families: list[str], size: int, batch: int, repeats: int) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch} at {size} px, random weights")
    for name in families:
        torch.manual_seed(0)
        model = build(name)
        x = torch.randn(batch, 3, size, size)
        explain(model, x[:1], ["gradcam"])  # the layer found once, as in any session
        fwd, cam = [], []
        run = lambda model=model, x=x: explain(model, x, ["gradcam"])  # noqa: E731
        run()
        forward_time(model, x, 1)
        for _ in range(repeats):  # in turn, so that both see the same machine
            fwd.append(forward_time(model, x, 1, warm_up=False))
            cam.append(median_seconds(run, 1, warm_up=False))
        f, c = statistics.median(fwd), statistics.median(cam)
        print(f"{name}: forward {f:.3f} s, Grad-CAM {c:.3f} s = {c / f:.2f}× forward ({target_layer(model, x[:1])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--families", default=FAMILIES)
    parser.add_argument("--timm", default=TIMM, help="timm models to add (empty: none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--gradcam-only", action="store_true", help="Grad-CAM against a forward pass, batched")
    args = parser.parse_args()
    families = args.families.split(",")
    if args.timm:
        families += [f"timm:{n}" for n in args.timm.split(",")]
    if args.gradcam_only:
        gradcam_ratio(families, args.size, args.batch, args.repeats)
    else:
        table(families, args.size, args.repeats)


if __name__ == "__main__":
    main()
