"""The evaluation protocol on a small hand-built graph: splits, epoch selection, summaries, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from landuse.config import ConfigError, TrainingConfig
from landuse.data.reader import GraphData
from landuse.training.protocol import build_operators, feature_matrix, needed_operators, run_protocol, summarise


def toy_graph(n: int = 60, seed: int = 0) -> tuple[GraphData, np.ndarray]:
    """A grid-like graph whose labels depend on neighbours' features, with flows and distance decay."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    xy = np.stack([np.arange(n) % side, np.arange(n) // side], 1).astype(float) * 100.0
    a = [(i, j) for i in range(n) for j in range(n) if i != j and np.abs(xy[i] - xy[j]).sum() == 100.0]
    adj = torch.tensor(a, dtype=torch.long).T
    flow = torch.from_numpy(rng.integers(0, n, (2, 4 * n)))
    x = torch.from_numpy(rng.normal(size=(n, 6)).astype(np.float32))
    logits = x[:, :3] + 0.5 * torch.roll(x[:, :3], 1, 0)
    y = torch.softmax(logits * 2, 1)
    has_label = torch.ones(n, dtype=torch.bool)
    has_label[:3] = False
    graph = GraphData(
        region_ids=torch.arange(n) * 10, features={"poi": x[:, :4], "geo": x[:, 4:]},
        flags={"poi": torch.ones(n, dtype=torch.bool), "geo": torch.ones(n, dtype=torch.bool)},
        y=y * has_label[:, None], has_label=has_label, coverage=has_label.double(),
        edges={"adjacency": (adj, torch.ones(adj.shape[1])), "flow": (flow, torch.rand(flow.shape[1])),
               "distance_decay": (adj, torch.rand(adj.shape[1]))},
        classes=["a", "b", "c"],
    )
    return graph, xy


CFG = TrainingConfig(epochs=30, splits=3, progress=False, lr=0.01)


def test_selection_on_validation_and_on_test() -> None:
    graph, xy = toy_graph()
    runs = run_protocol(graph, "Adj-Tri-GCN", ["poi", "geo"], CFG, seed=1, xy=xy)
    assert len(runs) == 3
    for run in runs:
        assert run.best_epoch == int(np.argmin(run.curves["val_kl"]))
        assert set(run.indices["train"]).isdisjoint(run.indices["test"])
        assert not set(np.concatenate(list(run.indices.values()))) & {0, 1, 2}  # unlabelled nodes never used
        assert run.probs.shape == (60, 3)
        np.testing.assert_allclose(run.metrics["val"]["kl"], run.curves["val_kl"][run.best_epoch], rtol=1e-5)
    paper = run_protocol(graph, "Adj-Tri-GCN", ["poi", "geo"], dataclasses.replace(CFG, selection="test"), 1, xy)
    for run in paper:
        assert run.best_epoch == int(np.argmin(run.curves["test_kl"]))
    # choosing on test can only look better on test than choosing on validation, split by split
    assert all(p.metrics["test"]["kl"] <= r.metrics["test"]["kl"] + 1e-7 for p, r in zip(paper, runs))
    mean, std = summarise(runs)["kl"]
    assert mean == pytest.approx(np.mean([r.metrics["test"]["kl"] for r in runs])) and std >= 0


def test_blocked_splits_and_deterministic_runs() -> None:
    graph, xy = toy_graph()
    cfg = dataclasses.replace(CFG, split="blocked", block_m=250.0, splits=2)
    first = run_protocol(graph, "GCN_adj", ["poi"], cfg, seed=5, xy=xy)
    again = run_protocol(graph, "GCN_adj", ["poi"], cfg, seed=5, xy=xy)
    for a, b in zip(first, again):
        assert a.metrics == b.metrics
        np.testing.assert_array_equal(a.indices["test"], b.indices["test"])
        blocks = {tuple(v) for v in np.floor(xy[a.indices["train"]] / 250.0)}
        assert blocks.isdisjoint({tuple(v) for v in np.floor(xy[a.indices["test"]] / 250.0)})


def test_operators_and_feature_errors() -> None:
    graph, _ = toy_graph()
    assert needed_operators(["Adj-Tri-GCN", "GCN_dd", "None"]) == {"adj", "in", "out", "dd"}
    ops = build_operators(graph, {"adj", "avg", "dd"})
    assert set(ops) == {"adj", "avg", "dd"} and all(op.layout == torch.sparse_csr for op in ops.values())
    assert feature_matrix(graph, ["poi", "geo"]).shape == (60, 6)
    with pytest.raises(ConfigError, match="modality 'image' is not in node_features"):
        feature_matrix(graph, ["image"])
    no_flow = dataclasses.replace(graph, edges={"adjacency": graph.edges["adjacency"]})
    with pytest.raises(ConfigError, match="needs the flow edges"):
        build_operators(no_flow, {"in"})
