"""End-to-end tests of the synthetic city generator on the tiny scale (each profile generated once)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.features
import shapely
from pyproj import Transformer

from landuse.constants import CRS_LONDON, CRS_SHENZHEN, LANDUSE_CLASSES, SYNTH_MANIFEST_FILE
from landuse.synth import default_class_map_dir, generate
from landuse.synth.writers import file_sha256

SEED = int(os.environ.get("LANDUSE_SYNTH_TEST_SEED", "11"))  # vary it to probe robustness across cities
TFL_HEADER = ("Rental Id,Duration,Bike Id,End Date,EndStation Id,EndStation Name,Start Date,StartStation Id,"
              "StartStation Name")
CRS = {"shenzhen": CRS_SHENZHEN, "london": CRS_LONDON}


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each profile generated once at tiny scale."""
    root = tmp_path_factory.mktemp("synth")
    out = {}
    for profile in ("shenzhen", "london"):
        out[profile] = root / profile
        generate(profile, "tiny", SEED, out[profile])
    return out


def manifest_of(city: Path) -> dict:
    return json.loads((city / SYNTH_MANIFEST_FILE).read_text(encoding="utf-8"))


def trip_parts(city: Path, kind: str) -> list[Path]:
    return sorted((city / "trips" / kind).glob("part-*.csv"))


def read_truth(city: Path) -> pd.DataFrame:
    return pd.read_csv(city / "truth" / "region_landuse.csv").set_index("region_id")


def read_regions(city: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(city / "regions" / "regions.gpkg")


def landuse_with_class(city: Path) -> gpd.GeoDataFrame:
    manifest = manifest_of(city)
    polygons = gpd.read_file(city / "landuse" / "landuse.gpkg")
    table = pd.read_csv(default_class_map_dir() / manifest["class_map"]["file"], dtype=str, keep_default_na=False)
    mapping = dict(zip(table["code"], table["landuse_class"]))
    polygons["landuse_class"] = polygons[manifest["class_map"]["code_column"]].map(mapping)
    return polygons


# --------------------------------------------------------------------------- API and manifest


@pytest.mark.parametrize(("profile", "scale"), [("paris", "tiny"), ("london", "huge")])
def test_unknown_profile_or_scale_is_a_clear_value_error(tmp_path: Path, profile: str, scale: str) -> None:
    with pytest.raises(ValueError, match=r"unknown synthetic (profile|scale) '(paris|huge)'; expected one of"):
        generate(profile, scale, 1, tmp_path / "city")
    assert not (tmp_path / "city").exists()


def test_negative_seed_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        generate("london", "tiny", -1, tmp_path / "city")


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_manifest_describes_every_file(cities: dict[str, Path], profile: str) -> None:
    city = cities[profile]
    manifest = manifest_of(city)
    assert manifest["profile"] == profile and manifest["scale"] == "tiny" and manifest["seed"] == SEED
    assert manifest["crs"] == CRS[profile]
    assert manifest["classes"] == list(LANDUSE_CLASSES)
    assert manifest["raster"]["dn_scale"] == pytest.approx(0.0000275)
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(city).as_posix() for p in city.rglob("*") if p.is_file()} - {SYNTH_MANIFEST_FILE}
    assert listed == on_disk
    for entry in manifest["files"]:
        assert file_sha256(city / entry["path"]) == entry["sha256"], entry["path"]
        if entry["format"] == "csv":
            with open(city / entry["path"], "rb") as fh:
                assert sum(1 for _ in fh) - 1 == entry["rows"], entry["path"]
    counts = manifest["counts"]
    minx, miny, maxx, maxy = manifest["extent"]["projected"]
    assert maxx - minx == maxy - miny == 5000
    lon0, lat0, lon1, lat1 = manifest["extent"]["lonlat"]
    assert lon0 < lon1 and lat0 < lat1
    assert counts["pois"] == 2000 and counts["trips"] == 4000
    assert 1_000 <= counts["trip_rows"] <= 4_000


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_same_seed_same_bytes_other_seed_differs(cities: dict[str, Path], tmp_path: Path, profile: str) -> None:
    again = generate(profile, "tiny", SEED, tmp_path / "again")
    first = manifest_of(cities[profile])
    first.pop("timings")
    again.pop("timings")
    assert again == first
    assert json.loads((tmp_path / "again" / SYNTH_MANIFEST_FILE).read_text(encoding="utf-8"))["seed"] == SEED

    other = generate(profile, "tiny", SEED + 1, tmp_path / "other")
    hashes = {f["path"]: f["sha256"] for f in first["files"]}
    other_hashes = {f["path"]: f["sha256"] for f in other["files"]}
    differing = [p for p in hashes if other_hashes.get(p) != hashes[p]]
    # every randomised file changes (regions of the Shenzhen grid are fixed by the extent)
    assert set(differing) >= set(hashes) - {"regions/regions.gpkg"}


