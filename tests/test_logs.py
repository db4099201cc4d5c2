"""The landuse log handler follows sys.stderr: a stream swapped in and closed (a notebook cell's or a
test's capture) does not break later records."""

from __future__ import annotations

import io
import logging
import sys

from landuse.logs import setup_logging


def test_records_go_to_the_current_stderr_after_a_swapped_stream_is_closed(monkeypatch) -> None:
    logger = logging.getLogger("landuse")
    saved = logger.handlers[:]
    logger.handlers.clear()
    try:
        first = io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        setup_logging("INFO")
        logging.getLogger("landuse.demo").info("one")
        first.close()
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("landuse.demo").info("two")
        assert "two" in second.getvalue() and "Logging error" not in second.getvalue()
    finally:
        logger.handlers[:] = saved
