"""Stage ``assemble`` (see landuse.stages.assemble)."""

from __future__ import annotations

from landuse.entrypoints.common import stage_main


def main(argv: list[str] | None = None) -> int:
    """``landuse run assemble --config conf/X.yaml [--force] [key=value ...]``."""
    return stage_main("assemble", argv)
