"""``landuse run monitor``: planned vs actual land use (see landuse.monitoring)."""

from __future__ import annotations

import argparse

from landuse.entrypoints.common import add_config_args, guarded, load_from_args

ADAPTER = "planned_polygons"
OPTIONS = ("class_column", "id_column", "crs", "class_map_path")


def main(argv: list[str] | None = None) -> int:
    """``landuse run monitor --config conf/X.yaml [key=value ...]`` (needs ``landuse run predict`` first)."""
    parser = argparse.ArgumentParser(prog="landuse run monitor",
                                     description="flag regions whose predicted dominant use departs from the plan")
    add_config_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.config import ConfigError
        from landuse.monitoring.run import run_monitoring

        config = load_from_args(args)
        source = config.inputs.planned
        if source is None:
            raise ConfigError("inputs.planned: required by monitor ({adapter: planned_polygons, path: ..., "
                              "options: {class_column: ...}})")
        if source.adapter != ADAPTER:
            raise ConfigError(f"inputs.planned.adapter: {source.adapter!r} is not {ADAPTER}")
        opts = dict(source.options)
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"inputs.planned.options.{unknown[0]}: unknown option (allowed: {', '.join(OPTIONS)})")
        if not opts.get("class_column"):
            raise ConfigError("inputs.planned.options.class_column: required (the column holding the planned class)")
        summary = run_monitoring(config.tables_dir, config.driver_dir, source.path, opts["class_column"],
                                 list(config.labels.classes), threshold=config.monitoring.threshold,
                                 id_column=opts.get("id_column"), crs=opts.get("crs"),
                                 class_map_path=opts.get("class_map_path"))
        print(f"monitor: {summary['flagged']} of {summary['planned_regions']} planned regions depart from the plan "
              f"(threshold {summary['threshold']}) -> {summary['table']}, {summary['map']}, {summary['geojson']}")
        return 0

    return guarded(body)
