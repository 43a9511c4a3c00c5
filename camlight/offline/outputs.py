"""What `explain.py` writes into `out/`, from the records of `camlight.offline.results`, batch by batch.

    overlays/<stem>__input.png, overlays/<stem>__<map>.png   as each batch is explained
    maps.npz        float32 maps (H,W) in [0,1] keyed "<key>/<map>"
    results.csv     a row per image and target (`Result.row`); its `file` column is the key
    scores.csv      each metric over everything explained, per map
    grid.png        the first 16 images with their maps
    index.html      the report, 500 images a page (index-2.html, ...), overlays linked, skipped files listed
    run.json        the model, the target layer used, the methods, the preprocessing, the counts
    skipped.txt     bad files and why, a line each: "<path>\\t<reason>"

Keys: an image of `input=` is keyed by its path relative to input=, extension included, "/"
between folders ("sub/good_cat.jpg"); a sample of `split=` by its split and index ("val_00012").
Keys are written as `names.shown` gives them (bytes that are not UTF-8 as `\\xe9`, control
characters as `\\t`, `\\n` ...). Overlays are named by `names.file_stem` of the key, distinct for
distinct keys (good_cat.jpg and good_cat.png, a/x.png and b/x.png, "a b.png" and a_b.png each keep
their own). A map is named by its method and, with target=topk, the target's rank: "gradcam",
"gradcam_top2".

maps.npz is a zip of `<key>/<map>.npy` members (DEFLATE, zip64), the layout `np.savez_compressed`
writes: `np.load("maps.npz")["sub/good_cat.jpg/gradcam"]`, and `.files` lists the keys. It is
written member by member as the batches come, so memory does not grow with the number of images
(the zip's directory, about 400 bytes a map, is what is kept until the end).

While a run is under way, `out/.partial/` holds what the finished files are made from:
`settings.json` (the run's settings, which resume=true must match), `log.jsonl` (a line per batch:
each image's results.csv rows, scores and report row) and `maps.npz` (being written). An image is
done once its batch's line is in the log. At the end results.csv, scores.csv, index*.html,
skipped.txt, maps.npz and run.json are each written under a temporary name and renamed (run.json
last), then `.partial/` is removed: none of them exists before it is complete, and run.json says
that the whole run is. `resume=true` reads the log, keeps the maps of the images it lists (the
complete members of the interrupted zip, copied into a new one) and explains the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from camlight.offline.inputs import Item
from camlight.offline.names import shown
from camlight.offline.results import Result, ScoreMeans, SetScores, summary_rows
from camlight.viz import atomic_file, denormalize, draw_contour, overlay, probe_grid, save_png, write_csv
from camlight.viz.html import Cell, ReportRow, offline_pages

GRID_IMAGES = 16
PARTIAL = ".partial"
_FINISHED = ("maps.npz", "results.csv", "scores.csv", "grid.png", "run.json", "skipped.txt")
_OUTPUTS = frozenset({"overlays", PARTIAL, *_FINISHED})
_PAGE = re.compile(r"index(-[0-9]+)?\.html")


def is_output(name: str) -> bool:
    """Whether an entry of out/ named `name` is one explain.py writes (or the temporary name of one)."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:-4]
    return name in _OUTPUTS or _PAGE.fullmatch(name) is not None


def remove_outputs(out: Path) -> None:
    """Remove an earlier explain.py result from `out` (every entry must pass `is_output`)."""
    for entry in out.iterdir():
        if not is_output(entry.name):
            raise ValueError(f"{entry} was not written by explain.py")
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def logged_keys(out: Path) -> set[str]:
    """The keys of the images an interrupted run in `out` explained (those in its log)."""
    return {record["key"] for record in _log_records(out / PARTIAL / "log.jsonl")}


