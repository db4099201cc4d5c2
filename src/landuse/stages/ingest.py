"""Stage ``ingest``: every trip and POI source → canonical ``trips``, ``locations``, ``pois``.

Rejected rows go to ``rejects/<source>/`` with a reason; the manifest carries, per source table,
rows in = kept + rejected (checked). Rows outside the study extent are rejected: the extent is
``study.extent`` or the regions' bounding box grown by ``study.extent_buffer_m``.

The stage fails (one line, nothing committed) when a trip or POI source keeps less than
``ingest.min_kept_fraction`` of its rows, or has no data rows at all unless the run is forced
(``--force``: a warning). Trip start dates are checked against ``ingest.date_range`` (or a range
derived from the data), counts against ``ingest.max_count``; see :mod:`landuse.ingest.guards`.
The date range each source was checked against is in the manifest (``sources.<name>.date_range``).
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from landuse.config import Config
from landuse.runner import Stage, StageContext
from landuse.spark.io import read_geoparquet, table_path, write_spark
from landuse.spark.schemas import (
    LOCATIONS_SCHEMA,
    T_LOCATIONS,
    T_POIS,
    T_REGIONS,
    T_REJECTS,
    T_TRIPS,
    TRIPS_SCHEMA,
)

if TYPE_CHECKING:
    from landuse.ingest.guards import Guards
    from landuse.ingest.quarantine import IngestSummary

log = logging.getLogger(__name__)
POI_SOURCE = "pois"


def study_extent(config: Config):  # -> landuse.ingest.validation.LonLatBox
    """The lon/lat box outside which rows are rejected."""
    from pyproj import Transformer

    from landuse.ingest.validation import LonLatBox

    if config.study.extent is not None:
        return LonLatBox(*config.study.extent)
    regions = read_geoparquet(config, T_REGIONS, "regions")
    x0, y0, x1, y1 = regions.total_bounds
    pad = config.study.extent_buffer_m
    to_lonlat = Transformer.from_crs(regions.crs, "EPSG:4326", always_xy=True)
    return LonLatBox.from_bounds(to_lonlat.transform_bounds(x0 - pad, y0 - pad, x1 + pad, y1 + pad))


def outputs(config: Config) -> dict[str, Path]:
    """trips, locations, pois (when configured) and one rejects table per source."""
    out = {T_TRIPS: table_path(config, T_TRIPS), T_LOCATIONS: table_path(config, T_LOCATIONS)}
    names = list(config.inputs.trips)
    if config.inputs.pois is not None:
        out[T_POIS] = table_path(config, T_POIS)
        names.append(POI_SOURCE)
    for name in names:
        out[f"{T_REJECTS}/{name}"] = table_path(config, f"{T_REJECTS}/{name}")
    return out


def run(ctx: StageContext) -> None:
    """Read, validate and write every source in one pass over its rows; account for every row.

    The kept rows of every source are validated and written by one Spark job (trips; then the
    small location tables), counting rows read, kept and rejected as they go (Spark observations).
    Only a source with rejected rows is read a second time, to write its rejects; the rejects are
    counted by reason from the table as written. Nothing is cached.
    """
    from functools import reduce

    from landuse.ingest.guards import Guards
    from landuse.ingest.quarantine import log_summaries
    from landuse.ingest.trips import read_trips

    spark, config = ctx.spark, ctx.config
    guards = Guards.from_config(config.ingest)
    extent = study_extent(config)
    summaries, sources, observed = [], {}, []
    for name, source in config.inputs.trips.items():
        result = read_trips(spark, source, extent, name=name, guards=guards)
        observed.append(result.observed())
        sources[name] = {
            "adapter": source.adapter,
            "keys_are_regions": result.keys_are_regions,
            "has_locations": result.location_split is not None,
        }
        if result.date_range is not None:
            sources[name].update(date_range=list(result.date_range), date_range_rule=result.date_range_rule)

    def union(frames, schema):
        return reduce(lambda a, b: a.unionByName(b), frames, spark.createDataFrame([], schema))

    # One job reads, validates and writes every source's kept trips, counting rows as it goes.
    started = time.perf_counter()
    write_spark(union([r.trips for r in observed], TRIPS_SCHEMA), ctx.out(T_TRIPS))
    write_spark(union([r.locations for r in observed if r.locations is not None], LOCATIONS_SCHEMA), ctx.out(T_LOCATIONS))
    timings = {"trips_s": round(time.perf_counter() - started, 2)}
    log.info("ingest: trips and locations validated and written in %.1f s", timings["trips_s"])
    for done in observed:
        rejects = done.rejects()  # None: no rejected row, so no second pass over the input
        out = ctx.out(f"{T_REJECTS}/{done.result.name}")
        by_reason = _write_rejects(spark, rejects, out)
        mine = done.summaries(by_reason)
        summaries += mine
        source = config.inputs.trips[done.result.name]
        _check(mine[0], f"inputs.trips.{done.result.name}", str(source.path), guards, ctx.force)
    if config.inputs.pois is not None:
        started = time.perf_counter()
        summaries.append(_ingest_pois(ctx, extent))
        _check(summaries[-1], "inputs.pois", str(config.inputs.pois.path), guards, ctx.force)
        timings["pois_s"] = round(time.perf_counter() - started, 2)
        log.info("ingest: POIs validated and written in %.1f s", timings["pois_s"])
        sources[POI_SOURCE] = {"adapter": config.inputs.pois.adapter}
    log_summaries(summaries, log)
    ctx.summary.update(
        extent_lonlat=[extent.min_lon, extent.min_lat, extent.max_lon, extent.max_lat],
        sources=sources,
        ingest=[s.to_dict() for s in summaries],
        timings=timings,  # seconds: trips (+ locations and their counts), POIs
    )


def _check(summary: "IngestSummary", key: str, path: str, guards: "Guards", force: bool) -> None:
    """The stage-level guards on one source's main table (trips / POIs): not empty, enough rows kept."""
    from landuse.ingest.guards import check_kept_share, check_not_empty, source_label

    label = source_label(key, path)
    check_not_empty(summary, label, force)
    check_kept_share(summary, label, guards.min_kept_fraction)


