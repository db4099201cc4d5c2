"""Stage ``monitor``: planned vs actual land use (landuse.monitoring).

Enabled when the config has a plan (``inputs.planned``: adapter ``planned_polygons``, options
``class_column`` and optionally ``id_column``, ``crs``, ``class_map_path``). Overlays the plan on the
regions (largest planned area share per region), compares it with ``tables/predictions`` and flags
a region when its predicted dominant class differs from the plan and p(predicted) − p(planned) ≥
``monitoring.threshold``. Writes ``tables/monitoring``, ``tables/rejects/planned`` (plan rows with
an unknown or missing class) and ``<driver_dir>/maps/monitoring/`` (``monitoring.geojson``,
EPSG:4326, and ``monitoring_deviations.png``). A new prediction (a new champion) reruns it.
"""

from __future__ import annotations

from pathlib import Path

from landuse.config import Config
from landuse.monitoring.planned import PLAN_SOURCE
from landuse.monitoring.run import MAPS_OUTPUT, T_MONITORING, planned_options
from landuse.runner import Stage, StageContext, no_spark
from landuse.spark.schemas import T_REJECTS

REJECTS = f"{T_REJECTS}/{PLAN_SOURCE}"


def outputs(config: Config) -> dict:
    """``tables/monitoring``, ``tables/rejects/planned`` and ``<driver_dir>/maps/monitoring/``."""
    from landuse.spark.io import table_path

    return {T_MONITORING: table_path(config, T_MONITORING), REJECTS: table_path(config, REJECTS),
            MAPS_OUTPUT: config.driver_dir / "maps" / "monitoring"}


def inputs(config: Config) -> list[Path]:
    """The plan file (and its class map); the options are checked first, so a bad one is a one-line error."""
    if config.inputs.planned is None:
        return []
    options = planned_options(config)
    paths = [Path(config.inputs.planned.path)]
    if options.get("class_map_path"):
        paths.append(Path(options["class_map_path"]))
    return paths


@no_spark  # geopandas on driver-sized tables
def run(ctx: StageContext) -> None:
    """Flag the regions whose predicted dominant use departs from the plan."""
    from landuse.monitoring.run import run_monitoring

    config = ctx.config
    assert config.inputs.planned is not None  # enabled() checked it
    opts = planned_options(config)
    summary = run_monitoring(config.tables_dir, config.inputs.planned.path, opts["class_column"],
                             list(config.labels.classes), table_out=ctx.out(T_MONITORING),
                             rejects_out=ctx.out(REJECTS), maps_out=ctx.out(MAPS_OUTPUT),
                             threshold=config.monitoring.threshold, id_column=opts.get("id_column"),
                             crs=opts.get("crs"), class_map_path=opts.get("class_map_path"))
    ctx.summary.update(summary)


STAGE = Stage(
    name="monitor",
    description="planned vs predicted land use (with inputs.planned): flag regions whose predicted dominant use "
                "departs from the plan -> tables/monitoring, maps/monitoring/",
    run=run,
    outputs=outputs,
    config_keys=("monitoring", "inputs.planned", "labels.classes"),
    inputs=inputs,
    upstream=("regions", "predict"),
    enabled=lambda config: config.inputs.planned is not None,
    group="report",
)
