"""Model registry: comparable champions per comparability key, concurrent registrants, dataset lineage.

Against a real local SQLite MLflow store (one per module; each test registers its own model name).
"""

from __future__ import annotations

import multiprocessing
import random
import re
import time
import uuid

import pytest

mlflow = pytest.importorskip("mlflow")

from landuse.training import tracking
from landuse.training.tracking import (
    CHAMPION,
    CHAMPION_KEY_TAG,
    KEY_TAG,
    champion_alias,
    champion_val_kl,
    champions,
    comparability_key,
    log_lineage,
    promote,
    register_model,
)

PARTS = {"experiment": "train", "city": "nyc", "data": "0123456789abcdef", "classes": ["res", "com", "ind"],
         "features": ["poi", "flow"], "protocol": {"split": "random", "train_fraction": 0.6, "val_fraction": 0.2,
                                                   "selection": "val_kl", "splits": 3, "block_m": None}}


def _use_store(uri: str) -> None:
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """(uri, experiment id) of a SQLite tracking + registry store with artifacts beside it."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    _use_store(uri)
    experiment = mlflow.create_experiment("registry-tests", artifact_location=(root / "artifacts").as_uri())
    yield uri, experiment
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


@pytest.fixture()
def name(store) -> str:
    _use_store(store[0])
    mlflow.set_experiment(experiment_id=store[1])
    return f"landuse-{uuid.uuid4().hex[:8]}"


def _model_uri() -> str:
    """A logged model (metadata only: registering needs one, not its files)."""
    with mlflow.start_run():
        return f"models:/{mlflow.initialize_logged_model(name='model').model_id}"


def _register(name: str, val_kl: float, parts: dict = PARTS, model_uri: str | None = None) -> tuple[str, bool]:
    key = comparability_key(parts)
    return register_model(model_uri or _model_uri(), name, val_kl, {"variant": "GCN"}, key, parts)


def _aliases(name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in mlflow.MlflowClient().get_registered_model(name).aliases.items()}


def test_comparability_key_is_stable_short_and_a_valid_alias():
    key = comparability_key(PARTS)
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    shuffled = {k: PARTS[k] for k in reversed(list(PARTS))}
    assert comparability_key(shuffled) == key
    assert comparability_key({**PARTS, "classes": tuple(PARTS["classes"])}) == key
    assert comparability_key({**PARTS, "features": ["poi"]}) != key
    assert comparability_key({**PARTS, "protocol": {**PARTS["protocol"], "splits": 5}}) != key
    assert champion_alias(key) == f"champion-{key}"
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
    )

    _validate_model_alias_name(champion_alias(key))
    _validate_model_alias_name_reserved(champion_alias(key))
    with pytest.raises(ValueError):
        champion_alias("a b")


def test_two_keys_get_their_own_champions_and_plain_champion_stays_with_the_first(name):
    other = {**PARTS, "features": ["poi"]}
    a, b = comparability_key(PARTS), comparability_key(other)
    assert _register(name, 0.50) == ("1", True)
    assert _register(name, 0.20, other) == ("2", True)  # far lower KL, but not comparable
    assert _register(name, 0.40) == ("3", True)
    assert _register(name, 0.30, other) == ("4", False)
    aliases = _aliases(name)
    assert aliases[champion_alias(a)] == "3"
    assert aliases[champion_alias(b)] == "2"
    assert aliases[CHAMPION] == "3"
    assert mlflow.MlflowClient().get_registered_model(name).tags[CHAMPION_KEY_TAG] == a
    assert champion_val_kl(name) == 0.40
    tags = mlflow.MlflowClient().get_model_version(name, "2").tags
    assert tags[KEY_TAG] == b and tags["val_kl"] == repr(0.20) and tags["variant"] == "GCN"
    assert tags["key.features"] == '["poi"]' and tags["key.experiment"] == '"train"'


def test_worse_does_not_move_better_does_ties_go_to_the_lower_version(name):
    key = comparability_key(PARTS)
    assert _register(name, 0.50) == ("1", True)
    assert _register(name, 0.60) == ("2", False)
    assert _aliases(name)[champion_alias(key)] == "1"
    assert _register(name, 0.30) == ("3", True)
    assert _register(name, 0.30) == ("4", False)
    assert _aliases(name) == {champion_alias(key): "3", CHAMPION: "3"}


def test_incomplete_versions_are_ignored(name):
    key = comparability_key(PARTS)
    # a version without the key tags (registered before keys, or still being tagged by someone else)
    mlflow.register_model(_model_uri(), name, tags={"val_kl": "0.01"})
    assert _register(name, 0.50) == ("2", True)
    assert _aliases(name)[champion_alias(key)] == "2"
    assert _aliases(name)[CHAMPION] == "2"


def test_champions_lists_every_key_and_promote_moves_plain_champion(name):
    other = {**PARTS, "features": ["poi"], "city": "sz"}
    a, b = comparability_key(PARTS), comparability_key(other)
    _register(name, 0.50)
    _register(name, 0.20, other)
    _register(name, 0.25, other)
    rows = champions(name)
    assert [row["key"] for row in rows] == [a, b]
    assert rows[0] | {"parts": None} == {"key": a, "alias": champion_alias(a), "version": "1", "val_kl": 0.50,
                                         "parts": None, "versions": 1, "champion": True}
    assert rows[1]["version"] == "2" and rows[1]["val_kl"] == 0.20 and rows[1]["versions"] == 2
    assert rows[1]["parts"] == other and not rows[1]["champion"]

    assert promote(name, 2) == b
    assert _aliases(name)[CHAMPION] == "2"
    assert [row["key"] for row in champions(name)] == [b, a]
    assert champion_val_kl(name) == 0.20
    # from now on registrations under the first key leave plain champion alone, the promoted key moves it
    assert _register(name, 0.10) == ("4", True)
    assert _aliases(name)[CHAMPION] == "2"
    assert _register(name, 0.15, other) == ("5", True)
    assert _aliases(name)[CHAMPION] == "5"
    assert _aliases(name)[champion_alias(a)] == "4"


def test_interleaved_registrant_fixes_its_stale_write(name, monkeypatch):
    """A reads the registry before B's version exists, writes after B: A's verify read must fix it."""
    key = comparability_key(PARTS)
    original = tracking._read_state
    writes: list[tuple[str, str]] = []
    client_cls = mlflow.MlflowClient
    set_alias = client_cls.set_registered_model_alias

    def spy(self, model, alias, version):
        writes.append((alias, str(version)))
        return set_alias(self, model, alias, version)

    monkeypatch.setattr(client_cls, "set_registered_model_alias", spy)
    hooked = []

    def stale_then_b(client, model):
        state = original(client, model)
        if not hooked:  # A's first read: B registers (and converges) before A acts on what it read
            hooked.append(True)
            assert _register(name, 0.30) == ("2", True)
        return state

    monkeypatch.setattr(tracking, "_read_state", stale_then_b)
    assert _register(name, 0.50) == ("1", False)
    alias = champion_alias(key)
    # B set v2; A wrote its stale argmin v1 over it, re-read, and put v2 back
    assert [w for w in writes if w[0] == alias] == [(alias, "2"), (alias, "1"), (alias, "2")]
    assert _aliases(name) == {alias: "2", CHAMPION: "2"}


def _register_worker(uri: str, experiment: str, name: str, val_kl: float, late: bool, barrier) -> None:
    _use_store(uri)
    mlflow.set_experiment(experiment_id=experiment)
    model_uri = _model_uri()
    read, rng = tracking._read_state, random.Random(val_kl)

    def slow_read(client, model):  # a slow registry: what was read is stale by the time it is written
        state = read(client, model)
        time.sleep(rng.uniform(0.0, 0.1) if late else rng.uniform(0.3, 0.5))
        return state

    tracking._read_state = slow_read
    barrier.wait(timeout=90)
    if late:  # the best version is created after the others have read the registry, before they write
        time.sleep(0.15)
    _register(name, val_kl, model_uri=model_uri)


def test_concurrent_registrants_converge_on_the_argmin(store, name):
    """Six processes register one key at once; a single compare-and-set without the verify reads
    ends on a stale argmin here (the slow readers write last)."""
    values = [0.61, 0.23, 0.47, 0.12, 0.35, 0.58]
    mlflow.MlflowClient().create_registered_model(name)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(values))
    workers = [context.Process(target=_register_worker,
                               args=(store[0], store[1], name, v, v == min(values), barrier)) for v in values]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * len(values)
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(float(v.tags["val_kl"]) for v in versions) == sorted(values)
    best = min(versions, key=lambda v: float(v.tags["val_kl"]))
    key = comparability_key(PARTS)
    assert _aliases(name) == {champion_alias(key): str(best.version), CHAMPION: str(best.version)}
    assert float(best.tags["val_kl"]) == 0.12


def test_lineage_logs_one_dataset_per_table(name, tmp_path):
    local = tmp_path / "tables" / "node_features"
    local.mkdir(parents=True)
    tables = {"node_features": local, "edges_flow": "s3a://bucket/landuse/nyc/tables/edges_flow",
              "edges_adjacency": tmp_path / "tables" / "edges_adjacency"}
    manifests = {"node_features": {"fingerprint": "04ea4d8f156ad5b8", "rows": 400,
                                   "schema": {"region_id": "int64", "poi_0": "double"}},
                 "edges_flow": {"fingerprint": "f" * 64},
                 "edges_adjacency": None}
    with pytest.raises(RuntimeError):
        log_lineage(tables, manifests)
    with mlflow.start_run() as run:
        assert log_lineage(tables, manifests) == ["node_features", "edges_flow"]
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    logged = {i.dataset.name: i for i in inputs}
    assert set(logged) == {"node_features", "edges_flow"}
    node, flow = logged["node_features"], logged["edges_flow"]
    assert node.dataset.digest == "04ea4d8f156ad5b8"
    assert flow.dataset.digest == "f" * 36
    assert str(local.resolve()) in node.dataset.source and node.dataset.source_type == "local"
    assert "s3a://bucket/landuse/nyc/tables/edges_flow" in flow.dataset.source
    assert flow.dataset.source_type == "spark"
    assert "region_id" in node.dataset.schema
    tags = {t.key: t.value for t in node.tags}
    assert tags["mlflow.data.context"] == "training" and tags["rows"] == "400"


def test_register_model_writes_key_parts_truncated(name):
    parts = {**PARTS, "features": [f"feature_{i:05d}" for i in range(2000)]}
    version, _ = _register(name, 0.5, parts)
    tags = mlflow.MlflowClient().get_model_version(name, version).tags
    assert len(tags["key.features"]) == 5000
    row = champions(name)[0]
    assert isinstance(row["parts"]["features"], str) and row["parts"]["city"] == "nyc"


def test_champion_val_kl_without_champion(name):
    assert champion_val_kl(name) is None
    assert champions(name) == []
