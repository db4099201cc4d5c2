"""Cross-city transfer on small hand-built graphs, and `landuse run transfer` end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from landuse.config import ConfigError, TrainingConfig, load_config
from landuse.data.reader import GraphData
from landuse.models.hgcn import HGCN
from landuse.training.protocol import cpu_threads, train_split
from landuse.pretraining.transfer import (
    output_layer, prepare_city, run_transfer, train_split_from, transfer_state, val_fraction_for,
)

SHARPNESS = 0.7
W = np.random.default_rng(123).normal(size=(6, 8))  # the labelling rule both cities share


def city_graph(n: int, seed: int, classes: int = 3) -> GraphData:
    """A grid graph; labels = softmax of a fixed linear map of the node's and its neighbours' features."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    ij = np.stack([np.arange(n) % side, np.arange(n) // side], 1)
    src, dst = np.nonzero(np.abs(ij[:, None] - ij[None]).sum(-1) == 1)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    neighbour = np.zeros_like(x)
    np.add.at(neighbour, src, x[dst])
    neighbour /= np.maximum(np.bincount(src, minlength=n), 1)[:, None]
    y = torch.softmax(torch.from_numpy((x + neighbour) @ W[:, :classes]).float() * SHARPNESS, 1)
    adj = torch.from_numpy(np.stack([src, dst]))
    flow = adj  # trips between neighbours: the flow heads see the same signal
    ones = torch.ones(n, dtype=torch.bool)
    return GraphData(
        region_ids=torch.arange(n), features={"image": torch.from_numpy(x[:, :4]), "geo": torch.from_numpy(x[:, 4:])},
        flags={"image": ones, "geo": ones}, y=y, has_label=ones, coverage=torch.ones(n, dtype=torch.float64),
        edges={"adjacency": (adj, torch.ones(adj.shape[1])),
               "flow": (flow, torch.from_numpy(rng.uniform(0.5, 1.5, flow.shape[1])).float())},
        classes=[f"c{i}" for i in range(classes)],
    )


CFG = TrainingConfig(epochs=80, lr=0.01, progress=False, device="cpu")
FEATURES = ("image", "geo")


def test_transfer_beats_scratch_with_few_target_labels() -> None:
    source = prepare_city("src", city_graph(400, seed=1), FEATURES, "Adj-Tri-GCN")
    target = prepare_city("tgt", city_graph(100, seed=2), FEATURES, "Adj-Tri-GCN")
    result = run_transfer(source, target, "Adj-Tri-GCN", FEATURES, CFG, CFG, fractions=(0.1,), splits=3, seed=0)
    assert not result.reinit_head
    table = result.table.set_index(["fraction", "method"])
    assert list(result.table.columns[:2]) == ["fraction", "method"] and len(table) == 2
    assert {"kl", "kl_std", "l1_mean", "l1_sum_std", "cosine", "n_train", "splits"} <= set(result.table.columns)
    assert table.loc[(0.1, "scratch"), "n_train"] == 10 and table.loc[(0.1, "scratch"), "splits"] == 3
    scratch, transfer = table.loc[(0.1, "scratch"), "kl"], table.loc[(0.1, "transfer"), "kl"]
    assert transfer < 0.6 * scratch, (transfer, scratch)
    rows = result.splits
    assert len(rows) == 2 * 3
    # paired: the same split and seed for both methods, and transfer wins on most of them at 10 %
    low = rows.pivot(index="split", columns="method", values="kl")
    assert (low["transfer"] < low["scratch"]).sum() == 3


