"""The region-embedding benchmark: protocol functions with known answers, the published rows, and
``landuse run benchmark-embeddings`` end to end on the real NYC mh-180 tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from landuse.config import ConfigError, TrainingConfig
from landuse.evaluation import embeddings_benchmark as B


def labelled_frame(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic per-region labels whose targets are linear in a known embedding (returned too)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    frame = pd.DataFrame({
        "region_id": np.arange(n),
        "community_district": rng.integers(0, 12, n),
        "crime_count": 1000 + x @ np.array([300.0, -200.0, 50.0, 10.0]),
        "checkin_count": 5000 + x @ np.array([-100.0, 800.0, 20.0, 400.0]),
    })
    return frame, x


# --- task (b): the MVURE protocol ------------------------------------------------------------------

def test_ridge_kfold_linear_embedding_scores_one_random_scores_nothing() -> None:
    frame, x = labelled_frame()
    exact = B.ridge_kfold(x, frame["crime_count"].to_numpy())
    spread = frame["crime_count"].std()
    assert exact["r2"] > 0.999 and exact["mae"] < 0.02 * spread and exact["rmse"] < 0.02 * spread  # only ridge shrinkage
    noise = np.random.default_rng(1).normal(size=(len(frame), 32))
    assert B.ridge_kfold(noise, frame["crime_count"].to_numpy())["r2"] <= 0.05


def test_ridge_kfold_matches_the_published_code_path() -> None:
    """Out-of-fold predictions of an unshuffled KFold(5), concatenated, negatives clipped, metrics once."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from sklearn.model_selection import KFold, cross_val_predict

    rng = np.random.default_rng(3)
    x = rng.normal(size=(90, 6))
    target = np.maximum(x[:, 0] * 5, 0) + rng.random(90)  # a hinge: the linear fit goes negative on the left
    pred = np.maximum(cross_val_predict(Ridge(alpha=1.0), x, target, cv=KFold(5)), 0)
    got = B.ridge_kfold(x, target)
    assert got["r2"] == pytest.approx(r2_score(target, pred))
    assert got["mae"] == pytest.approx(mean_absolute_error(target, pred))
    assert got["rmse"] == pytest.approx(math.sqrt(mean_squared_error(target, pred)))
    unclipped = B.ridge_kfold(x, target, clip_negative=False)
    assert unclipped["r2"] < got["r2"]  # clipping can only move predictions towards the (non-negative) truth


def test_kmeans_agreement_perfect_clusters_and_noise() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 15)
    centres = rng.normal(size=(12, 8)) * 100
    x = centres[labels] + rng.normal(size=(len(labels), 8))
    assert B.kmeans_agreement(x, labels, seed=0) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    noise = B.kmeans_agreement(rng.normal(size=(len(labels), 8)), labels, seed=0)
    assert noise["ari"] < 0.1


def test_published_rows_are_the_cited_numbers() -> None:
    rows = B.published_rows().set_index("embedding")
    expected = {"MVURE": (0.64, 0.63, 0.78, 0.62), "MGFN": (0.72, 0.72, 0.76, 0.58),
                "HREP": (0.68, 0.75, math.nan, math.nan), "HAFusion": (0.734, 0.844, math.nan, math.nan)}
    assert list(rows.index) == list(expected)
    for method, values in expected.items():
        got = rows.loc[method, ["crime_count_r2", "checkin_count_r2", "nmi", "ari"]].to_numpy(float)
        np.testing.assert_array_equal(got, np.array(values))
        assert (rows.loc[method, "kind"]) == "published"
        assert B.PUBLISHED_NOTE in rows.loc[method, "source"]
    cites = {"MVURE": "Zhang et al., IJCAI 2020", "MGFN": "Wu et al., IJCAI 2022", "HREP": "Zhou et al., AAAI 2023",
             "HAFusion": "Sun et al., ICDE 2024"}
    for method, cite in cites.items():
        assert cite in rows.loc[method, "source"]
    assert rows[["crime_count_mae", "checkin_count_rmse"]].isna().all().all()  # not given: never invented


