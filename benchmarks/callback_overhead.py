"""ExplanationCallback overhead on the default config, measured in one process.

    python benchmarks/callback_overhead.py [--epochs 3] [--head gap] [--set explain.KEY=VALUE ...]

Trains the default model (simple_cnn, SyntheticPets 64 px, 4,000 training images, batch 64) with
and without the callback (default explain config: 4 methods, 4 metrics, probe 32, pair probe,
probe grid and W&B table; `--set` changes it, e.g. `--set explain.sanity_every_n_epochs=3`), both
with the default loggers (CSV and W&B offline), in alternating order, and prints the median and
mean epoch time of each and the overhead on both (the mean counts work done only every few epochs,
such as the sanity check, at its share), and the callback's own time: its hooks timed inside the
runs with it, against the epochs without it — free of the few-percent drift between runs that the
wall-clock comparison carries. An epoch here is the time from one training epoch's start to the
next's (training, validation and the callback's work).
"""

import argparse
import statistics
import time
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from camlight import fit
from camlight.config import load_config

warnings.filterwarnings("ignore")


class EpochTimer(pl.Callback):
    def __init__(self):
        self.starts = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer, pl_module):
        self.starts.append(time.perf_counter())

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


HOOKS = ("on_validation_epoch_start", "on_validation_batch_end", "on_validation_epoch_end")


def timed(callback: pl.Callback, seconds: list[float]) -> pl.Callback:
    """The callback with its per-epoch hooks timed: seconds[-1] accumulates the running epoch's."""
    for name in HOOKS:
        hook = getattr(callback, name)

        def wrapped(*args, _hook=hook, _name=name, **kwargs):
            if _name == "on_validation_epoch_start":
                seconds.append(0.0)
            start = time.perf_counter()
            _hook(*args, **kwargs)
            seconds[-1] += time.perf_counter() - start

        setattr(callback, name, wrapped)
    return callback


def run(cfg, head: str, with_callback: bool, root: str, own: list[float] | None = None) -> list[float]:
    dm = fit.build_datamodule(cfg)
    pl.seed_everything(0, verbose=False)
    model = fit.build_model(cfg, head, dm)
    timer = EpochTimer()
    seconds: list[float] = []
    callbacks = [timer] + ([timed(fit.build_explanation_callback(cfg), seconds)] if with_callback else [])
    loggers = [
        CSVLogger(root, name="csv"),
        WandbLogger(project="camlight-bench", save_dir=root, mode="offline", name=f"{head}-{with_callback}"),
    ]
    trainer = pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator="cpu",
        deterministic=True,
        logger=loggers,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    loggers[1].experiment.finish()
    if own is not None:
        own += seconds[1:]
    return timer.epochs()[1:]  # the first epoch also draws and caches the data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--head", default="gap", choices=["gap", "fc"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    args = parser.parse_args()
    import tempfile

    cfg = load_config([f"trainer.max_epochs={args.epochs}", *args.set])
    times = {"without": [], "with": []}
    own: list[float] = []  # the callback's own seconds per epoch (its hooks, timed inside the "with" runs)
    with tempfile.TemporaryDirectory() as root:
        for label in ("without", "with", "without", "with"):
            times[label] += run(cfg, args.head, label == "with", root, own)
    changes = f" with {' '.join(args.set)}" if args.set else ""
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; default config{changes}, head={args.head}, "
        f"{len(times['with'])} epochs each way"
    )
    for name, stat in (("median", statistics.median), ("mean", statistics.mean)):
        t_without, t_with = stat(times["without"]), stat(times["with"])
        print(f"{name} epoch without callback: {t_without:.2f} s, with: {t_with:.2f} s")
        print(f"overhead ({name}): {100 * (t_with - t_without) / t_without:+.1f} % of epoch time")
    mean_own, base = statistics.mean(own), statistics.mean(times["without"])
    print(
        f"the callback's own time (its hooks, timed): {mean_own:.2f} s per epoch on average "
        f"(max {max(own):.2f} s) = {100 * mean_own / base:.1f} % of the mean epoch without it"
    )


if __name__ == "__main__":
    main()