def test_scratch_path_is_the_protocol_and_init_from_fresh_state_matches() -> None:
    graph = city_graph(64, seed=3)
    city = prepare_city("c", graph, FEATURES, "GCN_adj")
    split = (np.arange(0, 20), np.arange(20, 30), np.arange(30, 64))
    cfg = dataclasses.replace(CFG, epochs=15)
    device = torch.device("cpu")
    with cpu_threads(1):  # tiny ops: one thread (as the protocol does for small graphs)
        base = train_split(city.x, graph.y, city.operators, "GCN_adj", split, cfg, 7, device)
        same = train_split_from(city.x, graph.y, city.operators, "GCN_adj", split, cfg, 7, device)
        torch.manual_seed(7)
        fresh = HGCN(6, 3, variant="GCN_adj").state_dict()  # what train_split initialises with seed 7
        looped = train_split_from(city.x, graph.y, city.operators, "GCN_adj", split, cfg, 7, device, init_state=fresh)
    assert base.metrics == same.metrics
    np.testing.assert_allclose(looped.curves["val_kl"], base.curves["val_kl"], rtol=1e-5)


def test_class_mismatch_reinitialises_only_the_output_layer() -> None:
    source = HGCN(6, 8, variant="Adj-Tri-GCN")
    target = HGCN(6, 5, variant="Adj-Tri-GCN")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    kept = transfer_state(target, source.state_dict(), reinit_head=True)
    head = output_layer(target)
    assert sorted(kept) == [f"{head}.bias", f"{head}.weight"]
    for key, value in target.state_dict().items():
        expected = before[key] if key in kept else source.state_dict()[key]
        torch.testing.assert_close(value, expected)
    with pytest.raises(ConfigError, match="do not fit"):
        transfer_state(HGCN(6, 5), source.state_dict(), reinit_head=False)
    with pytest.raises(ConfigError, match="do not fit"):
        transfer_state(HGCN(7, 8), source.state_dict(), reinit_head=False)
    # through run_transfer: 3-class source, 2-class target
    src = prepare_city("src", city_graph(100, seed=1, classes=3), FEATURES, "GCN_adj")
    tgt = prepare_city("tgt", city_graph(60, seed=2, classes=2), FEATURES, "GCN_adj")
    cfg = dataclasses.replace(CFG, epochs=10)
    result = run_transfer(src, tgt, "GCN_adj", FEATURES, cfg, cfg, fractions=(0.3,), splits=1)
    assert result.reinit_head and np.isfinite(result.table["kl"]).all()


def test_feature_width_mismatch_and_fractions() -> None:
    a = city_graph(60, seed=1)
    b = city_graph(60, seed=2)
    b.features["image"] = b.features["image"][:, :3]
    with pytest.raises(ConfigError, match="feature 'image' has 4 columns in src but 3 in tgt"):
        run_transfer(prepare_city("src", a, FEATURES, "GCN_adj"), prepare_city("tgt", b, FEATURES, "GCN_adj"),
                     "GCN_adj", FEATURES, CFG, CFG, fractions=(0.5,), splits=1)
    assert val_fraction_for(0.1) == 0.1 and val_fraction_for(0.8) == 0.1
    assert val_fraction_for(0.9) == pytest.approx(0.05)
    with pytest.raises(ConfigError):
        val_fraction_for(0.95)


# ---------------------------------------------------------------------------------------------
# end to end: tables on disk for two configs, `landuse run transfer` via main(argv)
# ---------------------------------------------------------------------------------------------


def write_city_tables(tables: Path, graph: GraphData, classes: list[str]) -> None:
    from landuse.data.tables import assemble_node_features, write_shards

    ids = graph.region_ids.numpy().astype(np.int64)
    modalities = {name: pd.DataFrame({"region_id": ids, "vector": list(graph.features[name].numpy()),
                                      flag: True})
                  for name, flag in (("image", "has_image"), ("geo", "has_geo"))}
    y = np.zeros((len(ids), len(classes)), dtype=np.float32)
    y[:, :graph.y.shape[1]] = graph.y.numpy()
    labels = pd.DataFrame(y, columns=classes).assign(region_id=ids, coverage=1.0)
    write_shards(assemble_node_features(ids, modalities, labels, classes), tables / "node_features", 64, 1000)
    adj, _ = graph.edges["adjacency"]
    flow, weight = graph.edges["flow"]
    for name, frame in {
        "edges_adjacency": {"region_id_a": ids[adj[0]], "region_id_b": ids[adj[1]], "shared_length_m": np.ones(adj.shape[1])},
        "edges_flow": {"o_region": ids[flow[0]], "d_region": ids[flow[1]], "weight": weight.numpy().astype(np.float64)},
    }.items():
        (tables / name).mkdir(parents=True)
        pq.write_table(pa.table(frame), tables / name / "part-00000.parquet")
    commit_as_assemble(tables, "tables-1")


