"""Self-contained HTML reports: every image inlined as a data URI, no script or style from outside."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body { font: 13px system-ui, sans-serif; margin: 16px; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 4px; text-align: center; vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
img { width: 128px; height: 128px; image-rendering: pixelated; display: block; margin: 0 auto; }
.hit { color: #080; } .miss { color: #c00; } .meta { text-align: left; white-space: nowrap; }
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


@dataclass
class Cell:
    """One map in the offline report: its overlay and notes under it ((text, good): good colours
    the text green, bad red, None leaves it plain)."""

    image: Path | None
    notes: list[tuple[str, bool | None]] = field(default_factory=list)


@dataclass
class ReportRow:
    """One image in the offline report: a title, lines about it, its input and a cell per map column."""

    title: str
    lines: list[str]
    image: Path
    cells: dict[str, Cell]


def _note(text: str, good: bool | None) -> str:
    cls = "" if good is None else (' class="hit"' if good else ' class="miss"')
    return f"<span{cls}>{html.escape(text)}</span>"


def offline_report(title: str, columns: list[str], rows: list[ReportRow], subtitle: str = "") -> str:
    """An HTML page: a row per image (title, lines, input), then a column per map (e.g. "gradcam",
    or "gradcam_top1", "gradcam_top2" with several targets); every image inlined."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        meta = f"<b>{html.escape(r.title)}</b>" + "".join(f"<br>{html.escape(line)}" for line in r.lines)
        cells = [f'<td class="meta">{meta}</td>', f'<td><img alt="input" src="{data_uri(r.image)}"></td>']
        for c in columns:
            cell = r.cells.get(c)
            img = f'<img alt="{html.escape(c)}" src="{data_uri(cell.image)}">' if cell and cell.image else "–"
            notes = "<br>".join(_note(t, g) for t, g in cell.notes) if cell else ""
            cells.append(f'<td data-column="{html.escape(c)}">{img}{notes}</td>')
        body.append('<tr class="image">' + "".join(cells) + "</tr>")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        + (f'<p class="meta">{html.escape(subtitle)}</p>' if subtitle else "")
        + f"<table><thead><tr><th>image</th><th>input</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        "</body></html>"
    )


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


def run_report(group_dir: Path) -> str:
    """A self-contained page for a training group (or one run): the summary table, then per run
    the localization metrics against epoch and the probe grid of every epoch behind a slider."""
    import json

    group_dir = Path(group_dir)
    summary_path = group_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"runs": []}
    run_dirs = [group_dir / r["name"] for r in summary["runs"]] if summary["runs"] else [group_dir]
    sections = []
    for run_dir in run_dirs:
        expl = run_dir / "explanations"
        frames = sorted(expl.glob("epoch_*.png"))
        if not frames:
            continue
        imgs = "".join(
            f'<img class="epoch" data-epoch="epoch {int(p.stem.split("_")[1])}" alt="{p.stem}" src="{data_uri(p)}" '
            'style="width:auto;height:auto;display:none">'
            for p in frames
        )
        plot = expl / "localization.png"
        plot_html = (
            f'<img alt="localization" src="{data_uri(plot)}" style="width:100%;height:auto">' if plot.is_file() else ""
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
