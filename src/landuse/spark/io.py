"""Reading and writing stage tables (Parquet / GeoParquet) under ``<work_dir>/tables``.

Writers here put data into a directory the stage runner handed out (a staging directory); the
runner commits it atomically. Small tables built on the driver (regions, edges, labels) are
written with pyarrow/geopandas; big ones (trips, flows, POIs) with Spark, never collected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from landuse.config import Config, ConfigError

if TYPE_CHECKING:
    import geopandas as gpd
    from pyspark.sql import DataFrame, SparkSession

PART = "part-00000.parquet"


def table_path(config: Config, name: str) -> Path:
    """Final location of table ``name`` for this run."""
    return config.tables_dir / name


def require_table(config: Config, name: str, producer: str) -> Path:
    """Path of an existing table, or a one-line error saying which stage makes it."""
    path = table_path(config, name)
    if not path.is_dir():
        raise ConfigError(f"table {name} not found at {path}: run `landuse run {producer}` first")
    return path


def read_table(spark: "SparkSession", config: Config, name: str, producer: str) -> "DataFrame":
    """A committed table as a Spark DataFrame."""
    return spark.read.parquet(str(require_table(config, name, producer)))


def write_spark(df: "DataFrame", directory: Path, partitions: int | None = None) -> None:
    """Write a Spark DataFrame as Parquet files directly into ``directory`` (a staging dir)."""
    out = df.repartition(partitions) if partitions else df
    out.write.mode("overwrite").parquet(str(directory))


def write_pandas(frame: pd.DataFrame, directory: Path, schema: pa.Schema | None = None) -> None:
    """Write a small pandas table as one Parquet file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table, directory / PART)


def write_geoparquet(frame: "gpd.GeoDataFrame", directory: Path) -> None:
    """Write a GeoDataFrame as GeoParquet (WKB geometry + CRS metadata) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(directory / PART, index=False)


def read_geoparquet(config: Config, name: str, producer: str) -> "gpd.GeoDataFrame":
    """A GeoParquet table written by :func:`write_geoparquet`."""
    import geopandas as gpd

    return gpd.read_parquet(require_table(config, name, producer) / PART)


def read_pandas(config: Config, name: str, producer: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A small table (or some of its columns) into pandas; only for driver-sized tables."""
    return pq.read_table(require_table(config, name, producer), columns=columns).to_pandas()


def parquet_rows(directory: Path) -> int:
    """Row count of the Parquet files in ``directory`` from their footers (works on staging dirs)."""
    return sum(pq.read_metadata(f).num_rows for f in Path(directory).rglob("*.parquet"))
