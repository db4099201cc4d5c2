"""The fitted embedding models as MLflow pyfuncs: same vectors as the native models, logged per work dir.

Tiny real models (gensim with workers=1 and fixed seeds, a SmallCNN pretrained for one epoch)
saved through the product's own save functions, so the ``_model/`` layouts, the checkpoint and the
manifests are the real ones; a SQLite MLflow store under a temporary directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from landuse.config import (
    Config,
    EmbeddingsConfig,
    FlowEmbeddingConfig,
    InputsConfig,
    PoiEmbeddingConfig,
    SourceConfig,
)
from landuse.features.doc2vec import fit_doc2vec, load_poi_model, save_poi_model, write_tour_corpus
from landuse.features.word2vec import fit_word2vec, load_flow_model, save_flow_model, write_walk_corpus
from landuse.manifest import write_manifest
from landuse.models.encoders import SmallCNN, load_external_encoder
from landuse.serving.embeddings import (
    FLOW_MODEL,
    IMAGE_MODEL,
    POI_MODEL,
    SPEC_FILE,
    WEIGHTS_SAFETENSORS,
    EncoderInfo,
    _stage_model,
    log_embedding_models,
    pretrained_encoder,
    save_flow_embedding_model,
    save_image_encoder_model,
    save_poi_embedding_model,
)
from landuse.stages.embeddings import FLOW_STAGE, POI_STAGE, T_FLOW_EMBEDDINGS, T_POI_EMBEDDINGS
from landuse.pretraining.image_embeddings import region_image_embeddings, write_image_embeddings
from landuse.pretraining.pretrain import PretrainSettings, pretrain
from tests.pretraining.test_pretrain import BANDS, SIZE, _write_patch_table, make_model, synthetic_tiles

SEED = 7
ROLES = ("blue", "green", "red", "nir")
GROUPS = [["shop", "food", "bank", "cafe"], ["factory", "warehouse", "depot", "yard"]]


def _config(work: Path, flows: bool = True, pois: bool = True, imagery: bool = True, flow_dim: int = 8) -> Config:
    inputs = InputsConfig(
        trips={"taxi": SourceConfig("csv", Path("trips.csv"))} if flows else {},
        pois=SourceConfig("csv", Path("pois.csv")) if pois else None,
        imagery=SourceConfig("raster", Path("city.tif"), {"band_map": {r: i + 1 for i, r in enumerate(ROLES)}}) if imagery else None,
    )
    embeddings = EmbeddingsConfig(flow=FlowEmbeddingConfig(dim=flow_dim, epochs=2, workers=1),
                                  poi=PoiEmbeddingConfig(dim=8, window=3, epochs=20, workers=1))
    return Config(name="serving-test", seed=SEED, work_dir=work, inputs=inputs, embeddings=embeddings)


def _committed(table: Path, stage, config: Config) -> None:
    """The manifest the runner writes after the stage (the fields the logger checks)."""
    write_manifest(table, {"stage": stage.name, "config_hash": config.section_hash(*stage.config_keys),
                           "fingerprint": f"test-{stage.name}", "seed": config.seed})


@pytest.fixture(scope="module")
def text_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work dir with the flow Word2Vec and the POI Doc2Vec, no image encoder."""
    work = tmp_path_factory.mktemp("work-text")
    config = _config(work)
    tables = config.tables_dir
    rng = np.random.default_rng(1)
    walks = np.full((60, 8), -1, dtype=np.int64)
    for b in range(60):
        n = int(rng.integers(3, 9))
        walks[b, :n] = rng.choice(np.arange(100, 130), n)
    corpus = work / "walks.txt"
    write_walk_corpus(walks, corpus)
    w2v = fit_word2vec(corpus, dim=8, epochs=2, workers=1, seed=SEED)
    save_flow_model(w2v, tables / T_FLOW_EMBEDDINGS)
    _committed(tables / T_FLOW_EMBEDDINGS, FLOW_STAGE, config)
    frame = pd.DataFrame({"region_id": np.arange(200, 220),
                          "tokens": [rng.choice(GROUPS[k % 2], 8).tolist() for k in range(20)]})
    tours = work / "tours.txt"
    ids = write_tour_corpus(frame, tours)
    d2v = fit_doc2vec(tours, dim=8, window=3, epochs=20, workers=1, seed=SEED)
    save_poi_model(d2v, ids, tables / T_POI_EMBEDDINGS)
    _committed(tables / T_POI_EMBEDDINGS, POI_STAGE, config)
    return work


