"""Tampered model artifacts never execute: a registered region model (and a logged flow Word2Vec
pyfunc) is loaded only after every artifact file matches the sha256 recorded at logging /
registration and the MLmodel names landuse's loader. Each tampering below is refused with one line
naming the model version and the file, and the marker file the planted code would write never
appears; the untouched model loads and scores as before."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pytest
import yaml

from landuse.serving.integrity import VERSION_TAG, ArtifactIntegrityError, joined_tag, run_tag
from landuse.serving.pyfunc import load_region_model, table_for_graph
from landuse.training.tracking import comparability_key, register_model
from tests.serving.test_region_model import CLASSES, grid_graph, logged

NAME = "landuse-tamper"
PARTS = {"experiment": "test", "city": "grid"}


class Boom:
    """Unpickling this writes the marker file (what a planted pickle would do as root)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory):  # noqa: F811 - one store for the module (logging is slow)
    tmp = tmp_path_factory.mktemp("tamper")
    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("tamper", artifact_location=(tmp / "art").as_uri()))
    yield tmp
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def registered(tracking: Path):
    graph = grid_graph()
    uri, direct, spec = logged(tracking, graph, "SAGE_flow")
    version, _ = register_model(uri, NAME, 0.5, {"variant": "SAGE_flow"}, comparability_key(PARTS), PARTS)
    store = Path(urlparse(mlflow.get_logged_model(uri.removeprefix("models:/")).artifact_location).path)
    backup = tracking / "pristine"
    shutil.copytree(store, backup)
    return {"graph": graph, "direct": direct, "spec": spec, "version": version, "store": store,
            "backup": backup, "marker": tracking / "MARKER", "uri": f"models:/{NAME}/{version}"}


def _restore(ctx: dict) -> None:
    shutil.rmtree(ctx["store"])
    shutil.copytree(ctx["backup"], ctx["store"])


def _refused(uri: str, match: str, marker: Path) -> str:
    with pytest.raises(ArtifactIntegrityError) as info:
        load_region_model(uri)
    message = str(info.value)
    assert "\n" not in message, message
    assert match in message, message
    assert not marker.exists(), "the tampered artifact ran"
    return message


def _scores(ctx: dict) -> None:
    model, spec = load_region_model(f"models:/{NAME}@champion")
    assert spec == ctx["spec"]
    out = model.predict(table_for_graph(ctx["graph"], spec))
    np.testing.assert_allclose(out[CLASSES].to_numpy(), ctx["direct"], atol=1e-6)


def test_registration_records_every_artifact(registered) -> None:
    client = mlflow.MlflowClient()
    version = client.get_model_version(NAME, registered["version"])
    record = json.loads(joined_tag(version.tags, VERSION_TAG))
    assert {"MLmodel", "model_code.py", "artifacts/spec.json", "artifacts/weights.safetensors", "conda.yaml",
            "python_env.yaml", "requirements.txt", "input_example.json"} <= set(record)
    assert all(len(h) == 64 for h in record.values())
    run = client.get_run(version.run_id)
    assert json.loads(joined_tag(run.data.tags, run_tag("model")))["files"] == record
    _scores(registered)


def test_tampered_artifacts_are_refused_and_never_run(registered) -> None:
    ctx, store, marker = registered, registered["store"], registered["marker"]
    where = f"models:/{NAME}/{ctx['version']}"

    # (a) model_code.py writes a marker when run
    with open(store / "model_code.py", "a") as handle:
        handle.write(f"\nopen({str(marker)!r}, 'w').write('pwned')\n")
    msg = _refused(f"models:/{NAME}@champion", f"{where}: artifact model_code.py changed since registration", marker)
    assert msg.endswith("refusing to load") and "!=" in msg
    _restore(ctx)

    # (b) a pickle beside the model that writes a marker when unpickled
    (store / "python_model.pkl").write_bytes(pickle.dumps(Boom(str(marker))))
    _refused(ctx["uri"], f"{where}: artifact python_model.pkl was added since registration", marker)
    _restore(ctx)

    # (c) one byte of the weights flipped
    weights = store / "artifacts" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    _refused(ctx["uri"], f"{where}: artifact artifacts/weights.safetensors changed since registration", marker)
    _restore(ctx)

    # a file gone
    (store / "artifacts" / "spec.json").unlink()
    _refused(ctx["uri"], f"{where}: artifact artifacts/spec.json is missing", marker)
    _restore(ctx)

    _scores(ctx)  # the untouched model loads and scores as before
    assert not marker.exists()