def _log_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(end offset, batch) of each complete line of the log; stops at the first incomplete one."""
    if not path.is_file():
        return
    end = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return
            try:
                batch = json.loads(line)
            except ValueError:
                return
            end += len(line)
            yield end, batch


def _log_records(path: Path) -> Iterator[dict]:
    for _, batch in _log_lines(path):
        yield from batch["images"]


def zip_members(f) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each complete member of a zip file read from its start, by the local headers
    (a zip whose writer was killed has no central directory): stops at the first member that is
    not whole (sizes or CRC-32 not yet written, data cut short) or at the central directory."""
    while True:
        head = f.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            return
        _, _, flags, method, _, _, crc, csize, usize, nlen, xlen = struct.unpack("<4sHHHHHIIIHH", head)
        name, extra = f.read(nlen), f.read(xlen)
        if 0xFFFFFFFF in (csize, usize):  # zip64: the sizes in the extra field, id 1
            at = 0
            while at + 4 <= len(extra):
                tag, size = struct.unpack("<HH", extra[at : at + 4])
                if tag == 1:
                    values = list(struct.unpack(f"<{size // 8}Q", extra[at + 4 : at + 4 + size // 8 * 8]))
                    usize = values.pop(0) if usize == 0xFFFFFFFF else usize
                    csize = values.pop(0) if csize == 0xFFFFFFFF and values else csize
                at += 4 + size
        if flags & 0x08 or method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or usize == 0:
            return
        raw = f.read(csize)
        if len(raw) < csize:
            return
        try:
            data = zlib.decompress(raw, -15) if method == zipfile.ZIP_DEFLATED else raw
        except zlib.error:
            return
        if len(data) != usize or zlib.crc32(data) != crc:
            return
        yield name.decode("utf-8" if flags & 0x800 else "cp437"), data


class Writer:
    """Writes each batch as it is explained and everything else at the end, holding no more than a
    batch (and the grid's 16 images) in memory.

    Args:
        out: the output folder (created here).
        class_names, mean, std: of the model (names for tables, mean/std to show the inputs).
        settings: the run's settings, kept in `.partial/settings.json` for resume=true to compare.
        resume: continue the interrupted run in `out` (its log and maps) instead of starting one.

    Example::

        writer = Writer(out, ("cat", "dog"), mean, std, settings)
        for batch in ...:
            for target in ...:
                writer.add(items, x, results, maps)
            writer.commit()
        writer.finish(set_scores, skipped, title, about)
    """

    def __init__(self, out: Path, class_names: tuple[str, ...], mean, std, settings: dict, resume: bool = False):
        self.out, self.class_names, self.mean, self.std = out, class_names, mean, std
        self.partial = out / PARTIAL
        self.columns: list[str] = []  # map names in the order first written
        self.csv_columns: dict[str, None] = {}  # results.csv's header, in the order first seen
        self.means = ScoreMeans()
        self.images = 0  # explained, earlier sessions included
        self.pending: dict[str, dict] = {}  # this batch's records by key, until commit
        self.grid: list[tuple[Item, torch.Tensor, Result, dict[str, torch.Tensor]]] = []
        self.grid_done = False
        (out / "overlays").mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(exist_ok=True)
        log = self.partial / "log.jsonl"
        shown_keys: set[str] = set()
        if resume:
            end = 0
            for at, batch in _log_lines(log):
                end = at
                for record in batch["images"]:
                    self._account(record)
                    shown_keys.add(record["name"])
            if log.is_file():
                os.truncate(log, end)  # an incomplete last line goes
            self.grid_done = (out / "grid.png").is_file()
        else:
            (self.partial / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        self.log = open(log, "a", encoding="utf-8")
        self._open_maps(shown_keys if resume else None)

    def overlay_path(self, stem: str, column: str) -> Path:
        return self.out / "overlays" / f"{stem}__{column}.png"

    def add(self, items: list[Item], x: torch.Tensor, results: list[Result], maps: dict[str, torch.Tensor]) -> None:
        """One batch explained for one target: `results` (one per item) and `maps` {method: (B,H,W)}.
        Overlays and maps are written now; the rest waits for `commit`."""
        images = denormalize(x.float().cpu(), self.mean, self.std)
        first_target = results[0].rank in (None, 1)
        for i, (item, result) in enumerate(zip(items, results, strict=True)):
            if first_target:
                save_png(images[i], self.overlay_path(item.name, "input"))
                report = ReportRow(result.name, self._lines(result), f"overlays/{item.name}__input.png", {})
                self.pending[item.key] = {
                    "key": item.key,
                    "name": result.name,
                    "rows": [],
                    "scores": [],
                    "report": report,
                }
            record = self.pending[item.key]
            record["rows"].append(result.row(self.class_names))
            for method, m in maps.items():
                column = result.column(method)
                heat = m[i].float().cpu()
                self._write_map(f"{result.name}/{column}", heat.numpy())
                save_png(overlay(images[i : i + 1], heat[None])[0], self.overlay_path(item.name, column))
                record["report"].cells[column] = Cell(
                    f"overlays/{item.name}__{column}.png", self._notes(result, method)
                )
                record["scores"] += [[column, k, v] for k, v in result.scores.get(method, {}).items()]
            if first_target and not self.grid_done and len(self.grid) < GRID_IMAGES:
                self.grid.append((item, images[i], result, {method: m[i].float().cpu() for method, m in maps.items()}))
        if len(self.grid) == GRID_IMAGES:
            self._write_grid()

    def commit(self) -> None:
        """The batch's records into the log, after its maps: from here on its images are done."""
        if not self.pending:
            return
        self._maps_file.flush()
        records = [{**r, "report": r["report"].as_dict()} for r in self.pending.values()]
        self.log.write(json.dumps({"images": records}) + "\n")
        self.log.flush()
        for record in records:
            self._account(record)
        self.pending = {}

    def finish(self, set_scores: SetScores, skipped: list[tuple[str, str]], title: str, about: dict) -> None:
        """Write everything but the overlays, each file whole or not at all; `about` (model,
        target layer, methods, preprocessing) goes to `run.json` and the report's header."""
        self.commit()
        if self.grid:
            self._write_grid()
        self._maps.close()
        self._maps_file.close()
        self.log.close()
        log = self.partial / "log.jsonl"
        skipped = [(shown(p), shown(why)) for p, why in skipped]
        score_rows = summary_rows(self.means, set_scores)
        rows = (row for record in _log_records(log) for row in record["rows"])
        write_csv(self.out / "results.csv", rows, list(self.csv_columns) or ["file"])
        write_csv(self.out / "scores.csv", score_rows, ["map", "metric", "value", "images"])
        subtitle = f"target layer: {about['target_layer']}" if about.get("target_layer") else ""
        report = (ReportRow.from_dict(record["report"]) for record in _log_records(log))
        offline_pages(self.out, title, self.columns, report, self.images, subtitle, score_rows, skipped)
        with atomic_file(self.out / "skipped.txt", encoding="utf-8") as f:
            f.writelines(f"{p}\t{why}\n" for p, why in skipped)
        os.replace(self.partial / "maps.npz", self.out / "maps.npz")
        with atomic_file(self.out / "run.json", encoding="utf-8") as f:
            f.write(json.dumps({**about, "images": self.images, "skipped": len(skipped)}, indent=2) + "\n")
        shutil.rmtree(self.partial)

    def _open_maps(self, keep: set[str] | None) -> None:
        """Open `.partial/maps.npz` for writing; with `keep` (resuming), first copy into it the
        complete maps of the images whose shown keys it holds, from the interrupted run's zip."""
        path, recover = self.partial / "maps.npz", self.partial / "maps.recover"
        if keep is not None and not recover.is_file():
            source = next((p for p in (path, self.out / "maps.npz") if p.is_file()), None)
            if source is not None:
                os.replace(source, recover)
        self._maps_file = open(path, "w+b")
        self._maps = zipfile.ZipFile(self._maps_file, "w", zipfile.ZIP_DEFLATED)
        if keep is not None and recover.is_file():
            with open(recover, "rb") as f:
                for name, data in zip_members(f):
                    if name.endswith(".npy") and name[:-4].rsplit("/", 1)[0] in keep:
                        self._maps.writestr(name, data)
            recover.unlink()

    def _write_map(self, key: str, heat: np.ndarray) -> None:
        with self._maps.open(f"{key}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(heat), allow_pickle=False)

    def _account(self, record: dict) -> None:
        """Count a logged image into the header, the columns and the score means."""
        self.images += 1
        for row in record["rows"]:
            self.csv_columns.update(dict.fromkeys(row))
        for column, metric, value in record["scores"]:
            self.means.add(column, metric, value)
        for column in record["report"]["cells"]:
            if column not in self.columns:
                self.columns.append(column)

    def _lines(self, r: Result) -> list[str]:
        """The lines under an image's name in the report."""
        names = self.class_names
        lines = [f"predicted {names[r.predicted]} ({r.probability:.2f})"]
        if r.rank is None:
            lines.append(f"target {r.target_name(names)}")
        if r.label is not None:
            lines.append(f"label {names[r.label]}")
        return lines

    def _notes(self, r: Result, method: str) -> list[tuple[str, bool | None]]:
        """The notes under one map: its own target's class with target=topk, and hit or miss."""
        notes: list[tuple[str, bool | None]] = []
        if r.rank is not None:
            notes.append((f"{self.class_names[r.target]} ({r.target_probability:.2f})", None))
        hit = r.scores.get(method, {}).get("pointing_game")
        if hit is not None:
            notes.append(("hit" if hit else "miss", bool(hit)))
        return notes

    def _write_grid(self) -> None:
        """grid.png from the first images, written once (as soon as there are 16)."""
        items = [g[0] for g in self.grid]
        images = torch.stack([g[1] for g in self.grid])
        inputs = images
        if all(it.mask is not None for it in items):
            inputs = draw_contour(images, torch.stack([it.mask for it in items]).bool())
        methods = list(self.grid[0][3])
        overlays = {m: overlay(images, torch.stack([g[3][m] for g in self.grid])) for m in methods}
        names = self.class_names
        titles = [f"{r.name[:14]}: {names[r.predicted]} {r.probability:.2f}" for _, _, r, _ in self.grid]
        cells = {m: [("", None)] * len(items) for m in methods}
        with atomic_file(self.out / "grid.png", "wb") as f:
            probe_grid(inputs, overlays, titles, cells).save(f, format="PNG")
        self.grid, self.grid_done = [], True