@pytest.fixture(scope="module")
def image_work(tmp_path_factory: pytest.TempPathFactory):
    """A work dir as `landuse run pretrain` leaves it: image_patches, image_embeddings, a checkpoint."""
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("work-image")
    tables = work / "tables"
    pixels, tokens, _ = synthetic_tiles(20)
    model = make_model()
    model.image_encoder.set_normalization(pixels.mean((0, 2, 3)), pixels.std((0, 2, 3)))
    checkpoints = work / "checkpoints" / "pretrain"
    history = pretrain(model, pixels, tokens, PretrainSettings(epochs=1, batch_size=10, seed=SEED),
                       checkpoint_dir=checkpoints)
    _write_patch_table(tables / "image_patches", pixels, [(1, 0, 0, 1.0, 1.0), (2, 0, 1, 1.0, 1.0)])
    write_manifest(tables / "image_patches", {"stage": "imagery", "patch_size": SIZE, "patch_stride": SIZE,
                                              "patch_bands": list(ROLES), "band_map": {r: i + 1 for i, r in enumerate(ROLES)}})
    table = region_image_embeddings(model.image_encoder, tables / "image_patches", all_regions=[1, 2])
    params = {"encoder": "smallcnn", "encoder_args": json.dumps({"width": 8, "out_dim": 16}), "external": "",
              "band_map": "", "tiles": len(pixels)}
    write_image_embeddings(table, tables / "image_embeddings",
                           {**params, "loss_history": history, "checkpoint_dir": str(checkpoints), "band_roles": list(ROLES)})
    return work, model.image_encoder.eval(), pixels


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A SQLite tracking + registry store with its artifacts under a temporary directory; yields the experiment id."""
    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    uri = f"sqlite:///{root}/m.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("embedding-models", artifact_location=(root / "artifacts").as_uri())
    yield experiment
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def _vectors(frame: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]])


def test_flow_pyfunc_is_the_word2vec_lookup(text_work: Path, tmp_path: Path) -> None:
    table = text_work / "tables" / T_FLOW_EMBEDDINGS
    path = save_flow_embedding_model(table, tmp_path / "flow")
    model = mlflow.pyfunc.load_model(str(path))
    native = load_flow_model(table)
    known = sorted(int(k) for k in native.wv.index_to_key)[:5]
    out = model.predict(pd.DataFrame({"region_id": [*known, 99_999, known[0]]}))
    assert list(out.columns) == ["region_id", "vector", "known"]
    assert out["region_id"].tolist() == [*known, 99_999, known[0]]
    assert out["known"].tolist() == [True] * 5 + [False, True]
    vectors = _vectors(out)
    for i, region in enumerate(known):
        assert np.array_equal(vectors[i], native.wv[str(region)])
    assert not vectors[5].any()
    spec = json.loads((path / "artifacts" / SPEC_FILE).read_text())
    assert spec["kind"] == "flow_word2vec" and "region ids" in spec["vocabulary"]["tokens"]
    assert spec["vocabulary"]["size"] == len(native.wv)
    info = mlflow.models.get_model_info(str(path))
    assert info.signature.inputs.input_names() == ["region_id"]
    example = json.loads((path / "input_example.json").read_text())
    assert 2 <= len(example["data"]) <= 3


def test_poi_pyfunc_is_poi_model_infer_and_deterministic(text_work: Path, tmp_path: Path) -> None:
    table = text_work / "tables" / T_POI_EMBEDDINGS
    path = save_poi_embedding_model(table, tmp_path / "poi", seed=SEED)
    model = mlflow.pyfunc.load_model(str(path))
    tours = [["factory", "depot", "yard"], ["shop", "cafe", "bank", "food", "never seen"], ["factory", "depot", "yard"], []]
    frame = pd.DataFrame({"region_id": [900, 901, 902, 903], "tour": tours})
    first, second = model.predict(frame), model.predict(frame)
    assert list(first.columns) == ["region_id", "vector", "has_pois", "n_known_tokens"]
    assert np.array_equal(_vectors(first), _vectors(second))  # deterministic
    native = load_poi_model(table)
    for i, tour in enumerate(tours[:3]):
        assert np.array_equal(_vectors(first)[i], native.infer(tour, epochs=native.model.epochs, seed=SEED))
    assert np.array_equal(_vectors(first)[0], _vectors(first)[2])  # a tour's vector does not depend on the batch
    assert first["has_pois"].tolist() == [True, True, True, False] and not _vectors(first)[3].any()
    assert first["n_known_tokens"].tolist() == [3, 4, 3, 0]
    alone = model.predict(pd.DataFrame({"tour": [tours[1]]}))  # region_id is optional
    assert "region_id" not in alone.columns and np.array_equal(_vectors(alone)[0], _vectors(first)[1])
    spec = json.loads((path / "artifacts" / SPEC_FILE).read_text())
    assert spec["infer"]["epochs"] == 20 and spec["infer"]["seed"] == SEED


def test_image_encoder_pyfunc_matches_the_pretrained_encoder(image_work, tmp_path: Path) -> None:
    work, trained, pixels = image_work
    found = pretrained_encoder(_config(work, flows=False, pois=False))
    assert not isinstance(found, str), found
    encoder, info = found
    assert info.band_roles == ROLES and info.patch_size == SIZE and info.arch_args == {"width": 8, "out_dim": 16}
    for (name, a), b in zip(trained.state_dict().items(), encoder.state_dict().values()):
        assert torch.equal(a, b), name  # the checkpoint of the last epoch is the trained encoder
    path = save_image_encoder_model(encoder, info, tmp_path / "encoder")
    artifacts = path / "artifacts"
    assert (artifacts / WEIGHTS_SAFETENSORS).is_file() and not list(artifacts.glob("*.pt"))
    spec = json.loads((artifacts / SPEC_FILE).read_text())
    assert spec["band_roles"] == list(ROLES) and spec["patch_size"] == SIZE and spec["in_bands"] == BANDS
    assert spec["raster_band_map"] == {"blue": 1, "green": 2, "red": 3, "nir": 4}
    np.testing.assert_allclose(spec["band_mean"], trained.band_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(spec["band_std"], trained.band_std.numpy(), rtol=1e-6)
    model = mlflow.pyfunc.load_model(str(path))
    batch = pixels[:5]
    out = model.predict(pd.DataFrame({"region_id": np.arange(5), "pixels": [t.numpy().ravel().tolist() for t in batch]}))
    assert list(out.columns) == ["region_id", "vector"]
    with torch.no_grad():
        want = trained(batch).numpy()
    np.testing.assert_allclose(_vectors(out), want, rtol=0, atol=1e-6)
    with pytest.raises(Exception, match="expected"):
        model.predict(pd.DataFrame({"pixels": [[0.0, 1.0]]}))


def test_band_mapped_external_encoder_pyfunc(tmp_path: Path) -> None:
    torch.manual_seed(0)
    own = SmallCNN(2, width=4, out_dim=6)
    own.set_normalization(torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5]))
    torch.save(own.state_dict(), tmp_path / "external.pt")
    encoder = load_external_encoder(tmp_path / "external.pt", "smallcnn", {"0": "nir", "1": "red"}, in_bands=4,
                                    band_roles=list(ROLES), width=4, out_dim=6).eval()
    info = EncoderInfo(arch="smallcnn", arch_args={"width": 4, "out_dim": 6}, band_roles=ROLES, patch_size=4,
                       channel_band_map={"0": "nir", "1": "red"})
    path = save_image_encoder_model(encoder, info, tmp_path / "external")
    spec = json.loads((path / "artifacts" / SPEC_FILE).read_text())
    assert spec["normalisation"]["bands"] == ["nir", "red"] and spec["band_mean"] == [0.5, -1.0]
    tiles = torch.randn(3, 4, 4, 4)
    out = mlflow.pyfunc.load_model(str(path)).predict(pd.DataFrame({"pixels": [t.numpy().ravel().tolist() for t in tiles]}))
    with torch.no_grad():
        np.testing.assert_allclose(_vectors(out), encoder(tiles).numpy(), rtol=0, atol=1e-6)


def test_log_embedding_models_logs_what_the_work_dir_has(text_work: Path, image_work, store, caplog) -> None:
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_embedding_models(_config(text_work))
    caplog.set_level(logging.INFO, logger="landuse.serving.embeddings")
    with mlflow.start_run(experiment_id=store) as run:
        uris = log_embedding_models(_config(text_work))  # imagery configured, but never pretrained
    assert sorted(uris) == [FLOW_MODEL, POI_MODEL]
    assert f"skipping {IMAGE_MODEL}" in caplog.text and "image_embeddings" in caplog.text
    poi = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/{POI_MODEL}")
    tours = pd.DataFrame({"region_id": [1, 2], "tour": [["shop", "bank"], ["yard", "depot", "factory"]]})
    native = load_poi_model(text_work / "tables" / T_POI_EMBEDDINGS)
    np.testing.assert_array_equal(_vectors(poi.predict(tours))[1], native.infer(["yard", "depot", "factory"], seed=SEED))
    flow = mlflow.pyfunc.load_model(uris[FLOW_MODEL])
    assert flow.predict(pd.DataFrame({"region_id": [100, -5]}))["known"].tolist() == [True, False]

    caplog.clear()
    work = image_work[0]
    with mlflow.start_run(experiment_id=store):
        uris = log_embedding_models(_config(work, flows=False, pois=False))
    assert sorted(uris) == [IMAGE_MODEL]
    assert f"skipping {FLOW_MODEL}: stage flow-embeddings is disabled" in caplog.text
    assert f"skipping {POI_MODEL}: stage poi-embeddings is disabled" in caplog.text
    encoder = mlflow.pyfunc.load_model(uris[IMAGE_MODEL])
    assert encoder.metadata.get_input_schema().input_names() == ["pixels", "region_id"]


def test_models_of_another_config_are_skipped(text_work: Path) -> None:
    config = _config(text_work, flow_dim=16)  # embeddings.flow changed since the stage ran
    reason = _stage_model(config, FLOW_STAGE, T_FLOW_EMBEDDINGS, "word2vec.model")
    assert isinstance(reason, str) and "another config" in reason
    assert not isinstance(_stage_model(config, POI_STAGE, T_POI_EMBEDDINGS, "doc2vec.model"), str)
    assert "disabled" in _stage_model(_config(text_work, pois=False), POI_STAGE, T_POI_EMBEDDINGS, "doc2vec.model")
    assert "no image_embeddings" in pretrained_encoder(_config(text_work))
    assert "no inputs.imagery" in pretrained_encoder(_config(text_work, imagery=False))


def test_flow_model_of_a_table_on_an_object_store(tmp_path: Path) -> None:
    """Tables under a URI work dir (an in-memory fsspec filesystem standing in for an object store)."""
    from landuse.storage import location, remove_tree

    work = location(f"memory://embedding-models/{tmp_path.name}")
    config = _config(work, pois=False, imagery=False)
    corpus = tmp_path / "walks.txt"
    corpus.write_text("1 2 3\n2 3 4\n4 1 2\n")
    w2v = fit_word2vec(corpus, dim=4, epochs=1, workers=1, seed=SEED)
    save_flow_model(w2v, config.tables_dir / T_FLOW_EMBEDDINGS)
    _committed(config.tables_dir / T_FLOW_EMBEDDINGS, FLOW_STAGE, config)
    found = _stage_model(config, FLOW_STAGE, T_FLOW_EMBEDDINGS, "word2vec.model")
    assert not isinstance(found, str), found
    path = save_flow_embedding_model(found[0], tmp_path / "flow")
    out = mlflow.pyfunc.load_model(str(path)).predict(pd.DataFrame({"region_id": [3, 9]}))
    assert out["known"].tolist() == [True, False] and np.array_equal(_vectors(out)[0], w2v.wv["3"])
    remove_tree(work)