def test_mvure_protocol_table_marks_our_best_and_appends_published() -> None:
    frame, x = labelled_frame()
    ids = frame["region_id"].to_numpy()
    rng = np.random.default_rng(5)
    embeddings = [
        B.Embedding("noise", "ours", ids, rng.normal(size=(len(ids), 8))),
        B.Embedding("exact", "ours", ids[::-1], x[::-1]),  # given out of order: rows are realigned by region id
        B.Embedding("better_baseline", "baseline", ids, np.hstack([x, x])),
    ]
    table = B.mvure_protocol(embeddings, frame, seed=0)
    assert list(table["embedding"]) == ["noise", "exact", "better_baseline", "MVURE", "MGFN", "HREP", "HAFusion"]
    assert table.loc[1, "crime_count_r2"] > 0.999 and table.loc[1, "checkin_count_r2"] > 0.999
    assert B.best_ours(table) == 1
    text = B.mvure_markdown(table, len(ids))
    assert "★ **exact**" in text and "★ **better_baseline**" not in text
    for method in ("MVURE", "MGFN", "HREP", "HAFusion"):
        assert f"| {method} | published |" in text
    assert text.count(B.PUBLISHED_NOTE) >= 4
    assert "Ridge(alpha=1)" in text and "KFold" in text


def test_mvure_protocol_uses_regions_all_share() -> None:
    frame, x = labelled_frame(100)
    ids = frame["region_id"].to_numpy()
    part = B.Embedding("part", "extra", ids[:80], x[:80])
    table = B.mvure_protocol([part, B.Embedding("full", "ours", ids, x)], frame, seed=0)
    assert "80 regions" in table.loc[0, "source"]


def test_load_region_labels(tmp_path: Path) -> None:
    frame, _ = labelled_frame(20)
    path = tmp_path / "labels.csv"
    frame.sample(frac=1, random_state=0).to_csv(path, index=False)
    loaded = B.load_region_labels(path)
    assert list(loaded["region_id"]) == list(range(20))
    frame.drop(columns="crime_count").to_csv(path, index=False)
    with pytest.raises(ConfigError, match="crime_count"):
        B.load_region_labels(path)
    with pytest.raises(FileNotFoundError):
        B.load_region_labels(tmp_path / "absent.csv")


# --- candidates -------------------------------------------------------------------------------------

def test_od_rows_are_normalised_out_flows() -> None:
    flows = pd.DataFrame({"o_region": [10, 10, 20, 99], "d_region": [20, 30, 20, 10], "trips": [3, 1, 5, 7]})
    rows = B.od_rows(flows, np.array([10, 20, 30]))
    np.testing.assert_allclose(rows, [[0, 0.75, 0.25], [0, 1, 0], [0, 0, 0]])  # region 99 unknown: dropped


def test_poi_count_matrix_shares_at_level_1() -> None:
    counts = pd.DataFrame({"region_id": [1, 1, 2, 2, 3], "level": [1, 1, 1, 2, 2],
                           "token": ["a", "b", "b", "b:x", "a:y"], "n_pois": [1, 3, 2, 2, 5]})
    matrix, tokens = B.poi_count_matrix(counts, np.array([1, 2, 3]))
    assert tokens == ["a", "b"]
    np.testing.assert_allclose(matrix, [[0.25, 0.75], [0, 1], [0, 0]])


def test_fuse_gives_every_block_unit_total_variance() -> None:
    rng = np.random.default_rng(0)
    wide, narrow = rng.normal(size=(50, 40)) * 10, rng.normal(size=(50, 3))
    fused = B.fuse([wide, narrow])
    assert fused.shape == (50, 43)
    assert fused[:, :40].var(0).sum() == pytest.approx(1.0) and fused[:, 40:].var(0).sum() == pytest.approx(1.0)


