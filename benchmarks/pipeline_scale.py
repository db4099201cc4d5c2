"""Pipeline at scale: every table stage (regions … assemble, no training) on the synthetic Shenzhen city.

Usage::

    PYTHONPATH=src python benchmarks/pipeline_scale.py [--sizes small,medium,large] [--work work/pipeline_scale]
        [--config conf/synthetic_shenzhen.yaml] [--seed 42] [--set spatial.engine=builtin ...]

For each size the city is generated once into ``<work>/<size>/city`` (reused while its manifest
matches: the synth stage is skipped when unchanged), then a fresh Python process runs every table
stage with ``--force`` in one Spark session, timing each stage, and reads the peak resident set
size (``VmHWM``) of itself (the driver) and of its JVM. In the same process, before and after the
stages, it times the *plain-read floor*: ``spark.read.csv`` of the same signaling CSVs with the
columns cast (date, hour, zone ids, count) and one aggregate (count, sum, max), best of three —
what reading the rows costs with no validation. ``ingest/floor`` is the ingest stage's seconds over
the floor's (the ingest stage also reads the POIs and the zone table).

Prints a table per size (seconds and seconds per million trips, per stage) and ends with one
``key=value`` line. Targets (checked for the sizes run): the driver's peak RSS at the largest size
≤ 1.25 × at small; every stage's seconds per million trips at large ≤ 1.5 × at medium (stages under
``--min-stage-s`` seconds at medium are too short to compare and are listed but not judged);
ingest ≤ 5 × the floor at medium and large (at small the ratio is printed but not judged: a second
of floor against the stage's fixed costs — the zone table, the first table-format transaction of the
session, code generation). ``ok=1`` when every judged target holds (exit status 0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "conf" / "synthetic_shenzhen.yaml"
SIZES = ("small", "medium", "large")
RESULT = "PIPELINE_SCALE_RESULT "
TARGET_DRIVER = 1.25  # driver peak RSS, largest size over small
TARGET_STAGE = 1.5  # seconds per million trips, large over medium, per stage
TARGET_FLOOR = 5.0  # ingest seconds over the plain-read floor


# ------------------------------------------------------------------------------------------
# Peak memory from /proc
# ------------------------------------------------------------------------------------------


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak resident set size (``VmHWM``) of a process in MiB, None when unreadable (not Linux)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _stats() -> dict[int, list[str]]:
    """``/proc/<pid>/stat`` fields after the command name, by pid (empty when not Linux)."""
    out: dict[int, list[str]] = {}
    try:
        entries = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as handle:
                out[int(entry)] = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
    return out


def descendants(pid: int, stats: dict[int, list[str]] | None = None) -> list[int]:
    """Live descendant processes of ``pid`` (the JVM of a local session, its Python workers)."""
    stats = _stats() if stats is None else stats
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, fields in stats.items() if int(fields[1]) in frontier}
        found += sorted(frontier)
    return found


def java_children(pid: int) -> list[int]:
    """Descendant processes of ``pid`` that run java (the Spark driver JVM of a local session)."""
    found = []
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as handle:
                if b"java" in handle.read().split(b"\0")[0]:
                    found.append(child)
        except OSError:
            continue
    return found


def tree_cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and all its descendants, live or reaped.

    Load-independent where wall time is not: on a shared machine the wall time of a short
    job (the floor) and of a long one (a stage) see different contention.
    """
    pid = os.getpid() if pid is None else pid
    stats = _stats()
    ticks = 0
    for proc in [pid] + descendants(pid, stats):
        fields = stats.get(proc)
        if fields:
            ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime (reaped children)
    return ticks / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------
# Child processes: generate a city; run the stages of one size
# ------------------------------------------------------------------------------------------


def load(args: argparse.Namespace, size: str):  # -> landuse.config.Config
    from landuse.config import load_config

    overrides = [f"work_dir={args.work / size}", f"synth.scale={size}", f"seed={args.seed}", "synth.enabled=true"]
    return load_config([args.config], overrides + list(args.set))


def generate(args: argparse.Namespace, size: str) -> dict:
    """The synth stage (skipped when the city is unchanged); the city's counts."""
    from landuse.logs import setup_logging
    from landuse.runner import run_stage
    from landuse.stages import STAGES

    config = load(args, size)
    setup_logging(config.log_level)
    started = time.perf_counter()
    result = run_stage(STAGES["synth"], config, STAGES)
    manifest = json.loads((config.synth.dir / "manifest.json").read_text())
    return {"status": result.status, "seconds": time.perf_counter() - started, "counts": manifest["counts"]}


