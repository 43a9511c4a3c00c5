"""Explain a camlight checkpoint on images, offline: parse the config, then `camlight.offline.run(cfg)`.

    python explain.py checkpoint=outputs/<group>/simple_cnn-gap/checkpoints/last.ckpt input=photos/
    python explain.py checkpoint=... split=val probe_size=32 methods=[gradcam,cam]
    python explain.py checkpoint=... input=cat.png target=topk k=2 out=cat_explained
    python explain.py visualize-class checkpoint=... class=dog steps=300
    python explain.py --help                      # every key, its default and its meaning

Exit codes: 0 every image explained, 3 some files were skipped (listed in out/skipped.txt),
2 a mistake in the command (one line on stderr says what to do; nothing is written).
"""

import sys

USAGE = "python explain.py checkpoint=PATH (input=PATH | split=val|test) [key=value ...]"
VISUALIZE_USAGE = "python explain.py visualize-class checkpoint=PATH class=NAME [key=value ...]"


def main(argv: list[str]) -> int:
    import logging

    from camlight.config import ConfigError, OfflineConfig, VisualizeConfig, help_text, load_config

    visualize = bool(argv) and argv[0] == "visualize-class"
    if visualize:
        argv = ["target=" + a[len("class=") :] if a.startswith("class=") else a for a in argv[1:]]
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(VisualizeConfig, VISUALIZE_USAGE) if visualize else help_text(OfflineConfig, USAGE))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from camlight import offline

        if visualize:
            return offline.visualize(load_config(argv, schema=VisualizeConfig, defaults="visualize.yaml"))
        return offline.run(load_config(argv, schema=OfflineConfig, defaults="explain.yaml"))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
