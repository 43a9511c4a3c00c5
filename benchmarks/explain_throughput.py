"""explain.py throughput: Grad-CAM on simple_cnn at 64 px, file decoding and all outputs included.

    python benchmarks/explain_throughput.py [--n 1000] [--side 160] [--methods gradcam]

Writes `--n` random JPEG photos of `--side` px into a temporary folder, saves an (untrained)
default simple_cnn GAP checkpoint, and times `camlight.offline.run` over the folder end to end:
decoding, resizing, normalising, explaining, and writing overlays, grid, maps.npz and
results.csv. Prints images per second (target: >= 100 on 2 cores).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

from camlight import offline
from camlight.config import OfflineConfig, load_config
from camlight.modules import Classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--side", type=int, default=160)
    parser.add_argument("--methods", default="gradcam")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.n):
            Image.fromarray(rng.integers(0, 255, (args.side, args.side, 3), dtype=np.uint8)).save(
                root / "in" / f"{i:05d}.jpg"
            )
        model = Classifier("simple_cnn", "gap", image_size=64)
        trainer = pl.Trainer(logger=False, max_epochs=0, enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.connect(model)
        trainer.save_checkpoint(root / "model.ckpt")
        cfg = load_config(
            [
                f"checkpoint={root / 'model.ckpt'}",
                f"input={root / 'in'}",
                f"out={root / 'out'}",
                f"methods=[{args.methods}]",
            ],
            schema=OfflineConfig,
            defaults="explain.yaml",
        )
        start = time.perf_counter()
        code = offline.run(cfg, progress=False)
        seconds = time.perf_counter() - start
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.n} JPEGs of {args.side} px, methods {args.methods}"
    )
    print(f"explain.py end to end: {seconds:.2f} s = {args.n / seconds:.0f} images/s (exit code {code})")


if __name__ == "__main__":
    main()
