"""The synthetic planned land-use layer: plan = true dominant class except for seeded injected deviations."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from landuse.constants import LANDUSE_CLASSES, PROFILES, SYNTH_MANIFEST_FILE
from landuse.synth import generate
from landuse.synth.generator import DEVIATIONS_FILE, PLANNED_FILE, TRUTH_FILE
from landuse.synth.planned import ABSENT_SHARE, CLEAR_DOMINANT_SHARE, DEVIATION_FRACTION
from landuse.synth.writers import file_sha256

SEED = 5


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each profile generated once at tiny scale."""
    root = tmp_path_factory.mktemp("planned")
    out = {}
    for profile in PROFILES:
        out[profile] = root / profile
        generate(profile, "tiny", SEED, out[profile])
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_plan_is_the_true_dominant_class_except_injected_deviations(cities: dict[str, Path], profile: str) -> None:
    city = cities[profile]
    truth = pd.read_csv(city / TRUTH_FILE).set_index("region_id")
    deviations = pd.read_csv(city / DEVIATIONS_FILE).set_index("region_id")
    plan = gpd.read_file(city / PLANNED_FILE).set_index("region_id")

    covered = truth.index[truth["coverage"] > 0]
    assert sorted(plan.index) == sorted(deviations.index) == sorted(covered)  # no plan where nothing is surveyed
    assert (plan["planned_class"] == deviations.loc[plan.index, "planned_class"]).all()
    assert set(plan["planned_class"]) <= set(LANDUSE_CLASSES)
    regions = gpd.read_file(city / "regions" / "regions.gpkg")
    assert plan.crs == regions.crs

    shares = truth.loc[deviations.index, list(LANDUSE_CLASSES)]
    assert (deviations["actual_dominant_class"] == shares.idxmax(axis=1)).all()
    dev = deviations["deviation"].to_numpy(bool)
    assert dev.sum() == round(DEVIATION_FRACTION * len(covered))
    same = deviations[~dev]
    assert (same["planned_class"] == same["actual_dominant_class"]).all()
    injected = deviations[dev]
    assert (injected["planned_class"] != injected["actual_dominant_class"]).all()
    # a well-defined deviation: the actual use is clear and the planned use is (almost) absent
    injected_shares = shares[dev].to_numpy()
    planned_idx = [LANDUSE_CLASSES.index(c) for c in injected["planned_class"]]
    assert (injected_shares.max(axis=1) >= CLEAR_DOMINANT_SHARE).all()
    assert (injected_shares[np.arange(len(injected)), planned_idx] < ABSENT_SHARE).all()


def test_planned_files_are_in_the_manifest_and_deterministic(cities: dict[str, Path], tmp_path: Path) -> None:
    city = cities["shenzhen"]
    manifest = json.loads((city / SYNTH_MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["generator"]["version"] == "1.3.0"
    listed = {f["path"]: f for f in manifest["files"]}
    for name in (PLANNED_FILE, DEVIATIONS_FILE):
        assert listed[name]["sha256"] == file_sha256(city / name)
    again = generate("shenzhen", "tiny", SEED, tmp_path / "again")
    other = generate("shenzhen", "tiny", SEED + 1, tmp_path / "other")
    for name in (PLANNED_FILE, DEVIATIONS_FILE):
        assert file_sha256(tmp_path / "again" / name) == listed[name]["sha256"]
    other_devs = pd.read_csv(tmp_path / "other" / DEVIATIONS_FILE)
    assert not other_devs["deviation"].equals(pd.read_csv(city / DEVIATIONS_FILE)["deviation"])
    assert {f["path"]: f["sha256"] for f in again["files"]} == {p: f["sha256"] for p, f in listed.items()}
    assert other["seed"] == SEED + 1
