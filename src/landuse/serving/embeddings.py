"""The fitted embedding models as MLflow ``pyfunc`` models: embed new regions with what training fitted.

Three models, each saved from its native files plus a JSON spec (``spec.json``: what the input
means, the settings, where the model came from), each loadable with ``mlflow.pyfunc.load_model``:

* **flow Word2Vec** (``embedding_flow``): the ``flow-embeddings`` stage's ``<table>/_model/``
  (gensim). Input ``region_id`` (int) → ``region_id``, ``vector`` (list of floats), ``known``
  (bool). The vocabulary is the region ids of the regions table as decimal strings; a region the
  walks never reached gets a zero vector and ``known = False`` (as ``has_flow`` in the table).
* **POI Doc2Vec** (``embedding_poi_doc2vec``): the ``poi-embeddings`` stage's ``<table>/_model/``.
  Input ``tour`` (the region's POI category tokens in tour order, as the ``tokens`` column of
  :func:`landuse.features.poi_tours.region_tours`; :func:`landuse.features.doc2vec.encode_token`
  is applied as the corpus writer does) and an optional ``region_id`` → ``region_id`` (when given),
  ``vector``, ``has_pois`` (the tour has a token; an empty tour gets zeros, as in the table) and
  ``n_known_tokens`` (tokens in the model's vocabulary; the others are ignored by gensim). Vectors
  come from :meth:`landuse.features.doc2vec.PoiModel.infer` with the training epochs and the run's
  seed: the model's RNG is reset before each tour, so a tour's vector does not depend on the batch
  and two calls give identical vectors; the starting vector is seeded by a CRC-32 of the words, so
  every process gives the same vectors.
* **image encoder** (``embedding_image_encoder``): the encoder of ``landuse run pretrain`` (the
  image part of :class:`landuse.models.encoders.MMGRModel`, or an external checkpoint with its band
  map). The command keeps no separate weights file: the encoder is rebuilt from the
  ``image_embeddings`` manifest (architecture, arguments, band roles, loss history) and the
  checkpoint of its last epoch, ``<checkpoint_dir>/epoch-XXXX.pt`` (``checkpoint_dir`` as recorded
  in that manifest, default ``<driver_dir>/checkpoints/pretrain``). Input ``pixels`` (one tile
  flattened from ``[bands, patch, patch]``, bands in the order of ``spec.band_roles``, values as in
  the ``image_patches`` table) and an optional ``region_id`` → ``vector``. The weights are a
  ``safetensors`` state_dict (no pickled module); the spec carries the band roles and raster band
  map, patch size, ``band_mean`` / ``band_std`` (the encoder's own per-band normalisation
  ``(x - band_mean) / band_std``, applied inside the model) and the architecture to rebuild.

:func:`log_embedding_models` logs every one of them that the config's work dir holds, inside the
active MLflow run. Each is saved as MLflow "models from code": a three-line code file that imports
its model class from here, the installed package (nothing of ours is pickled; the gensim files are
gensim's own format), so ``mlflow models serve -m <uri> --env-manager local`` loads them wherever
landuse is installed.

Integrity: logging records the sha256 of every artifact in the run (:mod:`landuse.serving.integrity`);
:func:`load_embedding_model` loads a model only from a local copy verified against that record. The
gensim files are pickles (gensim's ``load`` unpickles), so ``spec.json`` also records their sha256
(``model_sha256``) and the pyfuncs check them before gensim loads, even when MLflow loads the model
directly. ``mlflow models serve -m <uri>`` itself verifies nothing (it runs the artifact's code
file): serve a directory that :func:`landuse.serving.integrity.verified_model_dir` produced.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

import landuse
from landuse.serving.integrity import directory_digests

if TYPE_CHECKING:
    import torch

    from landuse.config import Config
    from landuse.models.encoders import ImageEncoder

log = logging.getLogger(__name__)

FLOW_MODEL = "embedding_flow"
POI_MODEL = "embedding_poi_doc2vec"
IMAGE_MODEL = "embedding_image_encoder"
SPEC_FILE = "spec.json"
WEIGHTS_SAFETENSORS = "encoder.safetensors"
WEIGHTS_TORCH = "encoder_state_dict.pt"
FORMAT_VERSION = 1
REGION_ID, VECTOR, KNOWN, TOUR, PIXELS = "region_id", "vector", "known", "tour", "pixels"
HAS_POIS, N_KNOWN_TOKENS = "has_pois", "n_known_tokens"
MODEL_SHA256 = "model_sha256"  # spec.json: {file: sha256} of the gensim model files, checked before gensim loads
_ENCODER_PREFIX = "image_encoder."  # MMGRModel's image encoder inside a pretraining checkpoint


# --- Helpers -----------------------------------------------------------------------------------------


def _frame(model_input: Any) -> pd.DataFrame:
    return model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)


def _read_spec(context: Any) -> dict[str, Any]:
    return json.loads(Path(context.artifacts["spec"]).read_text())


def _floats(vector: np.ndarray) -> list[float]:
    """A float32 vector as Python floats (exact: every float32 is a float64)."""
    return np.asarray(vector, dtype=np.float32).astype(np.float64).tolist()


def _region_ids(frame: pd.DataFrame) -> np.ndarray:
    if REGION_ID not in frame.columns:
        raise ValueError(f"input needs a {REGION_ID!r} column (int), got columns {list(frame.columns)}")
    ids = frame[REGION_ID]
    if ids.isna().any():
        raise ValueError(f"{REGION_ID}: {int(ids.isna().sum())} missing value(s)")
    return ids.to_numpy(dtype=np.int64)


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements of the installed packages (landuse itself must be installed where served)."""
    names = ("mlflow", "numpy", "pandas", *packages)
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return [*pins, f"landuse=={landuse.__version__}"]


