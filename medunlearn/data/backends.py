"""Optional decoder backends: keep their "not available" notices out of the user's console.

MONAI builds every default image reader each time a ``LoadImage`` is constructed, and its GPU DICOM reader
(nvImageCodec) logs "nvImageCodec is not available" at WARNING each time, and warns once more. Those are
notices about an optional accelerator, not problems with the user's data, so they are re-logged here at
DEBUG on the ``medunlearn.backends`` logger, once per distinct message; ``quiet_backend_notices`` is called
when ``medunlearn`` is imported and is idempotent.
"""
from __future__ import annotations

import logging
import warnings

LOG = logging.getLogger("medunlearn.backends")
# loggers of optional backends whose availability notices are demoted
NOTICE_LOGGERS = ("monai.data.nvimgcodec_pydicom_plugin",)
# warnings.warn texts of the same notices (regular expressions matched at the start of the message)
NOTICE_WARNINGS = (r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register",)


class OnceAtDebug(logging.Filter):
    """Drop a backend's notice and re-log it once, at DEBUG, on ``medunlearn.backends``."""

    def __init__(self) -> None:
        super().__init__("")
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:  # a real error from the backend still shows
            return True
        message = record.getMessage()
        if message not in self.seen:
            self.seen.add(message)
            LOG.debug("optional backend (%s): %s", record.name, message)
        return False


def quiet_backend_notices() -> None:
    """Install the demotion once per process (a second call changes nothing)."""
    for name in NOTICE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OnceAtDebug) for f in logger.filters):
            logger.addFilter(OnceAtDebug())
    for pattern in NOTICE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
