"""Explain a camlight checkpoint, or any classifier, on images, offline: parse the config, then
`camlight.offline.run(cfg)`.

    python explain.py checkpoint=outputs/<group>/simple_cnn-gap/checkpoints/last.ckpt input=photos/
    python explain.py model=torchvision:resnet50 weights=IMAGENET1K_V2 input=photos/ methods=[gradcam,cam]
    python explain.py model=timm:convnext_tiny.fb_in1k input=photos/
    python explain.py model=mypackage.models:build image_size=224 classes=names.txt input=photos/
    python explain.py checkpoint=... split=val probe_size=32 methods=[gradcam,cam]
    python explain.py checkpoint=... input=cat.png target=topk k=2 out=cat_explained
    python explain.py visualize-class checkpoint=... class=dog steps=300
    python explain.py evaluate checkpoint=... split=val methods=[cam,gradcam] protocols=[cam_loc,wsol,pointing]
    python explain.py report outputs/<group>          # the group's HTML report (train.py writes it too)
    python explain.py --help                      # every key, its default and its meaning

Exit codes: 0 every image explained (or scored), 3 some files were skipped (listed in
out/skipped.txt), 2 a mistake in the command (one line on stderr says what to do; nothing is written).
"""

import sys

USAGE = "python explain.py (checkpoint=PATH | model=SPEC) (input=PATH | split=val|test) [key=value ...]"
VISUALIZE_USAGE = "python explain.py visualize-class checkpoint=PATH class=NAME [key=value ...]"
EVALUATE_USAGE = "python explain.py evaluate (checkpoint=PATH | model=SPEC data.name=...) [split=val] [key=value ...]"


def main(argv: list[str]) -> int:
    import logging

    from camlight.config import ConfigError, EvaluateConfig, OfflineConfig, VisualizeConfig, help_text, load_config

    if argv and argv[0] == "report":
        return report(argv[1:])
    command = argv[0] if argv and argv[0] in ("visualize-class", "evaluate") else None
    if command:
        argv = argv[1:]
    if command == "visualize-class":
        argv = ["target=" + a[len("class=") :] if a.startswith("class=") else a for a in argv]
    schema, defaults, usage = {
        None: (OfflineConfig, "explain.yaml", USAGE),
        "visualize-class": (VisualizeConfig, "visualize.yaml", VISUALIZE_USAGE),
        "evaluate": (EvaluateConfig, "evaluate.yaml", EVALUATE_USAGE),
    }[command]
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(schema, usage))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(argv, schema=schema, defaults=defaults)
        if command == "evaluate":
            from camlight import evaluate

            return evaluate.run(cfg)
        from camlight import offline

        return offline.visualize(cfg) if command else offline.run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def report(argv: list[str]) -> int:
    """`explain.py report RUN_DIR`: write RUN_DIR/report.html (a training group or one run)."""
    from pathlib import Path

    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python explain.py report RUN_DIR   (a group folder holding summary.json, or one run)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    run_dir = Path(argv[0])
    if not run_dir.is_dir() or not ((run_dir / "summary.json").is_file() or (run_dir / "explanations").is_dir()):
        print(f"error: {run_dir} is not a training group or run (no summary.json or explanations/)", file=sys.stderr)
        return 2
    from camlight.viz.html import run_report

    (run_dir / "report.html").write_text(run_report(run_dir))
    print(run_dir / "report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
