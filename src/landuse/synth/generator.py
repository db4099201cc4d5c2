"""Orchestration: draw a synthetic city component by component, write it atomically, describe it in a manifest."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
from pyproj import Transformer

import landuse
from landuse.constants import CRS_WGS84, LANDUSE_CLASSES, SYNTH_MANIFEST_FILE
from landuse.manifest import SYNTH_GENERATOR, check_replaceable
from landuse.synth.buildings import (
    FLOOR_HEIGHT_M,
    HEIGHT_COLUMN,
    LEVELS_COLUMN,
    class_counts,
    sample_buildings,
    write_buildings,
)
from landuse.synth.classmap import load_class_map
from landuse.synth.landuse_map import NO_LANDUSE, build_latent_map, landuse_polygons
from landuse.synth.planned import planned_layer
from landuse.synth.pois import sample_pois, write_amap, write_pointx
from landuse.synth.profiles import ProfileSpec, get_profile
from landuse.synth.raster import write_landsat
from landuse.synth.regions import Regions, grid_regions, sample_docks, station_table, voronoi_regions
from landuse.synth.scales import ScaleSpec, get_scale
from landuse.synth.trips import (
    DAYS,
    PURPOSES,
    build_trip_model,
    region_masses,
    slot_counts,
    write_journeys,
    write_signaling_od,
)
from landuse.synth.truth import region_distribution
from landuse.synth.writers import (
    as_text,
    encode_lines,
    file_sha256,
    fixed_decimal,
    quote_if_needed,
    write_gpkg,
    write_lines,
)

log = logging.getLogger("landuse.synth")

GENERATOR_VERSION = "1.3.0"  # 1.3.0: building footprints (buildings.parquet)
# Independent random streams, all spawned from the one seed; order is part of the format (append only).
STREAMS: tuple[str, ...] = ("latent", "polygons", "regions", "stations", "pois", "poi_text", "trip_counts",
                            "trips", "raster", "planned", "buildings")

LANDUSE_FILE = "landuse/landuse.gpkg"
REGIONS_FILE = "regions/regions.gpkg"
AMAP_FILE = "pois/amap_pois.csv"
POINTX_FILE = "pois/pointx.csv"
SIGNALING_DIR = "trips/signaling_od"
JOURNEYS_DIR = "trips/journeys"
STATIONS_FILE = "trips/stations.csv"
IMAGERY_FILE = "imagery/landsat8_oli.tif"
TRUTH_FILE = "truth/region_landuse.csv"
PLANNED_FILE = "planning/planned_landuse.gpkg"
DEVIATIONS_FILE = "truth/planned_deviations.csv"
BUILDINGS_FILE = "buildings.parquet"
STATIONS_HEADER = "id,commonName,lat,lon,nbDocks"


def default_class_map_dir() -> Path:
    """``conf/classmaps`` of the source checkout, else of the current directory (wheel or zip installs)."""
    beside_source = Path(landuse.__file__).resolve().parents[2] / "conf" / "classmaps"
    return beside_source if beside_source.is_dir() else Path.cwd() / "conf" / "classmaps"


@dataclass
class _Run:
    """Mutable state of one generation: where files go and what was written."""

    root: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def done(self, component: str) -> float:
        seconds = time.perf_counter() - self._t0
        self.timings[component] = round(seconds, 3)
        return seconds

    def add_file(self, path: Path, fmt: str, rows: int, **extra: Any) -> None:
        entry = {"path": path.relative_to(self.root).as_posix(), "format": fmt, "rows": int(rows),
                 "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        entry.update(extra)
        self.files.append(entry)


def _extent(profile: ProfileSpec, scale: ScaleSpec) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of the study square, snapped to the regional grid."""
    to_proj = Transformer.from_crs(CRS_WGS84, profile.crs, always_xy=True)
    cx, cy = to_proj.transform(profile.centre_lon, profile.centre_lat)
    side, g = scale.extent_m, scale.grid_m
    minx = round((cx - side / 2) / g) * g
    maxy = round((cy + side / 2) / g) * g
    return float(minx), float(maxy - side), float(minx + side), float(maxy)


