"""Shared argument handling for stage entry points: ``--config`` files, ``--force``, ``key=value``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

from landuse.config import Config, ConfigError, load_config
from landuse.logs import setup_logging
from landuse.spark.session import SessionError, disable_telemetry

log = logging.getLogger("landuse")

# Errors a user can fix; printed as one line, never a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, SessionError, FileNotFoundError)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config`` (repeatable, merged in order), ``--force`` and trailing ``key=value`` overrides."""
    parser.add_argument("--config", "-c", action="append", required=True, metavar="YAML",
                        help="config file; repeat to layer (e.g. conf/synthetic_london.yaml conf/cluster.yaml)")
    parser.add_argument("--force", action="store_true", help="rerun even if inputs and config are unchanged")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=7")


def load_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by parsed args, set up logging, record the resolved config."""
    config = load_config(args.config, args.overrides)
    setup_logging(config.log_level)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    resolved = config.work_dir / "resolved_config.json"
    resolved.write_text(json.dumps(config.redacted_dict(), indent=2, sort_keys=True) + "\n")
    log.info("config %s resolved -> %s", ", ".join(args.config), resolved)
    return config


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that describe bad input (config, files, rows), printed as one line."""
    from landuse.ingest.errors import IngestError
    from landuse.spark.schemas import SchemaError
    from landuse.spatial.overlay import OverlayError
    from landuse.monitoring.planned import MonitoringError
    from landuse.spatial.regions import RegionsError

    return USER_ERRORS + (IngestError, SchemaError, OverlayError, RegionsError, MonitoringError)


def guarded(body: Callable[[], int]) -> int:
    """Run ``body``; user errors print one line to stderr and return exit code 2."""
    disable_telemetry()
    try:
        return body()
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def stage_main(stage_name: str, argv: list[str] | None) -> int:
    """Entry point body shared by every stage module: parse argv, run the one stage."""
    from landuse.runner import run_stage
    from landuse.stages import STAGES

    parser = argparse.ArgumentParser(prog=f"landuse run {stage_name}", description=STAGES[stage_name].description)
    add_config_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.locks import work_dir_lock

        config = load_from_args(args)
        with work_dir_lock(config, command=f"landuse run {stage_name}"):
            result = run_stage(STAGES[stage_name], config, STAGES, force=args.force)
        for name, path in result.outputs.items():
            print(f"{stage_name}: {result.status} {name} -> {path}")
        return 0

    return guarded(body)
