"""Stage-level input handling without Spark: the grid regions adapter and one-line config errors."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from landuse.config import Config, ConfigError, InputsConfig, SourceConfig, StudyConfig
from landuse.runner import run_stage
from landuse.spark.io import read_geoparquet
from landuse.stages import STAGES


def boundary_file(tmp_path: Path) -> Path:
    # An L-shaped "city" 1000 m × 1000 m minus its north-east 500 m × 500 m quarter.
    outline = shapely.difference(shapely.box(0, 0, 1000, 1000), shapely.box(500, 500, 1000, 1000))
    path = tmp_path / "city.gpkg"
    gpd.GeoDataFrame({"name": ["city"]}, geometry=[outline], crs="EPSG:32650").to_file(path)
    return path


def grid_config(tmp_path: Path, **options) -> Config:
    return Config(
        name="grid",
        work_dir=tmp_path / "work",
        study=StudyConfig(crs="EPSG:32650"),
        inputs=InputsConfig(regions=SourceConfig("grid", boundary_file(tmp_path), options)),
    )


def test_grid_regions_clipped_to_the_boundary(tmp_path: Path) -> None:
    config = grid_config(tmp_path, cell_size_m=250)
    result = run_stage(STAGES["regions"], config)
    assert result.status == "ran"
    regions = read_geoparquet(config, "regions", "regions")
    # 16 cells of 250 m over the bounds; the 4 in the missing quarter only touch the outline
    # (zero overlap area) and are dropped.
    assert len(regions) == 12
    assert regions["area_m2"].round(6).eq(62500.0).all()
    assert regions.crs.to_epsg() == 32650


def test_grid_needs_a_cell_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inputs.regions.options.cell_size_m: required for adapter grid"):
        run_stage(STAGES["regions"], grid_config(tmp_path))


def test_spatial_stages_need_a_projected_crs(tmp_path: Path) -> None:
    config = Config(
        name="nocrs",
        work_dir=tmp_path,
        inputs=InputsConfig(regions=SourceConfig("polygons", boundary_file(tmp_path), {"id_column": "name"})),
    )
    with pytest.raises(ConfigError, match=r"study.crs: required by the spatial stages"):
        run_stage(STAGES["regions"], config)


def test_unknown_regions_adapter(tmp_path: Path) -> None:
    config = Config(
        name="bad",
        work_dir=tmp_path,
        study=StudyConfig(crs="EPSG:32650"),
        inputs=InputsConfig(regions=SourceConfig("hexagons", boundary_file(tmp_path))),
    )
    with pytest.raises(ConfigError, match="inputs.regions.adapter: 'hexagons' is not one of polygons, grid"):
        run_stage(STAGES["regions"], config)


def test_labels_need_their_options(tmp_path: Path) -> None:
    config = grid_config(tmp_path, cell_size_m=500)
    run_stage(STAGES["regions"], config)
    landuse = SourceConfig("landuse_codes", boundary_file(tmp_path), {"code_column": "name"})
    bad = Config(name="grid", work_dir=config.work_dir, study=config.study,
                 inputs=InputsConfig(regions=config.inputs.regions, landuse=landuse))
    with pytest.raises(ConfigError, match="inputs.landuse.options.class_map_path: required for adapter landuse_codes"):
        run_stage(STAGES["labels"], bad, STAGES)
