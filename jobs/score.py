"""spark-submit entry point: ``spark-submit jobs/score.py --config conf/X.yaml [--model URI] [--input T] [--output T]``."""

import sys

from landuse.entrypoints.score import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