def test_embedding_alignment_and_errors() -> None:
    emb = B.Embedding("e", "extra", np.array([5, 1, 3]), np.array([[5.0], [1.0], [3.0]]))
    np.testing.assert_array_equal(emb.rows(np.array([1, 5])), [[1.0], [5.0]])
    with pytest.raises(ValueError, match="missing"):
        emb.rows(np.array([2]))
    np.testing.assert_array_equal(B.common_regions([emb], np.array([3, 5, 7])), [3, 5])
    with pytest.raises(ValueError, match="duplicate"):
        B.Embedding("d", "extra", np.array([1, 1]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        B.Embedding("n", "extra", np.array([1]), np.array([[math.nan]]))


def test_read_embedding_table(tmp_path: Path) -> None:
    pd.DataFrame({"region_id": [2, 0, 1], "vector": [[2.0, 0.0], [0.0, 0.0], [1.0, 0.0]]}).to_parquet(tmp_path / "e.parquet")
    emb = B.read_embedding("mine", tmp_path / "e.parquet")
    assert emb.kind == "extra" and emb.dim == 2 and list(emb.region_ids) == [0, 1, 2]
    pd.DataFrame({"region_id": [0], "emb": [[1.0]]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ConfigError, match="vector"):
        B.read_embedding("bad", tmp_path / "bad.parquet")


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_hidden_layer_is_what_the_trunk_receives() -> None:
    from landuse.models.hgcn import HGCN

    torch.manual_seed(0)
    n = 12
    adj = (torch.eye(n) + torch.diag(torch.ones(n - 1), 1)).to_sparse_csr()
    flow = torch.rand(n, n).to_sparse_csr()
    operators = {"adj": adj, "in": flow, "out": flow}
    model = HGCN(5, 3, variant="Adj-Tri-GCN")
    x = torch.randn(n, 5)
    hidden = B.hidden_layer(model, x, operators)
    assert hidden.shape == (n, 64) and (hidden >= 0).all()  # ReLU of the concatenated heads (32 + 16 + 16)
    with torch.no_grad():
        torch.testing.assert_close(model.trunk(torch.as_tensor(hidden, dtype=torch.float32)), model(x, operators))


# --- task (a): land-use distribution --------------------------------------------------------------

def test_landuse_task_informative_beats_random_and_own_split_is_respected() -> None:
    rng = np.random.default_rng(0)
    n, c = 150, 4
    logits = rng.normal(size=(n, c)) * 2
    y = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ids = np.arange(n)
    has_label = np.ones(n, dtype=bool)
    cfg = TrainingConfig(epochs=60, splits=3)
    splits = B.probe_splits(has_label, 3, cfg, seed=1)
    own = tuple(ids[s] for s in splits[0])
    embeddings = [B.Embedding("informative", "ours", ids, logits),
                  B.Embedding("random", "baseline", ids, B.random_embedding(n, 16, 0)),
                  B.Embedding("trained", "ours", ids, logits, split=own)]  # type: ignore[arg-type]
    settings = B.ProbeSettings(epochs=60, lr=0.02, dropout=0.0)
    table = B.landuse_task(embeddings, ids, y, has_label, splits, settings, seed=1).set_index("embedding")
    assert table.loc["informative", "kl"] < 0.5 * table.loc["random", "kl"]
    assert list(table["splits"]) == [3, 3, 1] and math.isnan(table.loc["trained", "kl_std"])
    assert table.loc["trained", "kl"] == pytest.approx(table.loc["informative", "kl_split0"])  # same split, same seed
    assert "own split" in table.loc["trained", "note"]
    text = B.landuse_markdown(table.reset_index(), settings, n)
    assert "★ **informative**" in text or "★ **trained**" in text  # the lowest KL is marked
    assert "evaluated on its own split 0 only" in text


def test_probe_splits_need_labels() -> None:
    with pytest.raises(ConfigError, match="labelled"):
        B.probe_splits(np.zeros(50, dtype=bool), 2, TrainingConfig(), seed=0)


# --- the entry point --------------------------------------------------------------------------------

def test_parse_embeddings() -> None:
    from landuse.entrypoints.benchmark_embeddings import parse_embeddings

    assert parse_embeddings(["a=x.parquet", " b = dir/y "]) == {"a": Path("x.parquet"), "b": Path("dir/y")}
    for bad in (["nopath"], ["=x"], ["a=x", "a=y"]):
        with pytest.raises(ConfigError):
            parse_embeddings(bad)


def test_flags_are_benchmark_embeddings_overrides(repo_root: Path, tmp_path: Path) -> None:
    """--labels / --embeddings / --splits / --no-mlflow set benchmark_embeddings keys (merged with the config's
    own extra tables; a trailing key=value wins); the stage hashes the labels and embedding files."""
    from landuse.config import load_config
    from landuse.entrypoints.benchmark_embeddings import build_parser, overrides
    from landuse.stages import STAGES

    conf = tmp_path / "b.yaml"
    conf.write_text(f"extends: {repo_root / 'conf/nyc_manhattan.yaml'}\n"
                    f"benchmark_embeddings: {{embeddings: {{own: {tmp_path / 'own.parquet'}}}}}\n")
    args = build_parser().parse_args(["--config", str(conf), "--labels", str(tmp_path / "l.csv"), "--embeddings",
                                      f"a={tmp_path / 'a.parquet'}", "--splits", "3", "--no-mlflow",
                                      "benchmark_embeddings.splits=4"])
    config = load_config(args.config, [*overrides(args), *args.overrides], check_inputs=False)
    cfg = config.benchmark_embeddings
    assert cfg.enabled and not cfg.mlflow and cfg.splits == 4 and cfg.labels == tmp_path / "l.csv"
    assert dict(cfg.embeddings) == {"own": tmp_path / "own.parquet", "a": tmp_path / "a.parquet"}
    assert STAGES["benchmark-embeddings"].inputs(config) == [tmp_path / "l.csv", tmp_path / "own.parquet",
                                                            tmp_path / "a.parquet"]
    plain = load_config(conf, check_inputs=False)
    assert not plain.benchmark_embeddings.enabled and not STAGES["benchmark-embeddings"].enabled(plain)


@pytest.fixture(scope="module")
def nyc_tables(spark, shared_data: Path, repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The NYC mh-180 pipeline (short Doc2Vec, no image patches) into a temporary work dir; its overrides."""
    from landuse.config import load_config
    from landuse.runner import run_pipeline
    from landuse.stages import STAGES

    work = tmp_path_factory.mktemp("nyc-benchmark")
    overrides = [f"work_dir={work}", f"vars.data_root={shared_data / 'nyc_manhattan'}", "spark.shuffle_partitions=2",
                 "embeddings.poi.epochs=20", "embeddings.image.patches=false"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo_root)
        run_pipeline(load_config(repo_root / "conf/nyc_manhattan.yaml", overrides), STAGES, until="assemble")
    return overrides


@pytest.mark.slow
def test_benchmark_embeddings_on_nyc(nyc_tables: list[str], repo_root: Path, tmp_path: Path, capsys) -> None:
    import mlflow
    import pyarrow.parquet as pq

    from landuse.config import load_config
    from landuse.entrypoints.benchmark_embeddings import main

    overrides = [*nyc_tables, "training.splits=2", "training.epochs=50", "training.progress=false"]
    config = load_config(repo_root / "conf/nyc_manhattan.yaml", overrides)
    # an extra table: the geo features under another name (region_id, vector)
    pq.write_table(pq.read_table(config.tables_dir / "geo_features", columns=["region_id", "vector"]),
                   tmp_path / "mine.parquet")
    argv = ["--config", str(repo_root / "conf/nyc_manhattan.yaml"), "--embeddings", f"mine={tmp_path / 'mine.parquet'}",
            *overrides]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for row in ("| MVURE | published |", "| MGFN | published |", "| HREP | published |", "| HAFusion | published |"):
        assert row in out
    for name in ("poi", "image", "geo", "flow", "fused", "hgcn_hidden", "hgcn_untrained", "od_rows", "poi_counts",
                 "random", "mine"):
        assert f"| {name} |" in out or f"★ **{name}** |" in out
    assert "Our best embedding (mean R²)" in out and "★ **" in out

    results = config.work_dir / "results" / "benchmark_embeddings"
    assert {p.name for p in results.iterdir()} >= {"landuse_task.csv", "landuse_task.md",
                                                   "mvure_protocol.csv", "mvure_protocol.md"}
    mvure = pd.read_csv(results / "mvure_protocol.csv").set_index("embedding")
    assert (mvure.loc["random", ["crime_count_r2", "checkin_count_r2"]] < 0.1).all()  # the floor
    ours = mvure[mvure["kind"] == "ours"]
    assert ours["mean_r2"].max() > mvure.loc["random", "mean_r2"] + 0.3
    assert mvure.loc["mine", "crime_count_r2"] == pytest.approx(mvure.loc["geo", "crime_count_r2"])
    landuse = pd.read_csv(results / "landuse_task.csv").set_index("embedding")
    assert landuse.loc["hgcn_hidden", "splits"] == 1 and landuse.loc["poi", "splits"] == 2
    assert landuse["kl"].between(0, 5).all()

    mlflow.set_tracking_uri(config.mlflow_uri)
    runs = mlflow.search_runs(experiment_names=[config.mlflow.experiment],
                              filter_string="tags.mlflow.runName = 'benchmark-embeddings:nyc_manhattan'")
    assert len(runs) == 1 and runs.iloc[0]["tags.best_embedding"] in set(ours.index)
    assert f"benchmark-embeddings: ran benchmark-embeddings -> {results}" in out

    # the same settings, files and tables: skipped by the runner, the committed tables printed again
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert f"benchmark-embeddings: unchanged benchmark-embeddings -> {results}" in again
    assert "| MVURE | published |" in again and "Our best embedding (mean R²)" in again
    assert len(mlflow.search_runs(experiment_names=[config.mlflow.experiment],
                                  filter_string="tags.mlflow.runName = 'benchmark-embeddings:nyc_manhattan'")) == 1

    # an explicit labels file that does not exist: one line, exit 2
    assert main([*argv, "--labels", str(tmp_path / "absent.csv"), "--no-mlflow"]) == 2
    assert "absent.csv" in capsys.readouterr().err