def _previous_city(out: Path, marker: str) -> None:
    """A directory that a previous generation wrote (its manifest names the generator)."""
    out.mkdir()
    (out / SYNTH_MANIFEST_FILE).write_text(json.dumps({"generator": {"name": "landuse.synth"}}))
    (out / marker).write_text("previous city")


def test_existing_output_is_replaced_atomically(tmp_path: Path) -> None:
    out = tmp_path / "city"
    _previous_city(out, "stale.txt")
    generate("london", "tiny", 3, out)
    assert not (out / "stale.txt").exists() and (out / SYNTH_MANIFEST_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city"]  # no partial or aside directories left


def test_failed_generation_leaves_previous_city_untouched(tmp_path: Path) -> None:
    out = tmp_path / "city"
    _previous_city(out, "keep.txt")
    with pytest.raises(FileNotFoundError):
        generate("shenzhen", "tiny", 3, out, class_map_dir=tmp_path / "no-such-dir")
    assert (out / "keep.txt").read_text() == "previous city"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city"]


# --------------------------------------------------------------------------- format conformance


def test_tfl_journeys_format(cities: dict[str, Path]) -> None:
    city = cities["london"]
    parts = trip_parts(city, "journeys")
    assert parts and parts[0].name == "part-00000.csv"
    for part in parts:
        assert part.read_text(encoding="utf-8").splitlines()[0] == TFL_HEADER
    journeys = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    assert list(journeys.columns) == TFL_HEADER.split(",")
    assert journeys["Rental Id"].is_unique and (journeys["Duration"] > 0).all()
    start = pd.to_datetime(journeys["Start Date"], format="%d/%m/%Y %H:%M")
    end = pd.to_datetime(journeys["End Date"], format="%d/%m/%Y %H:%M")
    assert start.min() >= pd.Timestamp("2019-07-01") and start.max() < pd.Timestamp("2019-07-08")
    elapsed = (end - start).dt.total_seconds()
    assert ((elapsed - journeys["Duration"]).abs() < 60).all()  # minute-resolution stamps
    raw = parts[0].read_text(encoding="utf-8").splitlines()[1]
    assert re.search(r",\d{2}/\d{2}/2019 \d{2}:\d{2},", raw)

    stations = pd.read_csv(city / "trips" / "stations.csv")
    assert list(stations.columns) == ["id", "commonName", "lat", "lon", "nbDocks"]
    assert stations["id"].is_unique and stations["commonName"].is_unique
    ids = set(stations["id"])
    assert set(journeys["StartStation Id"]) <= ids and set(journeys["EndStation Id"]) <= ids
    names = dict(zip(stations["id"], stations["commonName"]))
    assert (journeys["StartStation Name"] == journeys["StartStation Id"].map(names)).all()
    assert stations["lat"].between(51.0, 52.0).all() and stations["lon"].between(-0.5, 0.3).all()

    # durations follow distance: longer trips take longer
    xy = Transformer.from_crs("EPSG:4326", CRS_LONDON, always_xy=True).transform(stations["lon"], stations["lat"])
    pos = pd.DataFrame({"x": xy[0], "y": xy[1]}, index=stations["id"])
    start_xy = pos.reindex(journeys["StartStation Id"]).to_numpy()
    end_xy = pos.reindex(journeys["EndStation Id"]).to_numpy()
    dist = np.hypot(*(start_xy - end_xy).T)
    moving = dist > 0
    assert np.corrcoef(dist[moving], journeys["Duration"].to_numpy()[moving])[0, 1] > 0.6
    speed = dist[moving] / journeys["Duration"].to_numpy()[moving]
    assert 1.0 < np.median(speed) < 6.0  # m/s: a bicycle


def test_amap_pois_format(cities: dict[str, Path]) -> None:
    city = cities["shenzhen"]
    header = (city / "pois" / "amap_pois.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "id,name,type,typecode,location"
    pois = pd.read_csv(city / "pois" / "amap_pois.csv", dtype=str, encoding="utf-8")
    assert pois["id"].is_unique and pois["id"].str.fullmatch(r"B0[0-9A-Z]{8}").all()
    levels = pois["type"].str.split(";")
    assert (levels.str.len() == 3).all() and (levels.str[0] != "").all()
    assert pois["typecode"].str.fullmatch(r"\d{6}").all()
    assert set(levels.str[0]) <= {"餐饮服务", "购物服务", "生活服务", "体育休闲服务", "医疗保健服务", "住宿服务", "风景名胜",
                                  "商务住宅", "政府机构及社会团体", "科教文化服务", "交通设施服务", "金融保险服务", "公司企业",
                                  "公共设施"}
    assert pois.groupby("typecode")["type"].nunique().max() == 1
    lonlat = pois["location"].str.split(",", expand=True)
    assert lonlat[0].str.fullmatch(r"\d+\.\d{6}").all()
    lon, lat = lonlat[0].astype(float), lonlat[1].astype(float)
    lon0, lat0, lon1, lat1 = manifest_of(city)["extent"]["lonlat"]
    assert lon.between(lon0, lon1).all() and lat.between(lat0, lat1).all()


def test_pointx_pois_format(cities: dict[str, Path]) -> None:
    city = cities["london"]
    lines = (city / "pois" / "pointx.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "ref_no|name|pointx_class|groupname|categoryname|classname|feature_easting|feature_northing"
    assert all(line.count("|") == 7 for line in lines)
    pois = pd.read_csv(city / "pois" / "pointx.csv", sep="|", dtype={"pointx_class": str})
    assert pois["ref_no"].is_unique
    assert pois["pointx_class"].str.fullmatch(r"\d{8}").all()
    assert pois.groupby(pois["pointx_class"].str[:2])["groupname"].nunique().max() == 1
    assert pois.groupby(pois["pointx_class"].str[:4])["categoryname"].nunique().max() == 1
    assert set(pois["groupname"]) <= {"Accommodation, eating and drinking", "Commercial services", "Attractions",
                                      "Sport and entertainment", "Education and health", "Public infrastructure",
                                      "Manufacturing and production", "Retail", "Transport"}
    assert all(re.fullmatch(r"\d+\.\d", line.split("|")[6]) for line in lines[1:50])
    minx, miny, maxx, maxy = manifest_of(city)["extent"]["projected"]
    assert pois["feature_easting"].between(minx, maxx).all() and pois["feature_northing"].between(miny, maxy).all()


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_landsat_geotiff(cities: dict[str, Path], profile: str) -> None:
    city = cities[profile]
    with rasterio.open(city / "imagery" / "landsat8_oli.tif") as src:
        assert src.count == 7 and set(src.dtypes) == {"uint16"}
        assert src.crs.to_epsg() == int(CRS[profile].split(":")[1])
        assert src.res == (30.0, 30.0) and src.nodata == 0
        assert src.descriptions == ("B1 coastal", "B2 blue", "B3 green", "B4 red", "B5 NIR", "B6 SWIR1", "B7 SWIR2")
        assert src.profile["tiled"] and src.compression.value.lower() == "deflate"
        data = src.read()
        transform, shape = src.transform, (src.height, src.width)
    empty = (data == 0).all(axis=0)
    assert 0.01 < empty.mean() < 0.2
    assert ((data == 0).any(axis=0) == empty).all()  # nodata is all-band
    reflectance = data.astype(np.float64) * 0.0000275 - 0.2
    assert reflectance[:, ~empty].min() > -0.05 and reflectance[:, ~empty].max() < 0.7

    # spectra follow the land-use map: NDVI vegetation > built-up > water; water dark in SWIR
    polygons = landuse_with_class(city)
    polygons = polygons.assign(value=polygons["landuse_class"].map({c: i + 1 for i, c in enumerate(LANDUSE_CLASSES)}))
    labels = rasterio.features.rasterize(zip(polygons.geometry, polygons["value"]), out_shape=shape,
                                         transform=transform, fill=0, dtype="uint8")
    red, nir, swir1 = reflectance[3], reflectance[4], reflectance[5]
    ndvi = (nir - red) / (nir + red)
    ok = ~empty

    def mean_ndvi(name: str) -> float:
        return float(ndvi[ok & (labels == LANDUSE_CLASSES.index(name) + 1)].mean())

    assert mean_ndvi("green_space") > mean_ndvi("residential") > mean_ndvi("commercial")
    assert mean_ndvi("green_space") > 0.5 and mean_ndvi("commercial") < 0.25
    water = polygons[polygons[manifest_of(city)["class_map"]["code_column"]].isin(["1101", "Water"])]
    water_px = rasterio.features.rasterize(water.geometry, out_shape=shape, transform=transform, fill=0,
                                           all_touched=False, dtype="uint8").astype(bool)
    water_px &= ok & (ndimage_erode(water_px))
    assert water_px.any()
    assert swir1[water_px].mean() < 0.05 < swir1[ok & (labels == LANDUSE_CLASSES.index("industrial") + 1)].mean()


def ndimage_erode(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_erosion(mask, iterations=1)


# --------------------------------------------------------------------------- regions, trips, truth


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_regions_file(cities: dict[str, Path], profile: str) -> None:
    city = cities[profile]
    regions = read_regions(city)
    assert regions.crs.to_epsg() == int(CRS[profile].split(":")[1])
    id_column = "grid_id" if profile == "shenzhen" else "region_id"
    assert list(regions.columns) == [id_column, "geometry"]
    assert regions[id_column].is_unique and pd.api.types.is_integer_dtype(regions[id_column])
    minx, miny, maxx, maxy = manifest_of(city)["extent"]["projected"]
    assert regions.area.sum() == pytest.approx((maxx - minx) * (maxy - miny), rel=1e-9)
    assert shapely.is_valid(regions.geometry.to_numpy()).all()


def test_shenzhen_grid_cells_are_250m_squares(cities: dict[str, Path]) -> None:
    regions = read_regions(cities["shenzhen"]).sort_values("grid_id")
    bounds = regions.geometry.bounds
    assert np.allclose(bounds.maxx - bounds.minx, 250) and np.allclose(bounds.maxy - bounds.miny, 250)
    assert np.allclose(regions.area, 250 * 250)
    assert list(regions["grid_id"]) == list(range(400))
    # row-major from the north-west corner
    assert bounds.minx.iloc[1] == bounds.minx.iloc[0] + 250 and bounds.maxy.iloc[20] == bounds.maxy.iloc[0] - 250
    assert bounds.minx.iloc[0] == bounds.minx.min() and bounds.maxy.iloc[0] == bounds.maxy.max()


def test_london_regions_are_voronoi_cells_of_the_docks(cities: dict[str, Path]) -> None:
    city = cities["london"]
    regions = read_regions(city).set_index("region_id")
    stations = pd.read_csv(city / "trips" / "stations.csv").set_index("id")
    assert sorted(regions.index) == sorted(stations.index) and len(regions) == 60
    x, y = Transformer.from_crs("EPSG:4326", CRS_LONDON, always_xy=True).transform(stations["lon"], stations["lat"])
    docks = gpd.GeoSeries(gpd.points_from_xy(x, y), index=stations.index, crs=CRS_LONDON)
    assert regions.geometry.reindex(docks.index).contains(docks).all()
    truth = read_truth(city)
    # no dock stands in water: each dock's cell is mostly not river/lake
    polygons = landuse_with_class(city)
    code_col = manifest_of(city)["class_map"]["code_column"]
    water = polygons[polygons[code_col].isin(["Water", "Inland Water"])].union_all()
    assert not docks.intersects(water).any()
    assert (truth["coverage"] - 1).abs().max() < 1e-9


def test_signaling_od(cities: dict[str, Path]) -> None:
    city = cities["shenzhen"]
    parts = trip_parts(city, "signaling_od")
    assert parts
    od = pd.concat([pd.read_csv(p, dtype={"date": str}) for p in parts], ignore_index=True)
    assert list(od.columns) == ["date", "hour", "o_grid", "d_grid", "count"]
    assert od["date"].str.fullmatch(r"2019-11-(0[4-9]|10)").all()
    assert od["hour"].between(0, 23).all()
    assert pd.api.types.is_integer_dtype(od["count"]) and (od["count"] > 0).all()
    assert not od.duplicated(["date", "hour", "o_grid", "d_grid"]).any()
    ids = set(read_regions(city)["grid_id"])
    assert set(od["o_grid"]) <= ids and set(od["d_grid"]) <= ids
    assert od["count"].sum() == manifest_of(city)["counts"]["trips"]
    weekday = pd.to_datetime(od["date"]).dt.dayofweek
    hourly = od[weekday < 5].groupby("hour")["count"].sum()
    assert hourly.loc[[7, 8]].sum() > 3 * hourly.loc[[2, 3]].sum()  # a morning peak
    weekend_share = od.loc[weekday >= 5, "count"].sum() / od["count"].sum()
    assert 0.15 < weekend_share < 2 / 7


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_truth_distribution(cities: dict[str, Path], profile: str) -> None:
    city = cities[profile]
    truth = read_truth(city)
    assert list(truth.columns) == [*LANDUSE_CLASSES, "coverage"]
    regions = read_regions(city)
    assert sorted(truth.index) == sorted(regions.iloc[:, 0])
    shares = truth[list(LANDUSE_CLASSES)]
    assert (shares >= 0).all().all()
    covered = truth["coverage"] > 0
    assert np.allclose(shares[covered].sum(axis=1), 1.0, atol=1e-12)
    assert (shares[~covered] == 0).all().all()
    assert ((truth["coverage"] >= 0) & (truth["coverage"] <= 1 + 1e-9)).all()
    full = (truth["coverage"] - 1).abs() < 1e-9
    assert full.mean() > 0.8
    if profile == "shenzhen":
        assert (~full).any()  # the bay lies outside the land survey

    # a stage overlaying the written files must reproduce the truth to 1e-6
    polygons = landuse_with_class(city)
    id_column = regions.columns[0]
    pieces = gpd.overlay(regions, polygons[["landuse_class", "geometry"]], how="intersection", keep_geom_type=True)
    pieces["area"] = pieces.area
    area = pieces.pivot_table(index=id_column, columns="landuse_class", values="area", aggfunc="sum", fill_value=0.0)
    area = area.reindex(index=truth.index, columns=list(LANDUSE_CLASSES)).fillna(0)
    recomputed = area.div(area.sum(axis=1).where(lambda s: s > 0, 1.0), axis=0)
    coverage = area.sum(axis=1) / regions.set_index(id_column).area.reindex(truth.index)
    assert np.abs(recomputed.to_numpy() - shares.to_numpy()).max() < 1e-6
    assert np.abs(coverage.to_numpy() - truth["coverage"].to_numpy()).max() < 1e-6


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_landuse_codes_come_from_the_class_map(cities: dict[str, Path], profile: str) -> None:
    city = cities[profile]
    manifest = manifest_of(city)
    polygons = gpd.read_file(city / "landuse" / "landuse.gpkg")
    assert polygons.crs.to_epsg() == int(CRS[profile].split(":")[1])
    table = pd.read_csv(default_class_map_dir() / manifest["class_map"]["file"], dtype=str, keep_default_na=False)
    code_col = manifest["class_map"]["code_column"]
    assert set(polygons[code_col]) <= set(table["code"])
    if manifest["class_map"]["name_column"]:
        names = dict(zip(table["code"], table["name"]))
        assert (polygons[manifest["class_map"]["name_column"]] == polygons[code_col].map(names)).all()
    classes = polygons[code_col].map(dict(zip(table["code"], table["landuse_class"])))
    assert set(classes) == set(LANDUSE_CLASSES)
    per_class = polygons.groupby(classes)[code_col].nunique()
    assert per_class["commercial"] >= 2 and per_class["transport"] >= 2  # several codes per class
    assert shapely.is_valid(polygons.geometry.to_numpy()).all()
    coords = shapely.get_coordinates(polygons.geometry.to_numpy())
    minx, miny, maxx, maxy = manifest["extent"]["projected"]
    assert (coords.min(axis=0) >= [minx, miny]).all() and (coords.max(axis=0) <= [maxx, maxy]).all()
    assert np.array_equal(coords, np.round(coords / 50) * 50)  # cell-aligned vertices


# --------------------------------------------------------------------------- structure sanity


def _centroids(city: Path) -> pd.DataFrame:
    regions = read_regions(city)
    centroids = regions.geometry.centroid
    return pd.DataFrame({"x": centroids.x.to_numpy(), "y": centroids.y.to_numpy(),
                         "area": regions.area.to_numpy()}, index=regions.iloc[:, 0].to_numpy())


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_commercial_share_peaks_in_the_core(cities: dict[str, Path], profile: str) -> None:
    city = cities[profile]
    core = manifest_of(city)["latent"]["cores"][0]
    truth = read_truth(city)
    cent = _centroids(city).reindex(truth.index)
    dist = np.hypot(cent["x"] - core["x"], cent["y"] - core["y"])
    near = truth.loc[dist < core["radius_m"], "commercial"].mean()
    far = truth.loc[dist > 2 * core["radius_m"], "commercial"].mean()
    assert near > 0.3 and near > 4 * far
    assert truth.loc[dist < core["radius_m"]].drop(columns="coverage").mean().idxmax() == "commercial"


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_poi_density_follows_commercial_share(cities: dict[str, Path], profile: str) -> None:
    city = cities[profile]
    if profile == "shenzhen":
        pois = pd.read_csv(city / "pois" / "amap_pois.csv", dtype=str)
        lonlat = pois["location"].str.split(",", expand=True).astype(float)
        x, y = Transformer.from_crs("EPSG:4326", CRS_SHENZHEN, always_xy=True).transform(lonlat[0], lonlat[1])
    else:
        pois = pd.read_csv(city / "pois" / "pointx.csv", sep="|")
        x, y = pois["feature_easting"], pois["feature_northing"]
    regions = read_regions(city)
    id_column = regions.columns[0]
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=regions.crs)
    joined = gpd.sjoin(points, regions, predicate="within")
    truth = read_truth(city)
    counts = joined.groupby(id_column).size().reindex(truth.index, fill_value=0)
    density = counts / regions.set_index(id_column).area.reindex(truth.index)
    assert density.corr(truth["commercial"], method="spearman") > 0.3
    assert np.corrcoef(density, truth["commercial"])[0, 1] > 0.5


def _trips(city: Path, profile: str) -> pd.DataFrame:
    """Trips as (o, d, weekday, hour, count) for either source format."""
    if profile == "shenzhen":
        od = pd.concat([pd.read_csv(p) for p in trip_parts(city, "signaling_od")], ignore_index=True)
        return pd.DataFrame({"o": od["o_grid"], "d": od["d_grid"], "weekday": pd.to_datetime(od["date"]).dt.dayofweek,
                             "hour": od["hour"], "count": od["count"]})
    journeys = pd.concat([pd.read_csv(p) for p in trip_parts(city, "journeys")], ignore_index=True)
    start = pd.to_datetime(journeys["Start Date"], format="%d/%m/%Y %H:%M")
    return pd.DataFrame({"o": journeys["StartStation Id"], "d": journeys["EndStation Id"],
                         "weekday": start.dt.dayofweek, "hour": start.dt.hour, "count": 1})


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_morning_commute_flows_from_homes_to_workplaces(cities: dict[str, Path], profile: str) -> None:
    city = cities[profile]
    truth = read_truth(city)
    trips = _trips(city, profile)
    residential = truth["residential"]
    work = truth["commercial"] + truth["industrial"] + truth["public_service"]

    def net_flow(sel: pd.DataFrame) -> tuple[float, float]:
        w = sel["count"].to_numpy()
        to_work = np.average(work.reindex(sel["d"]).to_numpy() - work.reindex(sel["o"]).to_numpy(), weights=w)
        from_home = np.average(residential.reindex(sel["o"]).to_numpy() - residential.reindex(sel["d"]).to_numpy(),
                               weights=w)
        return to_work, from_home

    weekday = trips["weekday"] < 5
    am_work, am_home = net_flow(trips[weekday & trips["hour"].between(7, 9)])
    pm_work, pm_home = net_flow(trips[weekday & trips["hour"].between(17, 19)])
    assert am_work > 0.1 and am_home > 0.1
    assert pm_work < -0.1 and pm_home < -0.1
