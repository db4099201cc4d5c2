"""Quarantine bookkeeping: per-source summaries (in = kept + rejected) and writing rejects.

Rejected rows are never dropped: each lands in ``<tables>/rejects/<source>/`` (Parquet, schema
``REJECTS_SCHEMA``: source, reason, raw) and is counted by reason in the source's summary. The
stage runner decides the directory; the helpers here take a path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Union

from landuse.ingest.errors import IngestError
from landuse.spark.schemas import REASON, T_REJECTS

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from typing_extensions import TypeIs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSummary:
    """Row accounting for one table of one source: rows in, kept, rejected (by reason)."""

    source: str
    table: str  # "trips", "locations", "pois", "landuse_polygons", ...
    path: str
    rows_in: int
    kept: int
    rejected: int
    by_reason: Mapping[str, int] = field(default_factory=dict)

    def check(self) -> "IngestSummary":
        """Raise :class:`IngestError` unless in == kept + rejected and the reasons add up."""
        if self.rows_in != self.kept + self.rejected:
            raise IngestError(
                f"{self.path}: source {self.source!r} {self.table}: {self.rows_in} rows in but "
                f"{self.kept} kept + {self.rejected} rejected = {self.kept + self.rejected}"
            )
        if sum(self.by_reason.values()) != self.rejected:
            raise IngestError(
                f"{self.path}: source {self.source!r} {self.table}: rejects by reason sum to "
                f"{sum(self.by_reason.values())}, not {self.rejected}"
            )
        return self

    def line(self) -> str:
        """One human-readable line: ``source table: in N = kept K + rejected R (reason n, ...)``."""
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(self.by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
        tail = f" ({reasons})" if reasons else ""
        return (
            f"{self.source:<16} {self.table:<16} in {self.rows_in:>12,} = kept {self.kept:>12,} "
            f"+ rejected {self.rejected:>10,}{tail}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain form for manifests."""
        return {
            "source": self.source,
            "table": self.table,
            "path": self.path,
            "rows_in": self.rows_in,
            "kept": self.kept,
            "rejected": self.rejected,
            "by_reason": dict(sorted(self.by_reason.items())),
        }


def reason_counts(rejects: Union["DataFrame", "pd.DataFrame"]) -> dict[str, int]:
    """Rejected rows per reason (one small aggregation; nothing but the counts reaches the driver)."""
    if _is_pandas(rejects):
        return {str(k): int(v) for k, v in rejects[REASON].value_counts().items()}
    return {row[REASON]: int(row["count"]) for row in rejects.groupBy(REASON).count().collect()}


def written_reason_counts(spark: "SparkSession", path: Path) -> dict[str, int]:
    """Rows per reason of a rejects table as written under ``path`` (Delta or Parquet; only its ``reason`` column)."""
    from landuse.spark.io import read_spark

    return reason_counts(read_spark(spark, path).select(REASON))


def write_empty_rejects(path: Path) -> Path:
    """Write an empty rejects table (``REJECTS_SCHEMA``, one Parquet file) for a source without rejected rows.

    Written on the driver: no Spark job (and no table-format transaction) for a table with no rows.
    """
    import pandas as pd

    from landuse.spark.schemas import RAW, SOURCE

    return write_rejects(pd.DataFrame({SOURCE: [], REASON: [], RAW: []}, dtype=object), path)


def format_summaries(summaries: Iterable[IngestSummary]) -> str:
    """One line per source table, for logs and the CLI."""
    return "\n".join(s.line() for s in summaries)


def log_summaries(summaries: Iterable[IngestSummary], logger: logging.Logger | None = None) -> None:
    """Log one INFO line per source table (WARNING when it has rejects)."""
    logger = logger or log
    for s in summaries:
        logger.log(logging.WARNING if s.rejected else logging.INFO, "ingest %s", s.line())


def check_all(summaries: Iterable[IngestSummary]) -> list[IngestSummary]:
    """:meth:`IngestSummary.check` each summary; return them as a list."""
    return [s.check() for s in summaries]


def rejects_path(tables_dir: Path, source: str) -> Path:
    """``<tables>/rejects/<source>/`` (the conventional location; the stage runner decides)."""
    return Path(tables_dir) / T_REJECTS / source


def write_rejects(rejects: Union["DataFrame", "pd.DataFrame"], path: Path, mode: str = "overwrite") -> Path:
    """Write a rejects table (Spark or pandas, ``REJECTS_SCHEMA``) as Parquet under ``path``."""
    from landuse.storage import location, remove_tree, write_parquet

    path = location(path) if isinstance(path, str) else path  # a local Path or a store URI (landuse.storage)
    if _is_pandas(rejects):
        import pyarrow as pa

        from landuse.spark.schemas import RAW, SOURCE

        if mode == "overwrite":
            remove_tree(path)
        schema = pa.schema([(SOURCE, pa.string()), (REASON, pa.string()), (RAW, pa.string())])
        table = pa.Table.from_pandas(rejects[[SOURCE, REASON, RAW]], schema=schema, preserve_index=False)
        write_parquet(table, path / "part-00000.parquet")
        return path
    rejects.write.mode(mode).parquet(str(path))
    return path


def _is_pandas(obj: object) -> TypeIs["pd.DataFrame"]:
    return type(obj).__module__.startswith("pandas")
