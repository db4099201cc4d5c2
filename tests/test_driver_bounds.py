"""Every place that brings Spark data to the driver is listed here with the reason it is bounded.

Per-trip, per-OD-pair, per-POI and per-building rows never come to the driver; region tables,
per-region summaries and reason counts do. A new ``toPandas`` / ``collect`` / Arrow collect in
``src/landuse`` fails this test until it is added below with its bound (or removed).
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "landuse"
COLLECT = re.compile(r"\.(toPandas|collect|_collect_as_arrow|toArrow|toLocalIterator|collectAsList)\(")

# (file relative to src/landuse, text on the line) -> why the result is driver-sized
BOUNDED: dict[tuple[str, str], str] = {
    ("stages/poi_features.py", "level_token_counts(poi_regions, lv).toPandas()"):
        "per (region, level, token) counts: at most regions x vocabulary rows",
    ("spatial/regions.py", "df.select(*REGION_COLUMNS).toPandas()"): "the region table itself",
    ("spatial/engines.py", "regions.select(REGION_ID, GEOMETRY).toPandas()"): "the region polygons (index / tie rule)",
    ("spatial/overlay.py", "sums.toPandas()"): "per region x class area sums",
    ("ingest/quarantine.py", "groupBy(REASON).count().collect()"): "one row per reject reason",
    ("ingest/validation.py", "groupBy(REASON).count().collect()"): "one row per reject reason",
    ("data/patches.py", "select(_TOKEN).distinct().collect()"): "the POI token vocabulary",
    ("data/patches.py", "counts.collect()"): "per (image tile, token) counts: at most tiles x vocabulary",
    ("stages/embeddings.py", "df.toArrow()"): "flow sums per region pair: O(edges between regions), never per trip",
    ("notebook.py", "obj.limit(rows).toPandas()"): "a display preview of at most `rows` rows",
    ("entrypoints/score.py", 'groupBy("dominant_class").count().collect()'): "one row per land-use class",
    ("serving/batch.py", '.join(ids, "_id", "left_anti").limit(1).collect()'): "at most one unknown edge endpoint",
    ("serving/new_regions.py", "level_token_counts(train_pois, level).toPandas()"):
        "per (region, token) counts of the training regions: at most regions x vocabulary rows",
    ("serving/new_regions.py", "level_token_counts(new_pois, level).toPandas()"):
        "per (region, token) counts of the new regions: at most regions x vocabulary rows",
    ("zeroshot/prompts.py", "T_POI_COUNTS, \"pois\").where(F.col(LEVEL) <= cfg.level).toPandas()"):
        "poi_counts: per (region, level, token) counts, at most regions x vocabulary rows",
}


def _calls() -> list[tuple[str, str]]:
    found = []
    for file in sorted(SRC.rglob("*.py")):
        for line in file.read_text().splitlines():
            if COLLECT.search(line) and not line.lstrip().startswith("#"):
                found.append((str(file.relative_to(SRC)), line.strip()))
    return found


def test_every_driver_collect_is_listed_with_its_bound() -> None:
    unlisted = [(f, line) for f, line in _calls() if not any(f == k[0] and k[1] in line for k in BOUNDED)]
    assert not unlisted, "driver collects without a stated bound (add to BOUNDED or remove):\n" + "\n".join(
        f"  {f}: {line}" for f, line in unlisted)


def test_listed_collects_still_exist() -> None:
    calls = _calls()
    stale = [k for k in BOUNDED if not any(f == k[0] and k[1] in line for f, line in calls)]
    assert not stale, f"BOUNDED lists collects that are gone: {stale}"
