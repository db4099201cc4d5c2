"""Trip sources: one adapter per raw trip format, all producing the canonical trips table.

The public API (import from here): :func:`read_trips`, :data:`TRIP_SOURCES`, :class:`TripSource`,
:class:`IngestResult`, :class:`ObservedResult`, :func:`trip_source`, :func:`adapter_options`.
Where things are:

* ``base`` — the result types, the :class:`TripSource` base class, the common options, the count
  and date guards, and the registry (its docstring describes what a trip source yields);
* ``helpers`` — the shared building blocks: columns, checks, location tables, keyed/point trips;
* ``reading`` — :func:`read_trips` and the lookup of an adapter by name;
* one module per adapter, named after it: ``tfl_cycle_hire``, ``citibike``, ``tlc_taxi``,
  ``signaling_od``, ``zone_od``, ``points_od``.

Importing this package imports every adapter module, which registers it in :data:`TRIP_SOURCES`.
A new adapter is a new module here (a :class:`TripSource` subclass decorated with
``@register_trip_source``) and one import line below.
"""

from landuse.ingest.trips.base import (
    CSV_OPTIONS,
    TIME_OPTION,
    TRIP_SOURCES,
    IngestResult,
    ObservedResult,
    TripSource,
    register_trip_source,
)
from landuse.ingest.trips.citibike import CitiBikeTripSource
from landuse.ingest.trips.helpers import Checks
from landuse.ingest.trips.points_od import PointsOdTripSource
from landuse.ingest.trips.reading import adapter_options, read_trips, trip_source
from landuse.ingest.trips.signaling_od import SignalingOdTripSource
from landuse.ingest.trips.tfl_cycle_hire import TflCycleHireTripSource
from landuse.ingest.trips.tlc_taxi import TlcTaxiTripSource
from landuse.ingest.trips.zone_od import ZoneOdTripSource

__all__ = [
    "CSV_OPTIONS",
    "Checks",
    "CitiBikeTripSource",
    "IngestResult",
    "ObservedResult",
    "PointsOdTripSource",
    "SignalingOdTripSource",
    "TIME_OPTION",
    "TRIP_SOURCES",
    "TflCycleHireTripSource",
    "TlcTaxiTripSource",
    "TripSource",
    "ZoneOdTripSource",
    "adapter_options",
    "read_trips",
    "register_trip_source",
    "trip_source",
]
