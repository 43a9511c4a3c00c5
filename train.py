"""Train camlight classifiers: parse the config, then `camlight.fit.run(cfg)`.

    python train.py                               # the main job: simple_cnn, GAP and FC heads
    python train.py model.head=gap                # one model
    python train.py experiment=smoke              # a preset from configs/experiment/
    python train.py trainer.max_epochs=3 wandb.mode=disabled
    python train.py resume=outputs/<group>        # continue a group stopped by SIGTERM or Ctrl-C
    python train.py --help                        # every key, its default and its meaning

Exit codes: 0 done, 2 a mistake in the command or config (one line on stderr says what to do),
143 / 130 stopped by SIGTERM / SIGINT (summary.json says "interrupted" and how to resume).
"""

import sys


def main(argv: list[str]) -> int:
    from camlight.config import ConfigError, help_text, load_config

    if any(a in ("-h", "--help") for a in argv):
        from camlight.modules.zoo import describe_backbones

        print(help_text(choices={"model.backbone": describe_backbones()}))
        return 0
    from pytorch_lightning.utilities import rank_zero_only

    from camlight import fit

    try:
        summary = fit.run(load_config(argv), argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except fit.Interrupted as stop:  # SIGTERM (SLURM, kill) or Ctrl-C: last.ckpt holds the last epoch
        if rank_zero_only.rank == 0 and stop.summary is None:
            print(f"interrupted by {stop.signal_name} before training started; nothing was written", file=sys.stderr)
        elif rank_zero_only.rank == 0:
            print(f"interrupted by {stop.signal_name}; continue with: {stop.summary['resume']}", file=sys.stderr)
        return 143 if stop.signal_name == "SIGTERM" else 130
    if rank_zero_only.rank == 0:  # under DDP every rank runs this script; one prints
        from camlight.summary import format_summary

        print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
