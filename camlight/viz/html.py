"""HTML reports that open offline: no script or style from outside.

The offline report (`offline_pages`) links each image by its path relative to the page and is split
into pages of `ROWS_PER_PAGE` rows, so a page stays small whatever the number of images; the
training report (`run_report`) links its images too, or inlines them as data URIs (`inline=True`)
for a single file to send around.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from urllib.parse import quote

STYLE = """
body { font: 13px system-ui, sans-serif; margin: 16px; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 4px; text-align: center; vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
img { width: 128px; height: 128px; image-rendering: pixelated; display: block; margin: 0 auto; }
.hit { color: #080; } .miss { color: #c00; } .meta { text-align: left; white-space: nowrap; }
nav.pages { margin: 8px 0; } nav.pages a, nav.pages b { margin-right: 6px; }
"""

ROWS_PER_PAGE = 500  # about 0.2-0.3 MB of HTML a page (see `offline_pages`)
EAGER_ROWS = 4  # rows at the top of a page whose images load at once; below, as they scroll into view
SKIPPED_SHOWN = 1000  # skipped files listed on the first page (skipped.txt has them all)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def link(path: str) -> str:
    """A relative path (a str, "/" separators) as the value of an href or src attribute."""
    return html.escape(quote(path), quote=True)


@dataclass
class Cell:
    """One map in the offline report: its overlay (a path relative to the page) and notes under it
    ((text, good): good colours the text green, bad red, None leaves it plain)."""

    image: str | None
    notes: list[tuple[str, bool | None]] = field(default_factory=list)


@dataclass
class ReportRow:
    """One image in the offline report: a title, lines about it, its input (a path relative to the
    page) and a cell per map column."""

    title: str
    lines: list[str]
    image: str
    cells: dict[str, Cell]

    def as_dict(self) -> dict:
        """Plain values (for a JSON line); `ReportRow.from_dict` reads them back."""
        cells = {c: {"image": v.image, "notes": [list(n) for n in v.notes]} for c, v in self.cells.items()}
        return {"title": self.title, "lines": self.lines, "image": self.image, "cells": cells}

    @classmethod
    def from_dict(cls, d: dict) -> ReportRow:
        cells = {c: Cell(v["image"], [(t, g) for t, g in v["notes"]]) for c, v in d["cells"].items()}
        return cls(d["title"], d["lines"], d["image"], cells)


def _note(text: str, good: bool | None) -> str:
    cls = "" if good is None else (' class="hit"' if good else ' class="miss"')
    return f"<span{cls}>{html.escape(text)}</span>"


def _img(alt: str, path: str, lazy: bool) -> str:
    loading = ' loading="lazy"' if lazy else ""
    return f'<img{loading} alt="{html.escape(alt)}" src="{link(path)}">'


def offline_row(row: ReportRow, columns: list[str], lazy: bool = True) -> str:
    """One image's `<tr>`: title and lines, its input, then a cell per column ("–" where it has none)."""
    meta = f"<b>{html.escape(row.title)}</b>" + "".join(f"<br>{html.escape(line)}" for line in row.lines)
    cells = [f'<td class="meta">{meta}</td>', f"<td>{_img('input', row.image, lazy)}</td>"]
    for c in columns:
        cell = row.cells.get(c)
        img = _img(c, cell.image, lazy) if cell and cell.image else "–"
        notes = "<br>".join(_note(t, g) for t, g in cell.notes) if cell else ""
        cells.append(f'<td data-column="{html.escape(c)}">{img}{notes}</td>')
    return '<tr class="image">' + "".join(cells) + "</tr>"


def page_name(number: int) -> str:
    """The file of page `number` (from 1): index.html, index-2.html, ..."""
    return "index.html" if number == 1 else f"index-{number}.html"


def _nav(number: int, pages: int) -> str:
    """Links to the first and last page, the previous and next, and the three either side."""
    if pages == 1:
        return ""
    shown = sorted({1, pages, *range(max(1, number - 3), min(pages, number + 3) + 1)})
    parts, last = [], 0
    if number > 1:
        parts.append(f'<a href="{page_name(number - 1)}" rel="prev">previous</a>')
    for n in shown:
        if n > last + 1:
            parts.append("…")
        parts.append(f"<b>{n}</b>" if n == number else f'<a href="{page_name(n)}">{n}</a>')
        last = n
    if number < pages:
        parts.append(f'<a href="{page_name(number + 1)}" rel="next">next</a>')
    return f'<nav class="pages">page {number} of {pages}: {" ".join(parts)}</nav>'


def _first_page_extras(scores: list[dict], skipped: list[tuple[str, str]]) -> str:
    """The scores over every image, and the skipped files with their reasons."""
    out = ""
    if scores:
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in ("map", "metric", "value", "images"))
            for r in scores
        )
        out += (
            '<h2>Scores</h2><table class="scores"><thead><tr><th>map</th><th>metric</th><th>value</th>'
            f"<th>images</th></tr></thead><tbody>{body}</tbody></table>"
        )
    if skipped:
        items = "".join(
            f"<li><code>{html.escape(p)}</code>: {html.escape(why)}</li>" for p, why in skipped[:SKIPPED_SHOWN]
        )
        more = len(skipped) - SKIPPED_SHOWN
        tail = f'<p>… and {more} more, listed in <a href="skipped.txt">skipped.txt</a></p>' if more > 0 else ""
        out += f'<h2>Skipped files ({len(skipped)})</h2><ul class="skipped">{items}</ul>{tail}'
    return out


