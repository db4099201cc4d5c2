"""Reading and writing stage tables under ``<work_dir>/tables`` (local or on an object store).

Writers here put data into a directory the stage runner handed out (a staging directory); the
runner commits it atomically (:mod:`landuse.manifest`). Small tables built on the driver (regions,
edges, labels) are written with pyarrow/geopandas as one Parquet file; big ones (trips, flows,
POIs) with Spark, never collected — as a **Delta Lake** table when the session resolved Delta
(its jars present, ``storage.format: auto|delta``), else as Parquet. Every staging directory is
fresh, so a Delta table here has exactly one version and its data files are also readable as plain
Parquet (pyarrow and Petastorm skip ``_delta_log``); Spark reads it as Delta.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from landuse.config import Config, ConfigError
from landuse.manifest import UnsafeOutputError, is_committed, verify_output, work_dir_cache
from landuse.storage import is_local, parquet_files, parquet_metadata, read_parquet, write_parquet

if TYPE_CHECKING:
    import geopandas as gpd
    from pyspark.sql import DataFrame, SparkSession

PART = "part-00000.parquet"


def table_path(config: Config, name: str) -> Path:
    """Final location of table ``name`` for this run (``rejects/<source>`` style names allowed).

    Raises:
        UnsafeOutputError: ``name`` is absolute, or has an empty, ``.`` or ``..`` segment (it would
            leave the tables dir).
    """
    segments = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or any(s in ("", ".", "..") for s in segments) or ":" in segments[0]:
        raise UnsafeOutputError(f"table name {name!r}: not a relative name inside {config.tables_dir} "
                                "(no absolute path, '.' or '..' segments)")
    return config.tables_dir / name


def require_table(config: Config, name: str, producer: str) -> Path:
    """Path of an existing table whose files match its manifest, or a one-line error saying what to rerun.

    Raises:
        ConfigError: the table does not exist (run ``producer`` first).
        IntegrityError: a file of the table is missing, extra, truncated or changed
            (:func:`landuse.manifest.verify_output`).
    """
    path = table_path(config, name)
    # Locally a table directory only appears by rename, complete; on an object store only its
    # manifest (written last) says the copy is complete (landuse.manifest).
    if not (path.is_dir() if is_local(path) else is_committed(path)):
        raise ConfigError(f"table {name} not found at {path}: run `landuse run {producer}` first")
    cache = work_dir_cache(config.work_dir)
    try:
        verify_output(path, f"table {name}", f"landuse run {producer} --force", cache)
    finally:
        if cache is not None:
            cache.save()
    return path


def is_delta(directory: Path) -> bool:
    """Whether ``directory`` holds a Delta Lake table (it has a ``_delta_log``)."""
    return (directory / "_delta_log").exists()


def read_spark(spark: "SparkSession", directory: Path) -> "DataFrame":
    """A table directory (Delta or Parquet) as a Spark DataFrame."""
    if is_delta(directory):
        return spark.read.format("delta").load(str(directory))
    return spark.read.parquet(str(directory))


def read_table(spark: "SparkSession", config: Config, name: str, producer: str) -> "DataFrame":
    """A committed table as a Spark DataFrame."""
    return read_spark(spark, require_table(config, name, producer))


def write_spark(df: "DataFrame", directory: Path, partitions: int | None = None,
                partition_by: list[str] | None = None) -> None:
    """Write a Spark DataFrame into ``directory`` (a staging dir) as Delta or Parquet (module docstring)."""
    from landuse.spark.session import session_table_format

    out = df.repartition(partitions) if partitions else df
    fmt = "delta" if session_table_format(df.sparkSession).startswith("delta") else "parquet"
    writer = out.write.format(fmt).mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(str(directory))


def write_pandas(frame: pd.DataFrame, directory: Path, schema: pa.Schema | None = None) -> None:
    """Write a small pandas table as one Parquet file into ``directory``."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    write_parquet(table, directory / PART)


def write_geoparquet(frame: "gpd.GeoDataFrame", directory: Path) -> None:
    """Write a GeoDataFrame as GeoParquet (WKB geometry + CRS metadata) into ``directory``."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    if isinstance(directory, Path):
        directory.mkdir(parents=True, exist_ok=True)
    (directory / PART).write_bytes(buffer.getvalue())


def read_geoparquet(config: Config, name: str, producer: str) -> "gpd.GeoDataFrame":
    """A GeoParquet table written by :func:`write_geoparquet`."""
    import geopandas as gpd

    return gpd.read_parquet(io.BytesIO((require_table(config, name, producer) / PART).read_bytes()))


def read_pandas(config: Config, name: str, producer: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A small table (or some of its columns) into pandas; only for driver-sized tables."""
    return read_parquet(require_table(config, name, producer), columns=columns).to_pandas()


def parquet_rows(directory: Path) -> int:
    """Row count of the Parquet files in ``directory`` from their footers (works on staging dirs)."""
    return sum(parquet_metadata(f).num_rows for f in parquet_files(directory))
