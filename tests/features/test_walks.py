"""Flow random walks and flow Word2Vec: transition frequencies, determinism, dangling nodes, bias."""

from __future__ import annotations

import numpy as np
import pytest

from landuse.features.walks import (
    FlowGraph,
    _step_uniforms,
    corpus_permutation,
    random_walks,
    walk_keys,
)
from landuse.features.word2vec import flow_embedding_table
from tests.support.small_inputs import train_flow_embeddings
from tests.support.walk_reference import alias_probabilities, python_random_walks, transition_statistics

# 4 nodes with non-contiguous ids; 40 has no out-flow (dangling) and 50 is isolated.
O = np.array([10, 10, 10, 20, 20, 30, 30, 30])
D = np.array([20, 30, 40, 10, 30, 10, 20, 40])
W = np.array([1.0, 2.0, 7.0, 3.0, 1.0, 1.0, 1.0, 2.0])
EXPECTED = {
    (10, 20): 0.1, (10, 30): 0.2, (10, 40): 0.7,
    (20, 10): 0.75, (20, 30): 0.25,
    (30, 10): 0.25, (30, 20): 0.25, (30, 40): 0.5,
}


@pytest.fixture(scope="module")
def graph() -> FlowGraph:
    return FlowGraph.from_edges(O, D, W, nodes=np.array([10, 20, 30, 40, 50]))


def random_graph(seed: int, n: int = 200, m: int = 3000) -> FlowGraph:
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(10 * n, n, replace=False))
    return FlowGraph.from_edges(ids[rng.integers(0, n, m)], ids[rng.integers(0, n, m)], rng.lognormal(0, 2, m))


def test_graph_structure(graph):
    assert graph.node_ids.tolist() == [10, 20, 30, 40, 50]
    assert graph.dangling_ids.tolist() == [40, 50]
    got = dict(zip(zip(graph.node_ids[graph.edge_rows].tolist(), graph.node_ids[graph.indices].tolist()), graph.probs))
    assert got == pytest.approx(EXPECTED)
    assert graph.cumprobs[graph.indptr[1:3] - 1].tolist() == [1.0, 1.0]
    assert np.abs(alias_probabilities(graph) - graph.probs).max() < 1e-8


def test_alias_tables_exact_on_skewed_rows():
    rng = np.random.default_rng(3)
    o = np.repeat(np.arange(50), 40)
    w = rng.lognormal(0, 4, o.size) * (rng.random(o.size) < 0.9) + 1e-9  # very skewed rows
    g = FlowGraph.from_edges(o, rng.integers(0, 50, o.size), w)
    assert np.abs(alias_probabilities(g) - g.probs).max() < 1e-7


@pytest.mark.parametrize("method", ["alias", "searchsorted"])
def test_empirical_transitions_match(graph, method):
    walks = random_walks(graph, walks_per_node=4000, walk_length=6, seed=1, method=method)
    assert walks.shape == (5 * 4000, 6) and walks.dtype == np.int64
    stats = transition_statistics(walks, graph)
    assert stats.off_graph == 0
    assert stats.row_counts[:3].min() > 3000
    assert stats.max_abs_diff(min_row_count=1000) < 0.02


def test_deterministic_per_seed(graph):
    a = random_walks(graph, 5, 10, seed=7)
    assert np.array_equal(a, random_walks(graph, 5, 10, seed=7))
    assert not np.array_equal(a, random_walks(graph, 5, 10, seed=8))
    assert sorted(a[:, 0].tolist()) == sorted([10, 20, 30, 40, 50] * 5)  # every node starts 5 walks
    assert a[:, 0].tolist() != sorted(a[:, 0].tolist())  # start order shuffled


def test_dangling_nodes_pad_and_flag(graph):
    walks = random_walks(graph, 50, 8, seed=2)
    for row in walks:
        stop = np.flatnonzero(row == -1)
        if stop.size:
            assert row[stop[0] - 1] in (40, 50)  # stops right after a dangling node
            assert (row[stop[0]:] == -1).all()
    assert (walks[walks[:, 0] == 50, 1:] == -1).all()
    emb = train_flow_embeddings(walks, dim=8, epochs=1, workers=1, seed=1)
    table = flow_embedding_table(graph, emb)
    assert table["region_id"].tolist() == [10, 20, 30, 40, 50]  # one row per node, none dropped
    assert table["has_flow"].tolist() == [True, True, True, True, False]  # 40 has in-flow
    assert not np.any(table["vector"].iloc[4]) and len(table["vector"].iloc[4]) == 8


def test_vectorised_matches_python_walker():
    g = random_graph(5)
    vec = transition_statistics(random_walks(g, 200, 10, seed=3), g)
    py_walks = python_random_walks(g, 40, 10, seed=3)
    py = transition_statistics(py_walks, g)
    assert py_walks.shape == (g.n_nodes * 40, 10) and py.off_graph == vec.off_graph == 0
    both = np.minimum(vec.row_counts, py.row_counts) >= 400
    mask = both[g.edge_rows]
    assert mask.sum() > 100
    assert np.abs(vec.empirical - py.empirical)[mask].max() < 0.1


