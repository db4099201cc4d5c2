"""Stage runner: safe (atomic) outputs, manifests, and skipping of unchanged stages.

A :class:`Stage` declares its outputs (directories), the config sections and raw input paths it
depends on, and the upstream stages whose outputs it reads. :func:`run_stage` computes a
fingerprint from those; when every output's manifest carries the same fingerprint the stage is
skipped (``force=True`` reruns it). Otherwise the stage fills staging directories, the runner
writes a manifest into each and commits them atomically (:mod:`landuse.manifest`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import landuse
from landuse.config import Config, ConfigError
from landuse.manifest import (
    HashCache,
    commit_dir,
    discard_dir,
    fingerprint,
    now_iso,
    read_manifest,
    recover_dir,
    staging_dir,
    write_manifest,
)
from landuse.storage import location, parquet_files, parquet_metadata

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What a stage function receives: config, staging dirs for its outputs, a lazy Spark session."""

    config: Config
    staged: dict[str, Path]
    _spark: "SparkSession | None" = None
    summary: dict[str, Any] = field(default_factory=dict)  # merged into every output manifest
    force: bool = False  # the user asked to rerun (--force): lets a stage replace a table by an empty one

    @property
    def spark(self) -> "SparkSession":
        """The run's SparkSession, built on first use (stages that need no Spark never start it)."""
        if self._spark is None:
            from landuse.spark.session import build_session

            self._spark = build_session(self.config)
        return self._spark

    def out(self, name: str) -> Path:
        """Staging directory for output ``name`` (committed by the runner after success)."""
        return self.staged[name]


@dataclass(frozen=True)
class Stage:
    """A pipeline stage; see the module docstring."""

    name: str
    description: str
    run: Callable[[StageContext], None]
    outputs: Callable[[Config], Mapping[str, Path]]
    config_keys: tuple[str, ...] = ("seed",)
    inputs: Callable[[Config], list[Path]] = lambda config: []
    upstream: tuple[str, ...] = ()
    enabled: Callable[[Config], bool] = lambda config: True
    version: str = "1"  # bump when the stage's logic changes its output, so unchanged runs rerun


@dataclass(frozen=True)
class StageResult:
    """Outcome of one stage: ``ran`` or ``unchanged`` (skipped) or ``disabled``."""

    name: str
    status: str
    seconds: float
    outputs: Mapping[str, Path]


def output_paths(stage: Stage, config: Config) -> dict[str, Path]:
    """Resolved final output directories of ``stage`` (local paths or URIs, see landuse.storage)."""
    return {name: location(path) if isinstance(path, str) else path for name, path in stage.outputs(config).items()}


def stage_fingerprint(
    stage: Stage,
    config: Config,
    registry: Mapping[str, Stage],
    cache: HashCache,
    table_format: str = "parquet",
) -> dict[str, Any]:
    """Everything that determines a stage's outputs, with its combined hash under ``fingerprint``.

    ``table_format`` is the session's resolved format (``delta-<version>`` or ``parquet``): switching
    it reruns the Spark stages, so a table's format always matches what its manifest records.
    """
    inputs = {}
    for path in stage.inputs(config):
        path = location(path) if isinstance(path, str) else path
        if not path.exists():
            raise ConfigError(f"stage {stage.name}: input path not found: {path}")
        inputs[str(path)] = cache.path_hash(path)
    upstream = {}
    for name in stage.upstream:
        if not registry[name].enabled(config):
            continue  # a disabled upstream stage (e.g. no imagery input) contributes nothing
        for out_name, out_path in output_paths(registry[name], config).items():
            manifest = read_manifest(out_path)
            if manifest is None:
                raise ConfigError(
                    f"stage {stage.name}: upstream output {out_name} ({out_path}) is missing; "
                    f"run `landuse run {name}` first"
                )
            upstream[out_name] = manifest["fingerprint"]
    config_hash = config.section_hash(*stage.config_keys)
    parts = [stage.name, stage.version, landuse.__version__, config_hash, inputs, upstream]
    if table_format != "parquet":
        parts.append(table_format)  # parquet adds nothing, so fingerprints from before Delta stay valid
    return {
        "fingerprint": fingerprint(parts),
        "table_format": table_format,
        "config_hash": config_hash,
        "input_hashes": inputs,
        "upstream_fingerprints": upstream,
    }


