"""spark-submit entry point: ``spark-submit jobs/benchmark_embeddings.py --config conf/X.yaml [--labels CSV]``."""

import sys

from landuse.entrypoints.benchmark_embeddings import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
