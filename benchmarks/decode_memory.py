"""What reading a large photo costs explain.py, and what reducing it on load changes.

    python benchmarks/decode_memory.py [--side 8000] [--code DIR] [--fidelity]

Memory: an 8000×8000 PNG and JPEG through `decode` (squashed to 224², as for synthetic-data
checkpoints), `prepare` (shorter side to 256, centre crop 224, as for photo checkpoints) and
`read_rgb` at full size (what the training datamodules decode), each case in a fresh process. The
figure is the growth of the process's peak resident set (`resource.getrusage(RUSAGE_SELF)
.ru_maxrss`) over the one call, after a warm-up call on a small image of the same format, so that
imports and lazily built kernels are already paid for. Linux carries a parent's resident set at
fork into the child's ru_maxrss, so the images are written by a child too and this script stays
small. For scale: one decoded RGB copy is side² × 3 bytes (183 MiB at 8000); Pillow holds RGB in 4
bytes a pixel (244 MiB). `--code DIR` measures the camlight package found in DIR instead, e.g. an
older revision unpacked with `git archive <rev> camlight | tar -x -C DIR`.

Fidelity (`--fidelity`, needs scikit-image, the `real` extra): for each of its sample photos, saved
as PNG and as JPEG, `prepare` with an `eval_resize` small enough that the photo is reduced on load
(its shorter side 8× and 16× the resize) against the datamodules' way (full-size decode, torchvision's
resize): the largest and the mean absolute difference per pixel, in 1/255.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from camlight.datamodules.io import read_rgb
from camlight.offline.inputs import decode, prepare
big, small, how = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
pre = {"image_size": 224, "eval_resize": 256, "mean": (0.5,) * 3, "std": (0.25,) * 3}
call = {"decode": lambda p: decode(p, 224), "prepare": lambda p: prepare(p, pre), "read_rgb": read_rgb}[how]
call(small)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
call(big)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_growth_mib": (after - before) / 1024}))
"""


def photo(side: int) -> np.ndarray:
    """Gradients and stripes: a PNG of it stays small on disk, unlike noise."""
    x = np.arange(side, dtype=np.uint32)
    img = np.empty((side, side, 3), np.uint8)
    img[..., 0] = (x[None, :] * 255 // side).astype(np.uint8)
    img[..., 1] = (x[:, None] * 255 // side).astype(np.uint8)
    img[..., 2] = ((x[None, :] // 7 + x[:, None] // 5) % 256).astype(np.uint8)
    return img


def memory(side: int, code: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, __file__, "--write", str(tmp), "--side", str(side)], check=True)
        print(f"{side}×{side} image; one decoded RGB copy: {side**2 * 3 / 2**20:.0f} MiB; code: {code}")
        for fmt in ("png", "jpg"):
            for how in ("decode", "prepare", "read_rgb"):
                args = [code, str(tmp / f"big.{fmt}"), str(tmp / f"small.{fmt}"), how]
                out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
                if out.returncode:
                    print(f"{fmt:4s} {how:8s} failed: {out.stderr.strip().splitlines()[-1]}")
                    continue
                growth = json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mib"]
                print(f"{fmt:4s} {how:8s} peak RSS growth {growth:7.0f} MiB")


def fidelity() -> None:
    import skimage.data
    import torch
    from torchvision import tv_tensors

    from camlight.datamodules.io import read_rgb
    from camlight.datamodules.transforms import eval_transform
    from camlight.offline.inputs import REDUCE_GAP, prepare

    folder = Path(skimage.data.__file__).parent
    names = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg"]
    names += ["motorcycle_left.png", "color.png", "grass.png", "gravel.png", "brick.png", "camera.png"]
    plain = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}  # prepared values in 0..255
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rgb = Image.open(folder / name).convert("RGB")
            for fmt in ("png", "jpg"):
                path = Path(tmp) / f"{Path(name).stem}.{fmt}"
                rgb.save(path, quality=90)
                full = read_rgb(path)  # as the datamodules decode it
                for ratio in (2, 4):
                    resize = min(rgb.size) // (ratio * REDUCE_GAP)
                    size = resize * 7 // 8
                    pre = {"image_size": size, "eval_resize": resize, **plain}
                    ours = prepare(path, pre)
                    theirs = eval_transform(size, resize, **plain)(
                        tv_tensors.Image(torch.from_numpy(full).permute(2, 0, 1))
                    )
                    d = (ours - theirs.as_subclass(torch.Tensor)).abs()
                    key = (fmt, ratio)
                    mx, mean = worst.get(key, (0.0, 0.0))
                    worst[key] = (max(mx, float(d.max())), max(mean, float(d.mean())))
                    print(
                        f"{name:22s} {fmt} shorter side {ratio * REDUCE_GAP}× resize {resize:3d}: "
                        f"max {float(d.max()):4.1f}/255, mean {float(d.mean()):.2f}/255"
                    )
    for (fmt, ratio), (mx, mean) in sorted(worst.items()):
        print(f"worst {fmt}, shorter side {ratio * REDUCE_GAP}× the resize: max {mx:.1f}/255, mean {mean:.2f}/255")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--code", default=str(Path(__file__).resolve().parent.parent), help="folder holding camlight/")
    parser.add_argument("--fidelity", action="store_true", help="compare prepared inputs on scikit-image's photos")
    parser.add_argument("--write", help=argparse.SUPPRESS)  # the child that writes the images there
    args = parser.parse_args()
    if args.write:
        img = Image.fromarray(photo(args.side))
        for fmt in ("png", "jpg"):
            img.save(Path(args.write) / f"big.{fmt}", quality=90)
            img.resize((300, 300)).save(Path(args.write) / f"small.{fmt}", quality=90)
    elif args.fidelity:
        fidelity()
    else:
        memory(args.side, args.code)


if __name__ == "__main__":
    main()