def _signature(inputs: list[Any], outputs: list[Any]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema

    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def _plain(value: Any) -> Any:
    """JSON-ready form of settings (dataclasses, paths, tuples, numpy scalars)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass
class PyfuncParts:
    """Everything ``mlflow.pyfunc.save_model`` / ``log_model`` needs for one embedding model.

    ``artifacts`` point into a temporary directory that lives as long as the ``with`` block of the
    context manager that made the parts.
    """

    python_model: str  # the models-from-code file
    artifacts: dict[str, str]
    signature: Any
    input_example: pd.DataFrame
    pip_requirements: list[str]
    spec: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``mlflow.pyfunc.save_model`` / ``log_model``."""
        return {"python_model": self.python_model, "artifacts": self.artifacts, "signature": self.signature,
                "input_example": self.input_example, "pip_requirements": self.pip_requirements}


def _write_spec(directory: Path, spec: dict[str, Any]) -> str:
    path = directory / SPEC_FILE
    path.write_text(json.dumps(_plain(spec), indent=2, sort_keys=True) + "\n")
    return str(path)


def model_code_text(cls: type) -> tuple[str, str]:
    """(file name, text) of the models-from-code file for ``cls`` (what the integrity check accepts)."""
    return (f"{cls.__name__.lower()}_code.py",
            f'"""MLflow models-from-code entry: the {cls.__name__} of {cls.__module__}."""\n\n'
            "from mlflow.models import set_model\n\n"
            f"from {cls.__module__} import {cls.__name__}\n\n"
            f"set_model({cls.__name__}())\n")


def _model_code(directory: Path, cls: type) -> str:
    """A models-from-code file for ``cls`` (MLflow runs it at load: an import from the installed package, no pickle)."""
    name, text = model_code_text(cls)
    path = directory / name
    path.write_text(text)
    return str(path)


def _copy_model_dir(source: Path, directory: Path) -> str:
    """A copy of a model's ``_model`` files (MLflow copies them again into the model's artifacts)."""
    target = directory / "model"
    shutil.copytree(source, target)
    return str(target)


def _verified_gensim_dir(context: Any, spec: Mapping[str, Any]) -> Path:
    """The ``model`` artifact directory, its files' sha256 checked against the spec's ``model_sha256``.

    gensim's ``load`` unpickles, so it must only ever see the files the model was logged with.
    landuse's loaders verify the whole artifact directory against the registry first
    (:mod:`landuse.serving.integrity`); this check also holds when MLflow loads the model directly.
    """
    from landuse.serving.integrity import ArtifactIntegrityError, directory_digests, verify_digests

    local = Path(context.artifacts["model"])
    expected = spec.get(MODEL_SHA256)
    if not isinstance(expected, Mapping):
        raise ArtifactIntegrityError(f"{local}: spec.json records no {MODEL_SHA256} of the gensim files (logged by an "
                                     "older landuse); refusing to load; log the embedding models again")
    verify_digests(directory_digests(local, str(local)), expected, f"{local} ({spec.get('kind')})", since="logging")
    return local


# --- Flow Word2Vec -----------------------------------------------------------------------------------


class FlowEmbeddingModel(PythonModel):
    """pyfunc of the flow Word2Vec: ``region_id`` → ``region_id``, ``vector``, ``known``."""

    def load_context(self, context: Any) -> None:
        from gensim.models import Word2Vec

        from landuse.features.word2vec import WORD2VEC_FILE

        self.spec = _read_spec(context)
        local = _verified_gensim_dir(context, self.spec)
        wv = Word2Vec.load(str(local / WORD2VEC_FILE)).wv  # drop the training arrays
        self.index = {int(key): i for i, key in enumerate(wv.index_to_key)}
        self.vectors = np.asarray(wv.vectors, dtype=np.float32)
        self.dim = int(self.vectors.shape[1])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per input row, in input order; unknown regions get zeros and ``known = False``."""
        ids = _region_ids(_frame(model_input))
        pos = np.fromiter((self.index.get(int(r), -1) for r in ids), dtype=np.int64, count=ids.size)
        known = pos >= 0
        matrix = np.zeros((ids.size, self.dim), dtype=np.float32)
        matrix[known] = self.vectors[pos[known]]
        return pd.DataFrame({REGION_ID: ids, VECTOR: [_floats(v) for v in matrix], KNOWN: known})


@contextmanager
def flow_pyfunc(table_dir: Any, settings: Mapping[str, Any] | None = None,
                source: Mapping[str, Any] | None = None) -> Iterator[PyfuncParts]:
    """The pyfunc parts of the Word2Vec saved with a ``flow_embeddings`` table (local path or URI)."""
    from gensim.models import Word2Vec
    from mlflow.types.schema import Array, ColSpec, DataType

    from landuse.features.word2vec import WORD2VEC_FILE, local_model_dir

    with tempfile.TemporaryDirectory(prefix="pyfunc-flow-") as tmp, local_model_dir(table_dir) as local:
        model = Word2Vec.load(str(local / WORD2VEC_FILE))
        keys = np.array(sorted(int(k) for k in model.wv.index_to_key), dtype=np.int64)
        spec = {
            "kind": "flow_word2vec",
            "format_version": FORMAT_VERSION,
            "landuse_version": landuse.__version__,
            "vocabulary": {
                "tokens": "region ids of the regions table (column region_id) as decimal strings, str(int(region_id))",
                "meaning": "a region's skip-gram context over weighted random walks on the OD flow graph",
                "size": int(keys.size),
                "min_region_id": int(keys[0]) if keys.size else None,
                "max_region_id": int(keys[-1]) if keys.size else None,
                "unknown": "regions outside the vocabulary (no flow, never reached by a walk) get a zero vector "
                           "and known=False",
            },
            "input": {REGION_ID: "int64"},
            "output": {REGION_ID: "int64", VECTOR: f"list of {model.wv.vector_size} floats", KNOWN: "bool"},
            "model": {"dim": int(model.wv.vector_size), "window": int(model.window), "negative": int(model.negative),
                      "epochs": int(model.epochs), "sg": int(model.sg), "min_count": int(model.min_count),
                      "seed": int(model.seed)},
            "settings": dict(settings or {}),
            "source": {"table": str(table_dir), **(source or {})},
        }
        del model
        unknown = int(keys.max()) + 1 if keys.size else 0
        example = pd.DataFrame({REGION_ID: np.array([*keys[:2].tolist(), unknown], dtype=np.int64)})
        signature = _signature(
            [ColSpec(DataType.long, REGION_ID)],
            [ColSpec(DataType.long, REGION_ID), ColSpec(Array(DataType.double), VECTOR),
             ColSpec(DataType.boolean, KNOWN)],
        )
        copied = _copy_model_dir(local, Path(tmp))
        spec[MODEL_SHA256] = directory_digests(Path(copied))
        artifacts = {"model": copied, "spec": _write_spec(Path(tmp), spec)}
        code = _model_code(Path(tmp), FlowEmbeddingModel)
        yield PyfuncParts(code, artifacts, signature, example, _requirements("gensim"), spec)


# --- POI Doc2Vec -------------------------------------------------------------------------------------


def _tour(cell: Any) -> list[Any]:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    if isinstance(cell, str):
        raise TypeError(f"{TOUR}: expected a list of POI tokens per row, got the string {cell[:40]!r}")
    return [t for t in list(cell) if t is not None]


class PoiEmbeddingModel(PythonModel):
    """pyfunc of the POI Doc2Vec: ``tour`` (+ ``region_id``) → ``vector``, ``has_pois``, ``n_known_tokens``."""

    def load_context(self, context: Any) -> None:
        from gensim.models.doc2vec import Doc2Vec

        from landuse.features.doc2vec import DOC2VEC_FILE, REGIONS_FILE, PoiModel

        self.spec = _read_spec(context)
        local = _verified_gensim_dir(context, self.spec)
        self.model = PoiModel(Doc2Vec.load(str(local / DOC2VEC_FILE)), np.load(local / REGIONS_FILE))
        self.epochs = int(self.spec["infer"]["epochs"])
        self.seed = int(self.spec["infer"]["seed"])
        self.dim = int(self.model.model.vector_size)
        self.lock = threading.Lock()  # PoiModel.infer resets the model's RNG: one tour at a time

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per input row, in input order (see the module docstring)."""
        from landuse.features.doc2vec import encode_token

        frame = _frame(model_input)
        if TOUR not in frame.columns:
            raise ValueError(f"input needs a {TOUR!r} column (list of POI tokens), got columns {list(frame.columns)}")
        vocab = self.model.model.wv.key_to_index
        vectors, has, known = [], [], []
        for cell in frame[TOUR].tolist():
            tokens = _tour(cell)
            if not tokens:
                vector = np.zeros(self.dim, dtype=np.float32)
            else:
                with self.lock:
                    vector = self.model.infer(tokens, epochs=self.epochs, seed=self.seed)
            vectors.append(_floats(vector))
            has.append(bool(tokens))
            known.append(sum(encode_token(t) in vocab for t in tokens))
        out = pd.DataFrame({VECTOR: vectors, HAS_POIS: np.asarray(has, dtype=bool),
                            N_KNOWN_TOKENS: np.asarray(known, dtype=np.int64)})
        if REGION_ID in frame.columns:
            out.insert(0, REGION_ID, frame[REGION_ID].to_numpy())
        return out


def _example_tours(words: Sequence[str]) -> list[list[str]]:
    plain = [w for w in words if "%" not in w] or ["unknown"]  # encode_token is the identity on these
    return [plain[:3], list(reversed(plain[:5]))]


@contextmanager
def poi_pyfunc(table_dir: Any, seed: int, settings: Mapping[str, Any] | None = None,
               source: Mapping[str, Any] | None = None, epochs: int | None = None) -> Iterator[PyfuncParts]:
    """The pyfunc parts of the Doc2Vec saved with a ``poi_embeddings`` table (local path or URI).

    ``seed``: the RNG seed of every inference (the run's seed); ``epochs``: inference epochs
    (default: the model's training epochs, as ``PoiModel.infer`` uses).
    """
    from gensim.models.doc2vec import Doc2Vec
    from mlflow.types.schema import Array, ColSpec, DataType

    from landuse.features.doc2vec import DOC2VEC_FILE, REGIONS_FILE
    from landuse.features.word2vec import local_model_dir

    with tempfile.TemporaryDirectory(prefix="pyfunc-poi-") as tmp, local_model_dir(table_dir) as local:
        model = Doc2Vec.load(str(local / DOC2VEC_FILE))
        region_ids = np.load(local / REGIONS_FILE)
        epochs = int(epochs or model.epochs)
        spec = {
            "kind": "poi_doc2vec",
            "format_version": FORMAT_VERSION,
            "landuse_version": landuse.__version__,
            "input": {TOUR: "list of POI category tokens (strings) in tour order, as the poi_tours `tokens` "
                            "column; encode_token is applied (identity for tokens without '%' or whitespace)",
                      REGION_ID: "int64, optional, passed through"},
            "output": {REGION_ID: "int64 (when given)", VECTOR: f"list of {model.vector_size} floats",
                       HAS_POIS: "bool: the tour has a token (an empty tour gets a zero vector)",
                       N_KNOWN_TOKENS: "int: tokens in the model's vocabulary (others are ignored)"},
            "infer": {"method": "landuse.features.doc2vec.PoiModel.infer (gensim infer_vector)", "epochs": epochs,
                      "seed": int(seed), "alpha": float(model.alpha), "min_alpha": float(model.min_alpha),
                      "reproducible": "identical in every process (CRC-32-seeded starting vector, RNG reset per tour)"},
            "model": {"dim": int(model.vector_size), "window": int(model.window), "dm": int(model.dm),
                      "epochs": int(model.epochs), "min_count": int(model.min_count), "seed": int(model.seed),
                      "documents": int(region_ids.size), "vocabulary_size": len(model.wv)},
            "settings": dict(settings or {}),
            "source": {"table": str(table_dir), **(source or {})},
        }
        tours = _example_tours(list(model.wv.index_to_key))
        del model
        ids = [int(r) for r in region_ids[:2]]
        ids += [max(ids, default=-1) + 1 + k for k in range(2 - len(ids))]
        example = pd.DataFrame({REGION_ID: np.asarray(ids, dtype=np.int64), TOUR: tours})
        signature = _signature(
            [ColSpec(Array(DataType.string), TOUR), ColSpec(DataType.long, REGION_ID, required=False)],
            [ColSpec(DataType.long, REGION_ID, required=False), ColSpec(Array(DataType.double), VECTOR),
             ColSpec(DataType.boolean, HAS_POIS), ColSpec(DataType.long, N_KNOWN_TOKENS)],
        )
        copied = _copy_model_dir(local, Path(tmp))
        spec[MODEL_SHA256] = directory_digests(Path(copied))
        artifacts = {"model": copied, "spec": _write_spec(Path(tmp), spec)}
        code = _model_code(Path(tmp), PoiEmbeddingModel)
        yield PyfuncParts(code, artifacts, signature, example, _requirements("gensim"), spec)


# --- Image encoder -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderInfo:
    """How an image encoder was built and what its input is (everything but the weights).

    ``arch`` / ``arch_args``: :func:`landuse.models.encoders.make_encoder`'s name and arguments.
    ``band_roles``: the pixel bands in input order (the ``image_patches`` table's ``patch_bands``).
    ``channel_band_map``: for an external checkpoint, encoder channel → raster band role or index
    (``--band-map``); the encoder is then a ``BandMappedEncoder`` over ``band_roles``.
    """

    arch: str
    band_roles: tuple[str, ...]
    patch_size: int
    arch_args: Mapping[str, Any] = field(default_factory=dict)
    patch_stride: int | None = None
    raster_band_map: Mapping[str, int] | None = None  # role -> 1-based raster band (inputs.imagery)
    apply_scale: bool | None = None  # whether the pixels are the raster's scaled values
    channel_band_map: Mapping[str, Any] | None = None
    source: Mapping[str, Any] = field(default_factory=dict)


def _build_encoder(spec: Mapping[str, Any]) -> ImageEncoder:
    """An encoder with the spec's architecture (weights not loaded)."""
    from landuse.models.encoders import BandMappedEncoder, make_encoder

    arch = spec["architecture"]
    inner = make_encoder(arch["arch"], int(arch["encoder_in_bands"]), **dict(arch["arch_args"]))
    if arch["band_mapped"]:
        return BandMappedEncoder(inner, arch["band_indices"], int(spec["in_bands"]))
    return inner


def _save_weights(state: Mapping[str, torch.Tensor], directory: Path) -> tuple[str, str]:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    try:
        from safetensors.torch import save_file
    except ImportError:  # pragma: no cover - safetensors ships with the project's dependencies
        import torch

        path = directory / WEIGHTS_TORCH
        torch.save(tensors, path)  # a state_dict of tensors, read back with weights_only=True
        return str(path), "torch_state_dict"
    path = directory / WEIGHTS_SAFETENSORS
    save_file(tensors, str(path))
    return str(path), "safetensors"


def _load_weights(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


class ImageEncoderModel(PythonModel):
    """pyfunc of an image encoder: ``pixels`` (flattened tile, + ``region_id``) → ``vector``."""

    def load_context(self, context: Any) -> None:
        self.spec = _read_spec(context)
        self.encoder = _build_encoder(self.spec)
        state = _load_weights(Path(context.artifacts["weights"]), self.spec["weights_format"])
        self.encoder.load_state_dict(state, strict=True)
        self.encoder.eval()
        self.shape = (int(self.spec["in_bands"]), int(self.spec["patch_size"]), int(self.spec["patch_size"]))
        self.batch_size = int(self.spec.get("batch_size", 256))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per input row, in input order."""
        import torch

        frame = _frame(model_input)
        if PIXELS not in frame.columns:
            raise ValueError(f"input needs a {PIXELS!r} column (flattened tile), got columns {list(frame.columns)}")
        size = int(np.prod(self.shape))
        tiles = []
        for row, cell in enumerate(frame[PIXELS].tolist()):
            values = np.asarray(cell if cell is not None else [], dtype=np.float32).ravel()
            if values.size != size:
                raise ValueError(f"{PIXELS} row {row}: {values.size} values, expected {size} "
                                 f"(bands {list(self.spec['band_roles'])} x {self.shape[1]} x {self.shape[2]})")
            tiles.append(values.reshape(self.shape))
        out_dim = int(self.spec["out_dim"])
        if tiles:
            x = torch.from_numpy(np.stack(tiles))
            with torch.no_grad():
                parts = [self.encoder(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
            matrix = torch.cat(parts).numpy().astype(np.float32)
        else:
            matrix = np.zeros((0, out_dim), dtype=np.float32)
        out = pd.DataFrame({VECTOR: [_floats(v) for v in matrix]})
        if REGION_ID in frame.columns:
            out.insert(0, REGION_ID, frame[REGION_ID].to_numpy())
        return out


def _arch_name(encoder: ImageEncoder) -> str | None:
    from landuse.models.encoders import ENCODERS

    return next((name for name, cls in ENCODERS.items() if type(encoder) is cls), None)


def image_encoder_spec(encoder: ImageEncoder, info: EncoderInfo) -> dict[str, Any]:
    """The spec of an encoder (a plain encoder or a ``BandMappedEncoder`` over the raster bands)."""
    from landuse.models.encoders import BandMappedEncoder, MMGRModel

    if isinstance(encoder, MMGRModel):
        encoder = encoder.image_encoder
    mapped = encoder if isinstance(encoder, BandMappedEncoder) else None
    band_mapped = mapped is not None
    inner = mapped.encoder if mapped is not None else encoder
    band_indices = mapped.band_indices.tolist() if mapped is not None else None
    arch = _arch_name(inner)
    if arch is None:
        raise ValueError(f"image encoder {type(inner).__name__} is not one of landuse.models.encoders.ENCODERS")
    given = info.arch.lower().replace("-", "").replace("_", "")
    if given != arch:
        raise ValueError(f"encoder is a {arch}, but the description says {info.arch!r}")
    in_bands = int(encoder.in_bands)
    if len(info.band_roles) != in_bands:
        raise ValueError(f"encoder takes {in_bands} band(s), but {len(info.band_roles)} band role(s) were given: "
                         f"{list(info.band_roles)}")
    normalisation = {
        "formula": "(x - band_mean) / band_std per band, inside the encoder, before the network",
        "band_mean": inner.band_mean.tolist(), "band_std": inner.band_std.tolist(),
        "bands": ([info.band_roles[i] for i in band_indices] if band_indices is not None else list(info.band_roles)),
    }
    return {
        "kind": "image_encoder",
        "format_version": FORMAT_VERSION,
        "landuse_version": landuse.__version__,
        "input": {PIXELS: f"list of {in_bands * info.patch_size ** 2} floats: one tile [bands, patch, patch] "
                          "flattened in C order, bands in band_roles order, values as in the image_patches table",
                  REGION_ID: "int64, optional, passed through"},
        "output": {REGION_ID: "int64 (when given)", VECTOR: f"list of {encoder.out_dim} floats"},
        "in_bands": in_bands,
        "band_roles": list(info.band_roles),
        "raster_band_map": dict(info.raster_band_map) if info.raster_band_map is not None else None,
        "apply_scale": info.apply_scale,
        "patch_size": int(info.patch_size),
        "patch_stride": info.patch_stride,
        "band_mean": normalisation["band_mean"],
        "band_std": normalisation["band_std"],
        "normalisation": normalisation,
        "out_dim": int(encoder.out_dim),
        "architecture": {
            "arch": arch, "arch_args": dict(info.arch_args), "encoder_in_bands": int(inner.in_bands),
            "band_mapped": band_mapped, "band_indices": band_indices,
            "channel_band_map": dict(info.channel_band_map) if info.channel_band_map is not None else None,
        },
        "source": dict(info.source),
    }


@contextmanager
def image_encoder_pyfunc(encoder: ImageEncoder, info: EncoderInfo) -> Iterator[PyfuncParts]:
    """The pyfunc parts of an image encoder (an ``MMGRModel`` gives its ``image_encoder``)."""
    from mlflow.types.schema import Array, ColSpec, DataType

    from landuse.models.encoders import MMGRModel

    if isinstance(encoder, MMGRModel):
        encoder = encoder.image_encoder
    spec = image_encoder_spec(encoder, info)
    rebuilt = _build_encoder(spec)
    state = encoder.state_dict()
    rebuilt.load_state_dict(state, strict=True)  # fails here, not at serving time, when the spec cannot rebuild it
    # example tiles: the band means, and the means plus one band std
    mean = np.asarray(spec["band_mean"], dtype=np.float64)
    std = np.asarray(spec["band_std"], dtype=np.float64)
    if spec["architecture"]["band_mapped"]:
        base = np.zeros(spec["in_bands"])
        base[spec["architecture"]["band_indices"]] = mean
        step = np.ones(spec["in_bands"])
        step[spec["architecture"]["band_indices"]] = std
        mean, std = base, step
    tile = np.ones((info.patch_size, info.patch_size))
    example = pd.DataFrame({
        REGION_ID: np.array([0, 1], dtype=np.int64),
        PIXELS: [(mean[:, None, None] * tile).ravel().tolist(), ((mean + std)[:, None, None] * tile).ravel().tolist()],
    })
    signature = _signature(
        [ColSpec(Array(DataType.double), PIXELS), ColSpec(DataType.long, REGION_ID, required=False)],
        [ColSpec(DataType.long, REGION_ID, required=False), ColSpec(Array(DataType.double), VECTOR)],
    )
    with tempfile.TemporaryDirectory(prefix="pyfunc-encoder-") as tmp:
        weights, fmt = _save_weights(state, Path(tmp))
        spec["weights_format"] = fmt
        artifacts = {"weights": weights, "spec": _write_spec(Path(tmp), spec)}
        requirements = _requirements("torch", *(["safetensors"] if fmt == "safetensors" else []))
        yield PyfuncParts(_model_code(Path(tmp), ImageEncoderModel), artifacts, signature, example, requirements,
                          spec)


# --- Save / log one model ----------------------------------------------------------------------------


def save_flow_embedding_model(table_dir: Any, path: str | Path, **kw: Any) -> Path:
    """Save the flow Word2Vec of ``table_dir`` as an MLflow model directory ``path``."""
    with flow_pyfunc(table_dir, **kw) as parts:
        mlflow.pyfunc.save_model(str(path), **parts.kwargs())
    return Path(path)


def save_poi_embedding_model(table_dir: Any, path: str | Path, seed: int, **kw: Any) -> Path:
    """Save the POI Doc2Vec of ``table_dir`` as an MLflow model directory ``path``."""
    with poi_pyfunc(table_dir, seed, **kw) as parts:
        mlflow.pyfunc.save_model(str(path), **parts.kwargs())
    return Path(path)


def save_image_encoder_model(encoder: ImageEncoder, info: EncoderInfo, path: str | Path) -> Path:
    """Save an image encoder as an MLflow model directory ``path``."""
    with image_encoder_pyfunc(encoder, info) as parts:
        mlflow.pyfunc.save_model(str(path), **parts.kwargs())
    return Path(path)


def _log(parts: PyfuncParts, name: str) -> str:
    """Log one embedding model into the active run and record its artifacts' sha256 in the run."""
    from landuse.serving.integrity import record_logged_model

    info = mlflow.pyfunc.log_model(name=name, **parts.kwargs())
    record_logged_model(info, name)
    return info.model_uri


def load_embedding_model(model_uri: str) -> Any:
    """An embedding pyfunc from ``runs:/RUN_ID/NAME`` (or a registered version), its artifacts verified
    against the run's / registry's sha256 record before anything loads (ArtifactIntegrityError otherwise)."""
    from landuse.serving.integrity import load_verified_pyfunc

    return load_verified_pyfunc(model_uri)


# --- What a config's work dir holds ------------------------------------------------------------------


def _stage_model(config: Config, stage: Any, table_name: str, model_file: str) -> tuple[Any, dict] | str:
    """(table dir, its manifest) when the stage's model exists and was fitted under ``config``, else why not."""
    from landuse.features.word2vec import MODEL_DIR
    from landuse.manifest import read_manifest

    if not stage.enabled(config):
        return f"stage {stage.name} is disabled by this config"
    table = config.tables_dir / table_name
    manifest = read_manifest(table)
    if manifest is None:
        return f"no committed table {table_name} at {table} (run `landuse run {stage.name}`)"
    want = config.section_hash(*stage.config_keys)
    if manifest.get("config_hash") != want:
        return (f"table {table} was written under another config ({', '.join(stage.config_keys)} differ: "
                f"{manifest.get('config_hash')} != {want}); rerun `landuse run {stage.name}`")
    if not (table / MODEL_DIR / model_file).exists():
        return f"table {table} has no saved model ({MODEL_DIR}/{model_file}; a table without one keeps no model)"
    return table, manifest


def _manifest_source(manifest: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("stage", "fingerprint", "config_hash", "landuse_version", "started", "rows")
    return {k: manifest[k] for k in keys if k in manifest}


def _find_checkpoint(directory: Path, epochs: int, config: Config) -> Path | None:
    name = f"epoch-{epochs:04d}.pt"
    for candidate in (directory, config.driver_dir / "checkpoints" / "pretrain"):
        if (Path(candidate) / name).is_file():
            return Path(candidate) / name
    return None


def pretrained_encoder(config: Config) -> tuple[ImageEncoder, EncoderInfo] | str:
    """The image encoder behind the work dir's ``image_embeddings`` (``landuse run pretrain``), else why not.

    Pretrained: the ``image_encoder.*`` weights of the checkpoint of the run's last epoch (the
    manifest's ``loss_history`` says which; its history must match). External: the checkpoint and
    band map recorded in the manifest, loaded as the command loaded them.
    """
    import torch

    from landuse.manifest import read_manifest
    from landuse.models.encoders import load_external_encoder, make_encoder
    from landuse.stages.assemble import T_IMAGE_EMBEDDINGS

    if config.inputs.imagery is None:
        return "this config has no inputs.imagery (pretrain needs a raster)"
    table = config.tables_dir / T_IMAGE_EMBEDDINGS
    manifest = read_manifest(table)
    if manifest is None or manifest.get("stage") != "pretrain":
        return f"no image_embeddings written by `landuse run pretrain` at {table}"
    patches = read_manifest(config.tables_dir / "image_patches") or {}
    roles = [str(r) for r in manifest.get("band_roles") or patches.get("patch_bands") or []]
    if not roles:
        return f"{table}: the manifest records no band roles"
    if patches.get("patch_bands") and [str(r) for r in patches["patch_bands"]] != roles:
        return (f"{table}: the encoder saw bands {roles}, but image_patches now has {patches['patch_bands']} "
                "(rerun `landuse run pretrain`)")
    arch = str(manifest.get("encoder") or "smallcnn")
    try:
        arch_args = json.loads(manifest.get("encoder_args") or "{}")
    except ValueError:
        return f"{table}: encoder_args {manifest.get('encoder_args')!r} is not JSON"
    patch_size = int(patches.get("patch_size") or config.embeddings.image.patch_size)
    history = list(manifest.get("loss_history") or [])
    source = {"table": str(table), "created": manifest.get("created"), "tiles": manifest.get("tiles")}
    external = manifest.get("external") or ""
    channel_map = None
    if external:
        if not Path(external).is_file():
            return f"the external checkpoint {external} recorded in {table} is gone"
        try:
            channel_map = json.loads(manifest.get("band_map") or "{}")
            encoder: ImageEncoder = load_external_encoder(external, arch, channel_map, in_bands=len(roles), band_roles=roles,
                                            **arch_args)
        except (ValueError, TypeError) as exc:
            return f"the external checkpoint {external} recorded in {table} does not load: {exc}"
        source.update(external=str(external))
    else:
        if not history:
            return f"{table} came from an encoder trained for 0 epochs: no checkpoint holds its weights"
        recorded = Path(str(manifest.get("checkpoint_dir") or config.driver_dir / "checkpoints" / "pretrain"))
        path = _find_checkpoint(recorded, len(history), config)
        if path is None:
            return f"checkpoint epoch-{len(history):04d}.pt of the pretraining run is not in {recorded}"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
        except Exception as exc:  # noqa: BLE001 - unpickling errors of many types; one line
            return f"checkpoint {path} does not load as weights ({type(exc).__name__}: {str(exc)[:200]})"
        saved = np.asarray(state.get("history", []), dtype=float)
        if saved.shape != (len(history),) or not np.allclose(saved, np.asarray(history, dtype=float), rtol=0,
                                                              atol=1e-9, equal_nan=True):
            return f"checkpoint {path} was written by another pretraining run (its loss history differs)"
        weights = {k[len(_ENCODER_PREFIX):]: v for k, v in state["model"].items() if k.startswith(_ENCODER_PREFIX)}
        encoder = make_encoder(arch, len(roles), **arch_args)
        encoder.load_state_dict(weights, strict=True)
        source.update(checkpoint=str(path), epochs=len(history), final_loss=history[-1])
    encoder.eval()
    info = EncoderInfo(
        arch=arch, arch_args=arch_args, band_roles=tuple(roles), patch_size=patch_size,
        patch_stride=int(patches["patch_stride"]) if patches.get("patch_stride") else None,
        raster_band_map=patches.get("band_map"), apply_scale=config.embeddings.image.apply_scale,
        channel_band_map=channel_map, source=source,
    )
    return encoder, info


# --- All of them -------------------------------------------------------------------------------------


def log_embedding_models(config: Config) -> dict[str, str]:
    """Log every fitted embedding model of ``config``'s work dir into the active MLflow run.

    ``embedding_flow`` (flow Word2Vec), ``embedding_poi_doc2vec`` (POI Doc2Vec),
    ``embedding_image_encoder`` (the pretrained or external encoder); a model this config did not
    produce (stage disabled, not run, run under another config, no model kept) is skipped with an
    INFO line saying why. Returns {name: model URI}; ``runs:/<run_id>/<name>`` loads them too.
    """
    from landuse.features.doc2vec import DOC2VEC_FILE
    from landuse.features.word2vec import WORD2VEC_FILE
    from landuse.stages.embeddings import FLOW_STAGE, POI_STAGE, T_FLOW_EMBEDDINGS, T_POI_EMBEDDINGS

    if mlflow.active_run() is None:
        raise RuntimeError("log_embedding_models logs into the active MLflow run: call it inside mlflow.start_run()")
    uris: dict[str, str] = {}

    found = _stage_model(config, FLOW_STAGE, T_FLOW_EMBEDDINGS, WORD2VEC_FILE)
    if isinstance(found, str):
        log.info("embedding models: skipping %s: %s", FLOW_MODEL, found)
    else:
        table, manifest = found
        settings = {"seed": config.seed, "embeddings.flow": _plain(config.embeddings.flow)}
        with flow_pyfunc(table, settings=settings, source=_manifest_source(manifest)) as parts:
            uris[FLOW_MODEL] = _log(parts, FLOW_MODEL)

    found = _stage_model(config, POI_STAGE, T_POI_EMBEDDINGS, DOC2VEC_FILE)
    if isinstance(found, str):
        log.info("embedding models: skipping %s: %s", POI_MODEL, found)
    else:
        table, manifest = found
        settings = {"seed": config.seed, "embeddings.poi": _plain(config.embeddings.poi)}
        with poi_pyfunc(table, config.seed, settings=settings, source=_manifest_source(manifest)) as parts:
            uris[POI_MODEL] = _log(parts, POI_MODEL)

    found_encoder = pretrained_encoder(config)
    if isinstance(found_encoder, str):
        log.info("embedding models: skipping %s: %s", IMAGE_MODEL, found_encoder)
    else:
        with image_encoder_pyfunc(*found_encoder) as parts:
            uris[IMAGE_MODEL] = _log(parts, IMAGE_MODEL)

    for name, model_uri in uris.items():
        log.info("embedding models: logged %s -> %s", name, model_uri)
    return uris
