"""benchmark-landuse: the published protocol's splits and probe, our models on the same splits, saved as they finish."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landuse.config import load_config
from landuse.data.tables import assemble_node_features, write_shards
from landuse.evaluation.landuse_benchmark import ProbeSettings, plan, probe, published_rows
from landuse.training.splits import nested_splits

SIDE = 12  # a 12 x 12 grid city


def write_city(work: Path, seed: int = 0) -> None:
    """node_features (an informative noisy feature 'sig', pure noise 'noise'), queen edges, regions."""
    rng = np.random.default_rng(seed)
    n = SIDE * SIDE
    ids = np.arange(n, dtype=np.int64)
    r, c = np.divmod(ids, SIDE)
    # labels vary smoothly in space: neighbours share land use (what graph context can exploit)
    a = 1 / (1 + np.exp(-(c - SIDE / 2) / 2))
    y = np.stack([a, (1 - a) * 0.7, (1 - a) * 0.3], 1)
    y = y / y.sum(1, keepdims=True)
    sig = np.stack([a + rng.normal(0, 0.4, n), rng.normal(0, 1, n)], 1)
    tables = work / "tables"
    modalities = {
        "sig": pd.DataFrame({"region_id": ids, "vector": list(sig), "has_sig": True}),
        "noise": pd.DataFrame({"region_id": ids, "vector": list(rng.normal(size=(n, 3))), "has_noise": ids % 3 > 0}),
    }
    labels = pd.DataFrame({"region_id": ids, "a": y[:, 0], "b": y[:, 1], "c": y[:, 2], "coverage": 1.0})
    write_shards(assemble_node_features(ids, modalities, labels, ["a", "b", "c"]), tables / "node_features", 64, 1000)
    pairs = [(i, j) for i in ids for j in ids if i != j and max(abs(r[i] - r[j]), abs(c[i] - c[j])) == 1]
    edges = pd.DataFrame(pairs, columns=["region_id_a", "region_id_b"]).assign(shared_length_m=1.0)
    (tables / "edges_adjacency").mkdir(parents=True)
    edges.to_parquet(tables / "edges_adjacency" / "part-0.parquet")
    (tables / "regions").mkdir()
    pd.DataFrame({"region_id": ids, "centroid_x": c * 100.0, "centroid_y": r * 100.0}).to_parquet(
        tables / "regions" / "part-0.parquet")


def config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(f"""name: grid
work_dir: {tmp_path / 'work'}
labels: {{classes: [a, b, c]}}
inputs:
  embeddings:
    sig: {{path: {tmp_path / 'unused.csv'}}}
    noise: {{path: {tmp_path / 'unused.csv'}}}
