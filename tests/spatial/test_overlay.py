"""Land-use overlay: hand-made polygons, exactness against a GeoPandas overlay, real NYC tracts."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from landuse.constants import LANDUSE_CLASSES
from landuse.spatial.overlay import OverlayError, areal_interpolation, class_area_proportions
from landuse.spatial.regions import voronoi_regions
from tests.spatial.helpers import CRS

NYC_LANDUSE = "nyc_manhattan/landuse/nyc_ct2020_landuse5.gpkg"
NYC_CLASSES = ["lu_residential", "lu_mixed_comm_office", "lu_industrial", "lu_transport_public_parking", "lu_open_vacant"]


def _regions() -> gpd.GeoDataFrame:
    boxes = [shapely.box(0, 0, 100, 100), shapely.box(100, 0, 200, 100), shapely.box(300, 0, 400, 100)]
    return gpd.GeoDataFrame({"region_id": [1, 2, 3]}, geometry=boxes, crs=CRS)


def _class_polygons() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"landuse_class": ["residential", "commercial", "green_space", "industrial"]},
        geometry=[
            shapely.box(0, 0, 50, 100),  # region 1: 5000 m²
            shapely.box(50, 0, 150, 50),  # region 1: 2500, region 2: 2500
            shapely.box(150, 0, 200, 100),  # region 2: 5000
            shapely.box(50, 50, 100, 80),  # region 1: 1500
        ],
        crs=CRS,
    )


def test_class_proportions_hand_made() -> None:
    out = class_area_proportions(_regions(), _class_polygons()).set_index("region_id")
    assert list(out.columns) == list(LANDUSE_CLASSES) + ["coverage"]
    # region 1: covered 9000 of 10000 → residential 5000/9000, commercial 2500/9000, industrial 1500/9000
    assert out.loc[1, "residential"] == pytest.approx(5 / 9)
    assert out.loc[1, "commercial"] == pytest.approx(2.5 / 9)
    assert out.loc[1, "industrial"] == pytest.approx(1.5 / 9)
    assert out.loc[1, "coverage"] == pytest.approx(0.9)
    # region 2: covered 7500 → commercial 1/3, green space 2/3
    assert out.loc[2, "commercial"] == pytest.approx(1 / 3)
    assert out.loc[2, "green_space"] == pytest.approx(2 / 3)
    assert out.loc[2, "coverage"] == pytest.approx(0.75)
    # region 3: nothing covers it → all zero
    assert (out.loc[3] == 0).all()
    shares = out[list(LANDUSE_CLASSES)]
    assert np.allclose(shares.loc[[1, 2]].sum(axis=1), 1.0)


def test_non_construction_residual() -> None:
    out = class_area_proportions(_regions(), _class_polygons(), non_construction_residual=True).set_index("region_id")
    # shares of the REGION area; non_construction = 1 - the others
    assert out.loc[1, ["residential", "commercial", "industrial", "non_construction"]].tolist() == pytest.approx(
        [0.5, 0.25, 0.15, 0.10]
    )
    assert out.loc[2, ["commercial", "green_space", "non_construction"]].tolist() == pytest.approx([0.25, 0.5, 0.25])
    assert out.loc[3, "non_construction"] == pytest.approx(1.0) and out.loc[3, "coverage"] == 0.0
    assert np.allclose(out[list(LANDUSE_CLASSES)].sum(axis=1), 1.0)


def test_unknown_class_and_missing_crs_fail() -> None:
    bad = _class_polygons().assign(landuse_class=["residential", "farmland", "green_space", None])
    with pytest.raises(OverlayError, match="farmland"):
        class_area_proportions(_regions(), bad)
    with pytest.raises(OverlayError, match="no CRS"):
        class_area_proportions(_regions(), _class_polygons().set_crs(None, allow_override=True))


def test_areal_interpolation_hand_computed() -> None:
    regions = _regions().iloc[:2]
    tracts = gpd.GeoDataFrame(
        {"res": [0.6, 0.0, 0.0], "com": [0.4, 1.0, np.nan]},
        geometry=[shapely.box(0, 0, 150, 100), shapely.box(150, 0, 200, 50), shapely.box(150, 50, 200, 100)],
        crs=CRS,
    )
    out = areal_interpolation(regions, tracts, ["res", "com"]).set_index("region_id")
    # region 1: only tract 1 (10000 m²) → 0.6 / 0.4, fully covered
    assert out.loc[1].tolist() == pytest.approx([0.6, 0.4, 1.0])
    # region 2: tract 1 on 5000 m² (3000 res, 2000 com) + tract 2 on 2500 (2500 com) + tract 3 with no
    # information → res 3000/7500 = 0.4, com 4500/7500 = 0.6, coverage 7500/10000
    assert out.loc[2].tolist() == pytest.approx([0.4, 0.6, 0.75])


def test_exact_against_geopandas_overlay(voronoi_table: gpd.GeoDataFrame) -> None:
    """Random land-use partition (another Voronoi diagram, not covering everything) vs exact overlay areas."""
    rng = np.random.default_rng(5)
    cells = voronoi_regions(rng.uniform(150.0, 1850.0, (400, 2)), (100.0, 100.0, 1900.0, 1900.0), CRS)
    cells = cells.drop(columns="region_id")
    classes = list(LANDUSE_CLASSES)
    cells["landuse_class"] = rng.choice(classes[:-1], len(cells))
    probabilities = rng.dirichlet(np.ones(3), len(cells))
    for j, name in enumerate(["p0", "p1", "p2"]):
        cells[name] = probabilities[:, j]
    regions = voronoi_table[["region_id", "geometry"]]

    pieces = gpd.overlay(regions, cells, how="intersection", keep_geom_type=True)
    pieces["area"] = pieces.area
    area = pieces.pivot_table(index="region_id", columns="landuse_class", values="area", aggfunc="sum", fill_value=0.0)
    area = area.reindex(index=regions["region_id"], columns=classes, fill_value=0.0)
    region_area = regions.set_index("region_id").area.reindex(area.index)
    covered = area.sum(axis=1)

    out = class_area_proportions(regions, cells).set_index("region_id")
    assert np.abs(out[classes].to_numpy() - area.div(covered, axis=0).to_numpy()).max() <= 1e-6
    assert np.abs(out["coverage"] - covered / region_area).max() <= 1e-6
    assert out["coverage"].min() < 0.9 and out["coverage"].max() == pytest.approx(1.0)

    residual = class_area_proportions(regions, cells, non_construction_residual=True).set_index("region_id")
    truth = area.div(region_area, axis=0)
    truth["non_construction"] = 1.0 - truth[classes[:-1]].sum(axis=1)
    assert np.abs(residual[classes].to_numpy() - truth.to_numpy()).max() <= 1e-6

    weighted = pieces[["p0", "p1", "p2"]].mul(pieces["area"], axis=0).groupby(pieces["region_id"]).sum()
    interp = areal_interpolation(regions, cells, ["p0", "p1", "p2"]).set_index("region_id")
    expected = weighted.div(weighted.sum(axis=1), axis=0).reindex(interp.index)
    assert np.abs(interp[["p0", "p1", "p2"]].to_numpy() - expected.to_numpy()).max() <= 1e-6


def test_nyc_tract_landuse_onto_mh180(shared_data, mh180: gpd.GeoDataFrame) -> None:
    path = shared_data / NYC_LANDUSE
    if not path.exists():
        pytest.skip(f"{path} not found")
    tracts = gpd.read_file(path)
    assert str(tracts.crs) == "EPSG:32118"
    out = areal_interpolation(mh180, tracts, NYC_CLASSES)
    assert len(out) == 180 and out["region_id"].tolist() == list(range(180))
    covered = out["coverage"] > 0
    assert covered.all()
    assert np.allclose(out.loc[covered, NYC_CLASSES].sum(axis=1), 1.0, atol=1e-9)
    assert out["coverage"].between(0.0, 1.0 + 1e-6).all()
    assert out["coverage"].median() > 0.95
    # Manhattan is mostly residential and office/commercial by area
    assert out["lu_residential"].mean() > 0.2 and out["lu_mixed_comm_office"].mean() > 0.1


def _relative_gap(a: np.ndarray, b: np.ndarray, floor: float) -> float:
    """max |a - b| / max(|b|, floor): the relative difference, measured against ``floor`` where b is tiny."""
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor), initial=0.0))


@pytest.mark.sedona
@pytest.mark.parametrize(("profile", "scale"), [("shenzhen", "tiny"), ("london", "tiny")])
def test_sedona_overlay_matches_builtin(spark, city_regions, city_landuse, profile: str, scale: str) -> None:
    """Sedona (ST_Intersection/ST_Area on executors) vs shapely on the driver: same areas, shares, coverage.

    Areas per (region, class) agree to 1e-6 relative; shares and coverage are fractions of a
    region's total, so they are compared relative to 1 (a share left by cancellation, e.g. a
    residual of 1e-14, has no meaningful relative error of its own).
    """
    from landuse.spatial.overlay import intersection_areas, sedona_weighted_areas
    from tests.spatial.helpers import require_sedona

    require_sedona(spark)
    regions = city_regions(profile, scale)[["region_id", "geometry"]]
    landuse = city_landuse(profile, scale).dropna(subset=["landuse_class"])
    rng = np.random.default_rng(1)
    landuse[["p0", "p1", "p2"]] = rng.dirichlet(np.ones(3), len(landuse))

    region_geoms = np.asarray(regions.geometry.values, dtype=object)
    landuse_geoms = np.asarray(landuse.geometry.values, dtype=object)
    k = len(LANDUSE_CLASSES)
    klass = pd.Categorical(landuse["landuse_class"], categories=LANDUSE_CLASSES).codes
    r, t, areas = intersection_areas(region_geoms, landuse_geoms)
    on_driver = np.bincount(r * k + klass[t], weights=areas, minlength=len(regions) * k).reshape(-1, k)
    one_hot = np.eye(k)[klass]
    on_executors = sedona_weighted_areas(spark, region_geoms, landuse_geoms, one_hot)
    assert on_driver.sum() > 0.5 * shapely.area(region_geoms).sum()
    assert _relative_gap(on_executors, on_driver, floor=1e-6) <= 1e-6  # m²

    for residual in (False, True):
        builtin = class_area_proportions(regions, landuse, non_construction_residual=residual)
        sedona = class_area_proportions(regions, landuse, non_construction_residual=residual, spark=spark)
        assert builtin["region_id"].tolist() == sedona["region_id"].tolist()
        columns = [*LANDUSE_CLASSES, "coverage"]
        assert _relative_gap(sedona[columns].to_numpy(), builtin[columns].to_numpy(), floor=1.0) <= 1e-6
    builtin = areal_interpolation(regions, landuse, ["p0", "p1", "p2"])
    sedona = areal_interpolation(regions, landuse, ["p0", "p1", "p2"], spark=spark)
    columns = ["p0", "p1", "p2", "coverage"]
    assert _relative_gap(sedona[columns].to_numpy(), builtin[columns].to_numpy(), floor=1.0) <= 1e-6


@pytest.mark.sedona
def test_sedona_overlay_hand_made(spark) -> None:
    from tests.spatial.helpers import require_sedona

    require_sedona(spark)
    builtin = class_area_proportions(_regions(), _class_polygons())
    sedona = class_area_proportions(_regions(), _class_polygons(), spark=spark)
    pd.testing.assert_frame_equal(sedona, builtin, rtol=1e-9)
    assert (sedona.set_index("region_id").loc[3] == 0).all()  # a region no polygon touches
    empty = class_area_proportions(_regions(), _class_polygons().iloc[:0], spark=spark)
    assert (empty.drop(columns="region_id") == 0).all().all()
