"""Building morphology (landuse.features.morphology): shape descriptors, per-region aggregation on
Spark against hand-computed values, and the ``buildings`` stage end to end on a tiny synthetic city."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
from shapely import affinity, box
from shapely.geometry import Polygon

from landuse.features.morphology import (
    BUILDING_FEATURES_SCHEMA,
    FEATURE_NAMES,
    HEIGHT_FEATURES,
    orientation_entropy,
    region_building_features,
    region_vector,
    representative_xy,
    shape_descriptors,
)
from landuse.ingest.buildings import buildings_dataframe
from landuse.spark.schemas import AREA_M2, GEOMETRY, REGION_ID
from tests.support.small_inputs import aggregate_regions

F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def rotated(geom, degrees: float):
    return affinity.rotate(geom, degrees, origin="centroid")


# --------------------------------------------------------------------------- per building


def test_feature_order_is_fixed() -> None:
    assert FEATURE_NAMES == (
        "count", "log1p_count", "density_per_km2", "built_up_share", "log_area_mean", "log_area_median",
        "log_area_p90", "log_area_std", "compactness_mean", "elongation_mean", "orientation_entropy",
        "height_mean", "height_max", "height_std", "floor_area_ratio",
    )
    assert FEATURE_NAMES[-4:] == HEIGHT_FEATURES


def test_descriptors_of_known_shapes() -> None:
    rect = box(0, 0, 40, 10)  # 4:1
    shapes = [box(0, 0, 10, 10), rect, rotated(rect, 30), rotated(rect, 120), rotated(rect, -10), box(0, 0, 10, 40),
              rotated(box(0, 0, 10, 10), 90), shapely.Point(0, 0).buffer(10, quad_segs=64), None, Polygon()]
    d = shape_descriptors(np.array(shapes, dtype=object))
    assert d["compactness"][0] == pytest.approx(math.pi / 4)
    assert d["compactness"][1] == pytest.approx(4 * math.pi * 400 / 100**2)
    assert d["compactness"][7] == pytest.approx(1.0, abs=1e-3)  # a disc
    np.testing.assert_allclose(d["elongation"][:7], [0.0, 0.75, 0.75, 0.75, 0.75, 0.75, 0.0], atol=1e-9)
    # long-axis angle from east, counter-clockwise, mod 90: 120° and 30° are the same orientation
    np.testing.assert_allclose(d["orientation"][:7], [0.0, 0.0, 30.0, 30.0, 80.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(d["area"][:3], [100.0, 400.0, 400.0])
    np.testing.assert_allclose(d["perimeter"][:3], [40.0, 100.0, 100.0])
    for key in d:
        assert d[key][8] == 0.0 and d[key][9] == 0.0  # null and empty


def test_representative_point_stays_inside_concave_footprints() -> None:
    ell = Polygon([(0, 0), (10, 0), (10, 1), (1, 1), (1, 10), (0, 10)])  # centroid outside the L
    x, y = representative_xy(np.array([box(0, 0, 10, 10), ell, None], dtype=object))
    assert (x[0], y[0]) == (5.0, 5.0)  # the centroid when it is inside
    assert ell.contains(shapely.Point(x[1], y[1]))
    assert np.isnan(x[2]) and np.isnan(y[2])


def test_orientation_entropy_bounds() -> None:
    assert orientation_entropy(np.full(10, 12.0), 18) == 0.0
    assert orientation_entropy(np.array([7.0]), 18) == 0.0
    assert orientation_entropy(np.arange(18) * 5.0 + 2.5, 18) == pytest.approx(1.0)
    assert orientation_entropy(np.array([1.0, 1.0, 46.0, 46.0]), 2) == pytest.approx(1.0)
    assert 0.0 < orientation_entropy(np.array([1.0, 2.0, 46.0]), 18) < 1.0


# --------------------------------------------------------------------------- per region

# Hand-made layout: three 100 m × 100 m regions side by side (1, 2, 3), UTM metres.
REGIONS = {1: box(0, 0, 100, 100), 2: box(100, 0, 200, 100), 3: box(200, 0, 300, 100)}
BUILDINGS = [
    # (geometry, height m, floors)
    (box(10, 10, 20, 20), 6.0, 2.0),  # region 1: 100 m²
    (box(40, 40, 60, 50), 9.0, np.nan),  # region 1: 200 m², floors from height -> 3
    (rotated(box(120, 20, 160, 30), 30), np.nan, np.nan),  # region 2: 400 m², 4:1 at 30°, no height
    (box(95, 60, 135, 70), 30.0, 10.0),  # crosses 1|2, centroid x = 115 -> region 2: 400 m²
    (box(400, 0, 410, 10), 3.0, 1.0),  # outside every region
]  # region 3: none


def layout_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    regions = pd.DataFrame({REGION_ID: np.array(list(REGIONS), dtype=np.int64),
                            GEOMETRY: [shapely.to_wkb(g) for g in REGIONS.values()],
                            AREA_M2: [g.area for g in REGIONS.values()]})
    buildings = pd.DataFrame({
        "building_id": [str(i) for i in range(len(BUILDINGS))],
        GEOMETRY: [shapely.to_wkb(b[0]) for b in BUILDINGS],
        "height": [b[1] for b in BUILDINGS],
        "floors": [b[2] for b in BUILDINGS],
        "building_type": [None] * len(BUILDINGS),
    })
    return regions, buildings


def expected_layout_vectors() -> dict[int, dict[str, float]]:
    la1 = np.log([100.0, 200.0])
    return {
        1: {"count": 2, "log1p_count": math.log(3), "density_per_km2": 200.0, "built_up_share": 0.03,
            "log_area_mean": la1.mean(), "log_area_median": la1.mean(), "log_area_p90": np.percentile(la1, 90),
            "log_area_std": la1.std(), "compactness_mean": (math.pi / 4 + 4 * math.pi * 200 / 60**2) / 2,
            "elongation_mean": 0.25, "orientation_entropy": 0.0, "height_mean": 7.5, "height_max": 9.0,
            "height_std": 1.5, "floor_area_ratio": (100 * 2 + 200 * 3) / 10_000},
        2: {"count": 2, "log1p_count": math.log(3), "density_per_km2": 200.0, "built_up_share": 0.08,
            "log_area_mean": math.log(400), "log_area_median": math.log(400), "log_area_p90": math.log(400),
            "log_area_std": 0.0, "compactness_mean": 4 * math.pi * 400 / 100**2, "elongation_mean": 0.75,
            # orientations 30° and 0° in different bins of 18: two equal bins -> ln 2 / ln 18
            "orientation_entropy": math.log(2) / math.log(18), "height_mean": 30.0, "height_max": 30.0,
            "height_std": 0.0, "floor_area_ratio": 400 * 10 / 10_000},
    }


def test_region_vector_of_an_empty_region_is_zero() -> None:
    empty = np.array([])
    assert not region_vector(empty, empty, empty, empty, empty, empty, 1e4, 18).any()


def test_region_aggregation_on_spark_matches_hand_computed(spark) -> None:
    from landuse.spatial.engines import make_engine

    regions_pd, buildings_pd = layout_frames()
    regions = spark.createDataFrame(regions_pd)
    buildings = buildings_dataframe(spark, buildings_pd)
    out = region_building_features(buildings, regions, make_engine(spark), bins=18, has_height=True, buckets=2)
    assert [(f.name, f.dataType.simpleString()) for f in out.schema] == [
        (f.name, f.dataType.simpleString()) for f in BUILDING_FEATURES_SCHEMA]
    rows = out.toPandas().set_index(REGION_ID).sort_index()
    assert rows.index.tolist() == [1, 2, 3]
    assert rows["has_building"].tolist() == [True, True, False]
    for region_id, expected in expected_layout_vectors().items():
        got = dict(zip(FEATURE_NAMES, rows.loc[region_id, "vector"]))
        for name in FEATURE_NAMES:
            assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), (region_id, name)
    assert len(rows.loc[3, "vector"]) == len(FEATURE_NAMES) and not np.any(rows.loc[3, "vector"])

    # without height data the height features are 0, the rest unchanged
    no_height = region_building_features(buildings, regions, make_engine(spark), bins=18, has_height=False)
    plain = no_height.toPandas().set_index(REGION_ID).sort_index()
    for region_id in (1, 2):
        v = np.asarray(plain.loc[region_id, "vector"])
        assert not v[[F[n] for n in HEIGHT_FEATURES]].any()
        np.testing.assert_allclose(v[:F["height_mean"]], np.asarray(rows.loc[region_id, "vector"])[:F["height_mean"]])


def test_no_buildings_gives_zero_vectors(spark) -> None:
    from landuse.spatial.engines import make_engine

    regions_pd, buildings_pd = layout_frames()
    buildings = buildings_dataframe(spark, buildings_pd.iloc[:0])
    out = region_building_features(buildings, spark.createDataFrame(regions_pd), make_engine(spark), 18, True)
    rows = out.toPandas().sort_values(REGION_ID)
    assert rows[REGION_ID].tolist() == [1, 2, 3] and not rows["has_building"].any()
    assert not np.stack(rows["vector"].to_numpy()).any()


@pytest.mark.sedona
def test_sedona_engine_gives_the_same_features(spark) -> None:
    from landuse.spatial.engines import BuiltinJoinEngine, SedonaJoinEngine
    from tests.spatial.helpers import require_sedona

    require_sedona(spark)
    regions_pd, buildings_pd = layout_frames()
    regions, buildings = spark.createDataFrame(regions_pd), buildings_dataframe(spark, buildings_pd)
    out = {type(e).__name__: region_building_features(buildings, regions, e, 18, True).toPandas().set_index(REGION_ID)
           for e in (BuiltinJoinEngine(), SedonaJoinEngine())}
    a, b = out["BuiltinJoinEngine"].sort_index(), out["SedonaJoinEngine"].sort_index()
    assert a["has_building"].tolist() == b["has_building"].tolist()
    np.testing.assert_allclose(np.stack(a["vector"].to_numpy()), np.stack(b["vector"].to_numpy()))


def test_driver_reference_agrees_with_hand_computed() -> None:
    regions_pd, buildings_pd = layout_frames()
    geoms = shapely.from_wkb(buildings_pd[GEOMETRY].to_numpy())
    d = shape_descriptors(geoms)
    descriptors = pd.DataFrame({REGION_ID: [1, 1, 2, 2, None], "b_area": d["area"], "b_perimeter": d["perimeter"],
                                "compactness": d["compactness"], "elongation": d["elongation"],
                                "orientation": d["orientation"], "height": buildings_pd["height"],
                                "floors": buildings_pd["floors"]})
    table = aggregate_regions(descriptors, regions_pd.set_index(REGION_ID)[AREA_M2], 18, True).set_index(REGION_ID)
    assert table["has_building"].tolist() == [True, True, False]
    for region_id, expected in expected_layout_vectors().items():
        np.testing.assert_allclose(table.loc[region_id, "vector"], [expected[n] for n in FEATURE_NAMES], rtol=1e-5,
                                   atol=1e-6)


# --------------------------------------------------------------------------- the stage, end to end


@pytest.fixture(scope="module")
def tiny_city_run(spark, tmp_path_factory, repo_root: Path):
    from landuse.config import load_config
    from landuse.runner import run_stage
    from landuse.stages import regions as regions_stage
    from landuse.stages import synth as synth_stage
    from landuse.stages.buildings import STAGE

    work = tmp_path_factory.mktemp("buildings-stage")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo_root)
        config = load_config(repo_root / "conf/synthetic_shenzhen.yaml",
                             [f"work_dir={work}", "synth.scale=tiny", "spark.shuffle_partitions=2", "seed=5"])
        registry = {s.name: s for s in (synth_stage.STAGE, regions_stage.STAGE, STAGE)}
        for name in ("synth", "regions"):
            run_stage(registry[name], config, registry, spark=spark)
        result = run_stage(STAGE, config, registry, spark=spark)
        again = run_stage(STAGE, config, registry, spark=spark)
    return config, result, again


def test_stage_end_to_end_on_a_tiny_city(tiny_city_run) -> None:
    from landuse.manifest import read_manifest
    from landuse.stages.buildings import HAS_BUILDING, REJECTS, T_BUILDING_FEATURES

    config, result, again = tiny_city_run
    assert (result.status, again.status) == ("ran", "unchanged")
    assert T_BUILDING_FEATURES == "building_features" and HAS_BUILDING == "has_building"
    features = pq.read_table(config.tables_dir / T_BUILDING_FEATURES).to_pandas()
    regions = pq.read_table(config.tables_dir / "regions", columns=[REGION_ID]).to_pandas()
    assert features[REGION_ID].tolist() == sorted(regions[REGION_ID].tolist())  # one row per region, sorted
    vectors = np.stack(features["vector"].to_numpy())
    assert vectors.shape == (len(regions), len(FEATURE_NAMES)) and vectors.dtype == np.float32
    has = features[HAS_BUILDING].to_numpy()
    assert has.any() and (~has).any()  # the sea and open land hold no building
    assert (vectors[has, F["count"]] >= 1).all() and not vectors[~has].any()
    assert (vectors[:, F["built_up_share"]] <= 1).all() and (vectors[:, F["orientation_entropy"]] <= 1).all()
    assert (vectors[has, F["height_max"]] > 0).all()

    manifest = read_manifest(config.tables_dir / T_BUILDING_FEATURES)
    synth = read_manifest(config.synth.dir, "manifest.json")
    assert manifest["feature_names"] == list(FEATURE_NAMES) and manifest["has_height"] is True
    assert manifest["buildings_in"] == synth["counts"]["buildings"] == manifest["buildings_kept"]
    assert manifest["buildings_in"] == manifest["buildings_kept"] + manifest["buildings_rejected"]
    assert manifest["buildings_assigned"] + manifest["buildings_outside_regions"] == manifest["buildings_kept"]
    assert manifest["buildings_assigned"] == int(vectors[:, F["count"]].sum())
    assert manifest["regions_with_buildings"] == int(has.sum())
    (ingest,) = manifest["ingest"]
    assert ingest["rows_in"] == ingest["kept"] + ingest["rejected"]
    rejects = pq.read_table(config.tables_dir / REJECTS).to_pandas()
    assert len(rejects) == manifest["buildings_rejected"] == 0


def test_stage_matches_a_driver_side_reference(tiny_city_run) -> None:
    """Same features from geopandas on the driver (centroid-in-polygon assignment) as from Spark."""
    import geopandas as gpd

    from landuse.stages.buildings import T_BUILDING_FEATURES

    config = tiny_city_run[0]
    regions = gpd.read_parquet(config.tables_dir / "regions" / "part-00000.parquet")
    footprints = gpd.read_parquet(config.inputs.buildings.path).to_crs(regions.crs)
    x, y = representative_xy(footprints.geometry.to_numpy())
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=regions.crs)
    joined = gpd.sjoin(points, regions[[REGION_ID, "geometry"]], predicate="intersects", how="left")
    region_of = joined.groupby(level=0)[REGION_ID].min()  # smallest id on shared edges, as the engines do
    d = shape_descriptors(footprints.geometry.to_numpy())
    descriptors = pd.DataFrame({REGION_ID: region_of.reindex(range(len(footprints))).to_numpy(),
                                "b_area": d["area"], "b_perimeter": d["perimeter"], "compactness": d["compactness"],
                                "elongation": d["elongation"], "orientation": d["orientation"],
                                "height": footprints["height"].to_numpy(np.float64), "floors": np.nan})
    expected = aggregate_regions(descriptors.dropna(subset=[REGION_ID]).astype({REGION_ID: "int64"}),
                                 regions.set_index(REGION_ID)[AREA_M2].sort_index(),
                                 config.embeddings.buildings.orientation_bins, True)
    got = pq.read_table(config.tables_dir / T_BUILDING_FEATURES).to_pandas()
    assert got[REGION_ID].tolist() == expected[REGION_ID].tolist()
    assert got["has_building"].tolist() == expected["has_building"].tolist()
    np.testing.assert_allclose(np.stack(got["vector"].to_numpy()), np.stack(expected["vector"].to_numpy()),
                               rtol=1e-5, atol=1e-5)
