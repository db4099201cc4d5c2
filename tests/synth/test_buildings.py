"""Synthetic building footprints: reproducible with the seed, non-overlapping, following the land use."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import yaml

from landuse.constants import CRS_SHENZHEN, LANDUSE_CLASSES, SYNTH_MANIFEST_FILE
from landuse.features.morphology import shape_descriptors
from landuse.synth import generate
from landuse.synth.buildings import STYLE_NAMES, sample_buildings
from landuse.synth.generator import BUILDINGS_FILE
from landuse.synth.landuse_map import CLS, COVER, build_latent_map
from landuse.synth.profiles import get_profile
from landuse.synth.scales import get_scale
from landuse.synth.writers import file_sha256

SEED = 11


def latent_map(seed: int = SEED, profile: str = "shenzhen", scale: str = "tiny"):
    return build_latent_map(get_profile(profile), get_scale(scale), 800_000.0, 2_500_000.0, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def sample():
    latent = latent_map()
    return latent, sample_buildings(latent, np.random.default_rng(3))


def test_same_seed_same_buildings_other_seed_differs() -> None:
    latent = latent_map()
    a = sample_buildings(latent, np.random.default_rng(3))
    b = sample_buildings(latent, np.random.default_rng(3))
    c = sample_buildings(latent, np.random.default_rng(4))
    assert a.n == b.n and shapely.equals_exact(a.geometry, b.geometry, tolerance=0).all()
    np.testing.assert_array_equal(a.height, b.height)
    np.testing.assert_array_equal(a.levels, b.levels)
    assert c.n != a.n or not shapely.equals_exact(a.geometry, c.geometry, tolerance=0).all()


def test_footprints_are_valid_and_never_overlap(sample) -> None:
    _, s = sample
    assert 500 <= s.n <= 10_000  # tiny: hundreds to a few thousand
    assert shapely.is_valid(s.geometry).all() and (shapely.area(s.geometry) >= 10).all()
    tree = shapely.STRtree(s.geometry)
    left, right = tree.query(s.geometry, predicate="intersects")
    pairs = left < right
    if pairs.any():
        assert shapely.area(shapely.intersection(s.geometry[left[pairs]], s.geometry[right[pairs]])).max() < 1e-6
    assert (s.levels >= 1).all()
    np.testing.assert_allclose(s.height - 3.0 * s.levels, np.clip(s.height - 3.0 * s.levels, 0.3, 2.0), atol=0.051)


def test_buildings_follow_the_land_use(sample) -> None:
    latent, s = sample
    cell_area = latent.cell_m**2
    cells = np.bincount(latent.classes[latent.classes < len(LANDUSE_CLASSES)].ravel(), minlength=len(LANDUSE_CLASSES))
    area = np.bincount(s.landuse_class, weights=shapely.area(s.geometry), minlength=len(LANDUSE_CLASSES))
    share = dict(zip(LANDUSE_CLASSES, area / np.maximum(cells * cell_area, 1)))
    for built in ("residential", "commercial", "industrial"):
        for open_land in ("green_space", "non_construction"):
            assert share[built] > 5 * share[open_land], (built, open_land, share)
    frame = pd.DataFrame({"cls": np.array(LANDUSE_CLASSES)[s.landuse_class], "style": np.array(STYLE_NAMES)[s.style],
                          "height": s.height, "area": shapely.area(s.geometry)})
    frame["elongation"] = shape_descriptors(s.geometry)["elongation"]
    mean = frame.groupby("cls")[["height", "area", "elongation"]].mean()
    assert mean.loc["commercial", "height"] > mean.loc["residential", "height"] > mean.loc["industrial", "height"]
    assert mean.loc["industrial", "elongation"] > mean.loc["residential", "elongation"]
    assert mean.loc["commercial", "area"] > mean.loc["residential", "area"]
    assert frame.groupby("style")["area"].mean()["residential_house"] < frame.groupby("style")["area"].mean()[
        "residential_block"]
    # nothing on water
    row, col = latent.cell_of(*shapely.get_coordinates(shapely.centroid(s.geometry)).T)
    assert not np.isin(latent.cover[row, col], [COVER["river"], COVER["lake"]]).any()
    assert (latent.classes[row, col] == s.landuse_class).all()
    assert (s.landuse_class != CLS["green_space"]).mean() > 0.99


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth-buildings") / "shenzhen"
    generate("shenzhen", "tiny", SEED, out)
    return out


def test_generated_file_is_geoparquet_with_heights_in_the_manifest(city: Path, tmp_path: Path) -> None:
    manifest = json.loads((city / SYNTH_MANIFEST_FILE).read_text(encoding="utf-8"))
    entry = next(f for f in manifest["files"] if f["path"] == BUILDINGS_FILE == "buildings.parquet")
    footprints = gpd.read_parquet(city / BUILDINGS_FILE)
    assert footprints.crs.to_epsg() == int(CRS_SHENZHEN.split(":")[1])
    assert list(footprints.columns) == ["building_id", "height", "levels", "geometry"]
    assert entry["format"] == "geoparquet" and entry["rows"] == len(footprints) == manifest["counts"]["buildings"]
    assert entry["height_column"] == "height" and entry["levels_column"] == "levels"
    assert sum(manifest["buildings"]["by_class"].values()) == len(footprints)
    assert footprints["building_id"].is_unique and (footprints["height"] > 0).all()
    again = generate("shenzhen", "tiny", SEED, tmp_path / "again")
    again_entry = next(f for f in again["files"] if f["path"] == BUILDINGS_FILE)
    assert again_entry["sha256"] == entry["sha256"] == file_sha256(city / BUILDINGS_FILE)


def test_built_up_share_is_higher_in_built_regions_than_green_ones(city: Path) -> None:
    regions = gpd.read_file(city / "regions" / "regions.gpkg")
    truth = pd.read_csv(city / "truth" / "region_landuse.csv").set_index("region_id")
    footprints = gpd.read_parquet(city / BUILDINGS_FILE)
    centroids = shapely.centroid(footprints.geometry.to_numpy())
    point, region = shapely.STRtree(regions.geometry.to_numpy()).query(centroids, predicate="within")
    built_area = np.bincount(region, weights=shapely.area(footprints.geometry.to_numpy()[point]),
                             minlength=len(regions))
    share = pd.Series(built_area / regions.geometry.area.to_numpy(), index=regions["grid_id"].to_numpy())
    truth = truth.loc[share.index]
    built = truth[["residential", "commercial", "industrial"]].sum(axis=1) > 0.7
    green = truth[["green_space", "non_construction"]].sum(axis=1) > 0.7
    assert built.sum() >= 10 and green.sum() >= 10
    assert share[built].mean() > 4 * share[green].mean()
    assert share[built].median() > share[green].median()


@pytest.mark.parametrize("profile", ["shenzhen", "london"])
def test_synthetic_configs_declare_the_footprints(repo_root: Path, profile: str) -> None:
    from landuse.config import load_config

    raw = yaml.safe_load((repo_root / "conf" / f"synthetic_{profile}.yaml").read_text())
    assert raw["inputs"]["buildings"]["adapter"] == "footprints"
    config = load_config(repo_root / "conf" / f"synthetic_{profile}.yaml")
    assert config.inputs.buildings.path == config.synth.dir / BUILDINGS_FILE
    assert config.inputs.buildings.options["height_column"] == "height"
