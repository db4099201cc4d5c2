"""Stage ``labels``: per-region land-use distributions from overlaying land-use polygons on regions.

``inputs.landuse`` adapters:

* ``landuse_codes`` — polygons with a class-code column mapped to ``labels.classes`` by a CSV
  (``code,name,landuse_class``); options ``code_column``, ``class_map_path``, ``match``
  (exact|prefix), ``id_column``, ``crs``, ``layer``. Shares are class areas / covered area; with
  ``labels.non_construction_residual`` non-construction = 1 − the other classes' share of the region.
* ``landuse_proportions`` — polygons carrying class proportions (areal interpolation, e.g. the NYC
  tracts); option ``proportion_columns`` maps each source column to a class of ``labels.classes``.

Output ``labels``: region_id, one column per class (rows sum to 1 where coverage > 0), coverage.
Invalid land-use polygons are repaired only within ``ingest.polygon_repair_tolerance`` of their
area; the others go to ``rejects/landuse`` as ``invalid_geometry``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from landuse.config import Config, ConfigError
from landuse.runner import Stage, StageContext
from landuse.spark.io import read_geoparquet, table_path, write_pandas
from landuse.spark.schemas import T_LABELS, T_REGIONS, T_REJECTS

log = logging.getLogger(__name__)
ADAPTERS = ("landuse_codes", "landuse_proportions")
REJECTS = f"{T_REJECTS}/landuse"


def run(ctx: StageContext) -> None:
    """Overlay regions with the land-use polygons (both driver-sized, ≤ ~10^5 polygons).

    With a Sedona session the intersections and area sums run on the executors
    (``ST_Intersection`` / ``ST_Area``); without Sedona, shapely on the driver. Same shares to 1e-6.
    """
    from landuse.ingest.polygons import read_landuse_codes, read_landuse_proportions
    from landuse.ingest.quarantine import write_rejects
    from landuse.spatial.overlay import areal_interpolation, class_area_proportions

    config = ctx.config
    source = config.inputs.landuse
    assert source is not None  # enabled() guarantees it
    if source.adapter not in ADAPTERS:
        raise ConfigError(f"inputs.landuse.adapter: {source.adapter!r} is not one of {', '.join(ADAPTERS)}")
    opts = dict(source.options)
    classes = list(config.labels.classes)
    regions = read_geoparquet(config, T_REGIONS, "regions")
    common: dict[str, Any] = {"id_column": opts.get("id_column"), "crs": opts.get("crs"), "layer": opts.get("layer")}
    tolerance = config.ingest.polygon_repair_tolerance  # invalid polygons beyond it go to rejects
    if source.adapter == "landuse_codes":
        for key in ("code_column", "class_map_path"):
            if not opts.get(key):
                raise ConfigError(f"inputs.landuse.options.{key}: required for adapter landuse_codes")
        result = read_landuse_codes(
            source.path, opts["code_column"], opts["class_map_path"], match=opts.get("match", "exact"),
            classes=classes, repair_tolerance=tolerance, **common,
        )
        labels = class_area_proportions(
            regions, result.polygons.to_crs(regions.crs), classes=classes,
            non_construction_residual=config.labels.non_construction_residual, spark=ctx.spark,
        )
    else:
        mapping = opts.get("proportion_columns")
        if not isinstance(mapping, dict) or not mapping:
            raise ConfigError("inputs.landuse.options.proportion_columns: required, a map {source_column: class}")
        unknown = sorted(set(mapping.values()) - set(classes))
        if unknown:
            raise ConfigError(f"inputs.landuse.options.proportion_columns: class {unknown[0]!r} not in labels.classes")
        result = read_landuse_proportions(source.path, list(mapping), repair_tolerance=tolerance, **common)
        labels = areal_interpolation(regions, result.polygons.to_crs(regions.crs), list(mapping),
                                     spark=ctx.spark).rename(columns=mapping)
        for name in classes:
            if name not in labels.columns:
                labels[name] = 0.0
        labels = labels[["region_id", *classes, "coverage"]]
    write_pandas(labels, ctx.out(T_LABELS))
    write_rejects(result.rejects, ctx.out(REJECTS))
    summary = result.summary()
    covered = labels["coverage"] > 0
    ctx.summary.update(
        ingest=[summary.to_dict()],
        classes=classes,
        regions=len(labels),
        regions_covered=int(covered.sum()),
        mean_coverage=round(float(labels["coverage"].mean()), 6),
        class_means={c: round(float(labels.loc[covered, c].mean()), 6) for c in classes},
    )
    log.info("labels: %d regions, %d covered; %s", len(labels), int(covered.sum()), summary.line())


def inputs(config: Config) -> list[Path]:
    """The land-use file and its class map."""
    from landuse.config import iter_input_paths

    return [path for key, path in iter_input_paths(config) if key.startswith("inputs.landuse")]


STAGE = Stage(
    name="labels",
    description="overlay land-use polygons on regions -> per-region class distributions + coverage",
    run=run,
    outputs=lambda config: {T_LABELS: table_path(config, T_LABELS), REJECTS: table_path(config, REJECTS)},
    config_keys=("labels", "inputs.landuse", "ingest.polygon_repair_tolerance"),
    inputs=inputs,
    upstream=("regions",),
    enabled=lambda config: config.inputs.landuse is not None,
)