def offline_pages(
    folder: Path,
    title: str,
    columns: list[str],
    rows: Iterable[ReportRow],
    count: int,
    subtitle: str = "",
    scores: list[dict] = (),
    skipped: list[tuple[str, str]] = (),
    per_page: int = ROWS_PER_PAGE,
) -> list[Path]:
    """Write the offline report into `folder`: index.html, index-2.html, ... with `per_page` of the
    `count` rows each (an image per row, a column per map, e.g. "gradcam" or "gradcam_top2"),
    linked to one another. The first page also holds `scores` (scores.csv's rows) and the
    `skipped` files (path, reason; the first 1000). Images are linked, not inlined: with
    25-character names a row is about 350 bytes with one map, 500 with two, 650 with three (each
    image costs about 110 bytes and the length of its file name), so a page stays near 0.2-0.3 MB.
    `rows` is read once, page by page; every page is written under a temporary name and renamed
    when all are written, index.html last. Returns the pages' paths.

    Example::

        offline_pages(out, "camlight — model.ckpt on photos/", ["gradcam"], rows, n)  # out/index*.html
    """
    pages = max(1, -(-count // per_page))
    rows, written = iter(rows), []
    try:
        for number in range(1, pages + 1):
            path = folder / page_name(number)
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for part in _page(number, pages, title, columns, islice(rows, per_page), subtitle, scores, skipped):
                    f.write(part)
            written.append((tmp, path))
        for tmp, path in reversed(written):
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    return [path for _, path in written]


def _page(number, pages, title, columns, rows, subtitle, scores, skipped) -> Iterator[str]:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    nav = _nav(number, pages)
    yield (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        + (f'<p class="meta">{html.escape(subtitle)}</p>' if subtitle else "")
        + (_first_page_extras(list(scores), list(skipped)) if number == 1 else "")
        + nav
        + f"<table><thead><tr><th>image</th><th>input</th>{head}</tr></thead><tbody>"
    )
    for i, row in enumerate(rows):
        yield offline_row(row, columns, lazy=i >= EAGER_ROWS)
    yield f"</tbody></table>{nav}</body></html>"


SLIDER_SCRIPT = """
const wanted = new URLSearchParams(location.hash.slice(1)).get('epoch');  // report.html#epoch=3
for (const run of document.querySelectorAll('.run')) {
  const slider = run.querySelector('input[type=range]');
  const frames0 = run.querySelectorAll('img.epoch');
  if (wanted !== null) {
    const i = [...frames0].findIndex(img => img.dataset.epoch === 'epoch ' + wanted);
    if (i >= 0) slider.value = i;
  }
  const frames = run.querySelectorAll('img.epoch');
  const label = run.querySelector('.epoch-label');
  const show = () => {
    frames.forEach((img, i) => { img.style.display = i == slider.value ? 'block' : 'none'; });
    label.textContent = frames[slider.value].dataset.epoch;
  };
  slider.addEventListener('input', show);
  show();
}
"""


def _summary_table(summary: dict) -> str:
    runs = summary.get("runs", [])
    metrics = list(dict.fromkeys(k for r in runs for d in (r.get("localization") or {}).values() for k in d))
    head = "".join(f"<th>{html.escape(m)}</th>" for m in ["head", "backbone", "val acc", "method", *metrics])
    rows = []
    for r in runs:
        loc = r.get("localization") or {"-": {}}
        for method, scores in loc.items():
            acc = "-" if r.get("val_acc") is None else f"{100 * r['val_acc']:.2f} %"
            cells = [r["head"], r["backbone"], acc, method]
            cells += ["-" if scores.get(m) is None else f"{scores[m]:.3f}" for m in metrics]
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def run_report(group_dir: Path, inline: bool = False) -> str:
    """A page for a training group (or one run), to be written as `group_dir/report.html`: the
    summary table, then per run the localization metrics against epoch and the probe grid of
    every epoch behind a slider. Images are linked by their paths relative to `group_dir`
    (a few kB of HTML); `inline=True` puts them in the page as data URIs (one self-contained
    file, as large as the images)."""
    import json

    group_dir = Path(group_dir)
    summary_path = group_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"runs": []}
    run_dirs = [group_dir / r["name"] for r in summary["runs"]] if summary["runs"] else [group_dir]

    def src(path: Path) -> str:
        return data_uri(path) if inline else link(path.relative_to(group_dir).as_posix())

    sections = []
    for run_dir in run_dirs:
        expl = run_dir / "explanations"
        frames = sorted(expl.glob("epoch_*.png"))
        if not frames:
            continue
        imgs = "".join(
            f'<img class="epoch" data-epoch="epoch {int(p.stem.split("_")[1])}" alt="{p.stem}" src="{src(p)}" '
            'style="width:auto;height:auto;display:none">'
            for p in frames
        )
        plot = expl / "localization.png"
        plot_html = (
            f'<img alt="localization" src="{src(plot)}" style="width:100%;height:auto">' if plot.is_file() else ""
        )
        sections.append(
            f'<section class="run"><h2>{html.escape(run_dir.name)}</h2>{plot_html}'
            f'<p><input type="range" min="0" max="{len(frames) - 1}" value="{len(frames) - 1}" aria-label="epoch"> '
            f'<span class="epoch-label"></span></p>{imgs}</section>'
        )
    findings = group_dir / "findings.md"
    if findings.is_file():
        sections.append(f'<section class="findings">{_markdown(findings.read_text())}</section>')
    title = f"camlight — {group_dir.name}"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"{_summary_table(summary)}{''.join(sections)}<script>{SLIDER_SCRIPT}</script></body></html>"
    )


def _markdown(text: str) -> str:
    """The findings' Markdown (headings, bullets, paragraphs) as HTML."""
    out, items = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("- "):
            items.append(f"<li>{html.escape(line[2:])}</li>")
            continue
        if items:
            out.append(f"<ul>{''.join(items)}</ul>")
            items = []
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "".join(out)


def tables_report(title: str, sections: list[tuple[str, list[str], list[list]]], subtitle: str = "") -> str:
    """An HTML page of tables: each section (heading, header, rows of cells); numbers as given."""
    parts = []
    for heading, header, rows in sections:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        parts.append(
            f'<section class="table"><h2>{html.escape(heading)}</h2>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
        )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        + (f'<p class="meta">{html.escape(subtitle)}</p>' if subtitle else "")
        + "".join(parts)
        + "</body></html>"
    )
