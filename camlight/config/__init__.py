"""Run configuration: dataclass schemas merged with OmegaConf.

Order of precedence, lowest first: the schema defaults (`schema`) ← `configs/train.yaml` ←
`configs/experiment/NAME.yaml` (from `experiment=NAME`) ← `key=value` overrides on the command
line (`load`). Unknown keys, wrong types and impossible values fail in `load_config`, before
anything runs, with a `ConfigError` naming the key and the valid choices (`checks`).
"""

from camlight.config.checks import ConfigError, heads, num_workers, validate
from camlight.config.commands import (
    ActivationsConfig,
    EmbeddingsConfig,
    EvaluateConfig,
    FiltersConfig,
    FoolConfig,
    InvertConfig,
    ModelChoice,
    OfflineConfig,
    PatchesConfig,
    RobustnessConfig,
    SanityConfig,
    SegmentConfig,
    StyleConfig,
    UnitsConfig,
    VisualizeConfig,
)
from camlight.config.load import CONFIG_DIR, experiments, help_text, load_config
from camlight.config.schema import (
    Config,
    DataConfig,
    ExplainConfig,
    ModelConfig,
    OptimConfig,
    TrainerConfig,
    WandbConfig,
    fields,
)

__all__ = [
    "CONFIG_DIR",
    "ActivationsConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EmbeddingsConfig",
    "EvaluateConfig",
    "ExplainConfig",
    "FiltersConfig",
    "FoolConfig",
    "InvertConfig",
    "ModelChoice",
    "ModelConfig",
    "OfflineConfig",
    "OptimConfig",
    "PatchesConfig",
    "RobustnessConfig",
    "TrainerConfig",
    "SanityConfig",
    "SegmentConfig",
    "StyleConfig",
    "UnitsConfig",
    "VisualizeConfig",
    "WandbConfig",
    "experiments",
    "fields",
    "heads",
    "help_text",
    "load_config",
    "num_workers",
    "validate",
]