def _write_stations(path: Path, stations: pd.DataFrame) -> None:
    names = quote_if_needed(pa.array(stations["commonName"].to_numpy(dtype=object), type=pa.string()), ",")
    lines = encode_lines([as_text(stations["id"].to_numpy(np.int64)), names, fixed_decimal(stations["lat"], 6),
                          fixed_decimal(stations["lon"], 6), as_text(stations["nbDocks"].to_numpy(np.int64))], ",")
    write_lines(path, STATIONS_HEADER, lines)


def _build(profile: ProfileSpec, scale: ScaleSpec, seed: int, root: Path, class_map_dir: Path,
           progress: bool) -> dict[str, Any]:
    run = _Run(root=root)
    streams = dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS))))

    def rng(name: str) -> np.random.Generator:
        return np.random.default_rng(streams[name])

    class_map = load_class_map(class_map_dir / profile.classmap_file)
    bounds = _extent(profile, scale)
    minx, miny, maxx, maxy = bounds

    # --- latent map and land-use polygons ---
    run.start()
    latent = build_latent_map(profile, scale, minx, maxy, rng("latent"))
    polygons = landuse_polygons(latent, profile, class_map, scale.parcel_m, rng("polygons"))
    path = root / LANDUSE_FILE
    write_gpkg(polygons.drop(columns=["landuse_class"]), path, layer="landuse")
    run.add_file(path, "gpkg", len(polygons), layer="landuse", crs=profile.crs)
    log.info("landuse: %d cells of %d m, %d polygons (%.2f s)", latent.n**2, latent.cell_m, len(polygons),
             run.done("landuse"))

    # --- regions (and docking stations) ---
    run.start()
    stations: pd.DataFrame | None = None
    if profile.region_kind == "grid":
        regions: Regions = grid_regions(minx, maxy, scale)
    else:
        docks = sample_docks(latent, scale.n_docks, rng("regions"))
        ids = np.arange(1, len(docks) + 1, dtype=np.int64)
        regions = voronoi_regions(docks, bounds, ids)
        stations = station_table(profile, docks, ids, latent, rng("stations"))
    frame = gpd.GeoDataFrame({profile.region_id_column: regions.ids}, geometry=regions.geometry, crs=profile.crs)
    path = root / REGIONS_FILE
    write_gpkg(frame, path, layer="regions")
    run.add_file(path, "gpkg", regions.n, layer="regions", crs=profile.crs, id_column=profile.region_id_column)
    log.info("regions: %d %s regions (%.2f s)", regions.n, profile.region_kind, run.done("regions"))

    # --- ground truth ---
    run.start()
    truth = region_distribution(regions.ids, regions.geometry, polygons.geometry.to_numpy(),
                                polygons["landuse_class"].to_numpy())
    path = root / TRUTH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    truth.to_csv(path, index=False, lineterminator="\n")
    run.add_file(path, "csv", len(truth), id_column="region_id")
    full = int((np.abs(truth["coverage"] - 1.0) < 1e-9).sum())
    log.info("truth: %d regions, %d fully covered (%.2f s)", len(truth), full, run.done("truth"))

    # --- planned land use with injected deviations ---
    run.start()
    plan, deviations = planned_layer(truth, regions.geometry, profile.crs, rng("planned"))
    path = root / PLANNED_FILE
    write_gpkg(plan, path, layer="planned_landuse")
    run.add_file(path, "gpkg", len(plan), layer="planned_landuse", crs=profile.crs, id_column="region_id")
    path = root / DEVIATIONS_FILE
    deviations.to_csv(path, index=False, lineterminator="\n")
    run.add_file(path, "csv", len(deviations), id_column="region_id")
    log.info("planned: %d planned regions, %d injected deviations (%.2f s)", len(plan),
             int(deviations["deviation"].sum()), run.done("planned"))

    # --- POIs ---
    run.start()
    pois = sample_pois(latent, profile, scale.n_pois, rng("pois"))
    if profile.name == "shenzhen":
        path = root / AMAP_FILE
        write_amap(path, pois, profile, rng("poi_text"))
        run.add_file(path, "csv", pois.n, delimiter=",", encoding="utf-8", style="amap")
    else:
        path = root / POINTX_FILE
        write_pointx(path, pois, profile, rng("poi_text"))
        run.add_file(path, "csv", pois.n, delimiter="|", encoding="utf-8", style="os_pointx")
    log.info("pois: %d POIs in %d categories (%.2f s)", pois.n, len(profile.poi_categories), run.done("pois"))

    # --- trips ---
    run.start()
    centroids = regions.centroids()
    row, col = latent.cell_of(centroids[:, 0], centroids[:, 1])
    shares = truth[list(LANDUSE_CLASSES)].to_numpy()
    masses = region_masses(shares, latent.urban[row, col].astype(np.float64), latent.core[row, col].astype(np.float64))
    model = build_trip_model(centroids, masses, profile, scale)
    counts = slot_counts(scale.n_trips, rng("trip_counts"))
    if profile.trip_kind == "signaling_od":
        summary = write_signaling_od(root / SIGNALING_DIR, model, regions.ids, counts, profile.start_date,
                                     streams["trips"], scale.chunk_rows, progress)
        trip_style = "signaling_od"
    else:
        assert stations is not None
        path = root / STATIONS_FILE
        _write_stations(path, stations)
        run.add_file(path, "csv", len(stations), delimiter=",", style="tfl_bikepoint")
        summary = write_journeys(root / JOURNEYS_DIR, model, stations, counts, profile.start_date,
                                 streams["trips"], scale.chunk_rows, progress)
        trip_style = "tfl_journeys"
    for part, rows in summary.parts:
        run.add_file(part, "csv", rows, delimiter=",", style=trip_style)
    log.info("trips: %d rows, %d trips in %d part files (%.2f s)", summary.rows, summary.trips, len(summary.parts),
             run.done("trips"))

    # --- imagery ---
    run.start()
    path = root / IMAGERY_FILE
    raster_info = write_landsat(path, latent, profile.crs, scale.pixel_m, profile.start_date, rng("raster"))
    run.add_file(path, "geotiff", raster_info["width"] * raster_info["height"], crs=profile.crs)
    log.info("imagery: %dx%d px, 7 bands (%.2f s)", raster_info["width"], raster_info["height"], run.done("imagery"))

    # --- building footprints ---
    run.start()
    buildings = sample_buildings(latent, rng("buildings"))
    path = root / BUILDINGS_FILE
    write_buildings(path, buildings, profile.crs)
    run.add_file(path, "geoparquet", buildings.n, crs=profile.crs, id_column="building_id",
                 height_column=HEIGHT_COLUMN, levels_column=LEVELS_COLUMN)
    log.info("buildings: %d footprints (%.2f s)", buildings.n, run.done("buildings"))

    to_lonlat = Transformer.from_crs(profile.crs, CRS_WGS84, always_xy=True)
    lonlat = to_lonlat.transform_bounds(minx, miny, maxx, maxy, densify_pts=21)
    surveyed = latent.classes != NO_LANDUSE
    cell_share = np.bincount(latent.classes[surveyed].ravel(), minlength=len(LANDUSE_CLASSES)) / latent.classes.size
    return {
        "generator": {"name": SYNTH_GENERATOR, "version": GENERATOR_VERSION, "package_version": landuse.__version__},
        "profile": profile.name,
        "scale": scale.name,
        "seed": seed,
        "crs": profile.crs,
        "extent": {"projected": [minx, miny, maxx, maxy], "lonlat": [round(float(v), 6) for v in lonlat],
                   "side_m": scale.extent_m},
        "classes": list(LANDUSE_CLASSES),
        "class_map": {"file": profile.classmap_file, "sha256": file_sha256(class_map.path),
                      "code_column": profile.landuse_code_column, "name_column": profile.landuse_name_column},
        "regions": {"kind": profile.region_kind, "id_column": profile.region_id_column,
                    "grid_m": scale.grid_m if profile.region_kind == "grid" else None},
        "period": {"start_date": profile.start_date.isoformat(), "days": DAYS, "clock": "local time"},
        "trips": {"kind": profile.trip_kind, "model_k": model.k,
                  "by_purpose": {p: int(counts[..., i].sum()) for i, p in enumerate(PURPOSES)}},
        "raster": raster_info,
        "latent": {"cell_m": latent.cell_m,
                   "cores": [{"x": round(x, 3), "y": round(y, 3), "radius_m": round(r, 3)} for x, y, r in latent.cores],
                   "class_cell_shares": {c: round(float(s), 6) for c, s in zip(LANDUSE_CLASSES, cell_share)}},
        "counts": {"regions": regions.n, "landuse_polygons": len(polygons), "pois": pois.n,
                   "trip_rows": summary.rows, "trips": summary.trips, "trip_files": len(summary.parts),
                   "stations": 0 if stations is None else len(stations), "buildings": buildings.n},
        "buildings": {"by_class": class_counts(buildings), "floor_height_m": FLOOR_HEIGHT_M},
        "files": run.files,
        "timings": run.timings,
    }


