"""Peak memory of every explanation method beside captum and pytorch-grad-cam, on the CPU.

    python benchmarks/explainers_memory.py [--model resnet18|simple_cnn] [--heavy-images 2]

Each measurement runs in a fresh process: build the model and batch (as in explainers.py), run one
plain forward pass, read the peak resident memory, run the method once, read it again. The
difference is the method's extra memory over a plain forward pass, printed in MB and in units of
one batch's activations (the outputs of every leaf module in one forward pass: what a backward
pass keeps). Ours runs at its default batch sizes; the peers at the settings timed in
explainers.py. Per-image methods (occlusion, Ablation-CAM, Score-CAM) run on `--heavy-images` images.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explainers import HEAVY, ORDER, build, peers  # noqa: E402

from camlight.explain import explain  # noqa: E402

warnings.filterwarnings("ignore")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def activation_mb(model, x) -> float:
    sizes = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: sizes.append(o.numel()))
        for m in model.modules()
        if not list(m.children())
    ]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return sum(sizes) * 4 / 2**20


def child(name: str, method: str, impl: str, heavy_images: int) -> None:
    model, x, layer = build(name)
    with torch.no_grad():  # not inference_mode: captum cannot use inference-mode targets
        targets = model(x).argmax(1)
    if method in HEAVY:
        x, targets = x[:heavy_images], targets[:heavy_images]
    side = x.shape[-1]
    # Ours at its default batch sizes (B rows per pass), with the same amount of work as the
    # timing benchmark; the peers as timed there.
    work = {
        "smoothgrad": dict(n_samples=8, noise=0.15),
        "integrated_gradients": dict(steps=16),
        "occlusion": dict(window=side // 8, stride=side // 16),
    }
    opts = {method: work[method]} if method in work else {}
    fn = peers(model, layer, x, targets).get(method, {}).get(impl) if impl != "ours" else None
    before = peak_mb()
    if impl == "ours":
        explain(model, x, [method], targets=targets, **opts)
    elif method in HEAVY:
        fn(x, targets)
    else:
        fn()
    print(json.dumps({"extra_mb": peak_mb() - before}))


def measure(name: str, method: str, impl: str, heavy_images: int) -> float | None:
    cmd = [sys.executable, __file__, "--child", name, method, impl, "--heavy-images", str(heavy_images)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])["extra_mb"] if lines else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "simple_cnn"])
    parser.add_argument("--heavy-images", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "METHOD", "IMPL"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.heavy_images)
        return
    model, x, layer = build(args.model)
    unit = activation_mb(model, x)
    available = {m: set(p) for m, p in peers(model, layer, x, torch.zeros(len(x), dtype=torch.long)).items()}
    print(f"## {args.model}, batch {len(x)}, {x.shape[-1]} px: one batch's activations = {unit:.0f} MB\n")
    print("| method | ours (MB) | ours (× activations) | captum (MB) | grad-cam (MB) |")
    print("|---|---|---|---|---|")
    for method in ORDER:
        ours = measure(args.model, method, "ours", args.heavy_images)
        cells = [method + (" (per-image set)" if method in HEAVY else ""), f"{ours:.0f}", f"{ours / unit:.2f}"]
        for impl in ("captum", "grad-cam"):
            value = measure(args.model, method, impl, args.heavy_images) if impl in available.get(method, ()) else None
            cells.append("-" if value is None else f"{value:.0f}")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
