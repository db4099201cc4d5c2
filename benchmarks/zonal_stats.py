"""Benchmark: per-region image statistics, zonal "centre" (hand-written) vs "exactextract" (coverage-weighted).

In this one process and on the same raster and regions, times ``region_image_stats`` (the function
each Spark task runs on its partition's regions) with ``embeddings.image.zonal: centre`` and with
``exactextract``, ``--repeats`` times each (alternating which goes first) after one untimed warm-up,
and reports the medians. Spark's own overhead is the same for both and is left out.

Data (``--data``):

* ``saltlake`` (default): the real Landsat 7 fixture (7 bands, 1489 x 1482 pixels of ~23 x 30 m,
  EPSG:4326) under ../shared/data/fixtures, with the three spectral indices, and a grid of square
  regions of ``--cell`` metres in UTM 12N over its footprint (the pixels are not aligned to them);
* ``nyc``: the real Landsat land-surface temperature raster of Manhattan (one band, 558 x 484
  pixels) with the 180 mh-180 regions of conf/nyc_manhattan.yaml.

Accuracy (untimed), over the regions with pixels by both methods: the largest and mean absolute
difference of the per-band means (``max_abs_mean_diff``, ``mean_abs_mean_diff``; raster units), the
mean relative difference of the band means (``mean_rel_mean_diff``), the mean absolute difference of
``coverage`` (``mean_abs_coverage_diff``; exactextract's is the exact valid-area fraction, centre's
n_pixels * pixel area), the regions only exactextract finds pixels for (``regions_only_exact``:
polygons too small or thin to hold a pixel centre), and — the reason the percentiles are computed per
pixel from exactextract's values and coverage fractions rather than with its ``quantile`` operation —
the largest difference between exactextract's own median and the per-pixel weighted median
(``ee_quantile_max_diff``).

Times are wall clock and CPU seconds of this process (the machine may be shared: ``load1`` is the
1-minute load average at the end); ``ratio`` and ``cpu_ratio`` are exactextract's over centre's.
Ends with one ``key=value`` line.

    PYTHONPATH=src .venv/bin/python benchmarks/zonal_stats.py --data saltlake --cell 250 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

for _key, _value in {"DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyproj  # noqa: E402
import shapely  # noqa: E402

from landuse.config import ImageEmbeddingConfig, SourceConfig  # noqa: E402
from landuse.features import imagery  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SALTLAKE = SHARED / "fixtures" / "landsat7_etm_7band_saltlake.tif"
NYC_RASTER = SHARED / "nyc_manhattan" / "satellite" / "landsat_lst_celsius_20210724.tif"
NYC_REGIONS = SHARED / "nyc_manhattan" / "regions" / "mh180" / "mh-180.shp"
UTM12, NYC_CRS = "EPSG:32612", "EPSG:32118"


def saltlake_data(cell: float) -> tuple[SourceConfig, dict, str, pd.DataFrame]:
    """The Landsat 7 fixture and a grid of ``cell`` m squares (UTM 12N) whose centres lie on it."""
    with imagery.open_raster(str(SALTLAKE)) as src:
        footprint = shapely.box(*src.bounds)
        to_utm = pyproj.Transformer.from_crs(src.crs.to_wkt(), UTM12, always_xy=True)
    footprint = shapely.transform(shapely.segmentize(footprint, 0.001), lambda xy: np.column_stack(to_utm.transform(*xy.T)))
    xmin, ymin, xmax, ymax = footprint.bounds
    xs, ys = np.meshgrid(np.arange(xmin, xmax, cell), np.arange(ymin, ymax, cell))
    cells = shapely.box(xs.ravel(), ys.ravel(), xs.ravel() + cell, ys.ravel() + cell)
    cells = cells[shapely.contains_xy(footprint, xs.ravel() + cell / 2, ys.ravel() + cell / 2)]
    frame = pd.DataFrame({"region_id": np.arange(len(cells), dtype=np.int64), "geometry": shapely.to_wkb(cells)})
    return SourceConfig("landsat7_etm", SALTLAKE, {}), {}, UTM12, frame


def nyc_data() -> tuple[SourceConfig, dict, str, pd.DataFrame]:
    """The Manhattan land-surface temperature raster and the mh-180 regions (as conf/nyc_manhattan.yaml)."""
    import geopandas as gpd

    regions = gpd.read_file(NYC_REGIONS).to_crs(NYC_CRS)
    frame = pd.DataFrame({"region_id": regions["region_id"].to_numpy(dtype=np.int64),
                          "geometry": shapely.to_wkb(regions.geometry.to_numpy())})
    return SourceConfig("raster", NYC_RASTER, {"band_map": {"lst": 1}}), {"indices": ()}, NYC_CRS, frame


def exactextract_median_gap(spec: imagery.RasterSpec, frame: pd.DataFrame, crs: str) -> float:
    """Largest |exactextract's own median - the per-pixel weighted median| over the regions and band planes."""
    from exactextract import exact_extract
    from exactextract.feature import JSONFeatureSource
    from exactextract.operation import Operation

    with imagery.open_raster(spec.path) as src:
        geoms = imagery._raster_geometries(frame, crs, src)
        features = [{"type": "Feature", "properties": {"slot": i}, "geometry": g.__geo_interface__}
                    for i, g in enumerate(geoms) if not g.is_empty and g.area > 0]
        sources = imagery._plane_sources(src, imagery._Planes(src, spec))[: len(spec.band_map)]
        ops = [op for s in sources for op in (Operation("quantile", f"{s.name()}_q", s, None, {"q": 0.5}),
                                              Operation("values", f"{s.name()}_v", s, None, {}),
                                              Operation("coverage", f"{s.name()}_c", s, None, {}))]
        out = exact_extract(sources, JSONFeatureSource(features), ops, output="pandas")
    gap = 0.0
    for k in range(0, len(ops), 3):
        for builtin, values, weights in zip(*(out[op.name] for op in ops[k:k + 3])):
            if len(values):
                gap = max(gap, abs(builtin - float(imagery._weighted_percentiles(values, weights, (50.0,))[0, 0])))
    return gap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["saltlake", "nyc"], default="saltlake")
    parser.add_argument("--cell", type=float, default=250.0, help="grid cell side in metres (saltlake)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    source, image, crs, frame = saltlake_data(args.cell) if args.data == "saltlake" else nyc_data()
    specs = {zonal: imagery.resolve_raster_spec(source, ImageEmbeddingConfig(zonal=zonal, **image))
             for zonal in ("centre", "exactextract")}
    print(f"{args.data}: {len(frame)} regions, {len(imagery.feature_names(specs['centre']))} features, "
          f"{args.repeats} repeats", flush=True)
    results = {zonal: imagery.region_image_stats(frame, crs, spec) for zonal, spec in specs.items()}  # warm-up
    times: dict[str, list[float]] = {zonal: [] for zonal in specs}
    cpu: dict[str, list[float]] = {zonal: [] for zonal in specs}
    for repeat in range(args.repeats):
        for zonal in (list(specs) if repeat % 2 == 0 else list(specs)[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            imagery.region_image_stats(frame, crs, specs[zonal])
            times[zonal].append(time.perf_counter() - t0)
            cpu[zonal].append(time.process_time() - c0)
    centre_s, exact_s = statistics.median(times["centre"]), statistics.median(times["exactextract"])
    centre_cpu, exact_cpu = statistics.median(cpu["centre"]), statistics.median(cpu["exactextract"])
    for zonal in specs:
        print(f"{zonal}: wall {' '.join('%.3f' % t for t in times[zonal])} s, cpu {' '.join('%.3f' % t for t in cpu[zonal])} s")

    centre, exact = results["centre"], results["exactextract"]
    both = (centre["has_image"] & exact["has_image"]).to_numpy()
    names = imagery.feature_names(specs["centre"])
    band_means = [names.index(f"{role}_mean") for role in specs["centre"].band_map]
    a = np.stack(exact["vector"][both].to_numpy())[:, band_means].astype(np.float64)
    b = np.stack(centre["vector"][both].to_numpy())[:, band_means].astype(np.float64)
    diff = np.abs(a - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(np.abs(a) > 0, diff / np.abs(a), 0.0)
    figures = {
        "data": args.data,
        "regions": len(frame),
        "regions_with_image": int(exact["has_image"].sum()),
        "regions_only_exact": int((exact["has_image"] & ~centre["has_image"]).sum()),
        "pixels": int(exact["n_pixels"].sum()),
        "pixels_centre": int(centre["n_pixels"].sum()),
        "features": len(names),
        "centre_s": round(centre_s, 3),
        "exactextract_s": round(exact_s, 3),
        "ratio": round(exact_s / centre_s, 2),
        "centre_cpu_s": round(centre_cpu, 3),
        "exactextract_cpu_s": round(exact_cpu, 3),
        "cpu_ratio": round(exact_cpu / centre_cpu, 2),
        "load1": round(os.getloadavg()[0], 1),
        "max_abs_mean_diff": round(float(diff.max()), 4) if diff.size else 0.0,
        "mean_abs_mean_diff": round(float(diff.mean()), 4) if diff.size else 0.0,
        "mean_rel_mean_diff": round(float(rel.mean()), 5) if rel.size else 0.0,
        "mean_abs_coverage_diff": round(float(np.abs(exact["coverage"] - centre["coverage"]).mean()), 4),
        "ee_quantile_max_diff": round(exactextract_median_gap(specs["exactextract"], frame, crs), 4),
    }
    print(" ".join(f"{key}={value}" for key, value in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
