"""spark-submit entry point: ``spark-submit jobs/poi_features.py --config conf/X.yaml [key=value ...]``."""

import sys

from landuse.entrypoints.poi_features import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