def run_stage(
    stage: Stage,
    config: Config,
    registry: Mapping[str, Stage] | None = None,
    *,
    force: bool = False,
    spark: "SparkSession | None" = None,
) -> StageResult:
    """Run one stage with atomic outputs, or skip it when its fingerprint is unchanged."""
    registry = registry or {stage.name: stage}
    outputs = output_paths(stage, config)
    for final in outputs.values():
        recover_dir(final)
    if not stage.enabled(config):
        log.info("stage %s: disabled by config", stage.name)
        return StageResult(stage.name, "disabled", 0.0, outputs)
    table_format = "parquet"
    if _needs_spark(stage, config):
        from landuse.spark.session import build_session, session_table_format

        # The session decides the table format (Delta when its jars are present), which is part of
        # the fingerprint, so a Spark stage gets its session before the skip check.
        spark = spark or build_session(config)
        table_format = session_table_format(spark)
    cache = HashCache(config.work_dir / ".hashcache.json")
    fp = stage_fingerprint(stage, config, registry, cache, table_format)
    cache.save()
    current = [read_manifest(path) for path in outputs.values()]
    if not force and all(m is not None and m.get("fingerprint") == fp["fingerprint"] for m in current):
        log.info("stage %s: inputs and config unchanged, skipping (use --force to rerun)", stage.name)
        return StageResult(stage.name, "unchanged", 0.0, outputs)

    started, t0 = now_iso(), time.perf_counter()
    ctx = StageContext(config=config, staged={name: staging_dir(path) for name, path in outputs.items()}, _spark=spark,
                       force=force)
    log.info("stage %s: running -> %s", stage.name, ", ".join(str(p) for p in outputs.values()))
    try:
        stage.run(ctx)
        seconds = time.perf_counter() - t0
        for name, staged in ctx.staged.items():
            manifest = {
                "stage": stage.name,
                "output": name,
                "landuse_version": landuse.__version__,
                "seed": config.seed,
                "started": started,
                "seconds": round(seconds, 3),
                **fp,
                **table_stats(staged),
                **ctx.summary,
            }
            write_manifest(staged, manifest)
    except BaseException:
        for staged in ctx.staged.values():
            discard_dir(staged)
        raise
    for name, staged in ctx.staged.items():
        commit_dir(staged, outputs[name])
    log.info("stage %s: done in %.1f s", stage.name, seconds)
    return StageResult(stage.name, "ran", seconds, outputs)


def run_pipeline(
    config: Config,
    registry: Mapping[str, Stage],
    *,
    force: bool = False,
    only: list[str] | None = None,
) -> list[StageResult]:
    """Run the registry's stages in order, sharing one Spark session between them."""
    results: list[StageResult] = []
    spark = None
    for name, stage in registry.items():
        if only and name not in only:
            continue
        if spark is None and _needs_spark(stage, config):
            from landuse.spark.session import build_session

            spark = build_session(config)
        results.append(run_stage(stage, config, registry, force=force, spark=spark))
    return results


def _needs_spark(stage: Stage, config: Config) -> bool:
    return bool(getattr(stage.run, "needs_spark", True)) and stage.enabled(config)


def no_spark(func: Callable[[StageContext], None]) -> Callable[[StageContext], None]:
    """Mark a stage function that never touches Spark (the pipeline then starts no JVM for it)."""
    func.needs_spark = False  # type: ignore[attr-defined]
    return func


def table_stats(directory: Path) -> dict[str, Any]:
    """Row count and schema of the Parquet files under ``directory`` (footer metadata only)."""
    files = parquet_files(directory)
    if not files:
        return {}
    rows = 0
    schema = None
    for file in files:
        meta = parquet_metadata(file)
        rows += meta.num_rows
        if schema is None:
            schema = meta.schema.to_arrow_schema()
    return {
        "rows": rows,
        "files": len(files),
        "schema": {f.name: str(f.type) for f in schema} if schema is not None else {},
    }
