"""spark-submit entry point: ``spark-submit jobs/pretrain.py --config conf/X.yaml [--encoder resnet50] ...``."""

import sys

from landuse.entrypoints.pretrain import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
