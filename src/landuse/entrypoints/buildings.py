"""Stage ``buildings`` (see landuse.stages.buildings)."""

from __future__ import annotations

from landuse.entrypoints.common import stage_main


def main(argv: list[str] | None = None) -> int:
    """``landuse run buildings --config conf/X.yaml [--force] [key=value ...]``."""
    return stage_main("buildings", argv)
