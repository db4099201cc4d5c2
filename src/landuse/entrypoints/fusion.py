"""``landuse run fusion`` (see landuse.training.experiments)."""

from __future__ import annotations

from landuse.entrypoints.experiment import experiment_main
from landuse.training.signals import kill_runs_on_sigterm


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run fusion --config conf/X.yaml [key=value ...]``."""
    return experiment_main("fusion", argv)
