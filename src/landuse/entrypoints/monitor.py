"""``landuse run monitor``: the monitor stage (landuse.stages.monitor), planned vs actual land use.

Enabled when the config has ``inputs.planned`` (its adapter and options are checked by
:func:`landuse.monitoring.run.planned_options`, one-line errors); reads ``tables/predictions``
(``landuse run predict``).
"""

from __future__ import annotations

from landuse.entrypoints.common import stage_main


def summary(config, result) -> None:  # config: landuse.config.Config; result: landuse.runner.StageResult
    """Print the counts from the committed flag table's manifest (also when skipped as unchanged)."""
    from landuse.manifest import read_manifest
    from landuse.monitoring.run import GEOJSON_FILE, MAP_FILE, MAPS_OUTPUT, T_MONITORING

    table = result.outputs[T_MONITORING]
    facts = read_manifest(table) or {}
    maps = result.outputs[MAPS_OUTPUT]
    print(f"monitor: {facts.get('flagged')} of {facts.get('planned_regions')} planned regions depart from the plan "
          f"(threshold {facts.get('threshold')}) -> {table}, {maps / MAP_FILE}, {maps / GEOJSON_FILE}")


def main(argv: list[str] | None = None) -> int:
    """``landuse run monitor --config conf/X.yaml [key=value ...]`` (needs ``landuse run predict`` first)."""
    return stage_main("monitor", argv, summary=summary)
