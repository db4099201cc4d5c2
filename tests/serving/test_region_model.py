"""The inductive region model: logged as an MLflow pyfunc, it scores a region table — the whole
training graph exactly as the network does on its operators, a subset or new regions through the
edges listed in the table — and refuses tables that do not fit, with one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from landuse.config import TrainingConfig
from landuse.data.reader import GraphData
from landuse.serving.pyfunc import build_spec, load_region_model, log_region_model, table_for_graph
from landuse.serving.region_table import as_records, region_table
from landuse.training.protocol import build_model, build_operators, needed_operators, training_input

CLASSES = ["residential", "commercial", "green"]
SIDE = 8  # an 8 x 8 grid of regions


def grid_graph(seed: int = 0) -> GraphData:
    """64 regions on a grid: rook adjacency, random flows, two modalities (one partly absent)."""
    rng = np.random.default_rng(seed)
    n = SIDE * SIDE
    pairs = [(r * SIDE + c, r * SIDE + c + 1) for r in range(SIDE) for c in range(SIDE - 1)]
    pairs += [(r * SIDE + c, (r + 1) * SIDE + c) for r in range(SIDE - 1) for c in range(SIDE)]
    a = np.array(pairs).T
    adjacency = np.concatenate([a, a[::-1]], axis=1)
    flow = rng.integers(0, n, size=(2, 300))
    has_img = rng.random(n) > 0.3
    img = rng.normal(size=(n, 3)) * has_img[:, None]
    y = rng.dirichlet(np.ones(3), size=n)
    return GraphData(
        region_ids=torch.arange(100, 100 + n, dtype=torch.long),
        features={"poi": torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32),
                  "image": torch.tensor(img, dtype=torch.float32)},
        flags={"poi": torch.ones(n, dtype=torch.bool), "image": torch.tensor(has_img)},
        y=torch.tensor(y, dtype=torch.float32), has_label=torch.ones(n, dtype=torch.bool),
        coverage=torch.ones(n, dtype=torch.float64),
        edges={"adjacency": (torch.tensor(adjacency), torch.ones(adjacency.shape[1])),
               "flow": (torch.tensor(flow), torch.tensor(rng.random(300) * 5, dtype=torch.float32))},
        classes=CLASSES)


@pytest.fixture()
def tracking(tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("serving", artifact_location=(tmp_path / "art").as_uri()))
    yield tmp_path
    mlflow.set_tracking_uri(None)


def logged(tmp: Path, graph: GraphData, variant: str, **settings):
    """Log a randomly initialised network of ``variant`` for ``graph``; (uri, network, spec, cfg)."""
    cfg = dataclasses.replace(TrainingConfig(), variant=variant, **settings)
    features = ("poi", "image")
    x = training_input(graph, features, cfg)
    torch.manual_seed(3)
    network = build_model(x.shape[1], len(CLASSES), variant, cfg).eval()
    mean, std = x.mean(0), x.std(0) + 0.5
    spec = build_spec(graph, variant, features, sorted(needed_operators([variant])), x.shape[1], cfg)
    with mlflow.start_run():
        info = log_region_model(graph, spec, network.state_dict(), mean, std, "model", {"variant": variant}, tmp / "a")
    with torch.no_grad():
        direct = torch.softmax(network((x - mean) / std, build_operators(graph, spec.operators)), -1).numpy()
    return info.model_uri, direct, spec


@pytest.mark.parametrize("variant, settings", [("SAGE_adj2", {}), ("Adj-Tri-GCN", {"spatial_lag": 1}),
                                               ("SAGE_all", {"ensemble": 2}), ("None", {"presence": False})])
def test_whole_graph_equals_the_network_on_its_operators(tracking, variant, settings) -> None:
    graph = grid_graph()
    if variant == "SAGE_all":  # needs distance-decay edges too
        graph.edges["distance_decay"] = (graph.edges["adjacency"][0], torch.rand(graph.edges["adjacency"][0].shape[1]))
    uri, direct, spec = logged(tracking, graph, variant, **settings)
    model, loaded_spec = load_region_model(uri)
    assert loaded_spec == spec
    out = model.predict(table_for_graph(graph, spec))
    assert out["region_id"].tolist() == graph.region_ids.tolist()
    np.testing.assert_allclose(out[CLASSES].to_numpy(), direct, atol=1e-6)
    assert (out["dominant_class"] == np.asarray(CLASSES)[direct.argmax(1)]).all()
    # the row order of the table does not matter
    shuffled = table_for_graph(graph, spec).sample(frac=1.0, random_state=1)
    again = model.predict(shuffled).set_index("region_id").loc[graph.region_ids.numpy()]
    np.testing.assert_allclose(again[CLASSES].to_numpy(), direct, atol=1e-6)


def test_signature_names_every_column_and_the_example_is_small(tracking) -> None:
    graph = grid_graph()
    uri, _, spec = logged(tracking, graph, "SAGE_flow")
    info = mlflow.models.get_model_info(uri)
    names = [c.name for c in info.signature.inputs.inputs]
    assert names == ["region_id", "h_poi", "has_pois", "h_img", "has_image", "adjacent", "flow_to", "flow_weight"] \
        or names == ["region_id", "h_poi", "has_pois", "h_img", "has_image", "flow_to", "flow_weight"]
    example = mlflow.models.Model.load(uri).load_input_example(mlflow.artifacts.download_artifacts(uri))
    assert 1 < len(example) <= 5
    model, _ = load_region_model(uri)
    assert len(model.predict(example)) == len(example)  # self-contained: every neighbour is a row


def test_a_subset_is_scored_on_its_own_edges(tracking) -> None:
    """Regions of one half, scored alone, aggregate only over each other: as if the graph had only them."""
    graph = grid_graph()
    uri, _, spec = logged(tracking, graph, "SAGE_adj2")
    model, _ = load_region_model(uri)
    rows = np.arange(32)
    part = region_table(graph, spec.layout, spec.edge_sets, rows=rows)
    sub = GraphData(region_ids=graph.region_ids[rows], features={k: v[rows] for k, v in graph.features.items()},
                    flags={k: v[rows] for k, v in graph.flags.items()}, y=graph.y[rows], has_label=graph.has_label[rows],
                    coverage=graph.coverage[rows], classes=CLASSES,
                    edges={"adjacency": (graph.edges["adjacency"][0][:, (graph.edges["adjacency"][0] < 32).all(0)],
                                         torch.ones(int((graph.edges["adjacency"][0] < 32).all(0).sum())))})
    np.testing.assert_allclose(model.predict(part)[CLASSES].to_numpy(),
                               model.predict(table_for_graph(sub, spec))[CLASSES].to_numpy(), atol=1e-6)
    # the whole half-table with its outside neighbours listed: an error by default, dropped on request
    whole = table_for_graph(graph, spec).iloc[:32]
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"lists neighbour \d+ in 'adjacent', which is not a row"):
        model.predict(whole)
    dropped = model.predict(whole, params={"unknown_neighbours": "drop"})
    np.testing.assert_allclose(dropped[CLASSES].to_numpy(), model.predict(part)[CLASSES].to_numpy(), atol=1e-6)


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.drop(columns=["h_img"]), "missing column 'h_img'"),
    (lambda t: t.assign(h_poi=[np.zeros(5)] * len(t)), "column 'h_poi' has 5 values; the model's feature layout expects 4"),
    (lambda t: t.assign(region_id=[100] * len(t)), "region_id 100 appears"),
    (lambda t: t.assign(flow_weight=[np.zeros(0)] * len(t)), "'flow_weight' has 0 values for"),
    (lambda t: t.assign(h_poi=[np.full(4, np.nan)] * len(t)), "NaN or infinite"),
])
def test_tables_that_do_not_fit_are_refused_in_one_line(tracking, mutate, message) -> None:
    graph = grid_graph()
    uri, _, spec = logged(tracking, graph, "SAGE_flow")
    model, _ = load_region_model(uri)
    table = table_for_graph(graph, spec)
    with pytest.raises(mlflow.exceptions.MlflowException, match=message) as err:
        model.predict(mutate(table))
    assert "\n" not in err.value.message
    with pytest.raises(mlflow.exceptions.MlflowException, match="classes .* do not match"):
        model.predict(table, params={"classes": ["a", "b", "c"]})


def test_json_records_round_trip(tracking) -> None:
    """The REST form (lists, not arrays) scores the same."""
    graph = grid_graph()
    uri, direct, spec = logged(tracking, graph, "SAGE_flow")
    model, _ = load_region_model(uri)
    records = pd.DataFrame(as_records(table_for_graph(graph, spec)))
    np.testing.assert_allclose(model.predict(records)[CLASSES].to_numpy(), direct, atol=1e-6)


def test_artifact_size_follows_the_feature_width_not_the_regions(tracking) -> None:
    """The logged model holds weights, statistics, spec and a 5-row example: 4x the regions, same size."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from model_size import logged_size, synthetic_graph

    small, large = (logged_size(synthetic_graph(n, 40), "SAGE_adj2_flow", tracking / f"s{n}") for n in (200, 800))
    wide = logged_size(synthetic_graph(200, 80), "SAGE_adj2_flow", tracking / "wide")
    assert large <= 1.05 * small < wide


def test_a_graph_without_the_models_modality_is_refused_in_one_line(tracking) -> None:
    from landuse.serving.region_table import RegionTableError

    graph = grid_graph()
    uri, _, spec = logged(tracking, graph, "SAGE_flow")
    del graph.features["image"]
    with pytest.raises(RegionTableError, match="the model needs 'image', which the graph does not have"):
        table_for_graph(graph, spec)