training: {{features: [sig, noise], epochs: 60, lr: 0.02, progress: false}}
benchmark:
  repeats: 3
  probe_epochs: 15
  variants: [None, SAGE_adj2, GCN_in]
{extra}""")
    (tmp_path / "unused.csv").write_text("region_id,e0\n0,1\n")
    return path


def test_nested_splits_follow_the_protocol() -> None:
    idx = np.arange(100, 200)
    splits = nested_splits(idx, 4, 0.2, 0.2, seed=3)
    for train, val, test in splits:
        assert (len(train), len(val), len(test)) == (64, 16, 20)
        assert len(np.intersect1d(train, test)) == 0 and len(np.union1d(np.union1d(train, val), test)) == 100
    assert not np.array_equal(splits[0][2], splits[1][2])
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(splits, nested_splits(idx, 2, 0.2, 0.2, seed=3)))


def test_probe_learns_an_informative_feature_and_keeps_the_best_validation_epoch() -> None:
    rng = np.random.default_rng(0)
    n = 300
    a = rng.uniform(size=n)
    y = np.stack([a, 1 - a], 1)
    split = nested_splits(np.arange(n), 1, 0.2, 0.2, seed=0)[0]
    settings = ProbeSettings(hidden=32, epochs=20)
    good = probe(np.stack([a, rng.normal(size=n)], 1), y, split, settings, seed=0)
    bad = probe(rng.normal(size=(n, 2)), y, split, settings, seed=0)
    assert good["test"]["kl"] < 0.5 * bad["test"]["kl"]
    assert 0 <= good["epoch"] < 20 and set(good["test"]) == {"kl", "l1_mean", "l1_sum", "cosine"}


def test_plan_skips_what_cannot_run(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path), check_inputs=False)
    cands, notes = plan(config, ["sig", "noise"], lambda v: "needs the flow edges" if v == "GCN_in" else None)
    assert [c.name for c in cands] == ["sig", "noise", "sig+noise", "None [sig+noise]", "SAGE_adj2 [sig+noise]"]
    assert notes == ["GCN_in skipped: needs the flow edges"]
    assert published_rows(config, 144) == ()


@pytest.mark.slow
def test_benchmark_landuse_end_to_end(tmp_path: Path, capsys) -> None:
    from landuse.entrypoints.benchmark_landuse import main

    cfg = config_file(tmp_path)
    write_city(tmp_path / "work")
    assert main(["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith("best_model=") and " kl=" in last and " val_kl=" in last
    results = tmp_path / "work" / "results" / "benchmark_landuse"
    table = pd.read_csv(results / "results.csv", keep_default_na=False, na_values=[""]).set_index("model")
    assert list(table.index) == ["sig", "noise", "sig+noise", "None [sig+noise]", "SAGE_adj2 [sig+noise]"]
    assert (table["status"] == "ok").all() and (table["repeats"] == 3).all()
    assert table.loc["sig", "kl"] < table.loc["noise", "kl"]
    # graph context on a spatially smooth city: the SAGE model beats the no-graph MLP
    assert table.loc["SAGE_adj2 [sig+noise]", "kl"] < table.loc["None [sig+noise]", "kl"]
    best = json.loads((results / "best.json").read_text())
    assert best["model"] == table["val_kl"].idxmin()  # chosen on validation, not test
    # the probed tables are written; the noise table carries its presence indicator
    emb = pd.read_parquet(results / "embeddings" / "noise.parquet")
    assert len(emb) == SIDE * SIDE and len(emb["vector"].iloc[0]) == 4
    assert "GCN_in skipped" in out and "| ★ **" in (results / "results.md").read_text()
    assert f"benchmark-landuse: ran benchmark-landuse -> {results}" in out
    # unchanged settings and tables: skipped by the runner, the committed results printed again
    assert main(["--config", str(cfg)]) == 0
    again = capsys.readouterr().out
    assert f"benchmark-landuse: unchanged benchmark-landuse -> {results}" in again
    assert again.strip().splitlines()[-1] == last and "GCN_in skipped" in again and "MLflow run" in again


def test_a_failing_candidate_keeps_the_others(tmp_path: Path, monkeypatch) -> None:
    from landuse.evaluation import landuse_benchmark
    from landuse.training import protocol

    cfg = config_file(tmp_path, "  feature_sets: [sig, noise]\n")
    write_city(tmp_path / "work")
    config = load_config(cfg, ["benchmark.variants=[None]"], check_inputs=False)
    original = protocol.train_split

    def broken(*args, **kwargs):
        raise RuntimeError("boom: out of memory")

    monkeypatch.setattr(protocol, "train_split", broken)
    result = landuse_benchmark.run_landuse_benchmark(config, track=False)
    monkeypatch.setattr(protocol, "train_split", original)
    table = result.table.set_index("model")
    assert table.loc["None [sig+noise]", "status"] == "failed" and "boom" in table.loc["None [sig+noise]", "error"]
    assert table.loc["sig", "status"] == "ok" and result.best["model"] in {"sig", "noise"}


def test_stage_with_a_failed_candidate_is_committed_and_retried(tmp_path: Path, monkeypatch) -> None:
    """The benchmark-landuse stage: off in the pipeline by default; with a failed candidate its results are
    committed but not reused (the next run retries); a crash keeps the rows done so far beside the output."""
    from landuse.manifest import read_manifest
    from landuse.runner import incomplete_path, run_stage
    from landuse.stages import STAGES
    from landuse.training import protocol

    cfg = config_file(tmp_path, "  feature_sets: [sig]\n  mlflow: false\n")
    write_city(tmp_path / "work")
    stage = STAGES["benchmark-landuse"]
    assert run_stage(stage, load_config(cfg, check_inputs=False), STAGES).status == "disabled"
    config = load_config(cfg, ["benchmark.enabled=true", "benchmark.variants=[None]", "benchmark.repeats=2",
                               "benchmark.probe_epochs=3"], check_inputs=False)
    out = tmp_path / "work" / "results" / "benchmark_landuse"

    def broken(*args, **kwargs):
        raise RuntimeError("boom: out of memory")

    monkeypatch.setattr(protocol, "train_split", broken)
    assert run_stage(stage, config, STAGES).status == "ran"
    manifest = read_manifest(out)
    assert manifest["complete"] is False and manifest["failed"] == ["None [sig+noise]"]
    assert manifest["best"]["model"] == "sig" and manifest["mlflow_run_id"] is None
    assert run_stage(stage, config, STAGES).status == "ran"  # not reused: the failed candidate gets another try

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(protocol, "train_split", crash)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage, config, STAGES, force=True)
    partial = pd.read_csv(incomplete_path(out) / "results.csv")
    assert partial["model"].tolist() == ["sig"]  # the probe row finished before the crash
    assert read_manifest(out)["failed"] == ["None [sig+noise]"]  # the committed output is untouched


def test_variant_entries_carry_their_own_options(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path), ["benchmark.variants=[None, 'SAGE_adj2:ensemble=2']",
                                                  'benchmark.model_options=["", "label_lag=true"]'], check_inputs=False)
    cands, _ = plan(config, ["sig", "noise"], lambda v: None)
    models = [(c.name, c.options) for c in cands if c.kind == "model"]
    assert models == [("None [sig+noise]", ""), ("None [sig+noise] {label_lag=true}", "label_lag=true"),
                      ("SAGE_adj2 [sig+noise] {ensemble=2}", "ensemble=2"),
                      ("SAGE_adj2 [sig+noise] {ensemble=2,label_lag=true}", "ensemble=2,label_lag=true")]
    from landuse.config import ConfigError

    with pytest.raises(ConfigError, match="unknown variant 'SAGE_x:ensemble=2'"):
        load_config(config_file(tmp_path), ["benchmark.variants=['SAGE_x:ensemble=2']"], check_inputs=False)
    with pytest.raises(ConfigError, match="model_options"):
        load_config(config_file(tmp_path), ["benchmark.variants=['SAGE_adj2:bogus=1']"], check_inputs=False)
