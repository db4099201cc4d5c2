"""Representation corpora on the executors: walk and tour corpora written by Spark, independent of the
partitioning; gensim trained from the concatenated files; the fitted models saved with the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from landuse.features.doc2vec import (
    doc_vectors,
    encode_token,
    fit_doc2vec,
    load_poi_model,
    save_poi_model,
    tagged_line,
    untag_corpus,
    write_tour_corpus,
)
from landuse.features.poi_tours import TOURS_SCHEMA, tour_corpus
from landuse.features.walks import (
    FlowGraph,
    random_walks,
    spark_walk_corpus,
    walk_lines,
    walk_tables,
)
from landuse.features.word2vec import (
    MODEL_DIR,
    concat_text_parts,
    fit_word2vec,
    load_flow_model,
    save_flow_model,
    text_part_files,
    word_vectors,
    write_walk_corpus,
)


def flow_graph(seed: int = 5, n: int = 120, m: int = 900) -> FlowGraph:
    """A random directed graph with dangling and isolated nodes (only nodes with out-flow start walks)."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(10 * n, n, replace=False))
    o = ids[rng.integers(0, n - 20, m)]  # the 20 highest ids have no out-flow
    d = ids[rng.integers(0, n - 5, m)]  # the 5 highest are isolated
    return FlowGraph.from_edges(o, d, rng.lognormal(0, 1, m), nodes=ids)


def test_walk_lines_drop_padding_and_single_node_walks() -> None:
    walks = np.array([[10, 20, 30], [40, -1, -1], [-5, 7, -1], [3, 3, 3]])
    assert walk_lines(walks).to_pylist() == ["10 20 30", "-5 7", "3 3 3"]
    assert walk_lines(np.asfortranarray(walks)).to_pylist() == ["10 20 30", "-5 7", "3 3 3"]
    assert walk_lines(np.full((2, 3), -1)).to_pylist() == []


@pytest.mark.parametrize("p, q", [(1.0, 1.0), (0.5, 2.0)])
def test_spark_walk_corpus_does_not_depend_on_partitions(spark, tmp_path: Path, p: float, q: float) -> None:
    graph = flow_graph()
    walks_per_node, walk_length, seed = 3, 8, 17
    starters = walk_tables(graph).starters.size
    assert 0 < starters < graph.n_nodes
    corpora = {}
    for parts in (1, 4):
        directory = tmp_path / f"walks-{parts}"
        lines = spark_walk_corpus(spark, graph, str(directory), walks_per_node, walk_length, seed, p=p, q=q,
                                  partitions=parts)
        assert lines == starters * walks_per_node  # every walk from a node with out-flow has >= 2 nodes
        assert len(text_part_files(directory)) == parts
        local = tmp_path / f"walks-{parts}.txt"
        assert concat_text_parts(directory, local) == lines
        corpora[parts] = local.read_bytes()
    assert corpora[1] == corpora[4]
    # Exactly the driver's walks (same per-walk streams, same corpus order), as a local corpus.
    driver = tmp_path / "driver.txt"
    write_walk_corpus(random_walks(graph, walks_per_node, walk_length, seed, p=p, q=q), driver)
    assert driver.read_bytes() == corpora[1]
    other = tmp_path / "seed.txt"
    write_walk_corpus(random_walks(graph, walks_per_node, walk_length, seed + 1, p=p, q=q), other)
    assert other.read_bytes() != corpora[1]


def test_text_part_files_in_partition_order(tmp_path: Path) -> None:
    names = ["part-00010-u-c000.txt", "part-00002-u-c001.txt", "part-00002-u-c000.txt", "part-100000-u-c000.txt",
             "part-00000-u-c000.txt", "_SUCCESS", ".part-00000-u-c000.txt.crc"]
    for name in names:
        last = "x" if name.startswith("part-00000") else ""  # that part lacks its final newline
        (tmp_path / name).write_text(f"{name}\n{last}")
    assert [p.name for p in text_part_files(tmp_path)] == [
        "part-00000-u-c000.txt", "part-00002-u-c000.txt", "part-00002-u-c001.txt", "part-00010-u-c000.txt",
        "part-100000-u-c000.txt",
    ]
    target = tmp_path / "all.txt"
    assert concat_text_parts(tmp_path, target) == 6
    assert target.read_text().splitlines()[:3] == ["part-00000-u-c000.txt", "x", "part-00002-u-c000.txt"]


