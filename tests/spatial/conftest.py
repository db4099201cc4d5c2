"""Fixtures for the spatial tests: small irregular partitions with known geometry."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest

from landuse.spatial.regions import regions_from_geodataframe, voronoi_regions
from tests.spatial.helpers import CRS

MH180 = "nyc_manhattan/regions/mh180/mh-180.shp"
NYC_CRS = "EPSG:32118"


@pytest.fixture(scope="session")
def voronoi_table() -> gpd.GeoDataFrame:
    """60 canonical Voronoi regions over a 2 km square, with shuffled non-contiguous ids."""
    rng = np.random.default_rng(7)
    seeds = rng.uniform(0.0, 2000.0, (60, 2))
    cells = voronoi_regions(seeds, (0.0, 0.0, 2000.0, 2000.0), CRS)
    cells["zone"] = rng.permutation(len(cells)) * 3 + 11
    return regions_from_geodataframe(cells, "zone", CRS)


@pytest.fixture(scope="session")
def mh180(shared_data) -> gpd.GeoDataFrame:
    """The real 180-region Manhattan partition as a canonical table in EPSG:32118."""
    path = shared_data / MH180
    if not path.exists():
        pytest.skip(f"{path} not found")
    return regions_from_geodataframe(gpd.read_file(path), "region_id", NYC_CRS)


@pytest.fixture(scope="session")
def synthetic_city(tmp_path_factory: pytest.TempPathFactory):
    """``city(profile, scale)``: a synthetic city generated once per session (tiny/small take seconds)."""
    from pathlib import Path

    from landuse.synth import generate

    root = tmp_path_factory.mktemp("synthetic-cities")
    made: dict[tuple[str, str], Path] = {}

    def city(profile: str, scale: str) -> Path:
        if (profile, scale) not in made:
            out = root / f"{profile}-{scale}"
            generate(profile, scale, 11, out)
            made[profile, scale] = out
        return made[profile, scale]

    return city


@pytest.fixture(scope="session")
def city_regions(synthetic_city):
    """``regions(profile, scale)``: the canonical regions table of a synthetic city."""
    from landuse.synth.profiles import get_profile

    def regions(profile: str, scale: str) -> gpd.GeoDataFrame:
        spec = get_profile(profile)
        raw = gpd.read_file(synthetic_city(profile, scale) / "regions" / "regions.gpkg")
        return regions_from_geodataframe(raw, spec.region_id_column, spec.crs)

    return regions


@pytest.fixture(scope="session")
def city_landuse(synthetic_city):
    """``landuse(profile, scale)``: a synthetic city's land-use polygons with their target class."""
    import json

    import pandas as pd

    from landuse.synth import default_class_map_dir

    def landuse(profile: str, scale: str) -> gpd.GeoDataFrame:
        city = synthetic_city(profile, scale)
        class_map = json.loads((city / "manifest.json").read_text(encoding="utf-8"))["class_map"]
        polygons = gpd.read_file(city / "landuse" / "landuse.gpkg")
        table = pd.read_csv(default_class_map_dir() / class_map["file"], dtype=str, keep_default_na=False)
        polygons["landuse_class"] = polygons[class_map["code_column"]].map(dict(zip(table["code"], table["landuse_class"])))
        return polygons

    return landuse