def second_order_conditional(walks: np.ndarray, t: int, v: int) -> dict[int, float]:
    """Empirical P(next | prev=t, cur=v) from all walk positions."""
    a, b, c = walks[:, :-2].ravel(), walks[:, 1:-1].ravel(), walks[:, 2:].ravel()
    sel = (a == t) & (b == v) & (c != -1)
    nxt, counts = np.unique(c[sel], return_counts=True)
    return dict(zip(nxt.tolist(), (counts / counts.sum()).tolist()))


@pytest.mark.parametrize("walker", ["vectorised", "python"])
def test_second_order_bias(walker):
    # Triangle 0-1-2 plus a pendant 3 on node 1, all edges both ways with weight 1. From 0 → 1 the
    # candidates are 0 (return, 1/p), 2 (linked to 0, 1) and 3 (outward, 1/q).
    edges = [(0, 1), (1, 2), (2, 0), (1, 3)]
    o = np.array([a for a, b in edges] + [b for a, b in edges])
    d = np.array([b for a, b in edges] + [a for a, b in edges])
    g = FlowGraph.from_edges(o, d, np.ones(o.size))
    walk = random_walks if walker == "vectorised" else python_random_walks
    cases = [
        (1.0, 100.0, {0: 1 / 2.01, 2: 1 / 2.01, 3: 0.01 / 2.01}),  # in-out: rarely moves outward
        (100.0, 1.0, {0: 0.01 / 2.01, 2: 1 / 2.01, 3: 1 / 2.01}),  # return: rarely goes back
    ]
    for p, q, expect in cases:
        walks = walk(g, 500 if walker == "vectorised" else 400, 20, seed=4, p=p, q=q)
        got = second_order_conditional(walks, 0, 1)
        for node, prob in expect.items():
            assert got.get(node, 0.0) == pytest.approx(prob, abs=0.02), (p, q, node, got)
    plain = second_order_conditional(random_walks(g, 500, 20, seed=4), 0, 1)
    assert plain[3] == pytest.approx(1 / 3, abs=0.03)


def test_word2vec_single_worker_deterministic():
    g = random_graph(8, n=60, m=600)
    walks = random_walks(g, 5, 10, seed=1)
    a = train_flow_embeddings(walks, dim=16, epochs=2, workers=1, seed=11)
    b = train_flow_embeddings(walks, dim=16, epochs=2, workers=1, seed=11)
    assert a["region_id"].tolist() == b["region_id"].tolist()
    assert a["region_id"].dtype == np.int64 and a["vector"].iloc[0].dtype == np.float32
    assert np.array_equal(np.stack(a["vector"].to_list()), np.stack(b["vector"].to_list()))
    c = train_flow_embeddings(walks, dim=16, epochs=2, workers=1, seed=12)
    assert not np.array_equal(np.stack(a["vector"].to_list()), np.stack(c["vector"].to_list()))
    table = flow_embedding_table(g, a)
    assert len(table) == g.n_nodes and table["region_id"].is_unique


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        FlowGraph.from_edges(np.array([1]), np.array([2]), np.array([-1.0]))
    with pytest.raises(ValueError):
        FlowGraph.from_edges(np.array([1]), np.array([2]), np.array([1.0]), nodes=np.array([1]))


def test_per_walk_streams_are_uniform_and_distinct():
    starts = np.repeat(np.arange(-500, 500, dtype=np.int64), 100)
    index = np.tile(np.arange(100), 1000)
    keys = walk_keys(42, starts, index)
    assert np.unique(keys).size == keys.size  # 100,000 walks, 100,000 streams
    assert not np.array_equal(keys, walk_keys(43, starts, index))
    u = _step_uniforms(keys, 9).astype(np.float64) / 2.0**32  # (9, walks): both halves of 5 draws
    counts = np.histogram(u, bins=64, range=(0, 1))[0]
    expected = u.size / 64
    assert ((counts - expected) ** 2 / expected).sum() < 130  # chi-square, 63 dof (p ~ 1e-6)
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.01 and abs(np.corrcoef(u[0, :-1], u[0, 1:])[0, 1]) < 0.01
    for size in (1, 2, 7, 64, 1000, 12_345):
        perm = corpus_permutation(np.arange(size), size, seed=5)
        assert np.array_equal(np.sort(perm), np.arange(size))  # a permutation of 0..size-1
        if size >= 64:
            assert np.abs(np.corrcoef(perm, np.arange(size))[0, 1]) < 0.2  # shuffled, not strided
            assert not np.array_equal(perm, corpus_permutation(np.arange(size), size, seed=6))
    assert corpus_permutation(np.array([5, 1]), 12_345, seed=5).tolist() == perm[[5, 1]].tolist()
    # Walk i from s keeps its walk whatever is generated with it; rows come in corpus order.
    g = random_graph(4, n=50, m=400)
    full = random_walks(g, 6, 9, seed=3)
    first_rows = {tuple(r) for r in random_walks(g, 2, 9, seed=3).tolist()}
    assert first_rows <= {tuple(r) for r in full.tolist()}
