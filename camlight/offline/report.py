"""`explain.py report RUN_DIR`: the HTML report of a training group or of one run."""

from __future__ import annotations

import sys
from pathlib import Path


def report(argv: list[str]) -> int:
    """`explain.py report RUN_DIR`: write RUN_DIR/report.html (a training group or one run)."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python explain.py report RUN_DIR   (a group folder holding summary.json, or one run)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    run_dir = Path(argv[0])
    if not run_dir.is_dir() or not ((run_dir / "summary.json").is_file() or (run_dir / "explanations").is_dir()):
        print(f"error: {run_dir} is not a training group or run (no summary.json or explanations/)", file=sys.stderr)
        return 2
    from camlight.viz.html import run_report

    (run_dir / "report.html").write_text(run_report(run_dir))
    print(run_dir / "report.html")
    return 0
