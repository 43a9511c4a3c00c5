"""A whole split scored in the papers' localization protocols: `explain.py evaluate`.

`run(cfg)` loads the model and the data, explains every image of the split for its labelled class
through `Trainer.predict` (`loop`: DDP-ready, streaming, constant memory), scores the maps with
`camlight.metrics.protocols`, and writes `results.json`, `per_image.csv`, `per_class.csv` and
`index.html` (`outputs`). Usage mistakes raise `ConfigError` before anything is written.
"""

from camlight.evaluate.command import run
from camlight.evaluate.loop import Evaluation

__all__ = ["Evaluation", "run"]