def floor_seconds(spark, source) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """One plain read of the signaling CSVs: string schema, casts, one aggregate (wall and CPU seconds)."""
    from pyspark.sql import functions as F

    from landuse.ingest.files import list_input_files, read_header

    files = list_input_files(source.path)
    names = read_header(files[0], raw=True)
    opts = dict(source.options)
    col = {k: opts.get(f"{k}_column", k) for k in ("date", "hour", "count")}
    col.update(o=opts.get("o_column", "o_grid"), d=opts.get("d_column", "d_grid"))
    df = spark.read.csv([str(f) for f in files], header=True, schema=", ".join(f"`{n}` string" for n in names))
    typed = df.select(
        F.to_date(F.col(col["date"])).alias("date"),
        F.col(col["hour"]).cast("int").alias("hour"),
        F.col(col["o"]).cast("long").alias("o"),
        F.col(col["d"]).cast("long").alias("d"),
        F.col(col["count"]).cast("long").alias("n"),
    )
    started, cpu = time.perf_counter(), tree_cpu_s()
    typed.agg(F.count(F.lit(1)), F.sum("n"), F.max("date"), F.max("hour"), F.max("o"), F.max("d")).collect()
    return time.perf_counter() - started, tree_cpu_s() - cpu


def run_size(args: argparse.Namespace, size: str) -> dict:
    """Every table stage with --force in one session: seconds per stage, floor, peak RSS."""
    from landuse.logs import setup_logging
    from landuse.manifest import read_manifest
    from landuse.runner import run_stage
    from landuse.spark.io import table_path
    from landuse.spark.schemas import T_TRIPS
    from landuse.spark.session import build_session, session_engine
    from landuse.stages import STAGES

    config = load(args, size)
    setup_logging(config.log_level)
    spark = build_session(config)
    source = next(iter(config.inputs.trips.values()))
    floors = [floor_seconds(spark, source) for _ in range(2)]
    stages: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for name, stage in STAGES.items():
        if name == "synth":
            continue
        before = tree_cpu_s()
        result = run_stage(stage, config, STAGES, force=True, spark=spark)
        if result.status == "ran":
            stages[name], cpu[name] = result.seconds, tree_cpu_s() - before
    floors.append(floor_seconds(spark, source))
    jvm = [vm_hwm_mb(pid) for pid in java_children(os.getpid())]
    ingest = read_manifest(table_path(config, T_TRIPS)) or {}
    out = {
        "stages": stages,
        "cpu": cpu,
        "floor_s": min(w for w, _ in floors),
        "floor_cpu_s": min(c for _, c in floors),
        "floors_s": [w for w, _ in floors],
        "driver_mb": vm_hwm_mb(),
        "jvm_mb": max((m for m in jvm if m is not None), default=None),
        "engine": session_engine(spark),
        "ingest_timings": ingest.get("timings", {}),
    }
    spark.stop()
    return out


def child(args: argparse.Namespace, mode: str, size: str) -> dict:
    """Run this script in a fresh process (its own driver and JVM) and parse its result line."""
    cmd = [sys.executable, __file__, f"--{mode}", size, "--work", str(args.work), "--config", str(args.config),
           "--seed", str(args.seed)] + [f"--set={item}" for item in args.set]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{mode} {size} failed (exit {proc.returncode}); see its log above")
    return json.loads(lines[-1][len(RESULT):])


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def per_million(seconds: float, trips: int) -> float:
    return seconds / (trips / 1e6)


