"""How fast real photos load: the OxfordPets pipeline (JPEG + trimap through the v2 transforms)
against plain decoding, and against a ResNet-18 training step at the same size.

    python benchmarks/photo_loading.py [--n 256] [--size 224] [--workers 2]

Writes `n` ImageNet-sized JPEGs (500×375 and 375×500) with trimaps and VOC head boxes (as the real
set has them; camlight does not read them) in the Oxford-IIIT Pet layout into a temporary folder,
then times, in this one process:

- plain: what torchvision's own recipe does without ground truth: `PIL.Image.open(...)
  .convert("RGB")`, then `v2.ToImage`, `RandomResizedCrop`, flip, `ToDtype`, `Normalize`;
- ours, train: camlight's training sample (decode, trimap, random resized crop, flip, normalise),
  then the same through a DataLoader with `workers` processes;
- ours, eval: resize 256 → centre crop 224 with ground truth;
- for scale, one ResNet-18 GAP training step (forward + backward + AdamW) per image;
- the explanation callback's work per epoch with the `pets_gap_vs_fc` preset's settings (32 probe
  images, saliency, guided backprop, CAM, Grad-CAM, five localization metrics), against a training
  epoch over Oxford-IIIT Pet's 3,312 training images at the measured step rate.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from camlight.datamodules import OxfordPets
from camlight.datamodules.base import collate
from camlight.modules import Classifier


def make(root: Path, n: int) -> None:
    base = root / "oxford-iiit-pet"
    for d in ("images", "annotations/trimaps", "annotations/xmls"):
        (base / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        w, h = (500, 375) if i % 2 else (375, 500)
        img = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)  # smooth-ish content, JPEG-sized
        Image.fromarray(img).resize((w, h), Image.BILINEAR).save(base / f"images/Abyssinian_{i}.jpg", quality=90)
        tri = np.full((h, w), 2, np.uint8)
        tri[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
        Image.fromarray(tri).save(base / f"annotations/trimaps/Abyssinian_{i}.png")
        (base / f"annotations/xmls/Abyssinian_{i}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height></size><object><name>cat</name>"
            f"<bndbox><xmin>{w // 4}</xmin><ymin>{h // 4}</ymin><xmax>{w // 2}</xmax><ymax>{h // 2}</ymax>"
            "</bndbox></object></annotation>"
        )
        rows.append(f"Abyssinian_{i} 1 1 1")
    (base / "annotations/trainval.txt").write_text("\n".join(rows) + "\n")
    (base / "annotations/test.txt").write_text(rows[0] + "\n")


def timed(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make(root, args.n)
        dm = OxfordPets(root, image_size=args.size, batch_size=32, val_fraction=0.15)
        dm.setup()
        records = dm.records["train"]
        train, evaluation = dm.dataset("train", train=True), dm.dataset("train", train=False)
        from torchvision.transforms import v2

        recipe = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(args.size, scale=(0.35, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(dm.mean, dm.std),
            ]
        )

        def plain():
            for r in records:
                with Image.open(r.path) as img:
                    recipe(img.convert("RGB"))

        def ours(dataset):
            def run():
                for i in range(len(dataset)):
                    dataset[i]

            return run

        def loader():
            for _ in torch.utils.data.DataLoader(train, batch_size=32, num_workers=args.workers, collate_fn=collate):
                pass

        model = Classifier("resnet18", "gap", image_size=args.size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, y = torch.randn(32, 3, args.size, args.size), torch.randint(0, 2, (32,))

        def step():
            for _ in range(2):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        from camlight.callbacks import ExplanationCallback

        callback = ExplanationCallback(
            ["saliency", "guided_backprop", "cam", "gradcam"],
            probe_size=32,
            metrics=["pointing_game", "energy_pointing_game", "box_accuracy", "mask_iou", "pxap"],
            pair_probe=False,
        )
        callback.prepare(dm, model)
        callback.evaluate(model)  # warm up

        n = len(records)
        t_plain, t_train, t_eval = timed(plain), timed(ours(train)), timed(ours(evaluation))
        t_loader = timed(loader, repeat=1)
        t_step = timed(step, repeat=1) / 64 * n  # per image, scaled to n images
        print(f"{n} photos 500×375 → {args.size} px, torch threads {torch.get_num_threads()}")
        print(f"plain (decode + v2 recipe)      {n / t_plain:8.1f} img/s")
        print(f"ours, train sample (1 process)  {n / t_train:8.1f} img/s   {t_train / t_plain:.2f}× plain")
        print(f"ours, eval sample (1 process)   {n / t_eval:8.1f} img/s   {t_eval / t_plain:.2f}× plain")
        print(f"ours, train DataLoader {args.workers} workers {n / t_loader:8.1f} img/s")
        print(f"ResNet-18 GAP training step     {n / t_step:8.1f} img/s   loading is {t_train / t_step:.2f}× a step")
        t_callback = timed(lambda: callback.evaluate(model), repeat=1)
        t_epoch = t_step / n * 3312
        print(
            f"callback, preset settings       {t_callback:8.1f} s per epoch = {100 * t_callback / t_epoch:.1f}% "
            f"of a {t_epoch:.0f} s Oxford-IIIT Pet training epoch at that step rate"
        )


if __name__ == "__main__":
    main()
