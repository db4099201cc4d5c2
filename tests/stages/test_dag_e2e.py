"""Acceptance of the one DAG on the tiny synthetic Shenzhen: ``landuse pipeline --until report`` runs
every step the config enables (pretrain, train, ablation, fusion, tune, benchmark-landuse, predict,
monitor, report), a second run skips everything, and a changed pretrain setting reruns pretrain and
exactly what depends on it."""

from __future__ import annotations

import time
from pathlib import Path

from landuse.entrypoints.pipeline import main as pipeline_main
from landuse.manifest import read_manifest
from landuse.runner import plan
from landuse.stages import STAGES

# Small settings: the point is the control flow, not the figures.
SMALL = ["synth.scale=tiny", "spark.shuffle_partitions=2", "training.progress=false",
         "embeddings.image.source=encoder", "pretrain.epochs=1", "pretrain.batch_size=32", "pretrain.track=false",
         "training.splits=2", "training.epochs=15", "training.variants=[None,GCN_adj]", "training.fusion=[P,PI]",
         "tune.enabled=true", "tune.method=grid", "tune.variants=[None]", "tune.lr=[0.01]", "tune.dropout=[0.0]",
         "tune.weight_decay=[0.0]", "tune.width=[1.0]", "tune.splits=1", "tune.epochs=10",
         "benchmark.enabled=true", "benchmark.repeats=2", "benchmark.variants=[None]", "benchmark.feature_sets=[P]",
         "benchmark.probe_epochs=5", "benchmark.mlflow=false", "report.mlflow=false", "mlflow.experiment=dag-e2e"]
MODEL_AND_AFTER = {"pretrain", "assemble", "train", "ablation", "fusion", "tune", "benchmark-landuse", "predict", "monitor",
                   "report"}


def _statuses(capsys) -> dict[str, str]:
    """The stage table ``landuse pipeline`` printed: {stage: status}."""
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0] in STAGES]
    return {row[0]: row[1] for row in rows}


def test_pipeline_until_report_runs_every_step_then_skips_then_follows_pretrain(
        repo_root: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(repo_root)  # the config's relative paths (class maps, POI text)
    argv = ["--config", "conf/synthetic_shenzhen.yaml", "--until", "report", f"work_dir={tmp_path / 'w'}", *SMALL]
    started = time.perf_counter()
    assert pipeline_main(argv) == 0
    first = _statuses(capsys)
    first_s = time.perf_counter() - started
    assert list(first) == plan(STAGES, "report")
    disabled = {"transfer", "benchmark-embeddings"}  # no source city; no mh-180 labels for the synthetic city
    assert {k for k, v in first.items() if v == "disabled"} == disabled
    assert {k for k, v in first.items() if v == "ran"} == set(STAGES) - disabled
    work = tmp_path / "w"
    assert (work / "report" / "report.html").is_file() and read_manifest(work / "tables" / "predictions")
    assert read_manifest(work / "tables" / "image_embeddings")["stage"] == "pretrain"

    started = time.perf_counter()
    assert pipeline_main(argv) == 0
    second = _statuses(capsys)
    assert {k: v for k, v in second.items() if v != "disabled"} == {k: "unchanged" for k in set(STAGES) - disabled}
    second_s = time.perf_counter() - started

    assert pipeline_main([*argv, "pretrain.lr=0.01"]) == 0  # a pretrain setting
    third = _statuses(capsys)
    assert {k for k, v in third.items() if v == "ran"} == MODEL_AND_AFTER
    assert {k for k, v in third.items() if v == "unchanged"} == set(STAGES) - disabled - MODEL_AND_AFTER
    print(f"dag_e2e first_s={first_s:.1f} second_s={second_s:.1f}")
