"""Explain a camlight checkpoint on images, offline: parse the config, then `camlight.offline.run(cfg)`.

    python explain.py checkpoint=outputs/<group>/simple_cnn-gap/checkpoints/last.ckpt input=photos/
    python explain.py checkpoint=... split=val probe_size=32 methods=[gradcam,cam]
    python explain.py checkpoint=... input=cat.png target=topk k=2 out=cat_explained
    python explain.py --help                      # every key, its default and its meaning

Exit codes: 0 every image explained, 3 some files were skipped (listed in out/skipped.txt),
2 a mistake in the command (one line on stderr says what to do; nothing is written).
"""

import sys

USAGE = "python explain.py checkpoint=PATH (input=PATH | split=val|test) [key=value ...]"


def main(argv: list[str]) -> int:
    import logging

    from camlight.config import ConfigError, OfflineConfig, help_text, load_config

    if any(a in ("-h", "--help") for a in argv):
        print(help_text(OfflineConfig, USAGE))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(argv, schema=OfflineConfig, defaults="explain.yaml")
        from camlight import offline

        return offline.run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
