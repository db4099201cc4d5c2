"""Benchmark: assign N points to 10k irregular polygons — builtin vs Sedona engines (Spark local) vs GeoPandas.

Generates Voronoi regions around clustered seeds and N points (uniform over a slightly larger
extent, so some fall outside every region, plus clusters, plus a few points placed exactly on
polygon vertices to exercise the shared-boundary rule), written to Parquet in chunks. Then, in this
one process and on the same points:

1. each Spark engine (timed): ``spark.read.parquet`` → ``assign_points`` → points per region
   (``groupBy().count()``; only the ≤10k counts reach the driver, never the points) — the builtin
   engine, and the Sedona engine when its jars are on the classpath (``make jars``);
2. GeoPandas (timed): per Parquet file, ``points_from_xy`` + ``sjoin(predicate="intersects")`` +
   the same smallest-region_id rule, on the same points (all of them, file by file);
3. verification (untimed): each engine writes its per-point assignments with Spark, which are
   compared with GeoPandas' in a Spark join on point_id, counting differences per engine.

Before the timed runs, an untimed warm-up on separately generated points starts the Python workers
and warms the JVM's JIT for each engine. Each side runs ``--repeats`` times (a fresh engine, and so
a fresh region index, each time) and the median is reported. Prints the throughputs (points/s,
wall clock), their ratios (``builtin_vs_geopandas``, ``sedona_vs_geopandas``, ``sedona_vs_builtin``:
each the first's throughput over the second's), the driver's peak RSS at the end of the Spark
phase (the GeoPandas phase runs afterwards), the JVM's peak RSS during it, the number of
assignments differing from GeoPandas per engine, the CPU seconds of each side (the machine may be
shared: ``load1`` is the 1-minute load average before the timed runs) and ends with one
``key=value`` line.

    .venv/bin/python benchmarks/spatial_join.py --points 1000000
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

for _key, _value in {"DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
    os.environ.setdefault(_key, _value)

import geopandas as gpd  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import shapely  # noqa: E402

from landuse.config import Config, SparkConfig, SpatialConfig  # noqa: E402
from landuse.spark.session import build_session, session_engine  # noqa: E402
from landuse.spatial.engines import (  # noqa: E402
    ENGINE_BUILTIN,
    ENGINE_SEDONA,
    BuiltinJoinEngine,
    SedonaJoinEngine,
    SpatialJoinEngine,
)
from landuse.spatial.regions import regions_from_geodataframe, to_spark, voronoi_regions  # noqa: E402

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

CRS = "EPSG:32650"
EXTENT = (500_000.0, 2_480_000.0, 540_000.0, 2_520_000.0)  # 40 km × 40 km, UTM 50N (Shenzhen-like)
FILE_ROWS = 500_000  # points per Parquet file
ROW_GROUP = 125_000


def _clustered(n: int, rng: np.random.Generator, centres: np.ndarray, spread: float) -> np.ndarray:
    which = rng.integers(0, len(centres), n)
    return centres[which] + rng.normal(0.0, spread, (n, 2))


def make_regions(n_regions: int, rng: np.random.Generator) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Voronoi cells of clustered + uniform seeds: small cells in dense centres, large ones outside."""
    xmin, ymin, xmax, ymax = EXTENT
    width = xmax - xmin
    inset = 0.15 * width
    centres = rng.uniform((xmin + inset, ymin + inset), (xmax - inset, ymax - inset), (12, 2))
    n_clustered = int(0.7 * n_regions)
    seeds = np.vstack(
        [
            _clustered(2 * n_clustered, rng, centres, 0.06 * width),
            rng.uniform((xmin, ymin), (xmax, ymax), (2 * (n_regions - n_clustered), 2)),
        ]
    )
    inside = (seeds[:, 0] > xmin) & (seeds[:, 0] < xmax) & (seeds[:, 1] > ymin) & (seeds[:, 1] < ymax)
    seeds = np.unique(seeds[inside], axis=0)
    seeds = seeds[rng.permutation(len(seeds))[:n_regions]]
    cells = voronoi_regions(seeds, EXTENT, CRS)
    # Irregular ids (not 0..n-1) so the tie rule is exercised on real id order.
    cells["zone"] = rng.permutation(len(cells)) * 7 + 1000
    return regions_from_geodataframe(cells, "zone", CRS), centres


