"""How fast SyntheticPets draws: 4,000 images at 64 px, in one process and with DataLoader workers.

    python benchmarks/synthetic_draw.py [--n 4000] [--size 64] [--workers 2]

Prints seconds and images/s for each way of drawing, and, for scale, the ratio to one forward
pass of the default simple_cnn over the same images (measured in this process).
"""

import argparse
import time

import torch
from torch.utils.data import DataLoader

from camlight.datamodules import SyntheticPetsDataset
from camlight.modules import Classifier


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    dataset = SyntheticPetsDataset("train", args.n, args.size, seed=0)
    dataset[0]  # warm up imports and caches

    def loop():
        for i in range(len(dataset)):
            dataset[i]

    def loader():
        for _ in DataLoader(dataset, batch_size=64, num_workers=args.workers):
            pass

    model = Classifier("simple_cnn", "gap", image_size=args.size).eval()
    images = torch.randn(64, 3, args.size, args.size)

    def forward():
        with torch.inference_mode():
            for _ in range(0, args.n, 64):
                model(images)

    forward()  # warm up
    results = {"1 process": timed(loop), f"DataLoader, {args.workers} workers": timed(loader)}
    t_forward = timed(forward)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.n} images at {args.size} px")
    for name, seconds in results.items():
        print(
            f"draw ({name}): {seconds:6.2f} s  {args.n / seconds:7.0f} images/s  {seconds / t_forward:5.2f}x a simple_cnn forward pass"
        )
    print(f"simple_cnn forward pass (batches of 64): {t_forward:6.2f} s  {args.n / t_forward:7.0f} images/s")


if __name__ == "__main__":
    main()
