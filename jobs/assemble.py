"""spark-submit entry point: ``spark-submit jobs/assemble.py --config conf/X.yaml [key=value ...]``."""

import sys

from landuse.entrypoints.assemble import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
