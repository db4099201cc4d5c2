"""Fixtures for ingest tests: tiny hand-written files and the real NYC data."""

from __future__ import annotations

from pathlib import Path

import pytest


def write(path: Path, text: str) -> Path:
    """Write ``text`` (dedented lines, no trailing blanks) to ``path`` and return it."""
    lines = [line.strip() for line in text.strip("\n").splitlines()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def nyc(shared_data: Path) -> Path:
    """../shared/data/nyc_manhattan (skips when absent)."""
    path = shared_data / "nyc_manhattan"
    if not path.is_dir():
        pytest.skip(f"NYC data not found at {path}")
    return path
