"""explain.py throughput and memory: Grad-CAM on simple_cnn at 64 px, file decoding and all outputs included.

    python benchmarks/explain_throughput.py [--sizes 1000 20000] [--side 96] [--methods gradcam]

Writes max(`--sizes`) random JPEG photos of `--side` px into a temporary folder, saves an
(untrained) default simple_cnn GAP checkpoint, and for each size runs `camlight.offline.run` over a
folder of that many of them (hard links) in a fresh child process, end to end: decoding,
resizing, normalising, explaining, and writing overlays, grid, maps.npz, results.csv and
index.html. Prints per size: images per second (target: >= 100 on 2 cores), the child's peak RSS
(`ru_maxrss`) and its RSS before the run (torch and the model loaded), the size of index.html and
of all the report's pages (index*.html) together.
Memory must not grow with the number of images: the peak at the largest size within 10 % of the
smallest's.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    """The resident set size now, from /proc (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(folder: Path, checkpoint: Path, out: Path, methods: str) -> None:
    """One explain.py run in this process; prints a JSON line of figures."""
    import torch

    from camlight import offline
    from camlight.config import OfflineConfig, load_config

    cfg = load_config(
        [f"checkpoint={checkpoint}", f"input={folder}", f"out={out}", f"methods=[{methods}]"],
        schema=OfflineConfig,
        defaults="explain.yaml",
    )
    before = _rss_mb()
    start = time.perf_counter()
    code = offline.run(cfg, progress=False)
    seconds = time.perf_counter() - start
    figures = {
        "seconds": seconds,
        "code": code,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rss_before_mb": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "index_html_bytes": (out / "index.html").stat().st_size,
        "pages": len(list(out.glob("index*.html"))),
        "pages_bytes": sum(p.stat().st_size for p in out.glob("index*.html")),
        "maps_npz_bytes": (out / "maps.npz").stat().st_size,
    }
    print(json.dumps(figures))


def _photos(folder: Path, n: int, side: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg")


def _checkpoint(path: Path) -> None:
    import pytorch_lightning as pl
    import torch

    from camlight.modules import Classifier

    torch.manual_seed(0)  # the same weights every time, so the same maps (and maps.npz's size)
    model = Classifier("simple_cnn", "gap", image_size=64)
    trainer = pl.Trainer(logger=False, max_epochs=0, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--methods", default="gradcam")
    parser.add_argument("--child", nargs=3, metavar=("FOLDER", "CHECKPOINT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*map(Path, args.child), args.methods)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _photos(root / "pool", max(args.sizes), args.side)
        _checkpoint(root / "model.ckpt")
        pool = sorted((root / "pool").iterdir())
        figures = {}
        for n in args.sizes:
            folder = root / f"in{n}"
            folder.mkdir()
            for p in pool[:n]:
                os.link(p, folder / p.name)
            argv = [sys.executable, __file__, "--methods", args.methods, "--child"]
            done = subprocess.run(
                [*argv, str(folder), str(root / "model.ckpt"), str(root / f"out{n}")],
                capture_output=True,
                text=True,
                check=True,
            )
            figures[n] = json.loads(done.stdout.strip().splitlines()[-1])
            f = figures[n]
            if n == args.sizes[0]:
                print(f"torch {f['torch']}, {f['threads']} threads; JPEGs of {args.side} px, methods {args.methods}")
            print(
                f"{n:6d} images: {f['seconds']:7.1f} s = {n / f['seconds']:4.0f} images/s (exit code {f['code']}); "
                f"peak RSS {f['peak_rss_mb']:.0f} MB ({f['rss_before_mb']:.0f} MB before the run); "
                f"index.html {f['index_html_bytes'] / 1e3:.0f} kB, {f['pages']} pages {f['pages_bytes'] / 1e6:.2f} MB "
                f"= {f['pages_bytes'] / n:.0f} B/image; "
                f"maps.npz {f['maps_npz_bytes'] / 1e6:.1f} MB"
            )
            subprocess.run(["rm", "-rf", str(folder), str(root / f"out{n}")], check=True)
    if len(args.sizes) > 1:
        small, large = figures[min(args.sizes)], figures[max(args.sizes)]
        print(
            f"peak RSS at {max(args.sizes)} / at {min(args.sizes)}: {large['peak_rss_mb'] / small['peak_rss_mb']:.3f}"
        )


if __name__ == "__main__":
    main()
