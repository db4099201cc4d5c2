"""Leveled logging setup shared by the CLI, jobs and notebooks."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Configure the ``landuse`` logger once; noisy third-party loggers stay at WARNING."""
    root = logging.getLogger("landuse")
    root.setLevel(level.upper())
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
    for noisy in ("py4j", "pyspark", "fiona", "rasterio", "numexpr", "petastorm", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