def _swap_into_place(staged: Path, out_dir: Path) -> None:
    """Move ``staged`` to ``out_dir``; an existing ``out_dir`` is renamed aside first, then deleted.

    Only an empty directory or a landuse output is ever replaced (checked again here, right before
    the rename, in case the directory was filled while the city was being generated).
    """
    check_replaceable(out_dir)
    if out_dir.exists() or out_dir.is_symlink():
        aside = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, aside)
        os.replace(staged, out_dir)
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
    else:
        os.replace(staged, out_dir)


def generate(profile: str, scale: str, seed: int, out_dir: Path, class_map_dir: Path | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Generate a synthetic city into ``out_dir`` and return its manifest (also ``out_dir/manifest.json``).

    Args:
        profile: ``shenzhen`` or ``london`` (source formats, CRS, regional units).
        scale: ``tiny``, ``small``, ``medium`` or ``large``.
        seed: non-negative integer; the same seed gives byte-identical files.
        out_dir: destination directory; replaced atomically if it exists, and only when it is empty or a
            landuse output (its ``manifest.json`` is the generator's, or it has a ``_manifest.json``).
        class_map_dir: directory with the class-map CSVs (default ``<repo>/conf/classmaps``).
        progress: also log per-day progress of trip generation.

    Raises:
        ValueError: unknown profile or scale, or a negative / non-integer seed.
        landuse.manifest.UnsafeOutputError: ``out_dir`` exists, is not empty and is not a landuse output
            (checked before generating; nothing is written or deleted).
    """
    profile_spec = get_profile(profile)
    scale_spec = get_scale(scale)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    class_map_dir = Path(class_map_dir) if class_map_dir is not None else default_class_map_dir()
    out_dir = Path(out_dir).absolute()
    check_replaceable(out_dir)  # before minutes of generation, not only at the swap
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    log.info("synth: generating %s/%s seed %d -> %s", profile, scale, seed, out_dir)
    started = time.perf_counter()
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staged.chmod(0o755)  # mkdtemp makes it private; the city is an ordinary output directory
    try:
        manifest = _build(profile_spec, scale_spec, seed, staged, class_map_dir, progress)
        manifest["timings"]["total"] = round(time.perf_counter() - started, 3)
        (staged / SYNTH_MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
        _swap_into_place(staged, out_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    log.info("synth: %s/%s done in %.1f s", profile, scale, manifest["timings"]["total"])
    return manifest
