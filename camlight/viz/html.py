"""Self-contained HTML reports: every image inlined as a data URI, no script or style from outside."""

from __future__ import annotations

import base64
import html
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


def offline_report(
    title: str, rows: list[dict], methods: list[str], images: dict[str, Path], overlays: dict[tuple[str, str], Path]
) -> str:
    """An HTML page: a row per result row (file, class, probability, scores), a column per method.

    Args:
        rows: results.csv rows ("file", "predicted", "probability", "target", optional scores).
        methods: column order (map keys, e.g. "gradcam" or "gradcam_top2").
        images: file → input PNG; overlays: (file, method) → overlay PNG.
    """
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    body = []
    for r in rows:
        meta = (
            f"<b>{html.escape(r['file'])}</b><br>predicted {html.escape(r['predicted'])} "
            f"({float(r['probability']):.2f})<br>target {html.escape(r['target'])}"
        )
        if "label" in r:
            meta += f"<br>label {html.escape(r['label'])}"
        cells = [f'<td class="meta">{meta}</td>', f'<td><img alt="input" src="{data_uri(images[r["file"]])}"></td>']
        for m in methods:
            path = overlays.get((r["file"], m))
            score = r.get(f"{m.split('_top')[0]}/pointing_game")
            mark = (
                ""
                if score in (None, "")
                else (' <span class="hit">hit</span>' if int(score) else ' <span class="miss">miss</span>')
            )
            img = f'<img alt="{html.escape(m)}" src="{data_uri(path)}">' if path else "–"
            cells.append(f"<td>{img}{mark}</td>")
        body.append('<tr class="image">' + "".join(cells) + "</tr>")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table><thead><tr><th>image</th><th>input</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        "</body></html>"
    )