def test_saved_word2vec_loads(tmp_path: Path) -> None:
    corpus = tmp_path / "walks.txt"
    write_walk_corpus(random_walks(flow_graph(), 4, 10, seed=1), corpus)
    model = fit_word2vec(corpus, dim=8, epochs=1, workers=1, seed=3)
    table = tmp_path / "flow_embeddings"
    assert save_flow_model(model, table) == ["word2vec.model"]
    loaded = load_flow_model(table)
    a, b = word_vectors(model), word_vectors(loaded)
    assert a["region_id"].tolist() == b["region_id"].tolist()
    assert np.array_equal(np.stack(a["vector"]), np.stack(b["vector"]))
    # The model directory does not disturb readers of the table next to it.
    pd.DataFrame({"region_id": [1, 2]}).to_parquet(table / "part-00000.parquet")
    assert pq.read_table(table).num_rows == 2


# --- POI tours -------------------------------------------------------------------------------------


def test_encode_token_makes_one_word_per_token() -> None:
    assert encode_token("shop") == "shop"
    assert encode_token("fast food") == "fast%20food"
    assert encode_token("100%") == "100%25"
    assert encode_token("a\u00a0b\tc") == "a%C2%A0b%09c"  # Python splits on NBSP too
    assert encode_token("") == "%"
    assert encode_token("fast%20food") != encode_token("fast food")  # injective
    assert tagged_line(7, ["fast food", None, "bank"]) == "7\tfast%20food bank"
    assert tagged_line(8, []) is None and tagged_line(9, None) is None


def _tours_rows() -> list[tuple]:
    rng = np.random.default_rng(4)
    vocab = ["shop", "food", "bank", "fast food", "park", "home", "100%"]
    rows = []
    for region in rng.choice(1000, 40, replace=False).tolist():
        tokens = rng.choice(vocab, rng.integers(1, 12)).tolist()
        rows.append((int(region), len(tokens), tokens, len(tokens) < 3))
    rows.append((5000, 0, [], True))  # no tokens: no corpus line
    return rows


def test_tour_corpus_does_not_depend_on_partitions(spark, tmp_path: Path) -> None:
    rows = _tours_rows()
    tours = spark.createDataFrame(rows, schema=TOURS_SCHEMA)
    results = {}
    for parts in (1, 4):
        directory = tmp_path / f"tours-{parts}"
        tour_corpus(tours.repartition(parts)).write.option("compression", "none").text(str(directory))
        local = tmp_path / f"tours-{parts}.txt"
        ids, counts = untag_corpus(directory, local)
        results[parts] = (ids.tolist(), counts.tolist(), local.read_bytes())
    assert results[1] == results[4]
    ids, counts, text = results[1]
    with_tokens = sorted(r for r in rows if r[2])
    assert ids == [r[0] for r in with_tokens]  # region order, the empty tour dropped
    assert counts == [r[1] for r in with_tokens]
    assert text.decode().splitlines() == [" ".join(encode_token(t) for t in r[2]) for r in with_tokens]
    # The driver's writer for pandas frames makes the same file.
    frame = pd.DataFrame({"region_id": [r[0] for r in rows], "tokens": [r[2] for r in rows]})
    driver = tmp_path / "driver.txt"
    assert write_tour_corpus(frame, driver).tolist() == ids
    assert driver.read_bytes() == text


