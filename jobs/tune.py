"""spark-submit entry point: ``spark-submit jobs/tune.py --config conf/X.yaml [key=value ...]``."""

import sys

from landuse.entrypoints.tune import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