def test_a_pickle_loader_is_refused_even_when_the_record_matches(registered) -> None:
    """An attacker who also rewrites the registry record still cannot make landuse unpickle."""
    ctx, store, marker = registered, registered["store"], registered["marker"]
    (store / "python_model.pkl").write_bytes(pickle.dumps(Boom(str(marker))))
    meta = yaml.safe_load((store / "MLmodel").read_text())
    conf = meta["flavors"]["python_function"]
    conf.pop("model_code_path")
    conf.update(loader_module="mlflow.pyfunc.model", python_model="python_model.pkl")
    (store / "MLmodel").write_text(yaml.safe_dump(meta))
    from landuse.serving.integrity import directory_digests, version_tags

    client = mlflow.MlflowClient()
    for key, value in version_tags(directory_digests(store)).items():
        client.set_model_version_tag(NAME, ctx["version"], key, value)
    _refused(ctx["uri"], "python_model.pkl is a pickle; refusing to load", marker)
    (store / "python_model.pkl").rename(store / "python_model.bin")
    for key, value in version_tags(directory_digests(store)).items():
        client.set_model_version_tag(NAME, ctx["version"], key, value)
    _refused(ctx["uri"], "loader_module 'mlflow.pyfunc.model' is not landuse's", marker)
    _restore(ctx)
    for key, value in version_tags(directory_digests(store)).items():
        client.set_model_version_tag(NAME, ctx["version"], key, value)
    _scores(ctx)


def test_uris_without_a_record_are_refused(registered) -> None:
    marker = registered["marker"]
    _refused(str(registered["store"]), "no registry or run record", marker)
    client = mlflow.MlflowClient()
    version = client.get_model_version(NAME, registered["version"])
    tags = {k: v for k, v in version.tags.items() if k.startswith(VERSION_TAG)}
    for key in tags:
        client.delete_model_version_tag(NAME, registered["version"], key)
    _refused(registered["uri"], "registered without a sha256 record", marker)
    # the run's record still serves runs:/ URIs
    model, _ = load_region_model(f"runs:/{version.run_id}/model")
    assert model.metadata.metadata["format"] == "landuse-region-model"
    for key, value in tags.items():
        client.set_model_version_tag(NAME, registered["version"], key, value)


def test_registration_refuses_artifacts_changed_since_logging(tracking: Path) -> None:
    uri, _, _ = logged(tracking, grid_graph(), "SAGE_flow")
    store = Path(urlparse(mlflow.get_logged_model(uri.removeprefix("models:/")).artifact_location).path)
    with open(store / "model_code.py", "a") as handle:
        handle.write("\n# changed\n")
    with pytest.raises(ArtifactIntegrityError, match="model_code.py changed since logging.*refusing to register"):
        register_model(uri, NAME, 0.5, {}, comparability_key(PARTS), PARTS)


def test_gensim_files_are_checked_before_gensim_loads(tmp_path: Path, tracking: Path) -> None:
    """The flow Word2Vec pyfunc: a changed gensim file (a pickle) is refused by the spec's record even
    when MLflow loads the model directly, and by the run's record through landuse's loader."""
    from landuse.features.word2vec import WORD2VEC_FILE, fit_word2vec, save_flow_model, write_walk_corpus
    from landuse.serving.embeddings import flow_pyfunc, load_embedding_model

    rng = np.random.default_rng(1)
    walks = rng.integers(100, 120, size=(30, 6))
    write_walk_corpus(walks, tmp_path / "walks.txt")
    save_flow_model(fit_word2vec(tmp_path / "walks.txt", dim=4, epochs=1, workers=1, seed=3), tmp_path / "flow")
    with mlflow.start_run() as run, flow_pyfunc(tmp_path / "flow") as parts:
        info = mlflow.pyfunc.log_model(name="embedding_flow", **parts.kwargs())
        from landuse.serving.integrity import record_logged_model

        record_logged_model(info, "embedding_flow")
    uri = f"runs:/{run.info.run_id}/embedding_flow"
    assert load_embedding_model(uri).predict({"region_id": [100]})["known"].tolist() == [True]
    store = Path(urlparse(mlflow.get_logged_model(info.model_id).artifact_location).path)
    gensim_file = store / "artifacts" / "model" / WORD2VEC_FILE
    gensim_file.write_bytes(gensim_file.read_bytes() + b"\x00")
    with pytest.raises(ArtifactIntegrityError, match=f"artifact artifacts/model/{WORD2VEC_FILE} changed"):
        load_embedding_model(uri)
    with pytest.raises(ArtifactIntegrityError, match=f"artifact {WORD2VEC_FILE} changed since logging"):
        mlflow.pyfunc.load_model(str(store))  # MLflow's own load: the pyfunc's spec check still holds
