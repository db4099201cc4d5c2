"""Stage ``synth``: generate the configured synthetic city."""

from __future__ import annotations

from landuse.entrypoints.common import stage_main


def main(argv: list[str] | None = None) -> int:
    """``landuse run synth --config conf/X.yaml [key=value ...]``."""
    return stage_main("synth", argv)
