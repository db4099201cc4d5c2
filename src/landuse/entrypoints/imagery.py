"""Stage ``imagery`` (see landuse.stages.imagery)."""

from __future__ import annotations

from landuse.entrypoints.common import stage_main


def main(argv: list[str] | None = None) -> int:
    """``landuse run imagery --config conf/X.yaml [--force] [key=value ...]``."""
    return stage_main("imagery", argv)
