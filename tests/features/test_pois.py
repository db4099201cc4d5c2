"""Per-region POI counts by category level."""

from __future__ import annotations

from landuse.features.pois import category_columns, poi_counts


def test_poi_counts_by_level(spark) -> None:
    rows = [
        ("a", 1, "food", "food:cafe", None),
        ("b", 1, "food", "food:bar", None),
        ("c", 1, "shop", "shop:grocery", "x"),
        ("d", 2, "food", "food:cafe", None),
        ("e", None, "food", "food:cafe", None),  # outside every region: not counted
    ]
    df = spark.createDataFrame(rows, "poi_id string, region_id long, cat_l1 string, cat_l2 string, cat_l3 string")
    assert category_columns(df) == ["cat_l1", "cat_l2", "cat_l3"]
    got = {(r.region_id, r.level, r.token): r.n_pois for r in poi_counts(df).collect()}
    assert got == {
        (1, 1, "food"): 2,
        (1, 1, "shop"): 1,
        (1, 2, "food:cafe"): 1,
        (1, 2, "food:bar"): 1,
        (1, 2, "shop:grocery"): 1,
        (1, 3, "x"): 1,
        (2, 1, "food"): 1,
        (2, 2, "food:cafe"): 1,
    }