def write_points(n: int, rng: np.random.Generator, centres: np.ndarray, regions: gpd.GeoDataFrame, out: Path) -> None:
    """N points in Parquet files of FILE_ROWS rows: 45% uniform (some outside), 55% clustered, 0.1% on vertices."""
    out.mkdir(parents=True)
    xmin, ymin, xmax, ymax = EXTENT
    width = xmax - xmin
    margin = 0.02 * width  # uniform points spill past the regions: some fall in none
    vertices = shapely.get_coordinates(np.asarray(regions.geometry.values, dtype=object))
    for part, start in enumerate(range(0, n, FILE_ROWS)):
        m = min(FILE_ROWS, n - start)
        n_uniform, n_vertex = int(0.45 * m), max(1, m // 1000)
        n_cluster = m - n_uniform - n_vertex
        xy = np.vstack(
            [
                rng.uniform((xmin - margin, ymin - margin), (xmax + margin, ymax + margin), (n_uniform, 2)),
                _clustered(n_cluster, rng, centres, 0.05 * width),
                vertices[rng.integers(0, len(vertices), n_vertex)],
            ]
        )
        xy = xy[rng.permutation(m)]
        table = pa.table({"point_id": np.arange(start, start + m, dtype=np.int64), "x": xy[:, 0], "y": xy[:, 1]})
        pq.write_table(table, out / f"part-{part:05d}.parquet", row_group_size=ROW_GROUP)


class ProcessMonitor:
    """Samples the peak RSS of the Spark JVM (a child of this driver process) in a thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.jvm_peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    if "java" in child.name():
                        total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.jvm_peak_bytes = max(self.jvm_peak_bytes, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "ProcessMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def process_tree_cpu_s() -> float:
    """CPU seconds used so far by this process and all its descendants (JVM, Python workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for proc in me.children(recursive=True):
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def driver_peak_rss_mb() -> float:
    """Peak RSS of this (driver) process so far; ru_maxrss is KiB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def geopandas_assign(regions: gpd.GeoDataFrame, points_dir: Path, out_dir: Path | None) -> tuple[float, float]:
    """GeoPandas sjoin + smallest-id rule on every points file: (wall s, CPU s) spent assigning.

    The assignments are written to ``out_dir`` (untimed) when given."""
    if out_dir is not None:
        out_dir.mkdir(parents=True)
    right = regions[["region_id", "geometry"]]
    wall = cpu = 0.0
    for path in sorted(points_dir.glob("*.parquet")):
        started, started_cpu = time.perf_counter(), time.process_time()
        table = pq.read_table(path)
        point_id = table.column("point_id").to_numpy()
        left = gpd.GeoDataFrame(
            {"point_id": point_id},
            geometry=gpd.points_from_xy(table.column("x").to_numpy(), table.column("y").to_numpy()),
            crs=regions.crs,
        )
        joined = gpd.sjoin(left, right, predicate="intersects", how="left")
        best = joined.groupby(level=0)["region_id"].min()  # the tie rule: smallest region_id
        region = best.reindex(range(len(left))).to_numpy()
        wall += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        if out_dir is not None:
            missing = np.isnan(region)
            ids = pa.array(np.where(missing, -1, region).astype(np.int64), mask=missing)
            pq.write_table(pa.table({"point_id": point_id, "region_id": ids}), out_dir / path.name)
    return wall, cpu


@dataclass
class EngineRun:
    seconds: float
    cpu_s: float
    prepare_s: float  # building (and broadcasting) the engine's region side, on the driver
    counts: dict[int | None, int]


def make(name: str, cells_per_region: int) -> SpatialJoinEngine:
    """A fresh engine called ``name`` (so it builds its own region index)."""
    return BuiltinJoinEngine(cells_per_region=cells_per_region) if name == ENGINE_BUILTIN else SedonaJoinEngine()


def prepare(engine: SpatialJoinEngine, regions_df: "DataFrame") -> None:
    """Build the engine's region side now (assign_points would do it), to time it apart."""
    if isinstance(engine, BuiltinJoinEngine):
        engine.broadcast_index(regions_df)
    elif isinstance(engine, SedonaJoinEngine):
        engine.region_side(regions_df)


def time_engine(
    spark: "SparkSession", name: str, regions_df: "DataFrame", points_dir: Path, cells_per_region: int
) -> EngineRun:
    """One timed run of engine ``name``: read the points, assign them, count points per region."""
    engine = make(name, cells_per_region)
    started, started_cpu = time.perf_counter(), process_tree_cpu_s()
    prepare(engine, regions_df)
    prepare_s = time.perf_counter() - started
    points = spark.read.parquet(str(points_dir))
    # Only the region per point is needed to count points per region.
    assigned = engine.assign_points(points, regions_df, "x", "y", "region_id", keep_columns=[])
    counts = {r["region_id"]: r["count"] for r in assigned.groupBy("region_id").count().collect()}
    return EngineRun(time.perf_counter() - started, process_tree_cpu_s() - started_cpu, prepare_s, counts)


def verify(
    spark: "SparkSession", name: str, regions_df: "DataFrame", points_dir: Path, gp_out: Path, out: Path,
    counts: dict[int | None, int],
) -> tuple[int, int]:
    """(assignments differing from GeoPandas', unassigned points) for engine ``name``: its per-point
    assignments written by Spark and compared with GeoPandas' in a Spark join on point_id — nothing
    about the points reaches the driver."""
    shutil.rmtree(out, ignore_errors=True)
    engine = make(name, BuiltinJoinEngine().cells_per_region)
    points = spark.read.parquet(str(points_dir))
    engine.assign_points(points, regions_df, "x", "y", "region_id", keep_columns=["point_id"]).write.parquet(str(out))
    a = spark.read.parquet(str(out)).withColumnRenamed("region_id", "a")
    b = spark.read.parquet(str(gp_out)).withColumnRenamed("region_id", "b")
    joined = a.join(b, "point_id", "full_outer")
    mismatches = joined.where(~joined["a"].eqNullSafe(joined["b"])).count()
    if {r["a"]: r["count"] for r in a.groupBy("a").count().collect()} != counts:
        raise SystemExit(f"the timed and the verification {name} runs disagree")
    return mismatches, a.where(a["a"].isNull()).count()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--regions", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary directory, removed at the end")
    parser.add_argument("--arrow-batch", type=int, default=500_000, help="spark.sql.execution.arrow.maxRecordsPerBatch")
    parser.add_argument("--cells-per-region", type=int, default=800, help="builtin engine lookup-grid resolution")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; the median is reported")
    parser.add_argument("--skip-geopandas", action="store_true")
    args = parser.parse_args(argv)

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="landuse-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    regions, centres = make_regions(args.regions, rng)
    points_dir = work / "points"
    shutil.rmtree(points_dir, ignore_errors=True)
    write_points(args.points, rng, centres, regions, points_dir)
    print(f"generated {len(regions)} regions and {args.points} points in {time.perf_counter() - started:.1f}s under {work}")

    config = Config(
        name="bench-spatial-join",
        work_dir=work,
        spark=SparkConfig(
            app_name="bench-spatial-join",
            master="local[2]",
            shuffle_partitions=4,
            driver_memory="2g",
            arrow_batch_size=args.arrow_batch,
        ),
        spatial=SpatialConfig(engine="auto"),  # Sedona registered when its jars are on the classpath
    )
    spark = build_session(config)
    engines = [ENGINE_BUILTIN] + ([ENGINE_SEDONA] if session_engine(spark) == ENGINE_SEDONA else [])
    if ENGINE_SEDONA not in engines:
        print("Sedona is not on the classpath (run `make jars`): timing the builtin engine and GeoPandas only")
    regions_df = to_spark(spark, regions).cache()
    regions_df.count()

    # Warm-up (untimed; two passes per engine over separately generated points, each with its own
    # engine and index): starts the Python workers and lets the JVM compile its hot paths, as
    # GeoPandas runs in an already warm interpreter.
    warm_rng = np.random.default_rng(args.seed + 1)
    warm_dir = work / "warmup"
    shutil.rmtree(warm_dir, ignore_errors=True)
    write_points(min(args.points, 1_000_000), warm_rng, centres, regions, warm_dir)
    for name in engines:
        for _ in range(2):
            time_engine(spark, name, regions_df, warm_dir, args.cells_per_region)

    load_before = os.getloadavg()[0]
    rss_before = driver_peak_rss_mb()  # after data generation, session start and warm-up
    runs: dict[str, list[EngineRun]] = {name: [] for name in engines}
    with ProcessMonitor() as monitor:
        for _ in range(args.repeats):
            for name in engines:  # interleaved: a load change on a shared machine hits both alike
                runs[name].append(time_engine(spark, name, regions_df, points_dir, args.cells_per_region))
    driver_rss = driver_peak_rss_mb()  # before any GeoPandas work in this process
    jvm_rss = monitor.jvm_peak_bytes / 2**20
    median: dict[str, EngineRun] = {}
    for name in engines:
        for run in runs[name]:
            if sum(run.counts.values()) != args.points:
                raise SystemExit(f"{name} engine returned {sum(run.counts.values())} rows for {args.points} points")
            print(
                f"{name}: {run.seconds:.2f}s  {args.points / run.seconds:,.0f} points/s  (Spark local[2]: read "
                f"Parquet, assign, count per region; {run.prepare_s:.2f}s of it preparing the region side on the "
                f"driver); {run.cpu_s:.1f} CPU-s (driver + JVM + Python workers)"
            )
        median[name] = sorted(runs[name], key=lambda r: r.seconds)[len(runs[name]) // 2]
    if ENGINE_SEDONA in median and median[ENGINE_SEDONA].counts != median[ENGINE_BUILTIN].counts:
        raise SystemExit("the builtin and Sedona engines give different points-per-region counts")
    print(
        f"driver peak RSS: {rss_before:.0f} MB before the timed Spark runs, {driver_rss:.0f} MB after them; "
        f"JVM peak RSS during them: {jvm_rss:.0f} MB"
    )
    rate = {name: args.points / run.seconds for name, run in median.items()}
    result: dict[str, object] = {"points": args.points, "regions": len(regions)}
    result.update({f"{name}_pts_per_s": round(r) for name, r in rate.items()})
    if ENGINE_SEDONA in rate:
        result["sedona_vs_builtin"] = round(rate[ENGINE_SEDONA] / rate[ENGINE_BUILTIN], 2)

    if not args.skip_geopandas:
        gp_out = work / "assigned_geopandas"
        shutil.rmtree(gp_out, ignore_errors=True)
        gp_runs = [geopandas_assign(regions, points_dir, gp_out if i == 0 else None) for i in range(args.repeats)]
        for gp_s, gp_cpu in gp_runs:
            print(
                f"geopandas: {gp_s:.2f}s  {args.points / gp_s:,.0f} points/s  (sjoin intersects + smallest id, "
                f"all points, file by file); {gp_cpu:.1f} CPU-s"
            )
        gp_s, gp_cpu = sorted(gp_runs)[len(gp_runs) // 2]
        gp_rate = args.points / gp_s
        result["geopandas_pts_per_s"] = round(gp_rate)
        for name in engines:
            mismatches, unassigned = verify(
                spark, name, regions_df, points_dir, gp_out, work / f"assigned_{name}", median[name].counts
            )
            print(f"{name}: rows out {args.points}, outside every region (NULL) {unassigned}, "
                  f"differing from GeoPandas {mismatches}")
            result[f"{name}_vs_geopandas"] = round(rate[name] / gp_rate, 2)
            result[f"{name}_mismatches"] = mismatches
        for name in engines:
            result[f"{name}_cpu_s"] = round(median[name].cpu_s, 1)
        result["geopandas_cpu_s"] = round(gp_cpu, 1)
    result.update(
        driver_peak_rss_mb=round(driver_rss),
        driver_rss_before_timed_mb=round(rss_before),
        jvm_peak_rss_mb=round(jvm_rss),
        **{f"{name}_prepare_s": round(median[name].prepare_s, 2) for name in engines},
        repeats=args.repeats,
        load1=round(load_before, 1),
    )
    spark.stop()
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
