"""Explain a camlight checkpoint, or any classifier, offline: parse the config, run the command.

    python explain.py checkpoint=outputs/<group>/simple_cnn-gap/checkpoints/last.ckpt input=photos/
    python explain.py model=torchvision:resnet50 weights=IMAGENET1K_V2 input=photos/ methods=[gradcam,cam]
    python explain.py model=timm:convnext_tiny.fb_in1k input=photos/   # or package.module:function
    python explain.py checkpoint=... split=val probe_size=32 methods=[gradcam,cam]
    python explain.py visualize-class checkpoint=... class=dog steps=300
    python explain.py evaluate checkpoint=... split=val methods=[cam,gradcam] protocols=[cam_loc,wsol,pointing]
    python explain.py sanity checkpoint=... methods=[saliency,guided_backprop,gradcam] mode=cascading
    python explain.py units checkpoint=... class=dog       # the units a class relies on, by their patches
    python explain.py filters|activations|patches|embeddings|fool|robustness|invert|style|segment --help
    python explain.py checkpoint=... input=photos/ resume=true   # continue a killed run (or overwrite=true)
    python explain.py report outputs/<group> [--inline]   # the group's HTML report (train.py writes it too)
    python explain.py --help                      # every key, its default and its meaning

Exit codes: 0 every image explained (or scored), 3 some files were skipped (listed in
out/skipped.txt), 2 a mistake in the command (one line on stderr says what to do; nothing is written).
"""

import sys

MODEL = "(checkpoint=PATH | model=SPEC)"
COMMANDS = {  # subcommand → (config schema, defaults file, runner, usage)
    None: ("OfflineConfig", "explain.yaml", "offline:run", f"{MODEL} (input=PATH | split=val|test)"),
    "visualize-class": (
        "VisualizeConfig",
        "visualize.yaml",
        "offline:visualize",
        "visualize-class checkpoint=PATH class=NAME",
    ),
    "evaluate": ("EvaluateConfig", "evaluate.yaml", "evaluate:run", f"evaluate {MODEL} [data.name=...] [split=val]"),
    "sanity": ("SanityConfig", "sanity.yaml", "offline.sanity:run", f"sanity {MODEL} [input=PATH] [methods=[...]]"),
    "filters": ("FiltersConfig", "filters.yaml", "offline.inspect:filters", f"filters {MODEL}"),
    "activations": ("ActivationsConfig", "activations.yaml", "offline.inspect:activations", f"activations {MODEL}"),
    "patches": ("PatchesConfig", "patches.yaml", "evaluate.patches:run", f"patches {MODEL} [layer=] [channels=[...]]"),
    "embeddings": ("EmbeddingsConfig", "embeddings.yaml", "evaluate.embeddings:run", f"embeddings {MODEL} [split=val]"),
    "fool": ("FoolConfig", "fool.yaml", "offline.adversarial:run", f"fool {MODEL} [class=NAME] [max_eps=16]"),
    "robustness": ("RobustnessConfig", "robustness.yaml", "evaluate.robustness:run", f"robustness {MODEL} [eps=[...]]"),
    "invert": ("InvertConfig", "invert.yaml", "offline.inspect:invert", f"invert {MODEL} [input=PATH] [layers=[...]]"),
    "style": ("StyleConfig", "style.yaml", "offline.inspect:style", f"style {MODEL} content=PATH style=PATH"),
    "segment": ("SegmentConfig", "segment.yaml", "offline.inspect:segment", f"segment {MODEL} [methods=[...]]"),
    "units": ("UnitsConfig", "units.yaml", "evaluate.patches:run", f"units {MODEL} class=NAME [rank_by=weight]"),
}


def main(argv: list[str]) -> int:
    import importlib
    import logging

    from camlight import config

    if argv and argv[0] == "report":
        from camlight.offline.report import report

        return report(argv[1:])
    command = argv[0] if argv and argv[0] in COMMANDS else None
    argv = argv[1:] if command else argv
    if command in ("visualize-class", "units", "fool"):
        argv = ["target=" + a[len("class=") :] if a.startswith("class=") else a for a in argv]
    schema, defaults, runner, usage = COMMANDS[command]
    if any(a in ("-h", "--help") for a in argv):
        print(config.help_text(getattr(config, schema), f"python explain.py {usage} [key=value ...]"))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = config.load_config(argv, schema=getattr(config, schema), defaults=defaults)
        module, function = runner.split(":")
        return getattr(importlib.import_module(f"camlight.{module}"), function)(cfg)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
