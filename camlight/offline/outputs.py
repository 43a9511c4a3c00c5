"""What `explain.py` writes into `out/`, from the records of `camlight.offline.results`.

    overlays/<image>__input.png, overlays/<image>__<map>.png   as each batch is explained
    maps.npz        float maps in [0,1] keyed "<image>/<map>"
    results.csv     a row per image and target (`Result.row`)
    scores.csv      each metric over everything explained, per map
    grid.png        the first 16 images with their maps
    index.html      a self-contained report, every image inlined
    run.json        the model, the target layer used, the methods, the preprocessing
    skipped.txt     bad files and why

A map is named by its method and, with target=topk, the target's rank: "gradcam", "gradcam_top2".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from camlight.offline.inputs import Item
from camlight.offline.results import Result
from camlight.viz import denormalize, draw_contour, overlay, probe_grid, save_png, write_csv
from camlight.viz.html import Cell, ReportRow, offline_report

GRID_IMAGES = 16


class Writer:
    """Writes overlays as batches are explained, and everything else at the end.

    Args:
        out: the output folder (created here).
        class_names, mean, std: of the model (names for tables, mean/std to show the inputs).
    """

    def __init__(self, out: Path, class_names: tuple[str, ...], mean, std):
        self.out, self.class_names, self.mean, self.std = out, class_names, mean, std
        (out / "overlays").mkdir(parents=True, exist_ok=True)
        self.maps: dict[str, np.ndarray] = {}
        self.columns: list[str] = []  # map names in the order first written
        self.grid: list[tuple[Item, torch.Tensor, Result, dict[str, torch.Tensor]]] = []

    def overlay_path(self, name: str, column: str) -> Path:
        return self.out / "overlays" / f"{name}__{column}.png"

    def add(self, items: list[Item], x: torch.Tensor, results: list[Result], maps: dict[str, torch.Tensor]) -> None:
        """One batch explained for one target: `results` (one per item) and `maps` {method: (B,H,W)}."""
        images = denormalize(x.float().cpu(), self.mean, self.std)
        first_target = results[0].rank in (None, 1)
        for i, (item, result) in enumerate(zip(items, results, strict=True)):
            if first_target:
                save_png(images[i], self.overlay_path(item.name, "input"))
            for method, m in maps.items():
                column = result.column(method)
                if column not in self.columns:
                    self.columns.append(column)
                heat = m[i].float().cpu()
                self.maps[f"{item.name}/{column}"] = heat.numpy()
                save_png(overlay(images[i : i + 1], heat[None])[0], self.overlay_path(item.name, column))
            if first_target and len(self.grid) < GRID_IMAGES:
                self.grid.append((item, images[i], result, {method: m[i].float().cpu() for method, m in maps.items()}))

    def finish(
        self, results: list[Result], score_rows: list[dict], skipped: list[tuple[str, str]], title: str, about: dict
    ) -> None:
        """Write everything but the overlays; `about` (model, target layer, methods, preprocessing)
        goes to `run.json` and the report's header."""
        np.savez_compressed(self.out / "maps.npz", **self.maps)
        rows = [r.row(self.class_names) for r in results]
        write_csv(self.out / "results.csv", rows, None if rows else ["file"])
        write_csv(self.out / "scores.csv", score_rows, ["map", "metric", "value", "images"])
        (self.out / "run.json").write_text(json.dumps(about, indent=2) + "\n")
        subtitle = f"target layer: {about['target_layer']}" if about.get("target_layer") else ""
        (self.out / "index.html").write_text(offline_report(title, self.columns, self._report_rows(results), subtitle))
        if self.grid:
            self._grid().save(self.out / "grid.png")
        (self.out / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in skipped))

    def _report_rows(self, results: list[Result]) -> list[ReportRow]:
        """A row per image; a cell per map column, each with the notes of its own target's result."""
        rows: dict[str, ReportRow] = {}
        names = self.class_names
        for r in results:
            if r.name not in rows:
                lines = [f"predicted {names[r.predicted]} ({r.probability:.2f})"]
                if r.rank is None:
                    lines.append(f"target {r.target_name(names)}")
                if r.label is not None:
                    lines.append(f"label {names[r.label]}")
                rows[r.name] = ReportRow(r.name, lines, self.overlay_path(r.name, "input"), {})
            for method in r.methods:
                notes: list[tuple[str, bool | None]] = []
                if r.rank is not None:
                    notes.append((f"{names[r.target]} ({r.target_probability:.2f})", None))
                hit = r.scores.get(method, {}).get("pointing_game")
                if hit is not None:
                    notes.append(("hit" if hit else "miss", bool(hit)))
                path = self.overlay_path(r.name, r.column(method))
                rows[r.name].cells[r.column(method)] = Cell(path if path.is_file() else None, notes)
        return list(rows.values())

    def _grid(self):
        items = [g[0] for g in self.grid]
        images = torch.stack([g[1] for g in self.grid])
        inputs = images
        if all(it.mask is not None for it in items):
            inputs = draw_contour(images, torch.stack([it.mask for it in items]).bool())
        methods = list(self.grid[0][3])
        overlays = {m: overlay(images, torch.stack([g[3][m] for g in self.grid])) for m in methods}
        names = self.class_names
        titles = [f"{it.name[:14]}: {names[r.predicted]} {r.probability:.2f}" for it, _, r, _ in self.grid]
        cells = {m: [("", None)] * len(items) for m in methods}
        return probe_grid(inputs, overlays, titles, cells)
