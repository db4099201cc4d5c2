"""``landuse pipeline``: every enabled stage in order, skipping unchanged ones."""

from __future__ import annotations

import argparse

from landuse.config import ConfigError
from landuse.entrypoints.common import add_config_args, guarded, load_from_args
from landuse.locks import work_dir_lock


def main(argv: list[str] | None = None) -> int:
    """Run the whole pipeline and print where outputs and the MLflow store are."""
    from landuse.runner import run_pipeline
    from landuse.stages import STAGES

    parser = argparse.ArgumentParser(prog="landuse pipeline", description=__doc__)
    add_config_args(parser)
    parser.add_argument("--stages", help=f"comma-separated subset of: {', '.join(STAGES)}")
    args = parser.parse_args(argv)

    def body() -> int:
        config = load_from_args(args)
        only = [s.strip() for s in args.stages.split(",")] if args.stages else None
        unknown = sorted(set(only or []) - set(STAGES))
        if unknown:
            raise ConfigError(f"--stages: unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
        with work_dir_lock(config, command="landuse pipeline"):
            results = run_pipeline(config, STAGES, force=args.force, only=only)
        print(f"\n{'stage':<16} {'status':<10} {'seconds':>8}  output")
        for result in results:
            for path in result.outputs.values() or ["-"]:
                print(f"{result.name:<16} {result.status:<10} {result.seconds:>8.1f}  {path}")
        print(f"\nwork dir:     {config.work_dir.resolve()}")
        print(f"tables:       {config.tables_dir.resolve()}")
        print(f"MLflow store: {config.mlflow_uri}")
        return 0

    return guarded(body)

