"""``landuse synth --out`` and ``synth.dir`` never replace a directory that is not a landuse output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from landuse.cli import main as cli_main
from landuse.config import load_config
from landuse.constants import MANIFEST_FILE, SYNTH_MANIFEST_FILE
from landuse.manifest import UnsafeOutputError
from landuse.synth import generate

REFUSAL = "not a landuse output (no manifest) and not empty; refusing to replace it (choose another directory or empty it)"


def _foreign(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.txt").write_text("four years of work")
    return path


def test_synth_cli_refuses_a_foreign_directory_in_one_line(tmp_path: Path, capsys) -> None:
    out = _foreign(tmp_path / "home")
    assert cli_main(["synth", "--scale", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --out {out}: {REFUSAL}"
    assert (out / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no partial directory either


def test_foreign_manifest_json_is_not_ours(tmp_path: Path) -> None:
    """A web app's manifest.json does not make a directory a landuse output."""
    out = _foreign(tmp_path / "site")
    (out / SYNTH_MANIFEST_FILE).write_text(json.dumps({"name": "my app", "start_url": "/"}))
    with pytest.raises(UnsafeOutputError, match="not a landuse output"):
        generate("london", "tiny", 1, out)
    assert (out / "thesis.txt").exists()


def test_a_file_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("notes")
    with pytest.raises(UnsafeOutputError, match="is a file"):
        generate("london", "tiny", 1, out)
    assert out.read_text() == "notes"


def test_synth_cli_replaces_its_own_previous_output_and_fills_an_empty_dir(tmp_path: Path) -> None:
    out = tmp_path / "city"
    out.mkdir()  # empty: allowed
    cmd = [sys.executable, "-m", "landuse.cli", "synth", "--scale", "tiny", "--seed", "5", "--out", str(out)]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    (out / "scratch.txt").write_text("left by the user inside the city")
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (out / "scratch.txt").exists() and (out / SYNTH_MANIFEST_FILE).is_file()


def test_synth_dir_of_a_config_refuses_a_foreign_directory(repo_root: Path, tmp_path: Path) -> None:
    from landuse.runner import run_stage
    from landuse.stages import STAGES

    city = _foreign(tmp_path / "city")
    config = load_config(repo_root / "conf/synthetic_london.yaml",
                         [f"work_dir={tmp_path / 'work'}", f"synth.dir={city}", "synth.scale=tiny"])
    with pytest.raises(UnsafeOutputError, match=f"stage synth: output synth \\({city}\\): not a landuse output"):
        run_stage(STAGES["synth"], config, STAGES)
    assert (city / "thesis.txt").exists()
    assert sorted(p.name for p in city.parent.iterdir()) == ["city", "work"]


def test_synth_dir_made_by_the_cli_is_replaced_by_the_stage(repo_root: Path, tmp_path: Path) -> None:
    from landuse.runner import run_stage
    from landuse.stages import STAGES

    city = tmp_path / "city"
    generate("london", "tiny", 1, city)
    config = load_config(repo_root / "conf/synthetic_london.yaml",
                         [f"work_dir={tmp_path / 'work'}", f"synth.dir={city}", "synth.scale=tiny"])
    assert run_stage(STAGES["synth"], config, STAGES).status == "ran"
    assert (city / MANIFEST_FILE).is_file() and (city / SYNTH_MANIFEST_FILE).is_file()
