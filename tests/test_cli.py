"""CLI smoke tests through the installed `landuse` console script and main(argv)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import landuse
from landuse.cli import main


def landuse_cmd() -> list[str]:
    exe = shutil.which("landuse", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "landuse.cli"]


def test_version_and_help() -> None:
    out = subprocess.run(landuse_cmd() + ["--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"landuse {landuse.__version__}"
    help_text = subprocess.run(landuse_cmd() + ["--help"], capture_output=True, text=True, check=True).stdout
    for command in ("synth", "pipeline", "run", "config"):
        assert command in help_text


def test_unknown_command_and_stage(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert main(["run", "nostage", "--config", "x.yaml"]) == 2
    assert "unknown stage 'nostage'" in capsys.readouterr().err


def test_run_help_lists_stages(capsys) -> None:
    assert main(["run", "--help"]) == 0
    assert "synth" in capsys.readouterr().out


def test_config_command_prints_resolved_json(repo_root: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    assert main(["config", "--config", "conf/synthetic_london.yaml", "seed=11"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["seed"] == 11 and resolved["synth"]["profile"] == "london"


def test_pipeline_runs_synth_then_skips(tmp_path: Path, repo_root: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"extends: {repo_root}/conf/base.yaml\nname: clitest\nwork_dir: {tmp_path}/work\n"
        "synth: {enabled: true, profile: london, scale: tiny, dir: '${work_dir}/city'}\n"
    )
    first = subprocess.run(landuse_cmd() + ["pipeline", "--config", str(cfg)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "synth" in first.stdout and "ran" in first.stdout
    assert "MLflow store: sqlite:///" in first.stdout
    assert (tmp_path / "work/city/manifest.json").is_file()
    assert (tmp_path / "work/city/_manifest.json").is_file()
    second = subprocess.run(landuse_cmd() + ["pipeline", "--config", str(cfg)], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "unchanged" in second.stdout
    forced = subprocess.run(
        landuse_cmd() + ["run", "synth", "--config", str(cfg), "--force"], capture_output=True, text=True
    )
    assert forced.returncode == 0, forced.stderr
    assert "synth: ran" in forced.stdout


def test_bad_override_type_via_pipeline(tmp_path: Path, repo_root: Path) -> None:
    proc = subprocess.run(
        landuse_cmd() + ["pipeline", "--config", str(repo_root / "conf/synthetic_london.yaml"), "synth.scale=huge"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("synth.scale: 'huge' is not one of tiny, small, medium, large")
    assert len(proc.stderr.strip().splitlines()) == 1
