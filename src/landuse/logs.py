"""Leveled logging setup shared by the CLI, jobs and notebooks."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted: notebooks and test captures swap
    it, and a handler bound to a replaced (closed) stream would fail on every later record."""

    @property
    def stream(self):  # noqa: D401 - the current stderr
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the current stderr always wins
        pass


def setup_logging(level: str = "INFO") -> None:
    """Configure the ``landuse`` logger once; noisy third-party loggers stay at WARNING."""
    root = logging.getLogger("landuse")
    root.setLevel(level.upper())
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
    for noisy in ("py4j", "pyspark", "fiona", "rasterio", "numexpr", "petastorm", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
