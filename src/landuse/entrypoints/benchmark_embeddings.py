"""``landuse run benchmark-embeddings``: the benchmark-embeddings stage (landuse.stages.benchmarks, landuse.evaluation.embeddings_benchmark).

Settings are the config's ``benchmark_embeddings`` section; each flag sets one of its keys
(``--labels CSV`` is ``benchmark_embeddings.labels``, ``--embeddings NAME=PATH`` adds
``benchmark_embeddings.embeddings.NAME``, ``--splits K``, ``--no-mlflow`` is ``mlflow=false``). Runs
the stage even when ``benchmark_embeddings.enabled`` is false (that flag makes it a step of ``landuse
pipeline``); an unchanged benchmark is skipped and its committed tables are printed again
(``--force`` reruns).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from landuse.config import ConfigError, override_item
from landuse.entrypoints.common import add_config_args, stage_main
from landuse.training.signals import kill_runs_on_sigterm


def parse_embeddings(items: list[str] | None) -> dict[str, Path]:
    """``NAME=PATH`` items → {name: path}; names unique and non-empty."""
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--embeddings {item!r}: expected NAME=PATH (a Parquet table with region_id, vector)")
        if name.strip() in out:
            raise ConfigError(f"--embeddings: name {name.strip()!r} given twice")
        out[name.strip()] = Path(path.strip())
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments: each settings flag sets a ``benchmark_embeddings`` key."""
    parser = argparse.ArgumentParser(
        prog="landuse run benchmark-embeddings",
        description="benchmark region embeddings (each modality, fused, the HGCN hidden layer, extra tables) against "
                    "baselines (raw OD rows, POI counts, random): (a) land-use distribution with an MLP probe over "
                    "repeated splits; (b) with --labels, the MVURE/MGFN protocol on NYC mh-180 (Ridge 5-fold for "
                    "crime / check-in counts, KMeans(12) vs community districts) beside the published results")
    add_config_args(parser)
    parser.add_argument("--labels", type=Path, default=None,
                        help="per-region labels CSV (region_id, community_district, crime_count, checkin_count) for "
                             "task (b) (benchmark_embeddings.labels); default: ${vars.data_root}/labels/"
                             "mh180_region_labels.csv when the config has vars.data_root and that file exists; "
                             "otherwise task (b) is skipped")
    parser.add_argument("--embeddings", action="append", metavar="NAME=PATH", default=None,
                        help="an extra embedding table (Parquet: region_id, vector) to benchmark; repeat for more "
                             "(benchmark_embeddings.embeddings.NAME)")
    parser.add_argument("--splits", type=int, default=None,
                        help="splits of task (a) (benchmark_embeddings.splits; default: training.splits, at most 10)")
    parser.add_argument("--no-mlflow", action="store_true",
                        help="write the tables without logging an MLflow run (benchmark_embeddings.mlflow=false)")
    return parser


def overrides(args: argparse.Namespace) -> list[str]:
    """``benchmark_embeddings.*`` overrides of the flags given (``enabled=true`` first: this command runs it);
    a trailing ``key=value`` wins over them."""
    section = "benchmark_embeddings"
    items = [f"{section}.enabled=true"]
    if args.labels is not None:
        items.append(override_item(f"{section}.labels", str(args.labels)))
    extra = parse_embeddings(args.embeddings)
    if extra:  # merged into the config's own extra tables
        items.append(override_item(f"{section}.embeddings", {name: str(path) for name, path in extra.items()}))
    if args.splits is not None:
        items.append(override_item(f"{section}.splits", args.splits))
    if args.no_mlflow:
        items.append(f"{section}.mlflow=false")
    return items


def summary(config, result) -> None:  # config: landuse.config.Config; result: landuse.runner.StageResult
    """Print the tables, notes and where they went, from the committed output (also when unchanged)."""
    from landuse.manifest import read_manifest

    out = result.outputs["benchmark-embeddings"]
    facts = read_manifest(out) or {}
    print((out / "landuse_task.md").read_text())
    if (out / "mvure_protocol.md").is_file():
        print((out / "mvure_protocol.md").read_text())
    for note in facts.get("notes") or []:
        print(f"benchmark-embeddings: {note}")
    if result.status == "unchanged":
        print("benchmark-embeddings: settings, input files and tables unchanged since the last run; its results stand "
              "(--force reruns)")
    print(f"benchmark-embeddings: tables -> {out}")
    if facts.get("mlflow_run_id"):
        print(f"benchmark-embeddings: MLflow run {facts['mlflow_run_id']} ({config.mlflow_uri}, "
              f"experiment {config.mlflow.experiment})")


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run benchmark-embeddings --config conf/X.yaml [--labels CSV] [--embeddings NAME=PATH] [key=value ...]``."""
    return stage_main("benchmark-embeddings", argv, parser=build_parser(), overrides=overrides, summary=summary)
