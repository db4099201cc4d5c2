"""``landuse pipeline``: a stage and everything it depends on, in DAG order, skipping unchanged ones.

``--until assemble`` (the default) builds the training tables; ``--until report`` runs every step
the config enables: pretrain, train, ablation, fusion, tune, transfer, the benchmarks, predict,
monitor and the report.
"""

from __future__ import annotations

import argparse

from landuse.config import ConfigError
from landuse.entrypoints.common import add_config_args, guarded, load_from_args
from landuse.locks import work_dir_lock

DEFAULT_UNTIL = "assemble"


def main(argv: list[str] | None = None) -> int:
    """Run the planned stages and print a status table and where outputs and the MLflow store are."""
    from landuse.runner import plan, run_pipeline
    from landuse.stages import STAGES

    parser = argparse.ArgumentParser(prog="landuse pipeline", description=__doc__)
    add_config_args(parser)
    parser.add_argument("--until", default=DEFAULT_UNTIL, metavar="STAGE",
                        help=f"run this stage and every stage it depends on (default {DEFAULT_UNTIL}: the training "
                             f"tables; report: everything); one of: {', '.join(STAGES)}")
    parser.add_argument("--stages", help="comma-separated subset of the planned stages")
    parser.add_argument("--dry-run", action="store_true", help="print the planned stages and exit")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.until not in STAGES:
            raise ConfigError(f"--until: unknown stage {args.until!r} (stages: {', '.join(STAGES)})")
        only = [s.strip() for s in args.stages.split(",")] if args.stages else None
        unknown = sorted(set(only or []) - set(STAGES))
        if unknown:
            raise ConfigError(f"--stages: unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
        config = load_from_args(args)
        if args.dry_run:
            for name in plan(STAGES, args.until, only):
                state = "enabled" if STAGES[name].enabled(config) else "disabled by config"
                print(f"{name:<22} {state}")
            return 0
        with work_dir_lock(config, command="landuse pipeline"):
            results = run_pipeline(config, STAGES, force=args.force, only=only, until=args.until)
        width = max([16, *(len(r.name) + 1 for r in results)])
        print(f"\n{'stage':<{width}} {'status':<10} {'seconds':>8}  output")
        for result in results:
            for path in result.outputs.values() or ["-"]:
                print(f"{result.name:<{width}} {result.status:<10} {result.seconds:>8.1f}  {path}")
        print(f"\nwork dir:     {config.work_dir.resolve()}")
        print(f"tables:       {config.tables_dir.resolve()}")
        print(f"MLflow store: {config.mlflow_uri}")
        return 0

    return guarded(body)