def test_saved_doc2vec_loads_and_infers_a_new_tour(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    groups = [["shop", "food", "bank", "cafe"], ["factory", "warehouse", "depot", "yard"]]
    frame = pd.DataFrame({
        "region_id": np.arange(100, 140),
        "tokens": [rng.choice(groups[k % 2], 12).tolist() for k in range(40)],
    })
    corpus = tmp_path / "tours.txt"
    ids = write_tour_corpus(frame, corpus)
    model = fit_doc2vec(corpus, dim=16, window=3, epochs=40, workers=1, seed=5)
    vectors = doc_vectors(model, ids)
    table = tmp_path / "poi_embeddings"
    assert sorted(save_poi_model(model, ids, table)) == ["doc2vec.model", "doc2vec_regions.npy"]
    assert (table / MODEL_DIR / "doc2vec.model").is_file()
    loaded = load_poi_model(table)
    assert loaded.region_ids.tolist() == ids.tolist()
    assert np.array_equal(loaded.vector(103), vectors.set_index("region_id").loc[103, "vector"])
    with pytest.raises(KeyError):
        loaded.vector(99)
    new = loaded.infer(["factory", "depot", "yard", "warehouse", "factory", "unseen token"], epochs=200, seed=1)
    assert new.dtype == np.float32 and new.shape == (16,) and np.isfinite(new).all() and np.any(new)
    # The new industrial tour lands nearer the industrial regions (odd ids) than the commercial ones.
    matrix = np.stack(vectors["vector"])
    cos = matrix @ new / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(new))
    odd = vectors["region_id"].to_numpy() % 2 == 1
    assert cos[odd].mean() > cos[~odd].mean()


def test_doc2vec_several_workers_trains_every_document(tmp_path: Path) -> None:
    """workers > 1 streams the file: gensim's corpus_file mode would leave documents untrained
    (gensim#2757: here lines 2-4, since both threads start in the long first line)."""
    from gensim.models.doc2vec import Doc2Vec

    frame = pd.DataFrame({"region_id": [1, 2, 3, 4], "tokens": [["a"] * 300, ["b"], ["c", "d"], ["e"]]})
    corpus = tmp_path / "tours.txt"
    ids = write_tour_corpus(frame, corpus)
    untrained = Doc2Vec(vector_size=4, min_count=1, epochs=1, workers=2, seed=1)
    untrained.build_vocab(corpus_file=str(corpus))  # the same seeded initial vectors
    trained = fit_doc2vec(corpus, dim=4, epochs=1, workers=2, seed=1)
    assert len(trained.dv) == ids.size == 4
    assert all(not np.array_equal(untrained.dv.vectors[i], trained.dv.vectors[i]) for i in range(4))


# --- The stages, end to end on tiny tables -------------------------------------------------------


def _stage_config(work: Path, partitions: int):
    from landuse.config import (
        Config,
        EmbeddingsConfig,
        FlowEmbeddingConfig,
        PoiEmbeddingConfig,
        SparkConfig,
        StudyConfig,
    )

    return Config(
        name="corpora", work_dir=work, seed=7, study=StudyConfig(crs="EPSG:32650"),
        spark=SparkConfig(master="local[2]", shuffle_partitions=partitions),
        embeddings=EmbeddingsConfig(
            flow=FlowEmbeddingConfig(walks_per_node=4, walk_length=8, dim=8, epochs=2, workers=1),
            poi=PoiEmbeddingConfig(level=2, min_pois=3, dim=8, epochs=10, workers=1),
        ),
    )


def _write_inputs(tables: Path) -> None:
    from landuse.manifest import write_manifest

    rng = np.random.default_rng(1)
    regions = np.arange(1, 31, dtype=np.int64) * 10  # 30 regions; 290 and 300 get no flow, 300 no POI
    o = rng.choice(regions[:25], 400)
    d = rng.choice(regions[:28], 400)
    frames = {
        "regions": pd.DataFrame({"region_id": regions}),
        "flows": pd.DataFrame({"o_region": o, "d_region": d, "source": "taxi",
                               "daily_avg": rng.lognormal(0, 1, 400), "trips": rng.integers(1, 9, 400)}),
        "poi_regions": pd.DataFrame({
            "source": "osm", "poi_id": [f"p{k}" for k in range(300)],
            "lon": 114.05 + rng.uniform(0, 0.05, 300), "lat": 22.54 + rng.uniform(0, 0.05, 300),
            "cat_l1": rng.choice(["shop", "home", "work"], 300), "cat_l2": rng.choice(["fast food", "bank", None], 300),
            "cat_l3": None, "region_id": rng.choice(regions[:29], 300),
        }),
    }
    for name, frame in frames.items():
        (tables / name).mkdir(parents=True)
        frame.to_parquet(tables / name / "part-00000.parquet", index=False)
        write_manifest(tables / name, {"stage": "test"})


