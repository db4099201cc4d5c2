"""``landuse run ablation`` (see landuse.training.experiments)."""

from __future__ import annotations

from landuse.entrypoints.experiment import experiment_main


def main(argv: list[str] | None = None) -> int:
    """``landuse run ablation --config conf/X.yaml [key=value ...]``."""
    return experiment_main("ablation", argv)
