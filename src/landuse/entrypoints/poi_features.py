"""Stage ``poi-features`` (see landuse.stages.poi_features)."""

from __future__ import annotations

from landuse.entrypoints.common import stage_main


def main(argv: list[str] | None = None) -> int:
    """``landuse run poi-features --config conf/X.yaml [--force] [key=value ...]``."""
    return stage_main("poi-features", argv)