def test_flow_and_poi_stages_write_tables_and_models(spark, tmp_path: Path) -> None:
    from landuse.runner import StageContext
    from landuse.stages.embeddings import (
        T_FLOW_EMBEDDINGS,
        T_POI_EMBEDDINGS,
        run_flow,
        run_poi,
    )

    outputs = {}
    for partitions in (1, 3):
        config = _stage_config(tmp_path / f"work-{partitions}", partitions)
        _write_inputs(config.tables_dir)
        staged = {name: tmp_path / f"out-{partitions}" / name for name in (T_FLOW_EMBEDDINGS, T_POI_EMBEDDINGS)}
        ctx = StageContext(config=config, staged=staged, _spark=spark)
        run_flow(ctx)
        run_poi(ctx)
        outputs[partitions] = {name: pq.read_table(path).to_pandas() for name, path in staged.items()}
        for path in staged.values():
            assert not (path / "_corpus").exists()  # the corpus is removed after training
            assert (path / MODEL_DIR).is_dir()
            assert spark.read.parquet(str(path)).count() == 30  # Spark readers skip _model too
        assert ctx.summary["walks"] == 4 * 25  # 25 regions with out-flow
    flow, poi = outputs[1][T_FLOW_EMBEDDINGS], outputs[1][T_POI_EMBEDDINGS]
    assert flow["region_id"].tolist() == list(range(10, 310, 10))
    assert flow["has_flow"].tolist() == [True] * 28 + [False] * 2
    assert poi["has_pois"].tolist() == [True] * 29 + [False]
    assert poi["n_pois"].sum() == 300 and (poi["below_min_pois"] == (poi["n_pois"] < 3)).all()
    for name in (T_FLOW_EMBEDDINGS, T_POI_EMBEDDINGS):  # workers=1: the partitioning changes nothing
        a, b = outputs[1][name], outputs[3][name]
        assert np.array_equal(np.stack(a["vector"]), np.stack(b["vector"])), name
    model = load_poi_model(tmp_path / "out-1" / T_POI_EMBEDDINGS)
    assert np.array_equal(model.vector(20), poi.set_index("region_id").loc[20, "vector"])
    assert model.infer(["shop", "fast food", "bank"]).shape == (8,)
    w2v = load_flow_model(tmp_path / "out-1" / T_FLOW_EMBEDDINGS)
    assert np.array_equal(w2v.wv["20"], flow.set_index("region_id").loc[20, "vector"])


def test_corpus_and_model_files_on_a_remote_filesystem(tmp_path: Path) -> None:
    """The same helpers on an fsspec URI (in-memory filesystem standing in for an object store)."""
    from landuse.storage import location, remove_tree

    remote = location(f"memory://corpora-test/{tmp_path.name}")
    (remote / "walks").mkdir(parents=True, exist_ok=True)
    (remote / "walks" / "part-00001-u-c000.txt").write_bytes(b"3 4\n")
    (remote / "walks" / "part-00000-u-c000.txt").write_bytes(b"1 2\n2 3\n")
    (remote / "walks" / "_SUCCESS").write_bytes(b"")
    local = tmp_path / "walks.txt"
    assert concat_text_parts(str(remote / "walks"), local) == 3
    assert local.read_text() == "1 2\n2 3\n3 4\n"
    model = fit_word2vec(local, dim=4, epochs=1, workers=1, seed=1)
    save_flow_model(model, remote / "flow_embeddings")
    assert (remote / "flow_embeddings" / MODEL_DIR / "word2vec.model").exists()
    loaded = load_flow_model(remote / "flow_embeddings")
    assert np.array_equal(loaded.wv["3"], model.wv["3"])
    remove_tree(remote)
    assert not (remote / "walks").exists()