def _write_rejects(spark, rejects, directory: Path) -> dict[str, int]:
    """Write a rejects table (None: an empty one); its rows per reason, counted from the table as written."""
    from landuse.ingest.quarantine import write_empty_rejects, written_reason_counts

    if rejects is None:
        write_empty_rejects(directory)
        return {}
    write_spark(rejects, directory)
    return written_reason_counts(spark, directory)


def _ingest_pois(ctx: StageContext, extent):
    """POIs: the kept rows written once (counting themselves); rejects read only when rows were rejected."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from landuse.ingest.pois import PoiIngestSummary, read_pois
    from landuse.ingest.validation import observed_metrics

    spark, config = ctx.spark, ctx.config
    assert config.inputs.pois is not None, "the caller ingests POIs only when inputs.pois is set"
    pois = read_pois(spark, config.inputs.pois, extent, name=POI_SOURCE)
    written = Observation(f"pois_{uuid.uuid4().hex}")
    write_spark(pois.pois.observe(written, F.count(F.lit(1)).alias("kept")), ctx.out(T_POIS))
    kept = int(observed_metrics(written)["kept"])
    rows_in = pois.raw.count()  # the input rows (a plain count of the file: no parsing, no validation)
    by_reason = _write_rejects(spark, pois.rejects if rows_in != kept else None, ctx.out(f"{T_REJECTS}/{POI_SOURCE}"))
    return PoiIngestSummary(
        POI_SOURCE, T_POIS, pois.path, rows_in, kept, sum(by_reason.values()), by_reason, tuple(pois.notes)
    ).check()


def inputs(config: Config) -> list[Path]:
    """Every trip and POI file (and station / zone tables named in options)."""
    from landuse.config import iter_input_paths

    return [path for key, path in iter_input_paths(config) if key.startswith(("inputs.trips", "inputs.pois"))]


STAGE = Stage(
    name="ingest",
    description="read + validate trips and POIs into canonical tables; bad rows to rejects/<source>/",
    run=run,
    outputs=outputs,
    config_keys=("study", "inputs.trips", "inputs.pois", "ingest"),
    inputs=inputs,
    upstream=("regions",),
    enabled=lambda config: bool(config.inputs.trips) or config.inputs.pois is not None,
)
