"""``landuse run train`` (see landuse.training.experiments)."""

from __future__ import annotations

from landuse.entrypoints.experiment import experiment_main


def main(argv: list[str] | None = None) -> int:
    """``landuse run train --config conf/X.yaml [key=value ...]``."""
    return experiment_main("train", argv)
