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
