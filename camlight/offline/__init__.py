"""Explain a checkpoint on a folder of images (or its own data split), offline: `explain.py`.

`run(cfg)` loads the checkpoint (`inputs`), explains the images batch by batch for each target
(`commands`), makes a record per image and target (`results`) and writes them as they come
(`outputs`, keyed as `names` says): overlays, `grid.png`, `maps.npz`, `results.csv`, `scores.csv`,
the `index.html` pages, `skipped.txt` and `run.json`. Usage mistakes raise `ConfigError` before
anything is written; bad files are skipped and counted.
`visualize(cfg)` is `explain.py visualize-class`.
"""

from camlight.offline.commands import EXIT_OK, EXIT_SKIPPED, run, visualize
from camlight.offline.inputs import decode, prepare

__all__ = ["EXIT_OK", "EXIT_SKIPPED", "decode", "prepare", "run", "visualize"]
