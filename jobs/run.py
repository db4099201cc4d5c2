"""Generic spark-submit entry point for any stage of the DAG (or the whole pipeline).

    spark-submit jobs/run.py STAGE --config conf/X.yaml [--force] [key=value ...]
    spark-submit jobs/run.py pipeline --until report --config conf/X.yaml

``STAGE`` is any name of ``landuse stages`` (the per-stage files beside this one are kept for
existing launch scripts; they do the same).
"""

import sys

from landuse.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        sys.exit(main(["run", *argv]))
    sys.exit(main(argv if argv[0] == "pipeline" else ["run", *argv]))