def commit_as_assemble(tables: Path, fingerprint: str) -> None:
    """Manifests of an assemble run on node_features and edges_flow (the transfer stage reads the assemble
    stage's outputs; their fingerprints, the target's and the source's, are part of its own)."""
    from landuse.manifest import write_manifest

    for name in ("node_features", "edges_flow"):
        write_manifest(tables / name, {"stage": "assemble", "output": name, "fingerprint": fingerprint})


def test_entry_point_writes_table_plot_and_mlflow(tmp_path, repo_root, monkeypatch, capsys) -> None:
    import mlflow

    from landuse.entrypoints.transfer import main

    monkeypatch.chdir(repo_root)
    classes = list(load_config(repo_root / "conf/synthetic_shenzhen.yaml", check_inputs=False).labels.classes)
    write_city_tables(tmp_path / "src" / "tables", city_graph(120, seed=1), classes)
    write_city_tables(tmp_path / "tgt" / "tables", city_graph(80, seed=2), classes)
    uri = f"sqlite:///{tmp_path}/m.db"
    argv = ["--config", "conf/synthetic_london.yaml", "--source-config", "conf/synthetic_shenzhen.yaml",
            "--source-set", f"work_dir={tmp_path}/src", "--source-set", "training.epochs=10",
            "--fractions", "0.2,0.6", "--splits", "2",
            f"work_dir={tmp_path}/tgt", f"mlflow.tracking_uri={uri}", "training.epochs=10",
            "training.progress=false", "training.device=cpu"]
    code = main(argv)
    assert code == 0
    out = tmp_path / "tgt" / "results" / "transfer"
    stdout = capsys.readouterr().out
    assert "| 20% | transfer |" in stdout and f"transfer: ran transfer -> {out}" in stdout
    assert "run transfer:synthetic_shenzhen->synthetic_london)" in stdout
    # unchanged settings, source config and tables: skipped, the committed table printed again
    before = (out / "transfer.csv").read_text()
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert f"transfer: unchanged transfer -> {out}" in stdout and "| 20% | transfer |" in stdout
    assert (out / "transfer.csv").read_text() == before
    # new source tables: the transfer reruns
    commit_as_assemble(tmp_path / "src" / "tables", "tables-2")
    assert main(argv) == 0 and f"transfer: ran transfer -> {out}" in capsys.readouterr().out
    table = pd.read_csv(out / "transfer.csv")
    assert list(table["method"]) == ["scratch", "transfer"] * 2 and list(table["fraction"]) == [0.2, 0.2, 0.6, 0.6]
    assert "| 20% | transfer |" in (out / "transfer.md").read_text()
    assert (out / "transfer_kl.png").stat().st_size > 1000
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sum(r.info.run_name == "transfer:synthetic_shenzhen->synthetic_london" for r in runs) == 2
    run = next(r for r in runs if r.info.run_name == "transfer:synthetic_shenzhen->synthetic_london")
    assert run.data.tags["features"] == "image,geo" and run.data.params["training.epochs"] == "10"
    assert {"scratch_kl", "transfer_kl", "source_val_kl"} <= set(run.data.metrics)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "transfer_kl")
    assert sorted(m.step for m in history) == [20, 60]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"transfer.csv", "transfer.md", "transfer_splits.csv", "transfer_kl.png", "source_config.json"} <= artifacts
    assert run.data.params["transfer.fractions"] == "[0.2, 0.6]" and run.data.params["transfer.splits"] == "2"
    # a feature the tables lack is a one-line user error (the settings as keys instead of flags)
    code = main(["--config", "conf/synthetic_london.yaml", "transfer.source_config=[conf/synthetic_shenzhen.yaml]",
                 f"transfer.source_set=[work_dir={tmp_path}/src]", "transfer.features=[image, poi]",
                 f"work_dir={tmp_path}/tgt", f"mlflow.tracking_uri={uri}"])
    assert code == 2


