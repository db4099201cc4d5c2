"""Ingest: readers/adapters per source format, row validation, and quarantine of bad rows.

* trips — :func:`read_trips` / :data:`TRIP_SOURCES` (``tfl_cycle_hire``, ``citibike``, ``tlc_taxi``,
  ``signaling_od``, ``zone_od``, ``points_od``) -> :class:`IngestResult`;
* POIs — :func:`read_pois` / :data:`POI_SOURCES` (``amap_csv``, ``os_pointx``, ``nyc_commonplace``,
  ``osm_pois``) -> :class:`PoiIngestResult`;
* polygons — :func:`read_polygons`, :func:`read_landuse_codes`, :func:`read_landuse_proportions`;
* quarantine — :class:`IngestSummary`, :func:`write_rejects`.

Whole-file problems raise :class:`IngestError` (one line: file, column/row, problem); bad rows go
to rejects with a reason and are counted, so in = kept + rejected for every source.
"""

from landuse.ingest.errors import IngestError
from landuse.ingest.pois import POI_SOURCES, PoiIngestResult, PoiSource, poi_source, read_pois
from landuse.ingest.polygons import (
    LanduseResult,
    read_class_mapping,
    read_landuse_codes,
    read_landuse_proportions,
    read_polygons,
    read_vector,
)
from landuse.ingest.quarantine import (
    IngestSummary,
    check_all,
    format_summaries,
    log_summaries,
    rejects_path,
    write_rejects,
)
from landuse.ingest.trips import TRIP_SOURCES, IngestResult, TripSource, read_trips, trip_source
from landuse.ingest.validation import LonLatBox

__all__ = [
    "IngestError",
    "IngestResult",
    "IngestSummary",
    "LanduseResult",
    "LonLatBox",
    "POI_SOURCES",
    "PoiIngestResult",
    "PoiSource",
    "TRIP_SOURCES",
    "TripSource",
    "check_all",
    "format_summaries",
    "log_summaries",
    "poi_source",
    "read_class_mapping",
    "read_landuse_codes",
    "read_landuse_proportions",
    "read_pois",
    "read_polygons",
    "read_trips",
    "read_vector",
    "rejects_path",
    "trip_source",
    "write_rejects",
]
