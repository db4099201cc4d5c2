"""spark-submit entry point: ``spark-submit jobs/transfer.py --config conf/T.yaml --source-config conf/S.yaml [...]``."""

import sys

from landuse.entrypoints.transfer import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
