"""spark-submit entry point: ``spark-submit jobs/benchmark_landuse.py --config conf/X.yaml [key=value ...]``."""

import sys

from landuse.entrypoints.benchmark_landuse import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
