"""spark-submit entry point: ``spark-submit jobs/ablation.py --config conf/X.yaml [key=value ...]``."""

import sys

from landuse.entrypoints.ablation import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
