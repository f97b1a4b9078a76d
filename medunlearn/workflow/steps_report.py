"""`report`: the clinical report (HTML, Markdown, JSON) for an unlearning run or a merged checkpoint."""
from __future__ import annotations

from pathlib import Path

from medunlearn.fileio import require_dir


def report(run_dir: str | Path, out: str | Path | None = None, overwrite: bool = False,
           pdf: bool = True) -> dict[str, Path]:
    """Write the report files (report.pdf too when `pdf` and a Chromium is installed); returns their paths."""
    from medunlearn.report.render import render_report

    return render_report(require_dir(run_dir, "a run or merged checkpoint"), out, overwrite=overwrite, pdf=pdf)
