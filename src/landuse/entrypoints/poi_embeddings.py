"""Stage ``poi-embeddings`` (see landuse.stages.embeddings)."""

from __future__ import annotations

from landuse.entrypoints.common import stage_main


def main(argv: list[str] | None = None) -> int:
    """``landuse run poi-embeddings --config conf/X.yaml [--force] [key=value ...]``."""
    return stage_main("poi-embeddings", argv)
