"""The records the ``mammoth`` logger emits inside a block, at INFO and above (for fixtures wider
than a test, where pytest's ``caplog`` cannot serve)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def mammoth_log_records() -> Iterator[list[logging.LogRecord]]:
    """Collect the ``mammoth`` logger's records (INFO and above) in the yielded list; the logger's
    handlers and level are restored after the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("mammoth")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