# ---------------------------------------------------------------------------------------------
# settings: the target config's `transfer` section; the command's flags are overrides of its keys
# ---------------------------------------------------------------------------------------------


def test_transfer_flags_equal_key_value_overrides(repo_root) -> None:
    from landuse.config import TransferConfig
    from landuse.entrypoints.common import flag_overrides
    from landuse.entrypoints.transfer import SETTINGS, build_parser

    assert TransferConfig().fractions == (0.1, 0.3, 0.5, 0.7, 0.9) and TransferConfig().features == ("image", "geo")
    assert TransferConfig().splits is None and TransferConfig().source_config == ()
    parser = build_parser()
    assert {a.dest for a in parser._actions} - {"help", "config", "force", "overrides"} == set(SETTINGS)
    conf = str(repo_root / "conf/synthetic_london.yaml")
    args = parser.parse_args(["--config", conf, "--source-config", "conf/synthetic_shenzhen.yaml",
                              "--source-config", "conf/extra.yaml", "--source-set", "work_dir=work/src",
                              "--source-set", "training.epochs=10", "--fractions", "0.2,0.6", "--splits", "2",
                              "--features", "image,poi_text", "seed=3"])
    by_flags = load_config(conf, flag_overrides(args, "transfer", SETTINGS) + args.overrides, check_inputs=False)
    by_keys = load_config(conf, ["transfer.source_config=[conf/synthetic_shenzhen.yaml, conf/extra.yaml]",
                                 "transfer.source_set=[work_dir=work/src, training.epochs=10]",
                                 "transfer.fractions=[0.2, 0.6]", "transfer.splits=2",
                                 "transfer.features=[image, poi_text]", "seed=3"], check_inputs=False)
    assert by_flags.to_dict() == by_keys.to_dict()
    assert by_flags.transfer.fractions == (0.2, 0.6) and by_flags.transfer.source_set[1] == "training.epochs=10"
    assert flag_overrides(parser.parse_args(["--config", conf]), "transfer", SETTINGS) == []


@pytest.mark.parametrize("argv, expected", [
    (["--splits", "0"], "transfer.splits: must be > 0"),
    (["transfer.fractions=[0.5, 0.99]"], "transfer.fractions: expected a non-empty list of fractions in (0, 0.95)"),
    (["transfer.features=[]"], "transfer.features: expected a non-empty list"),
    (["--source-set", "epochs"], "transfer.source_set: 'epochs': expected key=value"),
    (["transfer.source_config=[]"], "transfer.source_config: required"),
])
def test_bad_transfer_setting_is_a_one_line_error_naming_the_key(repo_root, tmp_path, monkeypatch, capsys,
                                                                 argv, expected) -> None:
    from landuse.entrypoints.transfer import main

    monkeypatch.chdir(repo_root)
    code = main(["--config", "conf/synthetic_london.yaml", "--source-config", "conf/synthetic_shenzhen.yaml",
                 *argv, f"work_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and expected in err, err


def test_transfer_writes_its_settings_into_resolved_config(repo_root, tmp_path, monkeypatch, capsys) -> None:
    import json

    from landuse.entrypoints.transfer import main

    monkeypatch.chdir(repo_root)
    # the source config comes from the target's transfer section; no tables: a one-line error after the write
    code = main(["--config", "conf/synthetic_london.yaml", "--fractions", "0.2", f"work_dir={tmp_path}",
                 "transfer.source_config=[conf/synthetic_shenzhen.yaml]", f"transfer.source_set=[work_dir={tmp_path}/src]"])
    assert code == 2 and "node_features" in capsys.readouterr().err
    resolved = json.loads((tmp_path / "resolved_config.json").read_text())
    assert resolved["transfer"] == {"source_config": ["conf/synthetic_shenzhen.yaml"],
                                    "source_set": [f"work_dir={tmp_path}/src"], "fractions": [0.2], "splits": None,
                                    "features": ["image", "geo"]}
    assert resolved["pretrain"]["epochs"] == 10
