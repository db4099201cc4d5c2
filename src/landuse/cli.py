"""The ``landuse`` command: ``synth``, ``pipeline``, ``run STAGE``, ``stages``, ``config``."""

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


# Steps that are not table-producing pipeline stages: training experiments and prediction.
TASKS = {
    "train": "train training.variant over K splits; MLflow run, registered model (champion if better)",
    "ablation": "the 14-variant thesis ablation table (CSV + Markdown), tracked in MLflow",
    "fusion": "the fusion ablation M_P, M_PI, M_PIG, M_PIGF, tracked in MLflow",
    "tune": "model selection on validation KL (tune:), best retrained once, test reported, registered",
    "predict": "per-region predicted distributions, dominant class, entropy (--model URI)",
    "serve": "REST scoring server (mlflow models serve) for a registered model, from a sha256-verified copy (--model, --port)",
    "score": "batch scoring on Spark (spark_udf): a region table -> tables/predictions_batch (--model, --input, --output)",
    "monitor": "planned vs actual: flag regions whose predicted use departs from inputs.planned",
    "benchmark-embeddings": "region embeddings vs baselines vs published MVURE/MGFN/HREP/HAFusion (NYC mh-180) "
                            "+ land-use MLP probe",
    "benchmark-landuse": "land-use distribution under the published region-embedding protocol (MLP probe, R repeats) "
                         "for every feature table and our models, beside published results",
    "pretrain": "MMGR-style image-encoder pretraining (NT-Xent image-image + image-POI) -> image_embeddings",
    "transfer": "cross-city transfer: pretrain on --source-config, fine-tune on --config at training fractions vs scratch",
    "zeroshot": "zero-shot land use without labels from POI-paragraph prompts (--method text|llm|image) -> "
                "tables/zeroshot_<method>, rejects, GeoJSON, MLflow",
    "report": "self-contained HTML report (maps, ablation/per-class tables, data summaries), logged to MLflow",
}


def _run(argv: list[str]) -> int:
    from landuse.stages import STAGES

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: landuse run STAGE --config conf/X.yaml [--force] [key=value ...]\n\nstages:")
        for name, stage in STAGES.items():
            print(f"  {name:<16} {stage.description}")
        print("\ntraining and prediction:")
        for name, text in TASKS.items():
            print(f"  {name:<16} {text}")
        return 0 if argv else 2
    name = argv[0]
    if name not in STAGES and name not in TASKS:
        print(f"error: unknown stage {name!r} (stages: {', '.join([*STAGES, *TASKS])})", file=sys.stderr)
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


def _pipeline(argv: list[str]) -> int:
    from landuse.entrypoints.pipeline import main

    return main(argv)


COMMANDS = {
    "synth": (_synth, "generate a synthetic city (profiles: shenzhen, london)"),
    "pipeline": (_pipeline, "run every enabled stage, skipping unchanged ones"),
    "run": (_run, "run one stage: landuse run STAGE --config ..."),
    "config": (_config, "print the resolved configuration"),
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
