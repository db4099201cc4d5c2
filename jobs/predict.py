"""spark-submit entry point: ``spark-submit jobs/predict.py --config conf/X.yaml --model URI``."""

import sys

from landuse.entrypoints.predict import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
