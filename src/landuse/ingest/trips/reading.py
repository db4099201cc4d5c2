"""Reading a trip source by adapter name: :func:`read_trips`, :func:`trip_source`, :func:`adapter_options`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from landuse.ingest.guards import Guards
from landuse.ingest.options import Option
from landuse.ingest.trips.base import TRIP_SOURCES, IngestResult, TripSource
from landuse.ingest.validation import LonLatBox

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from landuse.config import SourceConfig


def trip_source(adapter: str) -> TripSource:
    """The trip source registered as ``adapter``; :class:`IngestError` listing the known ones."""
    return TRIP_SOURCES.create(adapter)


def read_trips(
    spark: "SparkSession",
    source: "SourceConfig",
    extent: LonLatBox | None = None,
    *,
    name: str | None = None,
    guards: Guards | None = None,
) -> IngestResult:
    """Read a trip source with the adapter named in its config (``guards``: see :meth:`TripSource.read`)."""
    return trip_source(source.adapter).read(spark, source, extent, name=name, guards=guards)


def adapter_options(adapter: str) -> Mapping[str, Option]:
    """The declared options of a trip adapter (for docs and ``landuse`` help output)."""
    return {opt.name: opt for opt in trip_source(adapter).options}
