"""Stages ``imagery`` (H_img, statistical) and ``location`` (H_geo).

* ``imagery``: per region, a windowed read of ``inputs.imagery`` masked by the region polygon
  (reprojected to the raster's CRS): band mean / std / percentiles and spectral indices through the
  adapter's band map (``landsat8_oli``, ``landsat7_etm``, or ``raster`` with ``options.band_map``),
  nodata excluded, a ``coverage`` column, regions outside the raster flagged (``has_image``). The
  statistics weight each pixel by the fraction of it inside the polygon (exactextract), or with
  ``embeddings.image.zonal: centre`` take the pixels whose centre is inside, unweighted. With
  ``embeddings.image.patches`` also fixed-size multi-band tiles per region (``image_patches``) for
  the image encoders. Runs on Spark partitioned by region; every task opens the raster itself.
* ``location``: the projected centroid → multi-scale sinusoidal features normalised to the extent
  of the regions' centroids (``geo_features``); in inference mode (``inference.training_tables``)
  to the training run's extent, so a place gets the features it had in training.
"""

from __future__ import annotations

import logging

from landuse.config import Config, ConfigError, iter_input_paths
from landuse.runner import Stage, StageContext, no_spark
from landuse.spark.io import parquet_rows, read_pandas, read_table, table_path, write_pandas, write_spark
from landuse.spark.schemas import CENTROID_X, CENTROID_Y, GEOMETRY, REGION_ID, T_REGIONS
from landuse.stages.embeddings import inference_inputs, training_table
from landuse.stages.regions import study_crs
from landuse.storage import read_parquet

log = logging.getLogger(__name__)
T_IMAGE_FEATURES = "image_features"
T_IMAGE_PATCHES = "image_patches"
T_GEO_FEATURES = "geo_features"


def run_imagery(ctx: StageContext) -> None:
    """Per-region raster statistics (and patches) on Spark."""

    from landuse.features.imagery import feature_names, image_features, image_patches, resolve_raster_spec

    config, cfg = ctx.config, ctx.config.embeddings.image
    assert config.inputs.imagery is not None  # enabled() guarantees it
    spec = resolve_raster_spec(config.inputs.imagery, cfg)
    crs = study_crs(config)
    partitions = cfg.partitions or config.spark.shuffle_partitions
    regions = read_table(ctx.spark, config, T_REGIONS, "regions").select(REGION_ID, GEOMETRY)
    features = image_features(regions, crs, spec, partitions)
    write_spark(features, ctx.out(T_IMAGE_FEATURES), partitions=1)  # one row per region: small
    # the staging dir starts with "." (hidden to Spark's file listing), so read it back with pyarrow
    stats = read_parquet(ctx.out(T_IMAGE_FEATURES), columns=["has_image", "coverage"]).to_pandas()
    names = feature_names(spec)
    ctx.summary.update(regions=len(stats), regions_with_image=int(stats["has_image"].sum()),
                       mean_coverage=round(float(stats["coverage"].mean()), 6) if len(stats) else 0.0,
                       features=names, dim=len(names), raster=str(spec.path), band_map=dict(spec.band_map))
    if cfg.patches:
        stride = cfg.patch_stride or cfg.patch_size
        patches = image_patches(regions, crs, spec, cfg.patch_size, stride, partitions)
        write_spark(patches, ctx.out(T_IMAGE_PATCHES))
        n_patches = parquet_rows(ctx.out(T_IMAGE_PATCHES))
        ctx.summary.update(patches=n_patches, patch_size=cfg.patch_size, patch_stride=stride,
                           patch_bands=list(spec.band_map))
        log.info("imagery: %d patches of %d px", n_patches, cfg.patch_size)
    log.info("imagery: %d regions, %d with image, %d features", len(stats), int(stats["has_image"].sum()), len(names))


@no_spark
def run_location(ctx: StageContext) -> None:
    """Sinusoidal multi-scale encoding of region centroids."""
    from landuse.features.location import geo_feature_table

    config, cfg = ctx.config, ctx.config.embeddings.geo
    regions = read_pandas(config, T_REGIONS, "regions", columns=[REGION_ID, CENTROID_X, CENTROID_Y])
    extent = training_extent(config)
    table = geo_feature_table(regions, cfg.scales, cfg.include_xy, extent=extent)
    if extent is not None:
        ctx.summary.update(extent=list(extent), extent_from=str(training_table(config, T_REGIONS)))
    write_pandas(table, ctx.out(T_GEO_FEATURES))
    dim = len(table["vector"].iloc[0]) if len(table) else 0
    ctx.summary.update(regions=len(table), dim=dim, scales=list(cfg.scales))
    log.info("location: %d regions, %d-d encoding", len(table), dim)


def training_extent(config: Config) -> tuple[float, float, float, float] | None:
    """In inference mode the extent the training run normalised to (its regions' centroid box), else None.

    New regions must be encoded in the training run's coordinates: their own extent would map the
    same place to different features.
    """
    source = training_table(config, T_REGIONS)
    if source is None:
        return None
    xy = read_parquet(source, columns=[CENTROID_X, CENTROID_Y]).to_pandas()
    if xy.empty:
        raise ConfigError(f"inference.training_tables: the training regions table {source} has no rows")
    return (float(xy[CENTROID_X].min()), float(xy[CENTROID_Y].min()), float(xy[CENTROID_X].max()),
            float(xy[CENTROID_Y].max()))


def imagery_outputs(config: Config) -> dict:
    """image_features, plus image_patches when patches are on."""
    outputs = {T_IMAGE_FEATURES: table_path(config, T_IMAGE_FEATURES)}
    if config.embeddings.image.patches:
        outputs[T_IMAGE_PATCHES] = table_path(config, T_IMAGE_PATCHES)
    return outputs


IMAGERY_STAGE = Stage(
    name="imagery",
    description="H_img: masked per-region band statistics + spectral indices (rasterio + exactextract on Spark); image patches",
    run=run_imagery,
    outputs=imagery_outputs,
    config_keys=("study", "inputs.imagery", "embeddings.image"),
    inputs=lambda config: [p for key, p in iter_input_paths(config) if key.startswith("inputs.imagery")],
    upstream=("regions",),
    enabled=lambda config: config.inputs.imagery is not None and config.inputs.regions is not None,
)

LOCATION_STAGE = Stage(
    name="location",
    description="H_geo: multi-scale sinusoidal encoding of region centroids, normalised to the extent",
    run=run_location,
    outputs=lambda config: {T_GEO_FEATURES: table_path(config, T_GEO_FEATURES)},
    config_keys=("embeddings.geo",),
    inputs=lambda config: inference_inputs(config, T_REGIONS),  # inference mode: the training extent
    upstream=("regions",),
    enabled=lambda config: config.inputs.regions is not None,
)
