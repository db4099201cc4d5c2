"""Synthetic-city generation at scale: counts, wall time and peak RSS.

Usage::

    PYTHONPATH=src python benchmarks/synth_scale.py --profile london --scale large [--seed 42] [--out DIR] [--keep]

Ends with one ``key=value`` line, e.g.
``profile=london scale=large regions=10500 pois=1050000 trip_rows=10500000 trips=10500000 wall_s=31.2
peak_rss_mb=812 ok=1``. ``ok=1`` when the large-scale targets hold (≥10M trips, ≥1M POIs, ≥10k regions)
and peak RSS stays within ``--max-rss-mb`` (default 4096).
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from landuse.constants import PROFILES, SCALES
from landuse.synth import generate

LARGE_TARGETS = {"trips": 10_000_000, "pois": 1_000_000, "regions": 10_000}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 1024 / 1024


def main(argv: list[str] | None = None) -> int:
    """Generate one city, print its figures, return 0 when the targets hold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="london")
    parser.add_argument("--scale", choices=SCALES, default="large")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated city")
    parser.add_argument("--max-rss-mb", type=float, default=4096.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    scratch = Path(tempfile.mkdtemp(prefix="synth-bench-")) if args.out is None else None
    out = args.out if args.out is not None else scratch / "city"
    try:
        started = time.perf_counter()
        manifest = generate(args.profile, args.scale, args.seed, out, progress=True)
        wall = time.perf_counter() - started
        rss = peak_rss_mb()
        counts = manifest["counts"]
        size_mb = sum(f["bytes"] for f in manifest["files"]) / 2**20
        print(f"city: {out}{'' if args.keep else ' (deleted afterwards)'}")
        print(f"counts: {counts}")
        print(f"timings (s): {manifest['timings']}")
        print(f"output size: {size_mb:.1f} MiB in {len(manifest['files'])} files")
        ok = rss <= args.max_rss_mb
        if args.scale == "large":
            ok = ok and all(counts[key] >= target for key, target in LARGE_TARGETS.items())
        print(f"profile={args.profile} scale={args.scale} regions={counts['regions']} pois={counts['pois']} "
              f"trip_rows={counts['trip_rows']} trips={counts['trips']} wall_s={wall:.1f} peak_rss_mb={rss:.0f} "
              f"ok={int(ok)}")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(scratch if scratch is not None else out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
