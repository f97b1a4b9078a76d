"""report.pdf for sign-off: the same self-contained report.html printed by a headless Chromium.

Why Chromium: it prints exactly the HTML a reviewer reads (tables, colours, embedded figures) with no second
layout to keep in step, and it is a well-kept, widely installed tool. WeasyPrint would need Pango and a CSS
subset; reportlab would need the whole report laid out again. When no Chromium / Chrome binary is found
(``MEDUNLEARN_CHROMIUM`` names one explicitly) the PDF is skipped with a note; the HTML stays the record.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from medunlearn.fileio import make_private

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TIMEOUT_S = 120


def find_browser() -> str | None:
    """Path of a Chromium-family browser: $MEDUNLEARN_CHROMIUM if set, else the first of BROWSERS on PATH."""
    explicit = os.environ.get("MEDUNLEARN_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    return next((p for p in (shutil.which(b) for b in BROWSERS) if p), None)


def html_to_pdf(html_path: Path, pdf_path: Path) -> str | None:
    """Print `html_path` to `pdf_path` (written atomically). Returns None on success, else why it was skipped."""
    browser = find_browser()
    if browser is None:
        return ("no Chromium/Chrome found (install chromium, or set MEDUNLEARN_CHROMIUM); open report.html and "
                "print it to PDF instead")
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{pdf_path.name}.", suffix=".tmp.pdf", dir=pdf_path.parent)  # owner-only
    os.close(fd)
    with tempfile.TemporaryDirectory(prefix="medunlearn-chromium-") as profile:
        cmd = [browser, "--headless", "--disable-gpu", "--no-pdf-header-footer", "--disable-extensions",
               f"--user-data-dir={profile}", f"--print-to-pdf={tmp}", html_path.resolve().as_uri()]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to start as root with its sandbox on
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
            ok = run.returncode == 0 and Path(tmp).stat().st_size > 0
            why = None if ok else f"{Path(browser).name} exited with code {run.returncode}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = f"{Path(browser).name} failed ({type(exc).__name__})"
    if why is not None:
        Path(tmp).unlink(missing_ok=True)
        return why
    make_private(tmp)  # owner-only like every output (fileio.file_mode)
    os.replace(tmp, pdf_path)
    return None
