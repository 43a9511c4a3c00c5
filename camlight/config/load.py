"""Building a config from the command line: schema defaults ← YAML defaults ← experiment ← `key=value`.

Unknown keys, wrong types and impossible values fail in `load_config`, before anything runs, with
a `ConfigError` naming the key and the valid choices.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from camlight.config.checks import ConfigError, validate
from camlight.config.schema import Config, fields

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"


def help_text(
    schema: type | None = None,
    usage: str = "python train.py [experiment=NAME] [key=value ...]",
    choices: dict[str, str] | None = None,
) -> str:
    """Every key with its default and meaning, as `train.py --help` (or `explain.py --help`) prints it.

    `choices` gives, per key, valid values that live elsewhere (the model zoo's backbones), as text."""
    schema = schema or Config
    entries = []
    for key, f, default in fields(schema):
        listed = f.metadata.get("choices")
        extra = f" [{'|'.join(str(c) for c in listed if c is not None)}]" if listed else ""
        if choices and key in choices:
            extra = f" [{choices[key]}]"
        shown = (
            f"[{','.join(map(str, default))}]"
            if isinstance(default, list)
            else OmegaConf.to_yaml({"v": default}).strip()[3:]
        )
        entries.append((f"{key}={shown}", f"{f.metadata['help']}{extra}"))
    width = max(len(k) for k, _ in entries)
    lines = [f"usage: {usage}", "", "keys (key=default  meaning):"]
    lines += [f"  {k.ljust(width)}  {h}" for k, h in entries]
    if schema is Config:
        names = ", ".join(experiments()) or "none"
        lines += ["", f"experiments: {names}", "example: python train.py model.head=gap trainer.max_epochs=3"]
    return "\n".join(lines)


def experiments(config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))


def _unknown_key_message(key: str, schema: type) -> str:
    keys = [k for k, _, _ in fields(schema)]
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    siblings = (
        [k for k in keys if k.startswith(parent) and "." not in k[len(parent) :]]
        if parent
        else [k for k in keys if "." not in k] + sorted({k.split(".")[0] + ".*" for k in keys if "." in k})
    )
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown config key {key!r}; {hint}valid keys here: {', '.join(siblings)} (see --help)"


def _parse_overrides(argv: list[str]) -> tuple[str | None, list[str]]:
    experiment, dotlist = None, []
    for arg in argv:
        if "=" not in arg or arg.startswith("="):
            raise ConfigError(f"cannot parse argument {arg!r}; write key=value, e.g. model.head=gap (see --help)")
        key, value = arg.split("=", 1)
        if key == "experiment":
            experiment = value or None
        else:
            dotlist.append(arg)
    return experiment, dotlist


def _merge(schema: type, *sources) -> DictConfig:
    try:
        return OmegaConf.merge(*sources)
    except ConfigKeyError as e:
        raise ConfigError(_unknown_key_message(e.full_key, schema)) from None
    except ValidationError as e:
        raise ConfigError(_type_message(e, schema)) from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {str(e).splitlines()[0]}") from None


def _type_message(e: ValidationError, schema: type) -> str:
    types = {key: f.type for key, f, _ in fields(schema)}
    expected = types.get(e.full_key, "another type")
    expected = getattr(expected, "__name__", expected)
    return f"invalid value {e.value!r} for {e.full_key}: expected {expected} (see --help)"


def _yaml(path: Path, what: str) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot read {what} {path}: {str(e).splitlines()[0]}") from None


def load_config(
    argv: list[str] | tuple[str, ...] = (),
    config_dir: Path | str = CONFIG_DIR,
    schema: type | None = None,
    defaults: str = "train.yaml",
) -> DictConfig:
    """Build and check a config from command-line style `key=value` arguments.

    Args:
        argv: `key=value` strings; `experiment=NAME` picks a preset (training config only).
        config_dir: folder holding the defaults file and `experiment/`.
        schema: the dataclass schema (default: the training `Config`).
        defaults: the YAML file in `config_dir` merged over the schema.

    Raises:
        ConfigError: unknown key, wrong type, impossible value or missing experiment.
    """
    schema = schema or Config
    config_dir = Path(config_dir)
    experiment, dotlist = _parse_overrides(list(argv)) if schema is Config else (None, list(argv))
    if schema is not Config:
        for arg in dotlist:
            if "=" not in arg or arg.startswith("="):
                raise ConfigError(f"cannot parse argument {arg!r}; write key=value (see --help)")
    sources = [OmegaConf.structured(schema)]
    if (config_dir / defaults).is_file():
        sources.append(_yaml(config_dir / defaults, "defaults"))
    base = _merge(schema, *sources)
    if schema is Config:
        experiment = experiment or base.experiment
        if experiment:
            path = config_dir / "experiment" / f"{experiment}.yaml"
            if not path.is_file():
                names = ", ".join(experiments(config_dir)) or "none"
                raise ConfigError(f"experiment {experiment!r} not found in {path.parent}; available: {names}")
            sources.append(_yaml(path, "experiment"))
    try:
        cli = OmegaConf.from_dotlist(dotlist)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides: {str(e).splitlines()[0]}") from None
    cfg = _merge(schema, *sources, cli)
    if schema is Config:
        cfg.experiment = experiment
    validate(cfg, schema)
    OmegaConf.set_readonly(cfg, True)
    return cfg
