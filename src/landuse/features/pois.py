"""POIs per region: the assigned POI table and per-region counts by category token."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from landuse.spark.schemas import CATEGORY_PREFIX, REGION_ID

LEVEL = "level"
TOKEN = "token"
N_POIS = "n_pois"


def category_columns(df: DataFrame) -> list[str]:
    """The category-level columns present (cat_l1, cat_l2, ...), in level order."""
    return sorted((c for c in df.columns if c.startswith(CATEGORY_PREFIX)), key=lambda c: int(c[len(CATEGORY_PREFIX):]))


def poi_counts(poi_regions: DataFrame) -> DataFrame:
    """(region_id, level, token, n_pois) for POIs assigned to a region; NULL tokens are skipped."""
    levels = category_columns(poi_regions)
    stacked = poi_regions.where(F.col(REGION_ID).isNotNull()).select(
        REGION_ID,
        F.explode(
            F.array(*[F.struct(F.lit(int(c[len(CATEGORY_PREFIX):])).alias(LEVEL), F.col(c).alias(TOKEN)) for c in levels])
        ).alias("t"),
    )
    return (
        stacked.select(REGION_ID, F.col(f"t.{LEVEL}").alias(LEVEL), F.col(f"t.{TOKEN}").alias(TOKEN))
        .where(F.col(TOKEN).isNotNull())
        .groupBy(REGION_ID, LEVEL, TOKEN)
        .agg(F.count(F.lit(1)).cast("long").alias(N_POIS))
    )
