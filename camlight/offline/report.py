"""`explain.py report RUN_DIR [--inline]`: the HTML report of a training group or of one run."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = (
    "usage: python explain.py report RUN_DIR [--inline]   (a group folder holding summary.json, or one run; "
    "--inline puts every image inside report.html)"
)


def report(argv: list[str]) -> int:
    """`explain.py report RUN_DIR [--inline]`: write RUN_DIR/report.html (a training group or one
    run), its images linked, or inside it with --inline."""
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    inline = "--inline" in argv
    rest = [a for a in argv if a != "--inline"]
    if len(rest) != 1 or rest[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    run_dir = Path(rest[0])
    if not run_dir.is_dir() or not ((run_dir / "summary.json").is_file() or (run_dir / "explanations").is_dir()):
        print(f"error: {run_dir} is not a training group or run (no summary.json or explanations/)", file=sys.stderr)
        return 2
    from camlight.viz import atomic_file
    from camlight.viz.html import run_report

    with atomic_file(run_dir / "report.html", encoding="utf-8") as f:
        f.write(run_report(run_dir, inline=inline))
    print(run_dir / "report.html")
    return 0