def report(results: dict[str, dict], min_stage_s: float) -> tuple[str, bool]:
    """Print the tables; return the final key=value line and whether every checked target holds."""
    sizes = list(results)
    stage_names = list(dict.fromkeys(name for r in results.values() for name in r["stages"]))
    header = f"{'stage':<18}" + "".join(f"{size + ' s':>14}{'s/Mtrip':>10}{'cpu s':>9}" for size in sizes)
    print(header)
    print("-" * len(header))
    for name in stage_names + ["total"]:
        cells = []
        for size in sizes:
            r = results[size]
            seconds = sum(r["stages"].values()) if name == "total" else r["stages"].get(name)
            cpu = sum(r["cpu"].values()) if name == "total" else r["cpu"].get(name)
            cells.append("" if seconds is None else f"{seconds:>14.1f}{per_million(seconds, r['trips']):>10.2f}{cpu:>9.1f}")
        print(f"{name:<18}" + "".join(c or f"{'-':>14}{'-':>10}{'-':>9}" for c in cells))
    print()
    fields: dict[str, object] = {"sizes": ",".join(sizes), "engine": results[sizes[0]]["engine"]}
    ok = True
    for size in sizes:
        r = results[size]
        total = sum(r["stages"].values())
        ingest = r["stages"].get("ingest")
        ratio = ingest / r["floor_s"] if ingest is not None and r["floor_s"] > 0 else None
        ingest_cpu = r["cpu"].get("ingest")
        cpu_ratio = ingest_cpu / r["floor_cpu_s"] if ingest_cpu is not None and r["floor_cpu_s"] > 0 else None
        fields.update({
            f"{size}_trips": r["trips"],
            f"{size}_trip_rows": r["trip_rows"],
            f"{size}_total_s": round(total, 1),
            f"{size}_s_per_mtrip": round(per_million(total, r["trips"]), 2),
            f"{size}_ingest_s": None if ingest is None else round(ingest, 1),
            f"{size}_floor_s": round(r["floor_s"], 2),
            f"{size}_ingest_floor_ratio": None if ratio is None else round(ratio, 2),
            f"{size}_ingest_floor_cpu_ratio": None if cpu_ratio is None else round(cpu_ratio, 2),
            f"{size}_ingest_trips_s": r["ingest_timings"].get("trips_s"),
            f"{size}_ingest_pois_s": r["ingest_timings"].get("pois_s"),
            f"{size}_driver_mb": None if r["driver_mb"] is None else round(r["driver_mb"]),
            f"{size}_jvm_mb": None if r["jvm_mb"] is None else round(r["jvm_mb"]),
        })
        print(f"{size}: {r['trips']:,} trips in {r['trip_rows']:,} rows; floor {r['floor_s']:.2f} s "
              f"(runs {', '.join(f'{s:.2f}' for s in r['floors_s'])}); ingest/floor "
              f"{'n/a' if ratio is None else f'{ratio:.2f}'} (CPU seconds: ingest {ingest_cpu or 0:.1f}, floor "
              f"{r['floor_cpu_s']:.2f}, ratio {'n/a' if cpu_ratio is None else f'{cpu_ratio:.2f}'}); driver peak {r['driver_mb'] or 0:.0f} MiB, "
              f"JVM peak {r['jvm_mb'] or 0:.0f} MiB")
        if size != "small" and ratio is not None and ratio > TARGET_FLOOR:
            ok = False  # judged from medium up: at small the stage's fixed costs dominate
    if "small" in results and len(sizes) > 1:
        largest = sizes[-1]
        small, big = results["small"]["driver_mb"], results[largest]["driver_mb"]
        if small and big:
            fields["driver_ratio"] = round(big / small, 2)
            ok = ok and big <= TARGET_DRIVER * small
    if "medium" in results and "large" in results:
        medium, large = results["medium"], results["large"]
        worst, worst_ratio, skipped = None, 0.0, []
        for name in stage_names:
            if name not in medium["stages"] or name not in large["stages"]:
                continue
            if medium["stages"][name] < min_stage_s:
                skipped.append(name)
                continue
            ratio = per_million(large["stages"][name], large["trips"]) / per_million(medium["stages"][name], medium["trips"])
            print(f"  {name}: s/Mtrip large/medium = {ratio:.2f}")
            if ratio > worst_ratio:
                worst, worst_ratio = name, ratio
        if skipped:
            print(f"  not judged (under {min_stage_s:g} s at medium): {', '.join(skipped)}")
        fields["worst_stage"] = worst
        fields["worst_stage_ratio"] = round(worst_ratio, 2)
        ok = ok and worst_ratio <= TARGET_STAGE
    fields["ok"] = int(ok)
    return " ".join(f"{k}={v}" for k, v in fields.items()), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small", help="comma-separated: small, medium, large (default: small)")
    parser.add_argument("--work", type=Path, default=REPO / "work" / "pipeline_scale",
                        help="work dirs <work>/<size> (the generated cities are kept and reused)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every size, e.g. --set spatial.engine=builtin (repeatable)")
    parser.add_argument("--min-stage-s", type=float, default=5.0,
                        help="stages shorter than this at medium are not judged large/medium (default 5)")
    parser.add_argument("--generate", metavar="SIZE", help=argparse.SUPPRESS)
    parser.add_argument("--run", metavar="SIZE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    args.config = args.config.resolve()
    os.chdir(REPO)  # the configs name repository-relative files (class maps, POI text)
    if args.generate or args.run:
        out = generate(args, args.generate) if args.generate else run_size(args, args.run)
        print(RESULT + json.dumps(out), flush=True)
        return 0
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        parser.error(f"--sizes: expected some of {', '.join(SIZES)}, got {args.sizes!r}")
    sizes = [s for s in SIZES if s in sizes]
    results: dict[str, dict] = {}
    for size in sizes:
        city = child(args, "generate", size)
        print(f"== {size}: city {city['status']} ({city['seconds']:.1f} s): {city['counts']}", flush=True)
        started = time.perf_counter()
        run = child(args, "run", size)
        run.update(trips=int(city["counts"]["trips"]), trip_rows=int(city["counts"]["trip_rows"]))
        results[size] = run
        print(f"== {size}: stages done in {time.perf_counter() - started:.0f} s", flush=True)
    line, ok = report(results, args.min_stage_s)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
