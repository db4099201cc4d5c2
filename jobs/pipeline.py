"""spark-submit entry point: ``spark-submit jobs/pipeline.py --config conf/X.yaml [--force] [key=value ...]``."""

import sys

from landuse.entrypoints.pipeline import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
