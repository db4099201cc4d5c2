"""``landuse bundle``: the Databricks asset bundle generated from the stage DAG (see landuse.bundle)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from landuse.entrypoints.common import guarded

DEFAULT_OUT = Path("deploy/databricks/databricks.yml")


def main(argv: list[str] | None = None) -> int:
    """``landuse bundle --config conf/X.yaml [--until report] [--out FILE | --check]``."""
    from landuse.stages import STAGES

    parser = argparse.ArgumentParser(prog="landuse bundle", description="generate the Databricks asset bundle "
                                     "(one python_wheel_task per enabled stage, depends_on = the DAG's edges)")
    parser.add_argument("--config", "-c", action="append", required=True, metavar="YAML",
                        help="dataset config, relative to the repository root (repeat to layer)")
    parser.add_argument("--until", default="report", help="last stage of the job (default report: every step)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"bundle file to write (default {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from what would be generated")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (which stages are enabled)")
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.bundle import bundle_yaml
        from landuse.config import ConfigError, load_config

        if args.until not in STAGES:
            raise ConfigError(f"--until: unknown stage {args.until!r} (stages: {', '.join(STAGES)})")
        config = load_config(args.config, args.overrides)
        text = bundle_yaml(STAGES, config, args.config, Path.cwd(), args.until)
        if args.check:
            current = args.out.read_text() if args.out.exists() else ""
            if current != text:
                print(f"{args.out}: differs from the DAG; regenerate: landuse bundle "
                      f"{' '.join('--config ' + c for c in args.config)} --until {args.until} --out {args.out}",
                      file=sys.stderr)
                return 1
            print(f"{args.out}: up to date")
            return 0
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"bundle: {text.count('- task_key:')} tasks -> {args.out}")
        return 0

    return guarded(body)
