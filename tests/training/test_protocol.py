"""The evaluation protocol on a small hand-built graph: splits, epoch selection, summaries, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from landuse.config import ConfigError, TrainingConfig
from landuse.data.reader import GraphData
from landuse.training.protocol import build_operators, feature_matrix, make_splits, needed_operators, run_protocol, summarise


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


def test_ensemble_averages_members_and_serves_as_one_model() -> None:
    import dataclasses

    from landuse.models.hgcn import EnsembleHGCN
    from landuse.training.protocol import build_model, build_operators, needed_operators, train_split

    graph, _ = toy_graph()
    cfg = dataclasses.replace(TrainingConfig(epochs=30, splits=1, progress=False), ensemble=3)
    x = graph.features["poi"]
    ops = build_operators(graph, needed_operators(["GCN_adj"]))
    split = make_splits(graph, cfg, 0)[0]
    run = train_split(x, graph.y, ops, "GCN_adj", split, cfg, 5, torch.device("cpu"))
    singles = [train_split(x, graph.y, ops, "GCN_adj", split, dataclasses.replace(cfg, ensemble=1), 5 + 7919 * k,
                           torch.device("cpu")) for k in range(3)]
    np.testing.assert_allclose(run.probs, np.mean([s.probs for s in singles], axis=0), atol=1e-6)
    model = build_model(x.shape[1], graph.y.shape[1], "GCN_adj", cfg)
    assert isinstance(model, EnsembleHGCN) and len(model.members) == 3
    model.load_state_dict(run.state)
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model((x - run.mean) / run.std, ops), -1).numpy()
    np.testing.assert_allclose(probs, run.probs, atol=1e-5)


def test_label_lag_uses_only_training_neighbours() -> None:
    from landuse.data.operators import neighbour_mean_operator
    from landuse.training.protocol import label_lag_features

    # a path 0 - 1 - 2 - 3; only nodes 0 and 3 are training nodes
    edges = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    y = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.2, 0.8]])
    feats = label_lag_features(y, torch.tensor([0, 3]), neighbour_mean_operator(edges, 4))
    assert feats.shape == (4, 2 * 2 + 2)
    # hop 1: node 1 sees only node 0's label (node 2 is not a training node), node 2 only node 3's
    assert torch.allclose(feats[1, :2], y[0]) and torch.allclose(feats[2, :2], y[3])
    assert torch.allclose(feats[:, 2], torch.tensor([0.0, 0.5, 0.5, 0.0]))  # labelled share of the neighbourhood
    # a training node never sees its own label at hop 1 (no self loop): node 0's only neighbour is unlabelled
    assert torch.all(feats[0, :2] == 0)
    # changing a validation/test label changes nobody's features
    y2 = y.clone()
    y2[1], y2[2] = torch.tensor([0.9, 0.1]), torch.tensor([0.3, 0.7])
    assert torch.equal(label_lag_features(y2, torch.tensor([0, 3]), neighbour_mean_operator(edges, 4)), feats)
