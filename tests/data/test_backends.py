"""Optional-backend notices (MONAI's nvImageCodec) never reach the console; they go to DEBUG once."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medunlearn.data.backends import LOG, OnceAtDebug

ROOT = Path(__file__).resolve().parents[2]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_once_at_debug_demotes_and_deduplicates():
    """Handlers on both loggers, so the result does not depend on how other code configured logging."""
    mine, theirs = Collect(), Collect()
    backend = logging.getLogger("test.optional.backend")
    backend.addFilter(OnceAtDebug())
    backend.addHandler(theirs)
    LOG.addHandler(mine)
    level = LOG.level
    LOG.setLevel(logging.DEBUG)  # setLevel (not attribute assignment) also clears the loggers' level caches
    try:
        for _ in range(3):
            backend.warning("accelerator X is not available")
        backend.warning("accelerator Y is not available")
        backend.error("a real failure")
    finally:
        LOG.setLevel(level)
        LOG.removeHandler(mine)
        backend.removeHandler(theirs)
    assert [r.levelno for r in mine.records] == [logging.DEBUG, logging.DEBUG]
    assert "accelerator X" in mine.records[0].getMessage() and "accelerator Y" in mine.records[1].getMessage()
    assert [(r.levelno, r.getMessage()) for r in theirs.records] == [(logging.ERROR, "a real failure")]


SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout,
                    format="%(levelname)s:%(name)s:%(message)s")
from monai.data.nvimgcodec_pydicom_plugin import is_nvimgcodec_available
from medunlearn.data.datasets import make_transforms
for _ in range(4):
    make_transforms(8)  # each builds MONAI's default readers, nvImageCodec included
print("AVAILABLE" if is_nvimgcodec_available() else "ABSENT")
"""


def test_building_readers_prints_the_backend_notice_once_at_debug():
    """Even with DEBUG logging on, four reader builds give one DEBUG line and no WARNING / warning."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    if "AVAILABLE" in run.stdout.splitlines():
        pytest.skip("nvImageCodec is available here, so MONAI has no notice to print")
    assert "nvImageCodec" not in run.stderr
    notices = [line for line in run.stdout.splitlines() if "nvImageCodec is not available" in line]
    assert len(notices) == 1 and notices[0].startswith("DEBUG:medunlearn.backends:"), notices
