"""spark-submit entry point: ``spark-submit jobs/buildings.py --config conf/X.yaml [key=value ...]``."""

import sys

from landuse.entrypoints.buildings import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
