"""Explain a camlight checkpoint, or any classifier, offline: parse the config, run the command.

    python explain.py checkpoint=outputs/<group>/simple_cnn-gap/checkpoints/last.ckpt input=photos/
    python explain.py model=torchvision:resnet50 weights=IMAGENET1K_V2 input=photos/ methods=[gradcam,cam]
    python explain.py model=timm:convnext_tiny.fb_in1k input=photos/   # or package.module:function
    python explain.py checkpoint=... split=val probe_size=32 methods=[gradcam,cam]
    python explain.py visualize-class checkpoint=... class=dog steps=300
    python explain.py evaluate checkpoint=... split=val methods=[cam,gradcam] protocols=[cam_loc,wsol,pointing]
    python explain.py sanity checkpoint=... methods=[saliency,guided_backprop,gradcam] mode=cascading
    python explain.py report outputs/<group>          # the group's HTML report (train.py writes it too)
    python explain.py --help                      # every key, its default and its meaning

Exit codes: 0 every image explained (or scored), 3 some files were skipped (listed in
out/skipped.txt), 2 a mistake in the command (one line on stderr says what to do; nothing is written).
"""

import sys

COMMANDS = {  # subcommand → (config schema, defaults file, usage)
    None: ("OfflineConfig", "explain.yaml", "(checkpoint=PATH | model=SPEC) (input=PATH | split=val|test)"),
    "visualize-class": ("VisualizeConfig", "visualize.yaml", "visualize-class checkpoint=PATH class=NAME"),
    "evaluate": (
        "EvaluateConfig",
        "evaluate.yaml",
        "evaluate (checkpoint=PATH | model=SPEC data.name=...) [split=val]",
    ),
    "sanity": ("SanityConfig", "sanity.yaml", "sanity (checkpoint=PATH | model=SPEC) [input=PATH] [methods=[...]]"),
}


def main(argv: list[str]) -> int:
    import logging

    from camlight import config

    if argv and argv[0] == "report":
        from camlight.offline.report import report

        return report(argv[1:])
    command = argv[0] if argv and argv[0] in COMMANDS else None
    argv = argv[1:] if command else argv
    if command == "visualize-class":
        argv = ["target=" + a[len("class=") :] if a.startswith("class=") else a for a in argv]
    schema, defaults, usage = COMMANDS[command]
    if any(a in ("-h", "--help") for a in argv):
        print(config.help_text(getattr(config, schema), f"python explain.py {usage} [key=value ...]"))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = config.load_config(argv, schema=getattr(config, schema), defaults=defaults)
        if command == "evaluate":
            from camlight import evaluate

            return evaluate.run(cfg)
        from camlight import offline
        from camlight.offline import sanity

        return {None: offline.run, "visualize-class": offline.visualize, "sanity": sanity.run}[command](cfg)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
