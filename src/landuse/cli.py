"""The ``landuse`` command: ``synth``, ``pipeline``, ``run STAGE``, ``stages``, ``bundle``, ``config``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import landuse
from landuse.constants import PROFILES, SCALES
from landuse.entrypoints.common import guarded


def _synth(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="landuse synth", description="generate a synthetic city")
    parser.add_argument("--profile", choices=PROFILES, default="london")
    parser.add_argument("--scale", choices=SCALES, default="tiny")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True,
                        help="output directory (replaced atomically; only when empty or a previous landuse output)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.logs import setup_logging
        from landuse.manifest import UnsafeOutputError
        from landuse.synth import generate

        setup_logging(args.log_level)
        try:
            manifest = generate(args.profile, args.scale, args.seed, args.out, progress=True)
        except UnsafeOutputError as exc:
            print(f"error: --out {exc}", file=sys.stderr)
            return 2
        print(json.dumps(manifest.get("counts", {}), sort_keys=True))
        print(f"synthetic city ({args.profile}, {args.scale}, seed {args.seed}) -> {args.out}")
        return 0

    return guarded(body)


# Commands of `landuse run` that are not stages of the DAG: serving and ad-hoc scoring.
COMMANDS_NOT_STAGES = {
    "serve": "REST scoring server (mlflow models serve) for a registered model, from a sha256-verified copy (--model, --port)",
    "score": "batch scoring on Spark (spark_udf): a region table -> tables/predictions_batch (--model, --input, --output)",
    "zeroshot": "zero-shot land use without labels from POI-paragraph prompts (--method text|llm|image) -> "
                "tables/zeroshot_<method>, rejects, GeoJSON, MLflow",
}
GROUP_TITLES = {"data": "data stages (tables):", "model": "model stages (training, evaluation, registry):",
                "report": "publishing stages:"}


def _run(argv: list[str]) -> int:
    from landuse.stages import STAGES

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: landuse run STAGE --config conf/X.yaml [--force] [key=value ...]")
        for group, title in GROUP_TITLES.items():
            print(f"\n{title}")
            for name, stage in STAGES.items():
                if stage.group == group:
                    print(f"  {name:<22} {stage.description}")
        print("\nserving and scoring (not stages):")
        for name, text in COMMANDS_NOT_STAGES.items():
            print(f"  {name:<22} {text}")
        return 0 if argv else 2
    name = argv[0]
    if name not in STAGES and name not in COMMANDS_NOT_STAGES:
        print(f"error: unknown stage {name!r} (stages: {', '.join([*STAGES, *COMMANDS_NOT_STAGES])})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"landuse.entrypoints.{name.replace('-', '_')}")
    return int(module.main(argv[1:]))


def _config(argv: list[str]) -> int:
    from landuse.config import load_config
    from landuse.entrypoints.common import add_config_args

    if argv and argv[0] == "--reference":
        from landuse.config_reference import reference_markdown

        print(reference_markdown())
        return 0
    if argv and argv[0] == "--json-schema":
        from landuse.config_reference import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    parser = argparse.ArgumentParser(prog="landuse config", description="print the resolved config as JSON "
                                     "(landuse config --reference: the Markdown reference of every key; "
                                     "--json-schema: the JSON Schema of a config file)")
    add_config_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        config = load_config(args.config, args.overrides)
        print(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        return 0

    return guarded(body)


def _stages(argv: list[str]) -> int:
    from landuse.stages import STAGES

    parser = argparse.ArgumentParser(prog="landuse stages", description="the stage DAG: name, group, depends on")
    parser.add_argument("--json", action="store_true", help="as JSON: {stage: {group, upstream, optional, after}}")
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps({name: {"group": s.group, "upstream": list(s.upstream), "optional": list(s.optional_upstream),
                                 "after": list(s.after)} for name, s in STAGES.items()}, indent=2))
        return 0
    for name, stage in STAGES.items():
        print(f"{name:<22} {stage.group:<7} <- {', '.join(stage.dependencies) or '-'}")
    return 0


def _bundle(argv: list[str]) -> int:
    from landuse.entrypoints.bundle import main

    return main(argv)


def _pipeline(argv: list[str]) -> int:
    from landuse.entrypoints.pipeline import main

    return main(argv)


COMMANDS = {
    "synth": (_synth, "generate a synthetic city (profiles: shenzhen, london)"),
    "pipeline": (_pipeline, "run a stage and everything it depends on (--until STAGE; default assemble), "
                            "skipping unchanged ones"),
    "run": (_run, "run one stage: landuse run STAGE --config ..."),
    "config": (_config, "print the resolved configuration"),
    "stages": (_stages, "print the stage DAG (name, group, what each depends on)"),
    "bundle": (_bundle, "generate the Databricks asset bundle from the DAG (--config, --until, --out, --check)"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a sub-command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: landuse COMMAND [...]\n\nlanduse {landuse.__version__}: urban land use from spatial big data\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        print("\nglobal options:\n  --version  print the version\n  -h, --help this help")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"landuse {landuse.__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"error: unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return command[0](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
