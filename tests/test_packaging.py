"""Packaging: the wheel's declared ranges admit the development pins, and the version has one source."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import landuse

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: exact version}."""
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonicalize_name(Requirement(name).name)] = version.strip()
    return out


def test_declared_ranges_admit_the_pinned_environment() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    unpinned, outside = [], []
    for req in declared:
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            unpinned.append(req.name)
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            outside.append(f"{req} (pinned {version})")
    assert not outside, f"pyproject ranges exclude the pinned versions: {outside}"
    assert not unpinned or set(unpinned) <= {"ruff", "mypy"}, f"not pinned in constraints.txt: {unpinned}"
    assert project["requires-python"] and "LICENSE" in project["license-files"] and (ROOT / "LICENSE").is_file()
    assert not (ROOT / "setup.py").exists()


def test_version_comes_from_the_package() -> None:
    from importlib.metadata import version

    assert version("landuse") == landuse.__version__
