"""Stage runner: safe (atomic) outputs, manifests, and skipping of unchanged stages.

Every step of landuse is a :class:`Stage` of one DAG (:data:`landuse.stages.STAGES`): the data
stages that write tables (ingest … assemble) and the steps that train, evaluate and publish
(pretrain, train, ablation, fusion, tune, transfer, the benchmarks, predict, monitor, report).
A stage declares its outputs (directories), the config sections and raw input paths it depends on,
the upstream stages whose outputs it reads (``upstream``: required; ``optional_upstream``: read
when present, e.g. the report; ``after``: ordering only), and anything else its result follows (``extra``, e.g. the
registered champion that ``predict`` scores with). :func:`run_stage` computes a fingerprint from
those; when every output's manifest carries the same fingerprint the stage is skipped
(``force=True`` reruns it). Otherwise the stage fills staging directories, the runner writes a
manifest into each and commits them atomically (:mod:`landuse.manifest`). A stage that finished
but should not be reused (an experiment with failed variants) sets ``ctx.summary["complete"] =
False``: its outputs are committed, and the next run reruns it. :func:`run_pipeline` runs a
stage with everything it depends on (``until``), in the registry's (topological) order.

Safety and integrity (:mod:`landuse.manifest`, :mod:`landuse.locks`):

* A stage run holds the work dir's lock shared and its own stage lock exclusively
  (:func:`landuse.locks.stage_lock`, re-entrant within a process; a pipeline holds the work dir's
  lock exclusively): a second run of the same stage, or any run beside a pipeline, is refused with
  one line naming the holder.
* Every output must lie inside ``work_dir`` (or ``synth.dir``), and an existing output directory is
  only replaced when it is empty or a landuse output (:class:`~landuse.manifest.UnsafeOutputError`).
* Each output's manifest records its files (``parts``). Before a stage uses an upstream output, the
  runner verifies it; a missing, extra, truncated or changed file stops the stage with one line
  naming the table, the file and the command that rebuilds it
  (:class:`~landuse.manifest.IntegrityError`): the runner never reruns an upstream stage on its own.
  A stage whose *own* outputs fail verification is not skipped as unchanged: it reruns, so
  ``landuse pipeline`` (which runs the upstream stage first) repairs a damaged table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import landuse
from landuse.config import Config, ConfigError
from landuse.manifest import (
    PARTS_KEY,
    HashCache,
    IntegrityError,
    UnsafeOutputError,
    check_replaceable,
    commit_dir,
    content_record,
    discard_dir,
    fingerprint,
    now_iso,
    read_manifest,
    recover_dir,
    staging_dir,
    verify_output,
    work_dir_cache,
    write_manifest,
)
from landuse.storage import is_local, is_within, remove_tree, location, parquet_files, parquet_metadata

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
    optional_upstream: tuple[str, ...] = ()  # read when present (fingerprinted then), never required
    after: tuple[str, ...] = ()  # run after these (ordering only: e.g. synth writes the raw files regions hashes)
    extra: Callable[[Config], Any] | None = None  # JSON-able state outside the work dir that the result follows
    group: str = "data"  # data | model | report: how help and docs list it
    keep_incomplete: bool = False  # on failure keep what the stage wrote as <output>.incomplete (rows done so far)

    @property
    def dependencies(self) -> tuple[str, ...]:
        """Every stage this one reads from, required or optional (the DAG's edges)."""
        return (*self.after, *self.upstream, *self.optional_upstream)


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
            upstream[out_name] = manifest.get("fingerprint")  # None: written before fingerprints
    for name in stage.optional_upstream:
        if name not in registry or not registry[name].enabled(config):
            continue  # not a registered stage (yet) or disabled: contributes nothing
        for out_name, out_path in output_paths(registry[name], config).items():
            manifest = read_manifest(out_path)
            if manifest is not None:  # absent: the stage runs without it (and reruns once it appears)
                upstream[out_name] = manifest.get("fingerprint")  # None: written before fingerprints
    config_hash = config.section_hash(*stage.config_keys)
    parts = [stage.name, stage.version, landuse.__version__, config_hash, inputs, upstream]
    if table_format != "parquet":
        parts.append(table_format)  # parquet adds nothing, so fingerprints from before Delta stay valid
    extra = stage.extra(config) if stage.extra is not None else None
    if extra is not None:
        parts.append(extra)
    return {
        "fingerprint": fingerprint(parts),
        "table_format": table_format,
        "config_hash": config_hash,
        "input_hashes": inputs,
        "upstream_fingerprints": upstream,
        **({"extra": extra} if extra is not None else {}),
    }


def _what(config: Config, name: str, path: Path) -> str:
    """How messages name an output: ``table trips`` under the tables dir, else ``output synth``."""
    return f"table {name}" if is_within(path, config.tables_dir) else f"output {name}"


def check_output_paths(stage: Stage, config: Config, outputs: Mapping[str, Path]) -> None:
    """Refuse outputs outside ``work_dir`` (or ``synth.dir``, or the local driver dir of a store work dir), or
    holding the work dir: the runner replaces what it commits."""
    for name, final in outputs.items():
        if is_within(config.work_dir, final, allow_equal=True):
            raise UnsafeOutputError(f"stage {stage.name}: output {name} ({final}) contains work_dir {config.work_dir}; "
                                    "refusing to write there (choose an output directory beside the work dir)")
        if (is_within(final, config.work_dir) or is_within(final, config.synth.dir, allow_equal=True)
                or is_within(final, config.driver_dir)):
            continue
        raise UnsafeOutputError(f"stage {stage.name}: output {name} ({final}) is outside work_dir {config.work_dir} "
                                f"and synth.dir {config.synth.dir}; refusing to write there")


def verify_upstream(stage: Stage, config: Config, registry: Mapping[str, Stage], cache: HashCache) -> None:
    """Check every committed output of the stage's enabled upstream stages against its manifest.

    Raises:
        IntegrityError: one line naming the table, the file and ``landuse run <upstream> --force``.
    """
    for name in (*stage.upstream, *stage.optional_upstream):
        if (name not in registry and name in stage.optional_upstream) or not registry[name].enabled(config):
            continue
        for out_name, out_path in output_paths(registry[name], config).items():
            if name in stage.optional_upstream and read_manifest(out_path) is None:
                continue
            verify_output(out_path, _what(config, out_name, out_path), f"landuse run {name} --force", cache)


def _damaged(stage: Stage, config: Config, outputs: Mapping[str, Path], cache: HashCache) -> str | None:
    """The first integrity problem of the stage's own committed outputs, or None."""
    for name, final in outputs.items():
        try:
            verify_output(final, _what(config, name, final), f"landuse run {stage.name} --force", cache)
        except IntegrityError as exc:
            return str(exc)
    return None


def run_stage(
    stage: Stage,
    config: Config,
    registry: Mapping[str, Stage] | None = None,
    *,
    force: bool = False,
    spark: "SparkSession | None" = None,
) -> StageResult:
    """Run one stage with atomic outputs, or skip it when its fingerprint is unchanged (and its outputs verify).

    Holds the work dir's lock for the run (re-entrant: the pipeline's own lock covers its stages).

    Raises:
        landuse.locks.LockError: another process holds the work dir's lock.
        UnsafeOutputError: an output lies outside the work dir, or would replace a directory that is
            not a landuse output.
        IntegrityError: an upstream output's files differ from its manifest.
    """
    from landuse.locks import stage_lock

    with stage_lock(config, stage.name, command=f"run_stage {stage.name}"):
        return _run_stage(stage, config, registry, force=force, spark=spark)


def _run_stage(
    stage: Stage,
    config: Config,
    registry: Mapping[str, Stage] | None,
    *,
    force: bool,
    spark: "SparkSession | None",
) -> StageResult:
    registry = registry or {stage.name: stage}
    outputs = output_paths(stage, config)
    check_output_paths(stage, config, outputs)
    for final in outputs.values():
        recover_dir(final)
    if not stage.enabled(config):
        log.info("stage %s: disabled by config", stage.name)
        return StageResult(stage.name, "disabled", 0.0, outputs)
    for name, final in outputs.items():  # fail before any work (or a Spark session), not at the commit
        check_replaceable(final, f"stage {stage.name}: output {name} ({final})")
    cache = work_dir_cache(config.work_dir) or HashCache(config.work_dir / ".hashcache.json")
    try:
        verify_upstream(stage, config, registry, cache)  # before a Spark session costs half a minute
    finally:
        cache.save()
    table_format = "parquet"
    if _needs_spark(stage, config):
        from landuse.spark.session import build_session, session_table_format

        # The session decides the table format (Delta when its jars are present), which is part of
        # the fingerprint, so a Spark stage gets its session before the skip check.
        spark = spark or build_session(config)
        table_format = session_table_format(spark)
    try:
        fp = stage_fingerprint(stage, config, registry, cache, table_format)
    finally:
        cache.save()  # input hashes computed before a failure are still worth keeping
    current = [read_manifest(path) for path in outputs.values()]
    if not force and all(m is not None and m.get("fingerprint") == fp["fingerprint"] and m.get("complete", True)
                         for m in current):
        damaged = _damaged(stage, config, outputs, cache)
        cache.save()
        if damaged is None:
            log.info("stage %s: inputs and config unchanged, skipping (use --force to rerun)", stage.name)
            return StageResult(stage.name, "unchanged", 0.0, outputs)
        log.warning("stage %s: %s; rerunning it", stage.name, damaged.split("; rerun")[0])

    started, t0 = now_iso(), time.perf_counter()
    ctx = StageContext(config=config, staged={name: staging_dir(path) for name, path in outputs.items()}, _spark=spark,
                       force=force)
    log.info("stage %s: running -> %s", stage.name, ", ".join(str(p) for p in outputs.values()))
    parts: dict[str, dict[str, Any]] = {}
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
            parts[name] = manifest[PARTS_KEY] = content_record(staged)
            write_manifest(staged, manifest)
    except BaseException:
        for name, staged in ctx.staged.items():
            if stage.keep_incomplete and is_local(staged) and any(Path(staged).iterdir()):
                aside = incomplete_path(outputs[name])
                if aside.exists():
                    remove_tree(aside)
                Path(staged).rename(aside)  # the committed output stays as it was; the partial rows sit beside it
                log.warning("stage %s: failed; what it wrote so far is in %s", stage.name, aside)
            else:
                discard_dir(staged)
        raise
    for name, staged in ctx.staged.items():
        if stage.keep_incomplete and is_local(outputs[name]) and incomplete_path(outputs[name]).exists():
            remove_tree(incomplete_path(outputs[name]))  # superseded by a complete output
        commit_dir(staged, outputs[name])
        cache.adopt(outputs[name], parts[name])
    cache.save()
    log.info("stage %s: done in %.1f s", stage.name, seconds)
    return StageResult(stage.name, "ran", seconds, outputs)


def plan(registry: Mapping[str, Stage], until: str | None = None, only: Sequence[str] | None = None) -> list[str]:
    """The stages a pipeline run visits, in the registry's order: ``until`` and every stage it depends
    on (required or optional, transitively); all stages when ``until`` is None; ``only`` narrows it."""
    if until is None:
        names = list(registry)
    else:
        needed: set[str] = set()
        stack = [until]
        while stack:
            name = stack.pop()
            if name not in needed:
                needed.add(name)
                stage = registry[name]  # an optional upstream that is not a registered stage is left out
                stack.extend(d for d in stage.dependencies if d in registry or d not in stage.optional_upstream)
        names = [name for name in registry if name in needed]
    return [name for name in names if not only or name in only]


def incomplete_path(final: Path) -> Path:
    """Where a failed ``keep_incomplete`` stage leaves its partial output: ``<output>.incomplete``."""
    return final.parent / f"{final.name}.incomplete"


def run_pipeline(
    config: Config,
    registry: Mapping[str, Stage],
    *,
    force: bool = False,
    only: Sequence[str] | None = None,
    until: str | None = None,
) -> list[StageResult]:
    """Run :func:`plan`'s stages in order, sharing one Spark session between them (under the work dir's lock)."""
    from landuse.locks import work_dir_lock

    results: list[StageResult] = []
    spark = None
    with work_dir_lock(config, command="run_pipeline"):
        for name in plan(registry, until, only):
            stage = registry[name]
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
