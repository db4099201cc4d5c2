"""spark-submit entry point: ``spark-submit jobs/report.py --config conf/X.yaml``."""

import sys

from landuse.entrypoints.report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
