"""`landuse run tune` on a tiny graph written as tables: search on validation KL, test touched once."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from landuse.config import ConfigError, load_config
from landuse.constants import LANDUSE_CLASSES
from landuse.training import tune as tune_mod
from landuse.training.tune import PARAMS, Setting, grid, run_optuna, run_tune, runnable_variants, search_space

N = 64
# 1 runnable variant x 2 lr x 1 dropout x 2 weight decays x 1 width = 4 trials; GCN_dd needs the
# distance-decay edges, which the tables below lack, so it is skipped.
SPACE = ["tune.variants=[GCN_adj,GCN_dd]", "tune.lr=[0.003,0.03]", "tune.dropout=[0.0]",
         "tune.weight_decay=[0.0,0.005]", "tune.width=[1.0]"]


def toy_graph_tables(tables: Path) -> None:
    """A 8x8 grid whose labels depend on the node's and its neighbours' features: node_features,
    edges_adjacency, edges_flow and regions (centroids); no edges_distance_decay."""
    from landuse.data.tables import assemble_node_features, write_shards

    rng = np.random.default_rng(0)
    side = 8
    ij = np.stack([np.arange(N) % side, np.arange(N) // side], 1)
    src, dst = np.nonzero(np.abs(ij[:, None] - ij[None]).sum(-1) == 1)
    x = rng.normal(size=(N, 6)).astype(np.float32)
    neighbour = np.zeros_like(x)
    np.add.at(neighbour, src, x[dst])
    neighbour /= np.bincount(src, minlength=N)[:, None]
    w = rng.normal(size=(6, len(LANDUSE_CLASSES)))
    y = torch.softmax(torch.from_numpy((x + neighbour) @ w).float(), 1).numpy()
    ids = np.arange(N, dtype=np.int64) * 10
    modalities = {"poi": pd.DataFrame({"region_id": ids, "vector": list(x[:, :4]), "has_pois": True}),
                  "geo": pd.DataFrame({"region_id": ids, "vector": list(x[:, 4:]), "has_geo": True})}
    labels = pd.DataFrame(y, columns=list(LANDUSE_CLASSES)).assign(region_id=ids, coverage=1.0)
    write_shards(assemble_node_features(ids, modalities, labels, LANDUSE_CLASSES), tables / "node_features", 64, 1000)
    for name, frame in {
        "edges_adjacency": {"region_id_a": ids[src], "region_id_b": ids[dst], "shared_length_m": np.ones(len(src))},
        "edges_flow": {"o_region": ids[src], "d_region": ids[dst], "weight": rng.uniform(0.5, 1.5, len(src))},
        "regions": {"region_id": ids, "centroid_x": ij[:, 0] * 250.0, "centroid_y": ij[:, 1] * 250.0},
    }.items():
        (tables / name).mkdir(parents=True)
        pq.write_table(pa.table(frame), tables / name / "part-00000.parquet")
    commit_as_assemble(tables, "toy-tables")


def commit_as_assemble(tables: Path, fingerprint: str) -> None:
    """Give node_features the manifest of an assemble run (the tune stage reads the assemble stage's output;
    its fingerprint is part of tune's)."""
    from landuse.manifest import write_manifest

    write_manifest(tables / "node_features", {"stage": "assemble", "output": "node_features", "fingerprint": fingerprint})


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tune-tables") / "tables"
    toy_graph_tables(path)
    return path


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> Path:
    """One SQLite store for the module (creating one costs seconds); each test has its own experiment."""
    return tmp_path_factory.mktemp("tune-mlflow") / "mlflow.db"


@pytest.fixture(autouse=True)
def no_requirements_inference(monkeypatch) -> None:
    """Skip MLflow's pip-requirements inference (a ~10 s subprocess per logged model); the defaults are logged."""
    import mlflow.models

    monkeypatch.setattr(mlflow.models, "infer_pip_requirements", lambda *a, fallback=None, **k: list(fallback or []))


@pytest.fixture
def setup(tables: Path, tmp_path: Path, mlflow_db: Path, request) -> tuple[Path, list[str]]:
    """(config file, base overrides) of a fresh work dir holding a copy of the tables, its own MLflow experiment."""
    work = tmp_path / "work"
    shutil.copytree(tables, work / "tables")
    # the raw regions are never read (the tables are pre-built); a regions source puts the model stages in the DAG
    (tmp_path / "regions.geojson").write_text('{"type": "FeatureCollection", "features": []}\n')
    path = tmp_path / "tune.yaml"
    path.write_text(
        "name: tune-test\nseed: 3\nlog_level: WARNING\n"
        f"work_dir: {work}\n"
        f"inputs: {{regions: {{adapter: polygons, path: {tmp_path / 'regions.geojson'}}}}}\n"
        f"mlflow: {{tracking_uri: 'sqlite:///{mlflow_db}', experiment: {request.node.name}}}\n"
        "training: {features: [poi, geo], epochs: 12, splits: 3, lr: 0.01, progress: false, device: cpu,\n"
        "           registered_model: tune-test-model}\n"
        "tune: {method: grid, splits: 2, epochs: 12}\n"
    )
    return path, list(SPACE)


def mlflow_runs(config):
    import mlflow

    mlflow.set_tracking_uri(config.mlflow_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    return client, client.search_runs([experiment.experiment_id])


def test_grid_search_end_to_end(setup, capsys, monkeypatch) -> None:
    from landuse.entrypoints.tune import main

    monkeypatch.setitem(sys.modules, "optuna", None)  # the grid needs no optuna
    path, overrides = setup
    assert main(["--config", str(path), *overrides]) == 0
    config = load_config(path, overrides)
    out = config.work_dir / "results" / "tune"

    trials = pd.read_csv(out / "trials.csv", keep_default_na=False, na_values=["", "nan"])
    assert len(trials) == 4 and (trials["state"] == "complete").all()
    assert trials["variant"].tolist() == ["GCN_adj"] * 4
    # fixed grid order: lr outer, weight decay inner
    assert list(zip(trials["lr"], trials["weight_decay"])) == [(0.003, 0.0), (0.003, 0.005), (0.03, 0.0), (0.03, 0.005)]
    assert not [c for c in trials.columns if "test" in c]  # no test metric in any trial row
    assert (trials["val_kl"] > 0).all() and (trials["val_kl_std"] >= 0).all() and (trials["seconds"] > 0).all()

    best = json.loads((out / "best.json").read_text())
    argmin = trials.loc[trials["val_kl"].idxmin()]
    assert best["setting"] == {p: argmin[p] for p in PARAMS}
    assert best["validation"]["val_kl"] == pytest.approx(argmin["val_kl"])
    assert best["final"]["splits"] == 3 and best["validation"]["splits"] == 2
    assert math.isfinite(best["final"]["test"]["kl"]["mean"]) and best["final"]["test"]["kl"]["std"] >= 0
    assert "GCN_dd" in best["skipped"] and "distance_decay" in best["skipped"]["GCN_dd"]

    stdout = capsys.readouterr().out
    last = stdout.strip().splitlines()[-1]
    pairs = dict(kv.split("=", 1) for kv in last.split())
    assert list(pairs) == ["best_variant", "lr", "dropout", "weight_decay", "width", "val_kl", "test_kl"]
    assert pairs["best_variant"] == "GCN_adj" and float(pairs["lr"]) == argmin["lr"]
    assert float(pairs["test_kl"]) == pytest.approx(best["final"]["test"]["kl"]["mean"], rel=1e-5)
    assert "### Model selection: tune-test" in stdout and "skipped GCN_dd" in stdout
    assert re.search(r"\| GCN_adj \| 0\.0\d+ \| 0 \|", (out / "tune.md").read_text())

    # MLflow: one parent, a nested run per trial without any test metric, one final run with them
    client, runs = mlflow_runs(config)
    parent = next(r for r in runs if r.info.run_name == "tune:tune-test")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trial_runs = [r for r in children if r.data.tags.get("role") == "trial"]
    final = [r for r in children if r.data.tags.get("role") == "final"]
    assert len(trial_runs) == 4 and len(final) == 1
    for run in trial_runs:
        assert not [m for m in run.data.metrics if "test" in m]
        assert not [m for m in client.get_metric_history(run.info.run_id, "mean_test_kl")]
        assert {"val_kl", "val_kl_std"} <= set(run.data.metrics) and run.data.tags["state"] == "complete"
        assert run.data.params["lr"] in ("0.003", "0.03") and "trial" in run.data.tags
    assert "test_kl" in final[0].data.metrics and final[0].data.tags["selected_by"] == "tune"
    assert parent.data.metrics["best_val_kl"] == pytest.approx(best["validation"]["val_kl"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best.json", "tune.md"} <= artifacts

    # the registered final model, tagged with how it was chosen
    version = client.get_model_version("tune-test-model", best["final"]["model"]["version"])
    assert version.tags["selected_by"] == "tune" and version.tags["variant"] == "GCN_adj"
    assert version.tags["registered_because"].startswith("selected by landuse run tune")
    assert float(version.tags["tune_lr"]) == argmin["lr"] and version.tags["tune_run_id"] == parent.info.run_id


def test_unchanged_search_is_skipped_and_a_changed_setting_reruns(setup, capsys, monkeypatch) -> None:
    """The runner is the one skip path: a second `landuse run tune` with the same config and tables prints
    the committed results (same best.json, same last line) without searching; a changed tune setting, or
    changed tables, search again. ``tune.enabled`` (default false) only decides whether the pipeline runs it."""
    from landuse.entrypoints.tune import main
    from landuse.manifest import read_manifest
    from landuse.runner import run_stage
    from landuse.stages import STAGES

    monkeypatch.setitem(sys.modules, "optuna", None)
    path, _ = setup
    one = ["tune.variants=[GCN_adj]", "tune.lr=[0.03]", "tune.dropout=[0.0]", "tune.weight_decay=[0.0]",
           "tune.width=[1.0]"]  # one trial
    config = load_config(path, one)
    assert not config.tune.enabled and run_stage(STAGES["tune"], config, STAGES).status == "disabled"
    out = config.work_dir / "results" / "tune"

    def tune(*extra: str) -> tuple[list[str], str]:
        assert main(["--config", str(path), *one, *extra]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        return lines, (out / "best.json").read_text()

    def parents() -> int:
        return sum(r.info.run_name == "tune:tune-test" for r in mlflow_runs(config)[1])

    first, best = tune()
    assert f"tune: ran tune -> {out}" in first and first[-1].startswith("best_variant=GCN_adj ")
    manifest = read_manifest(out)
    assert manifest["stage"] == "tune" and manifest["trials"] == 1 and manifest["summary_line"] == first[-1]
    assert manifest["registered"]["version"] == json.loads(best)["final"]["model"]["version"]
    assert parents() == 1

    again, best_again = tune()
    assert f"tune: unchanged tune -> {out}" in again and "tune: ran tune" not in "\n".join(again)
    assert best_again == best and again[-1] == first[-1]  # the summary line read back from best.json
    assert "### Model selection: tune-test" in "\n".join(again) and "tune: registered" not in "\n".join(again)
    assert parents() == 1  # no second search

    changed, best_changed = tune("tune.dropout=[0.1]")
    assert f"tune: ran tune -> {out}" in changed and json.loads(best_changed)["setting"]["dropout"] == 0.1
    assert changed[-1].startswith("best_variant=GCN_adj ") and " dropout=0.1 " in changed[-1]
    assert parents() == 2

    commit_as_assemble(config.tables_dir, "other-tables")  # new assembled tables: search again
    assert f"tune: ran tune -> {out}" in tune("tune.dropout=[0.1]")[0] and parents() == 3


def test_failed_trial_is_recorded_and_search_continues(setup, monkeypatch) -> None:
    path, overrides = setup
    config = load_config(path, overrides)
    real = tune_mod.run_protocol

    def flaky(graph, variant, features, cfg, *args, **kwargs):
        if cfg.lr == 0.03 and cfg.weight_decay == 0.0:
            raise RuntimeError("boom\nsecond line")
        return real(graph, variant, features, cfg, *args, **kwargs)

    monkeypatch.setattr(tune_mod, "run_protocol", flaky)
    result = run_tune(config)
    table = pd.read_csv(config.work_dir / "results" / "tune" / "trials.csv")
    assert table["state"].tolist() == ["complete", "complete", "failed", "complete"]
    assert table.loc[2, "error"] == "RuntimeError: boom" and math.isnan(table.loc[2, "val_kl"])
    assert result.best.state == "complete" and result.best.number != 2
    client, runs = mlflow_runs(config)
    failed = [r for r in runs if r.data.tags.get("state") == "failed"]
    assert len(failed) == 1 and failed[0].info.status == "FAILED" and failed[0].data.tags["error"] == "RuntimeError: boom"


def test_skipped_and_empty_search_spaces(setup, capsys) -> None:
    from landuse.data.reader import load_graph
    from landuse.entrypoints.tune import main

    path, overrides = setup
    config = load_config(path, overrides)
    graph = load_graph(config.tables_dir)
    keep, skipped = runnable_variants(graph, ["GCN_adj", "GCN_dd", "Adj-Tri-GCN", "GCN_adj"])
    assert keep == ["GCN_adj", "Adj-Tri-GCN"] and list(skipped) == ["GCN_dd"]
    assert "edges_distance_decay" in skipped["GCN_dd"] and "landuse run regions" in skipped["GCN_dd"]
    assert "not implemented" in tune_mod.variant_problem(graph, "Quad-GCN")
    # no runnable variant: one line, exit code 2, nothing trained
    assert main(["--config", str(path), *overrides, "tune.variants=[GCN_dd]"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and err[0].startswith("error: tune.variants: no runnable variant")
    assert not (config.work_dir / "results" / "tune" / "trials.csv").exists()
    # empty or out-of-range candidate lists
    with pytest.raises(ConfigError, match="tune.lr: empty search space"):
        search_space(dataclasses.replace(config, tune=dataclasses.replace(config.tune, lr=())), ["GCN_adj"])
    with pytest.raises(ConfigError, match="tune.dropout: 1.5 is out of range"):
        search_space(dataclasses.replace(config, tune=dataclasses.replace(config.tune, dropout=(0.0, 1.5))), ["GCN_adj"])
    assert main(["--config", str(path), *overrides, "tune.width=[]"]) == 2
    assert "tune.width" in capsys.readouterr().err
    # grid order is fixed: variants outermost, then lr, dropout, weight decay, width
    space = search_space(config, ["GCN_adj", "None"])
    assert grid(space)[:2] == [Setting("GCN_adj", 0.003, 0.0, 0.0, 1.0), Setting("GCN_adj", 0.003, 0.0, 0.005, 1.0)]
    assert len(grid(space)) == 8 and grid(space)[-1].variant == "None"


def test_optuna_search(setup, monkeypatch) -> None:
    if not tune_mod.optuna_available():
        print("optuna is not installed: skipping the optuna search test (pip install 'optuna>=5,<6')")
        pytest.skip("optuna is not installed (pip install 'optuna>=5,<6')")
    path, overrides = setup
    # the sampler is seeded: the same seed proposes the same settings
    space = search_space(load_config(path, overrides), ["GCN_adj", "None", "Adj-Tri-GCN"])

    def proposals(seed: int) -> list[Setting]:
        seen: list[Setting] = []

        def fake(setting: Setting):
            seen.append(setting)
            return tune_mod.TrialRecord(len(seen) - 1, setting, "complete", val_kl=setting.lr + setting.weight_decay)

        run_optuna(space, fake, 12, seed)
        return seen

    assert proposals(5) == proposals(5)
    config = load_config(path, [*overrides, "tune.method=optuna", "tune.trials=3", "tune.variants=[GCN_adj,None]"])
    result = run_tune(config)
    table = pd.read_csv(config.work_dir / "results" / "tune" / "trials.csv", keep_default_na=False, na_values=["", "nan"])
    assert len(table) == 3 and set(table["state"]) <= {"complete", "repeat"}
    assert not [c for c in table.columns if "test" in c]
    assert result.best.val_kl == pytest.approx(table["val_kl"].min())
    assert math.isfinite(result.final["test"]["kl"]["mean"])
    # without optuna, method optuna is a one-line config error
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError, match="optuna is not installed"):
        run_tune(config)
